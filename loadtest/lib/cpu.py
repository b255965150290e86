"""CPU accounting from /proc: per process, per thread, the whole machine, and waiting for quiet."""

from __future__ import annotations

import os
import time
from pathlib import Path

from loadtest.lib.stack import log

# ---- CPU accounting ----------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int, which: str = "both") -> float:
    """User + system (or only "user" / "system") CPU seconds of a process (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    user, system = int(fields[11]) / _TICK, int(fields[12]) / _TICK
    return user if which == "user" else system if which == "system" else user + system


def cpu_busy() -> dict[str, float]:
    """Busy CPU seconds per CPU since boot (user+nice+system+irq+softirq+steal)."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            f = [int(x) for x in line.split()[1:]]
            out[line.split()[0]] = (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / _TICK
    return out


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread of a process, keyed "tid name"."""
    out = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            head, rest = (task / "stat").read_text().rsplit(")", 1)
        except OSError:
            continue
        f = rest.split()
        out[f"{task.name} {head.split('(', 1)[1]}"] = (int(f[11]) + int(f[12])) / _TICK
    return out


class CpuWindow:
    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.t0 = time.monotonic()
        self.busy0 = cpu_busy()
        self.proc0 = {k: proc_cpu(p) for k, p in pids.items()}
        self.sys0 = {k: proc_cpu(p, "system") for k, p in pids.items()}
        self.threads0 = thread_cpu(pids["worker"]) if "worker" in pids else {}
        self.self0 = sum(os.times()[:2])

    def end(self) -> dict:
        wall = time.monotonic() - self.t0
        busy1 = cpu_busy()
        out = {"wall_s": wall}
        for cpu, v in busy1.items():
            out[f"{cpu}_busy"] = (v - self.busy0.get(cpu, 0)) / wall
        for k, p in self.pids.items():
            out[f"{k}_cores"] = (proc_cpu(p) - self.proc0[k]) / wall
            out[f"{k}_system_cores"] = (proc_cpu(p, "system") - self.sys0[k]) / wall
        out["generator_cores"] = (sum(os.times()[:2]) - self.self0) / wall
        if "worker" in self.pids:
            t1 = thread_cpu(self.pids["worker"])
            out["worker_threads_cores"] = {
                k: round((v - self.threads0.get(k, 0.0)) / wall, 3)
                for k, v in t1.items()
                if v - self.threads0.get(k, 0.0) > 0
            }
        ours = sum(out[f"{k}_cores"] for k in self.pids) + out["generator_cores"]
        out["others_cores"] = max(0.0, sum(out[f"{c}_busy"] for c in busy1) - ours)
        # (others also absorbs kernel work done for our processes outside their own accounting:
        # softirq for loopback TCP is charged to whatever runs on the CPU, so a few % is normal)
        return out


def wait_quiet(pids: dict[str, int], max_others: float, timeout: float) -> dict:
    """Sample CPU use for 2 s until other processes use at most `max_others` cores (or `timeout`).

    Returns the last sample: `worker_cores` there is the idle worker's own use (price sim, quotes,
    websockets) that every run pays regardless of the bet rate."""
    deadline = time.monotonic() + timeout
    while True:
        w = CpuWindow(pids)
        time.sleep(2.0)
        c = w.end()
        if c["others_cores"] <= max_others or time.monotonic() > deadline:
            if c["others_cores"] > max_others:
                log(
                    f"machine still busy after {timeout:.0f}s (others {c['others_cores']:.2f} cores); measuring anyway"
                )
            return c
        log(f"waiting for a quiet machine: others use {c['others_cores']:.2f} cores; load {loadavg()}")


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()
