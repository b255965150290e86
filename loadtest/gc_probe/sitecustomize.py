"""Garbage-collection pauses of a server started by a load test (BENCHMARKS.md, "Garbage collection").

Put this directory on the server's PYTHONPATH and Python imports it at start-up, in gunicorn's master
and (inherited) its worker:

    .venv/bin/python loadtest/tap_ceiling.py --rates 3000 --duration 10 --healthz 0 --attempts 1 \\
        --env PYTHONPATH=loadtest/gc_probe --env TAP_GC_PROBE_DIR=/tmp/gc

Each process appends to ``$TAP_GC_PROBE_DIR/gc-<pid>.log`` one line per full (generation 2) collection
and per collection over 5 ms: wall time, generation, pause, objects collected, objects tracked in
generation 2 and objects frozen (`gc.freeze`). Nothing happens without TAP_GC_PROBE_DIR.
"""

import gc
import os
import time

_DIR = os.environ.get("TAP_GC_PROBE_DIR")
_started: list[float] = [0.0]


def _probe(phase: str, info: dict) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
        return
    pause_ms = (time.perf_counter() - _started[0]) * 1000
    generation = info["generation"]
    if generation == 2 or pause_ms > 5:
        tracked = len(gc.get_objects(2)) if generation == 2 else ""
        line = (
            f"{time.time():.3f} gen{generation} {pause_ms:.1f}ms collected={info['collected']} "
            f"tracked={tracked} frozen={gc.get_freeze_count()}\n"
        )
        with open(os.path.join(_DIR or ".", f"gc-{os.getpid()}.log"), "a") as out:
            out.write(line)


if _DIR:
    os.makedirs(_DIR, exist_ok=True)
    gc.callbacks.append(_probe)
