"""Real server processes for tests: redis-server, gunicorn (gevent worker) and nginx.

Each picks a free loopback port, waits until it answers, and is stopped (and waited for) at teardown.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import redis

from tests.support import waiting

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


# Under pytest-xdist each worker (gw0, gw1, …) takes its ports from a block of its own below the kernel's
# ephemeral range (32768+): a port one worker picked cannot be picked by another before its server binds
# it, nor taken meanwhile as the source port of some outgoing connection (the tests open hundreds).
_XDIST_PORT_BASE, _XDIST_PORT_BLOCK = 20000, 1000
_port_cursor = itertools.count(random.randrange(_XDIST_PORT_BLOCK))


def free_port() -> int:
    """A loopback TCP port nobody is listening on now (the caller's server binds it next)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    base = _XDIST_PORT_BASE + (int(worker[2:]) % 12) * _XDIST_PORT_BLOCK
    for _ in range(_XDIST_PORT_BLOCK):
        port = base + next(_port_cursor) % _XDIST_PORT_BLOCK
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {base}..{base + _XDIST_PORT_BLOCK - 1}")


def wait_until(predicate, timeout: float = 15.0, interval: float = 0.05, what: str = "condition") -> Any:
    """`tests.support.waiting.wait_until` for probing servers: any exception (connection refused while a
    process starts, a reset while it restarts) counts as "not yet". Returns the predicate's value."""
    return waiting.wait_until(predicate, timeout=timeout, interval=interval, what=what, ignore=(Exception,))


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=ctx) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class RedisServer:
    """A private redis-server; `stop()` and `start()` again reuse the same port (for outage tests)."""

    def __init__(
        self, workdir: Path, port: int | None = None, *, cpus: str | None = None, aof: bool = False
    ) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.cpus = cpus  # e.g. "1": pinned with taskset (benchmarks keep the server off the load's core)
        self.aof = aof  # as `make run` starts it (AOF, fsync every second): a restart keeps sessions
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def start(self) -> None:
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.workdir.mkdir(parents=True, exist_ok=True)
        pin = ["taskset", "-c", self.cpus] if self.cpus else []
        self.proc = subprocess.Popen(
            [
                *pin,
                exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                *(
                    ["--appendonly", "yes", "--appendfsync", "everysec"]
                    if self.aof
                    else ["--appendonly", "no"]
                ),
                "--dir",
                str(self.workdir),
                "--daemonize",
                "no",
                "--logfile",
                str(self.workdir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C of a benchmark reaches the script, which stops it in order
        )
        wait_until(lambda: self.client().ping(), what=f"redis-server on {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class Gunicorn:
    """gunicorn started exactly as `make run` does: ``gunicorn -c gunicorn.conf.py`` with TAP_* env."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.env = {**os.environ, **env, "TAP_BIND": f"127.0.0.1:{self.port}"}
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait_ready: bool = True, wait_healthy: bool = True) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py"],
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        if not wait_healthy:
            return
        wait_until(lambda: http_get(self.url + "/healthz")[0] == 200, timeout=20, what="gunicorn /healthz")
        if wait_ready:
            wait_until(lambda: http_get(self.url + "/readyz")[0] == 200, timeout=20, what="gunicorn /readyz")

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        code = self.proc.returncode
        self.proc = None
        return code


class Nginx:
    """nginx with the project's rendered config, in a private runtime prefix as `make run` gives it:
    a fresh temp dir (mode 700; nginx, as nobody when we are root, owns it), so the data directory
    may sit where nobody cannot enter. Its error log (stderr) goes to `error_log_path`."""

    def __init__(self, settings, **render_kw) -> None:
        sys.path.insert(0, str(ROOT))
        from nginx.render import command, render

        self.prefix = Path(tempfile.mkdtemp(prefix="tap-nginx-"))
        self.conf = render(settings, prefix=self.prefix, **render_kw)
        self.cmd = command(self.conf)
        self.settings = settings
        fd, log_path = tempfile.mkstemp(prefix="tap-nginx-", suffix=".log")
        os.close(fd)
        self.error_log_path = Path(log_path)
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.error_log_path, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=log)
        port = self.settings.http_port
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:  # a config error: say so now, not after a timeout
                raise RuntimeError(f"nginx exited with {self.proc.returncode}: {self.error_log()}")
            try:
                if http_get(f"http://127.0.0.1:{port}/healthz")[0] in (200, 502):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"nginx not answering on {port} after 15 s: {self.error_log()}")
            time.sleep(0.05)

    def error_log(self) -> str:
        return self.error_log_path.read_text(errors="replace")

    def access_log(self) -> str:
        path = self.prefix / "logs" / "access.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_for_access_log(self, needle: str) -> str:
        """The access log once it holds `needle`: SIGUSR1 makes nginx reopen its logs, writing out what
        it buffered; sent again on every poll, since a request that was still open at the first signal
        (a websocket) is logged only when it ends."""
        assert self.proc is not None

        def logged() -> str | None:
            self.proc.send_signal(signal.SIGUSR1)
            text = self.access_log()
            return text if needle in text else None

        return wait_until(logged, timeout=10, interval=0.1, what=f"{needle!r} in nginx's access log")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.prefix, ignore_errors=True)
        self.error_log_path.unlink(missing_ok=True)


class MotoServer:
    """A real `moto_server` process (S3 API over HTTP) on a free loopback port, as tests/test_archive.py."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._log = open(self.workdir / "moto.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(
            lambda: urllib.request.urlopen(self.url + "/moto-api/", timeout=1).status == 200, what="moto"
        )

    def create_bucket(self, name: str) -> str:
        import boto3

        boto3.client("s3", endpoint_url=self.url, region_name="us-east-1").create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        if self.proc is not None:
            _kill_group(self.proc)
            self._log.close()
            self.proc = None


class SilentServer:
    """A loopback TCP port that accepts connections (the kernel's backlog) and never answers: an S3
    endpoint that hangs. `connections()` counts the connections clients opened to it so far, so a
    test sees how many times a request was tried."""

    def __init__(self, backlog: int = 16) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(backlog)
        self._sock.setblocking(False)
        self._accepted: list[socket.socket] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def connections(self) -> int:
        while True:
            try:
                self._accepted.append(self._sock.accept()[0])
            except BlockingIOError:
                return len(self._accepted)

    def received(self) -> bytes:
        """What the clients have sent so far (their requests, never answered), all connections."""
        self.connections()
        out = b""
        for conn in self._accepted:
            conn.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                while chunk := conn.recv(65536):
                    out += chunk
        return out

    def __enter__(self) -> SilentServer:
        return self

    def __exit__(self, *exc: object) -> None:
        for conn in self._accepted:
            conn.close()
        self._sock.close()


def _kill_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, wait: float = 10.0) -> None:
    """Signal a process started with its own session, and everything in that group; wait for it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # anything left in the group


class Litestream:
    """`litestream replicate` with the configuration `make run` writes for these TAP_* settings."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        from app.config import Settings
        from app.storage.replication import litestream_bin, litestream_env, write_config

        self.settings = Settings.from_env({**os.environ, **env})
        self.config = write_config(self.settings)
        self.cmd = [str(litestream_bin()), "replicate", "-config", str(self.config)]
        self.env = litestream_env({**os.environ, **env})
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.cmd, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def lag(self) -> dict:
        from app.storage.db import current_week_file
        from app.storage.replication import lag

        current = current_week_file(self.settings.db_dir)
        assert current is not None
        return lag(self.settings, current)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """kill -9: the machine is gone, nothing is flushed."""
        if self.proc is not None:
            _kill_group(self.proc, signal.SIGKILL)

    def stop(self) -> None:
        if self.proc is not None:
            _kill_group(self.proc, signal.SIGTERM, wait=35)
            self._log.close()
            self.proc = None
