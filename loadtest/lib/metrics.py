"""Reading the app's Prometheus /metrics: counters, deltas, histogram quantiles."""

from __future__ import annotations

import math
import re

from loadtest.lib.rawhttp import Api

# ---- /metrics ----------------------------------------------------------------------------------------

_METRIC_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def scrape(api: Api) -> dict[str, float]:
    status, text = api.call("GET", "/metrics")
    assert status == 200, status
    out: dict[str, float] = {}
    for line in (text if isinstance(text, str) else "").splitlines():
        m = _METRIC_RE.match(line)
        if m and not line.startswith("#"):
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def metric_delta(a: dict, b: dict, name: str) -> float:
    return b.get(name, 0.0) - a.get(name, 0.0)


def hist_quantiles(a: dict, b: dict, name: str, qs=(0.5, 0.99), seconds: bool = True) -> dict[str, str]:
    """Quantiles of a Prometheus histogram's increase between two scrapes, as bucket upper bounds."""
    buckets = []
    for k, v in b.items():
        if k.startswith(name + "_bucket{"):
            le = re.search(r'le="([^"]+)"', k).group(1)
            buckets.append((math.inf if le == "+Inf" else float(le), v - a.get(k, 0.0)))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    out = {}
    for q in qs:
        if not total:
            out[f"p{int(q * 100)}"] = "n/a"
            continue
        for le, c in buckets:
            if c >= q * total:
                if not seconds:
                    out[f"p{int(q * 100)}"] = f"≤ {le:g}"
                else:
                    out[f"p{int(q * 100)}"] = "> 5 s" if le == math.inf else f"≤ {le * 1000:g} ms"
                break
    out["count"] = int(total)
    return out


def rejected_by_reason(a: dict, b: dict) -> dict[str, int]:
    out = {}
    for k, v in b.items():
        if k.startswith("tap_bets_rejected_total{"):
            d = int(v - a.get(k, 0.0))
            if d:
                out[re.search(r'reason="([^"]*)"', k).group(1)] = d
    return out
