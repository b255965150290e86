"""`make run` itself (scripts/run.sh), as a newcomer runs it: as root, with the data directory under a
parent only root may enter, on free ports. Its services are real; each test stops all it started."""

import contextlib
import fcntl
import json
import os
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import redis

from tests.support.servers import ROOT, free_port, http_get, wait_until

pytestmark = pytest.mark.e2e


# Ctrl-C reaches run.sh as from a terminal. A suite started in the background by a non-interactive
# shell (`cmd &`) inherits SIGINT ignored, and bash cannot trap a signal that was ignored when it
# started: the test's Ctrl-C would do nothing (seen: `make run` killed after 45 s, exit -9). This
# resets it and execs the command (not preexec_fn: an xdist worker has a second thread).
_WITH_DEFAULT_SIGINT = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execvp(sys.argv[1], sys.argv[1:])"


class Run:
    """`bash scripts/run.sh` in the background, its output in a file."""

    def __init__(self, tmp_path: Path) -> None:
        parent = tmp_path / "private"
        parent.mkdir(mode=0o700)
        parent.chmod(0o700)  # whatever the umask: nobody (nginx) cannot enter it
        self.data = parent / "data"
        self.bind = f"127.0.0.1:{free_port()}"
        self.redis_port, self.http_port, self.https_port = free_port(), free_port(), free_port()
        self.env = {
            **os.environ,
            "TAP_DATA_DIR": str(self.data),
            "TAP_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "TAP_BIND": self.bind,
            "TAP_HTTP_PORT": str(self.http_port),
            "TAP_HTTPS_PORT": str(self.https_port),
        }
        self.out_path = tmp_path / "run.out"
        self.proc: subprocess.Popen | None = None

    def start(self, nofile: int | None = None) -> None:
        """`nofile`: the soft limit of open files run.sh starts with (set by the wrapper before it
        execs bash, like a login's limits)."""
        wrapper = _WITH_DEFAULT_SIGINT
        if nofile is not None:
            wrapper = (
                f"import resource; resource.setrlimit(resource.RLIMIT_NOFILE, "
                f"({nofile}, resource.getrlimit(resource.RLIMIT_NOFILE)[1])); {wrapper}"
            )
        with open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", wrapper, "bash", "scripts/run.sh"],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if self.proc.poll() is not None:
                raise AssertionError(f"run.sh exited with {self.proc.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {text!r} from run.sh after {timeout}s:\n{self.output()}")
            time.sleep(0.05)

    def interrupt(self, timeout: float = 45) -> int:
        """Ctrl-C: SIGINT to the script alone (its services each have their own session). A script
        that does not stop is killed, and so is every process it started (each one's group)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                started = _descendants(self.proc.pid)  # while they are still its descendants
                self.proc.kill()
                self.proc.wait()
                _kill_all(started)
                runtime = self.runtime_dir()
                if runtime is not None and runtime.name.startswith("tap-trading-nginx."):
                    shutil.rmtree(runtime, ignore_errors=True)  # run.sh's cleanup never ran
        return self.proc.returncode

    def runtime_dir(self) -> Path | None:
        """nginx's runtime directory, as run.sh prints it."""
        line = next((line for line in self.output().splitlines() if "files in " in line), None)
        return None if line is None else Path(line.rsplit("files in ", 1)[1].rstrip(")"))


def _descendants(root: int) -> list[int]:
    """Every process below `root` in the process tree (from /proc/<pid>/stat's parent pid)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill_all(pids: list[int]) -> None:
    """SIGKILL each process's group (the services run in sessions of their own); a process in the
    test's own group (run.sh's subshells) alone."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            pgid = os.getpgid(pid)
            if pgid == os.getpgrp():
                os.kill(pid, signal.SIGKILL)
            else:
                os.killpg(pgid, signal.SIGKILL)


@pytest.fixture(name="run")
def run_fixture(tmp_path):
    """A Run that leaves nothing behind, whatever the test did."""
    r = Run(tmp_path)
    yield r
    if r.proc is not None:
        r.interrupt()


def _redis_pid(port: int) -> int:
    return int(redis.Redis(port=port, socket_timeout=2).info("server")["process_id"])


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_make_run_under_a_0700_parent_serves_restarts_a_dead_service_and_stops_all(run):
    run.start()
    try:
        run.wait_for("[run] ready: ", timeout=90)
        https, http = f"https://127.0.0.1:{run.https_port}", f"http://127.0.0.1:{run.http_port}"
        status, body = http_get(https + "/")
        assert status == 200 and b"Tap Trading" in body
        status, body = http_get(http + "/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok"
        runtime_dir = run.runtime_dir()
        assert runtime_dir is not None, run.output()
        if os.geteuid() == 0:
            assert not runtime_dir.is_relative_to(run.data)  # nginx's own dir, out of the 0700 parent
        assert (runtime_dir / "nginx.conf").exists()

        old = _redis_pid(run.redis_port)
        os.kill(old, signal.SIGKILL)
        run.wait_for(f"[run] redis (pid {old}) exited with signal KILL", timeout=10)
        run.wait_for("[run] redis restarted", timeout=10)
        wait_until(lambda: _redis_pid(run.redis_port) != old, timeout=10, what="a new redis-server")
        wait_until(lambda: http_get(https + "/readyz")[0] == 200, timeout=20, what="ready again")
        assert "stopping" not in run.output()  # the rest kept serving

        services = [_redis_pid(run.redis_port), int((run.data / "gunicorn.pid").read_text())]
    finally:
        code = run.interrupt()
    assert code == 130, run.output()
    assert "[run] stopped" in run.output()
    assert all(_gone(pid) for pid in services), services
    assert not runtime_dir.exists() or os.geteuid() != 0
    for port in (run.redis_port, run.http_port, run.https_port):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still answers"


def test_make_run_fails_fast_when_a_port_is_taken(run):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", run.redis_port))
        taken.listen()
        started = time.monotonic()
        run.start()
        code = run.proc.wait(timeout=30)
    assert code == 1, run.output()
    assert time.monotonic() - started < 8, "it waited for a gunicorn that never started"
    assert f"port 127.0.0.1:{run.redis_port} is already in use; set TAP_REDIS_URL" in run.output()


def test_make_run_refuses_a_data_directory_another_run_still_uses(run):
    """What a `make run` killed with kill -9 leaves: its services, holding the data directory's lock
    (here the test holds it). A second run names them instead of starting a second writer there."""
    run.data.mkdir(parents=True)
    with open(run.data / "run.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        run.start()
        code = run.proc.wait(timeout=30)
    assert code == 1, run.output()
    assert f"another make run, or what it started, is using {run.data} (pids: {os.getpid()});" in run.output()
    assert not (run.data / "gunicorn.pid").exists()


def test_make_run_names_the_log_of_a_service_that_cannot_start(run):
    manifest = run.data / "redis" / "appendonlydir" / "appendonly.aof.manifest"
    manifest.parent.mkdir(parents=True)
    manifest.write_text("this is not an AOF manifest\n")  # redis refuses to start on it
    started = time.monotonic()
    run.start()
    code = run.proc.wait(timeout=30)
    assert code == 1, run.output()
    assert time.monotonic() - started < 8
    assert f"redis exited during start-up (status 1); see {run.data}/logs/redis.log" in run.output()


def _lock_holders(data: Path) -> list[int]:
    """The processes that hold the data directory's run.lock open (from /proc/<pid>/fd)."""
    lock, found = str(data / "run.lock"), []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if any(os.readlink(fd) == lock for fd in (entry / "fd").iterdir()):
                    found.append(int(entry.name))
    return found


def test_make_run_stops_a_starting_nginx_at_once_when_gunicorn_dies_during_start_up(run):
    """gunicorn dies while nginx is still being started (render.py writing its config, nginx not yet in
    its signal handlers): the stop must reach nginx then too. Started in the background by a script, nginx
    inherited SIGQUIT ignored, so the QUIT was lost and run.sh waited 5 s for its SIGKILL."""
    run.start()
    pid_file = run.data / "gunicorn.pid"
    wait_until(
        lambda: pid_file.read_text().strip().isdigit(), timeout=90, interval=0.002, what="gunicorn.pid"
    )
    os.kill(int(pid_file.read_text()), signal.SIGKILL)  # its group may not exist yet (setsid)
    killed = time.monotonic()
    code = run.proc.wait(timeout=30)
    took = time.monotonic() - killed
    assert code == 1, run.output()
    assert "[run] gunicorn exited during start-up (signal KILL)" in run.output()
    assert "starting nginx" in run.output()
    # At the first QUIT (~0.2 s), not at the SIGKILL 5 s later nor at the QUIT run.sh repeats each second
    assert took < 0.9, f"run.sh took {took:.1f}s to stop a starting nginx:\n{run.output()}"
    assert _lock_holders(run.data) == [], "a service of the failed start-up is still running"


@pytest.fixture(name="shims")
def shims_fixture(run):
    """A directory first in run.sh's PATH, for stand-ins of the programs it starts (fault injection).
    World-readable: nginx runs as nobody when the tests run as root. Whatever a failed test left
    holding the data directory's lock is killed."""
    path = Path(tempfile.mkdtemp(prefix="tap-run-shims."))
    path.chmod(0o1777)
    run.env["PATH"] = f"{path}:{run.env['PATH']}"
    yield path
    if run.proc is not None:
        run.interrupt()
    if run.data.exists():
        _kill_all(_lock_holders(run.data))
    shutil.rmtree(path)


def _shim(path: Path, source: str) -> None:
    """`path` runs the Python `source` with this interpreter. Through /bin/sh: a shebang line cannot
    name an interpreter whose path has a space (a checkout under "my projects")."""
    script = path.with_name(path.name + ".py")
    script.write_text(source)
    path.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(script))} "$@"\n')
    script.chmod(0o644)
    path.chmod(0o755)


def test_make_run_stopped_right_after_starting_a_service_leaves_nothing_running(run, shims):
    """SIGTERM (or Ctrl-C) just after run.sh forked a service, before that service has made its own
    session with setsid: run.sh signalled a process group that did not exist yet, took the service for
    gone and exited, and the service started afterwards with nobody to stop it. setsid is made slow
    here (1 s) to hold that moment open."""
    real_setsid = shutil.which("setsid")
    _shim(
        shims / "setsid",
        f"import os, sys, time\ntime.sleep(1)\nos.execv({real_setsid!r}, [{real_setsid!r}, *sys.argv[1:]])\n",
    )
    run.start()
    run.wait_for("[run] starting gunicorn", timeout=90)
    run.proc.send_signal(signal.SIGTERM)
    code = run.proc.wait(timeout=30)
    assert code == 143, run.output()
    assert "[run] stopped" in run.output()
    assert _lock_holders(run.data) == [], f"still running after make run stopped:\n{run.output()}"


def test_make_run_stops_an_nginx_that_missed_the_first_quit(run, shims):
    """nginx notes a QUIT that arrives between installing its handlers and entering its main loop, then
    sleeps in sigsuspend until some other signal comes (ngx_master_process_cycle). A stand-in that
    does just that: run.sh must send the QUIT again rather than wait 5 s for its SIGKILL."""
    _shim(
        shims / "nginx",
        "import os, signal, sys\n"
        "quits = []\n"
        "signal.signal(signal.SIGQUIT, lambda *_: quits.append(1))\n"
        "with open(os.path.join(os.path.dirname(sys.argv[0]), 'up'), 'w') as up:\n"
        "    up.write(str(os.getpid()))\n"
        "while len(quits) < 2:\n"
        "    signal.pause()\n",
    )
    run.start()
    nginx = wait_until(lambda: int((shims / "up").read_text() or 0), timeout=90, what="the stand-in nginx")
    os.kill(int((run.data / "gunicorn.pid").read_text()), signal.SIGKILL)  # a failed start-up
    killed = time.monotonic()
    wait_until(lambda: _gone(nginx), timeout=30, what="the stand-in nginx to stop")
    took = time.monotonic() - killed  # nginx is stopped first: gunicorn's stop is not in this
    code = run.proc.wait(timeout=30)
    assert code == 1, run.output()
    assert "[run] gunicorn exited during start-up (signal KILL)" in run.output()
    assert took < 3, f"run.sh took {took:.1f}s to stop nginx:\n{run.output()}"
    assert _lock_holders(run.data) == []


def test_make_run_stops_the_worker_of_a_gunicorn_master_that_died_during_start_up(run, shims):
    """gunicorn's master dies (killed) during start-up after it forked its worker: run.sh stops the
    worker too, before it exits. It forgot the dead service, so the orphaned worker went on holding the
    port, the week file's writer and the data directory's lock. (nginx is a stand-in that never
    serves, so start-up never ends by itself.)"""
    _shim(shims / "nginx", "import signal\nwhile True:\n    signal.pause()\n")
    run.start()
    wait_until(lambda: http_get(f"http://{run.bind}/healthz")[0] == 200, timeout=90, what="gunicorn's worker")
    os.kill(int((run.data / "gunicorn.pid").read_text()), signal.SIGKILL)
    code = run.proc.wait(timeout=30)
    assert code == 1, run.output()
    assert "[run] gunicorn exited during start-up (signal KILL)" in run.output()
    assert _lock_holders(run.data) == [], f"still running after make run stopped:\n{run.output()}"


def _soft_nofile(pid: int) -> int:
    line = next(
        x for x in Path(f"/proc/{pid}/limits").read_text().splitlines() if x.startswith("Max open files")
    )
    return int(line.split()[3])


def test_make_run_gives_its_services_the_open_file_limit_they_are_configured_for(run):
    """A normal user's login gets a soft limit of 1,024 open files (the hard one is higher): nginx
    warned at every start that its 8192 worker_connections exceed it, and gunicorn's worker, made for
    10,000 connections, would refuse the 1,021st socket (EMFILE). run.sh raises the soft limit to the
    hard one (at most 65,536) for everything it starts."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if want <= 8192:
        pytest.skip(f"the hard limit here ({hard}) leaves nothing to raise")
    run.start(nofile=1024)
    try:
        run.wait_for("[run] ready: ", timeout=90)
        gunicorn = int((run.data / "gunicorn.pid").read_text())
        assert _soft_nofile(gunicorn) == want
        assert "exceed open file resource limit" not in (run.data / "logs" / "nginx.log").read_text()
    finally:
        run.interrupt()


NS_LAST_PID = Path("/proc/sys/kernel/ns_last_pid")


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, from /proc/<pid>/stat; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1])


def _loop_sleep(script: int) -> int | None:
    """The `sleep 0.5` between two rounds of run.sh's watch loop, if it is in one now."""
    for pid in _descendants(script):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/cmdline").read_bytes() == b"sleep\x000.5\x00":
                return pid
    return None


def _hold_the_watch_loop(script: int) -> int:
    """Stop run.sh's `sleep 0.5`: the script then waits on it, between two rounds of its watch loop,
    reaping other children as they die but looking at none of them, until the sleep is continued."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        sleep = _loop_sleep(script)
        if sleep is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(sleep, signal.SIGSTOP)
            stat = _stat(sleep)
            if stat is not None and stat[0] == "T":
                return sleep
            with contextlib.suppress(ProcessLookupError):
                os.kill(sleep, signal.SIGCONT)  # it had ended: wait for the next round's
        time.sleep(0.01)
    raise AssertionError("no `sleep 0.5` of run.sh's watch loop to stop")


def _process_with_pid(pid: int) -> subprocess.Popen:
    """A new process (not run.sh's) given `pid`, which must be free: the kernel hands out the pid after
    ns_last_pid next. Another process may take it first: then try again."""
    for _ in range(50):
        if Path(f"/proc/{pid}").exists():
            break
        try:
            NS_LAST_PID.write_text(str(pid - 1))
        except OSError as exc:  # root without CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE (some containers)
            pytest.skip(f"cannot choose a new process's pid here: {exc}")
        proc = subprocess.Popen(["sleep", "120"])
        if proc.pid == pid:
            return proc
        proc.kill()
        proc.wait()
    pytest.skip(f"pid {pid} was taken by another process first")


@pytest.mark.skipif(os.geteuid() != 0 or not NS_LAST_PID.exists(), reason="choosing a pid takes root")
def test_make_run_never_signals_a_process_that_got_a_dead_service_s_pid(run):
    """bash reaps a dead service by itself, and its pid is free from then on. run.sh took whatever
    process got that pid for the service: `kill -0` said it was alive, so the death went unnoticed (no
    restart), and at the stop the service's TERM — then, 25 s on, a SIGKILL — went to that process.
    Here Redis is killed while run.sh waits between two rounds of its watch loop, and a process of the
    test's own is given Redis's pid before run.sh looks again."""
    run.start()
    impostor: subprocess.Popen | None = None
    try:
        run.wait_for("[run] ready: ", timeout=90)
        script = run.proc.pid  # the wrapper execs bash: this is run.sh
        old = _redis_pid(run.redis_port)
        sleep = _hold_the_watch_loop(script)
        try:
            os.kill(old, signal.SIGKILL)
            wait_until(lambda: _stat(old) is None, timeout=10, what="Redis reaped by run.sh")
            impostor = _process_with_pid(old)
        finally:
            os.kill(sleep, signal.SIGCONT)
        run.wait_for(f"[run] redis (pid {old}) exited with signal KILL", timeout=10)
        run.wait_for("[run] redis restarted", timeout=10)
        ready = f"http://127.0.0.1:{run.http_port}/readyz"
        wait_until(lambda: http_get(ready)[0] == 200, timeout=20, what="ready again")
    finally:
        code = run.interrupt()
        survived = impostor is not None and impostor.poll() is None
        if impostor is not None:
            impostor.kill()
            impostor.wait()
    assert code == 130, run.output()
    assert survived, f"run.sh signalled pid {old}, no longer its Redis:\n{run.output()}"
