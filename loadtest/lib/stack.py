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

ROOT = Path(__file__).resolve().parent.parent.parent
VENV_BIN = ROOT / ".venv" / "bin"

# ---- the server stack --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(msg: str) -> None:
    print(f"[bet_ceiling {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Stack:
    """redis-server on CPU 1, gunicorn on CPU 0; `stop()` stops both (and is idempotent)."""

    def __init__(self, env_extra: dict[str, str], keep_logs: Path | None) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="bet-ceiling-"))
        self.keep_logs = keep_logs
        self.redis_port = free_port()
        self.port = free_port()
        self.redis: subprocess.Popen | None = None
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
        (self.tmp / "redis").mkdir()
        self.redis = subprocess.Popen(
            [
                "taskset",
                "-c",
                "1",
                shutil.which("redis-server") or "/usr/bin/redis-server",
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.tmp / "redis"),
                "--daemonize",
                "no",
                "--logfile",
                str(self.tmp / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._wait(lambda: tcp_ok(self.redis_port), 10, "redis-server")
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
            for p in (self.redis, self.gunicorn):
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
        if self.redis is not None and self.redis.poll() is None:
            self.redis.terminate()
            try:
                self.redis.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.redis.kill()
                self.redis.wait()
        self.redis = None
        if self.keep_logs:
            self.keep_logs.mkdir(parents=True, exist_ok=True)
            for f in ("gunicorn.log", "redis.log"):
                with contextlib.suppress(OSError):
                    shutil.copy(self.tmp / f, self.keep_logs / f)
        shutil.rmtree(self.tmp, ignore_errors=True)


def tcp_ok(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
