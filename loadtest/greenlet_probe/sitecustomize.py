"""CPU of the worker's hub thread by greenlet, for a server started by a load test (BENCHMARKS.md,
"Issue 12, seventh pass": a tap at quiet hours).

Put this directory on the server's PYTHONPATH and Python imports it at start-up, in gunicorn's master
and (inherited through the fork) its worker:

    .venv/bin/python loadtest/tap_ceiling.py --rates 100 --duration 10 --healthz 0 --attempts 1 \\
        --sockets 100 --env PYTHONPATH=loadtest/greenlet_probe --env TAP_GREENLET_PROBE_DIR=/tmp/gp

At every greenlet switch of the main thread, the thread's CPU since the last switch is charged to the
greenlet that was running (`hub` for gevent's loop; a supervised worker by its class, e.g.
`SqliteWriter`; others by their function, e.g. `_read` for a socket's reader), and the switch is
counted to the greenlet switched to. About once a second each process appends to
``$TAP_GREENLET_PROBE_DIR/cpu-<pid>.txt`` the share of a core each took and how many times a second
it was switched to (divided by the taps a second: switches per tap).
The probe costs a `thread_time` call per switch: compare runs with it, not with runs without it.
Nothing happens without TAP_GREENLET_PROBE_DIR.
"""

import collections
import os
import time

_DIR = os.environ.get("TAP_GREENLET_PROBE_DIR")


def _name(g) -> str:
    if g is None:
        return "None"
    if type(g).__name__ == "Hub":
        return "hub"
    run = getattr(g, "_run", None) or getattr(g, "run", None)
    name = getattr(run, "__qualname__", None) or type(g).__name__
    if name == "Supervisor._run" and getattr(g, "args", ()):
        name = type(g.args[0]).__name__  # the supervised worker
    return name


if _DIR:
    import greenlet

    os.makedirs(_DIR, exist_ok=True)
    _cpu: collections.Counter = collections.Counter()
    _into: collections.Counter = collections.Counter()  # switches to each greenlet
    _state = {"since": time.monotonic(), "running": "start", "cpu": time.thread_time()}

    def _trace(event: str, args) -> None:
        if event not in ("switch", "throw"):
            return
        now_cpu = time.thread_time()
        _cpu[_state["running"]] += now_cpu - _state["cpu"]
        _state["cpu"], _state["running"] = now_cpu, _name(args[1])
        _into[_state["running"]] += 1
        now = time.monotonic()
        if now - _state["since"] >= 1:
            wall, _state["since"] = now - _state["since"], now
            with open(os.path.join(_DIR, f"cpu-{os.getpid()}.txt"), "a") as out:
                out.write(
                    f"--- {time.time():.1f} {wall:.2f} s, {sum(_cpu.values()) / wall:.1%} of a core, "
                    f"{sum(_into.values()) / wall:.0f} switches/s\n"
                )
                out.writelines(
                    f"{v / wall:7.2%}\t{_into[k] / wall:7.0f}/s\t{k}\n" for k, v in _cpu.most_common(12)
                )
            _cpu.clear()
            _into.clear()

    greenlet.settrace(_trace)

    def _after_fork() -> None:
        _cpu.clear()
        _into.clear()
        _state["cpu"] = time.thread_time()

    os.register_at_fork(after_in_child=_after_fork)
