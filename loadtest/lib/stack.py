"""The server stack a benchmark measures: a private redis-server and gunicorn on free ports, pinned to CPUs."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.support.servers import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent.parent
VENV_BIN = ROOT / ".venv" / "bin"

# ---- the server stack --------------------------------------------------------------------------------


def log(msg: str) -> None:
    print(f"[bet_ceiling {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Stack:
    """redis-server on CPU 1, gunicorn on CPU 0; `stop()` stops both (and is idempotent)."""

    def __init__(self, env_extra: dict[str, str], keep_logs: Path | None) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="bet-ceiling-"))
        self.keep_logs = keep_logs
        self.redis_server = RedisServer(self.tmp / "redis", cpus="1")
        self.redis_port = self.redis_server.port
        self.port = free_port()
        self.gunicorn: subprocess.Popen | None = None
        self.env = {
            **os.environ,
            "TAP_DATA_DIR": str(self.tmp / "data"),
            "TAP_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "TAP_BIND": f"127.0.0.1:{self.port}",
            "TAP_DEV_MODE": "1",
            "TAP_RATE_PER_IP": "0",
            "TAP_RATE_PER_ADDRESS": "0",
            "TAP_RATE_AUTH_PER_IP": "0",
            "TAP_LOG_LEVEL": "WARNING",
            **env_extra,
        }

    def start(self) -> None:
        self.redis_server.start()
        self._glog = open(self.tmp / "gunicorn.log", "ab")  # noqa: SIM115 - closed in stop()
        self.gunicorn = subprocess.Popen(
            ["taskset", "-c", "0", str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py"],
            cwd=ROOT,
            env=self.env,
            stdout=self._glog,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _wait(self, pred, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if pred():
                    return
            for p in (self.redis_server.proc, self.gunicorn):
                if p is not None and p.poll() is not None:
                    raise RuntimeError(f"{what}: a server exited early ({p.args[3]}); see {self.tmp}")
            time.sleep(0.1)
        raise TimeoutError(f"{what} not ready after {timeout}s")

    def worker_pid(self) -> int:
        out = subprocess.run(
            ["pgrep", "-P", str(self.gunicorn.pid)], capture_output=True, text=True, check=False
        )
        pids = [int(p) for p in out.stdout.split()]
        # the master's direct child is the gunicorn python (taskset exec'd into it); its child the worker
        if self.gunicorn.pid in pids:
            pids.remove(self.gunicorn.pid)
        assert len(pids) == 1, f"expected one gunicorn worker, found {pids}"
        return pids[0]

    def stop(self) -> None:
        if self.gunicorn is not None and self.gunicorn.poll() is None:
            self.gunicorn.send_signal(signal.SIGTERM)
            try:
                self.gunicorn.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.gunicorn.kill()
                self.gunicorn.wait()
        self.gunicorn = None
        self.redis_server.stop()
        if self.keep_logs:
            self.keep_logs.mkdir(parents=True, exist_ok=True)
            for f in ("gunicorn.log", "redis/redis.log"):
                with contextlib.suppress(OSError):
                    shutil.copy(self.tmp / f, self.keep_logs / Path(f).name)
        shutil.rmtree(self.tmp, ignore_errors=True)


def tcp_ok(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
