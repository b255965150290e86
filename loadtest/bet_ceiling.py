#!/usr/bin/env python3
"""Signed-bet ceiling: constant offered rates of pre-signed `POST /api/v1/bets`, open loop, one core.

    .venv/bin/python loadtest/bet_ceiling.py                       # 1k, 2k, 3k bets/s, 20 s each
    .venv/bin/python loadtest/bet_ceiling.py --rates 3000 --duration 20 --profile /tmp/bet.pyspy
    .venv/bin/python loadtest/bet_ceiling.py --url http://127.0.0.1:8000 ...   # an existing server

What it does (everything on 127.0.0.1, every step bounded in time, everything it starts is stopped):

1. Starts a private redis-server (CPU 1) and gunicorn (`-c gunicorn.conf.py`, CPU 0) on free ports
   with TAP_DATA_DIR=<tmp>, TAP_DEV_MODE=1 and the app's own rate limits off (all load comes from
   one IP: TAP_RATE_PER_IP=0, TAP_RATE_PER_ADDRESS=0, TAP_RATE_AUTH_PER_IP=0). The grid settings stay
   at their defaults; the simulated feed's volatility is lowered (TAP_SIM_VOLATILITY, default here
   0.15) so the price row drifts less during a run and the pre-chosen cells stay placeable. This
   process pins itself to CPU 1.
2. Logs in enough traders for the largest run, SIWE with a session key bound, signed with coincurve
   (not eth-account: ~40 µs a signature), and deposits for each. A few bets are placed and checked
   first (202, then `confirmed`), and the fast signer is cross-checked against eth-account.
3. Measures the bare `/healthz` ceiling with wrk (closed loop, CPU 1), and `/healthz` at the largest
   offered rate through this generator (the generator's own floor).
4. For each rate R: picks the cells placeable during the whole run (default grid: columns
   `now_col + 2·5 ≤ t_start < now_col + 12·5`, rows near the current price row and quoted), gives each
   trader distinct cells, signs R × duration bodies with ts = the middle of the run (valid ±30 s),
   opens `/ws?token=` for a sample of traders, then sends the bodies open loop: request i is due at
   t0 + i/R and its latency is counted from that instant (no coordinated omission), on a pool of
   keep-alive connections (64, like nginx's upstream keepalive). Afterwards it waits for the writer
   to drain, reads /metrics and checks a sample of bets with `GET /api/v1/bets/<id>`.
5. Prints one markdown row per run and writes everything to --json.

"Time to bet:confirmed" is measured on the traders' websockets from the instant the bet was due
(a tap) to the `bet:confirmed` frame; the server's own histogram `tap_bet_confirm_seconds`
(acceptance → commit) is reported beside it.

The helpers (Key, siwe_message, bet_text, RawHttp, login_trader) are imported by loadtest/locustfile.py.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import random
import re
import secrets
import shutil
import signal
import socket as _stdsocket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from coincurve import PrivateKey
from Crypto.Hash import keccak as _keccak

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"

# ---- signing (SPEC §5, §6) -------------------------------------------------------------------------

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_HALF_N = SECP256K1_N // 2
_EIP191 = b"\x19Ethereum Signed Message:\n"


def keccak256(data: bytes) -> bytes:
    return _keccak.new(digest_bits=256, data=data).digest()


def checksum(address_hex40: str) -> str:
    """EIP-55 mixed-case form of a 40-hex-digit address (no 0x)."""
    a = address_hex40.lower()
    h = keccak256(a.encode()).hex()
    return "0x" + "".join(c.upper() if c.isalpha() and int(h[i], 16) >= 8 else c for i, c in enumerate(a))


class Key:
    """A secp256k1 key that signs EIP-191 personal_sign messages: r ‖ s ‖ v, v = 27 + recid, low s."""

    def __init__(self, secret: bytes | None = None) -> None:
        self.pk = PrivateKey(secret) if secret else PrivateKey()
        raw = keccak256(self.pk.public_key.format(compressed=False)[1:])[12:].hex()
        self.address = "0x" + raw  # lowercase
        self.checksum_address = checksum(raw)

    def personal_sign(self, text: str) -> str:
        data = text.encode()
        digest = keccak256(_EIP191 + str(len(data)).encode() + data)
        sig = self.pk.sign_recoverable(digest, hasher=None)
        s = int.from_bytes(sig[32:64], "big")
        recid = sig[64]
        if s > _HALF_N:  # libsecp256k1 already normalises; kept so the contract is explicit
            s, recid = SECP256K1_N - s, recid ^ 1
        return "0x" + sig[:32].hex() + s.to_bytes(32, "big").hex() + format(27 + recid, "02x")


def iso_ms(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def siwe_message(
    domain: str, chain_id: int, wallet: Key, nonce: str, session_key: Key | None, now_ms: int
) -> str:
    """EIP-4361 text, built from the EIP's layout."""
    lines = [
        f"{domain} wants you to sign in with your Ethereum account:",
        wallet.checksum_address,
        "",
        "Sign in to Tap Trading.",
        "",
        f"URI: https://{domain}",
        "Version: 1",
        f"Chain ID: {chain_id}",
        f"Nonce: {nonce}",
        f"Issued At: {iso_ms(now_ms)}",
    ]
    if session_key is not None:
        lines += ["Resources:", f"- urn:tap-trading:session-key:{session_key.checksum_address}"]
    return "\n".join(lines)


def bet_text(
    domain: str, chain_id: int, address: str, cell: str, stake: str, min_mult: str, nonce: str, ts: int
) -> str:
    """The exact text a bet signature covers (SPEC §6)."""
    return (
        f"tap-trading:bet\ndomain:{domain}\nchain-id:{chain_id}\naddress:{address}\ncell:{cell}\n"
        f"stake:{stake}\nmin-multiplier:{min_mult}\nnonce:{nonce}\nts:{ts}"
    )


# ---- a minimal keep-alive HTTP/1.1 client (gevent-friendly once sockets are patched) --------------

_CL_RE = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
_CLOSE_RE = re.compile(rb"\r\nconnection:\s*close", re.IGNORECASE)


def build_request(
    method: str, path: str, host: str, body: bytes | None = None, token: str | None = None
) -> bytes:
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    if token:
        head.append(f"Authorization: Bearer {token}")
    if body is not None:
        head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + (body or b"")


class RawHttp:
    """One keep-alive connection; `request(raw)` → (status, body). Reconnects after a close."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.sock = None
        self.buf = b""

    def _connect(self) -> None:
        import socket

        self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
        self.sock = None

    def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.sock is None:
            self._connect()
        try:
            self.sock.sendall(raw)
            buf = self.buf
            while True:
                i = buf.find(b"\r\n\r\n")
                if i >= 0:
                    break
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("server closed the connection")
                buf += chunk
            head = buf[:i]
            status = int(head[9:12])
            m = _CL_RE.search(head)
            if m is None:
                raise ConnectionError(f"response without Content-Length: {head[:200]!r}")
            end = i + 4 + int(m.group(1))
            while len(buf) < end:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("server closed the connection mid-body")
                buf += chunk
            body, self.buf = buf[i + 4 : end], buf[end:]
            if _CLOSE_RE.search(head):
                self.close()
            return status, body
        except BaseException:
            self.close()
            raise


class Api:
    """JSON calls for setup and checks (not the measured path)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = f"{host}:{port}"
        self.http = RawHttp(host, port)

    def call(
        self, method: str, path: str, body: object = None, token: str | None = None
    ) -> tuple[int, object]:
        data = None if body is None else orjson.dumps(body)
        req = build_request(method, path, self.host, data, token)
        reused = self.http.sock is not None
        try:
            status, raw = self.http.request(req)
        except (ConnectionError, OSError):
            if not reused:
                raise
            status, raw = self.http.request(req)  # the server closed an idle keep-alive connection
        try:
            return status, orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            return status, raw.decode(errors="replace")


@dataclass
class Trader:
    wallet: Key
    session_key: Key
    token: str
    index: int = 0
    used_cells: set = field(default_factory=set)

    @property
    def address(self) -> str:
        return self.wallet.address


def login_trader(
    api: Api, domain: str, chain_id: int, deposit: str | None = "1000", index: int = 0
) -> Trader:
    """SIWE login binding a fresh session key, then a mock deposit (dev mode)."""
    wallet, skey = Key(), Key()
    status, body = api.call("GET", "/api/v1/auth/nonce")
    assert status == 200, (status, body)
    text = siwe_message(domain, chain_id, wallet, body["nonce"], skey, int(time.time() * 1000))
    status, body = api.call(
        "POST", "/api/v1/auth/login", {"message": text, "signature": wallet.personal_sign(text)}
    )
    assert status == 200, (status, body)
    assert body["session_key"] and body["session_key"].lower() == skey.address, body
    trader = Trader(wallet, skey, body["token"], index)
    if deposit:
        status, body = api.call("POST", "/api/v1/deposits", {"amount": deposit}, trader.token)
        assert status == 200, (status, body)
    return trader


# ---- the server stack --------------------------------------------------------------------------------


def free_port() -> int:
    with _stdsocket.socket() as s:
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
        self._wait(lambda: _tcp_ok(self.redis_port), 10, "redis-server")
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


def _tcp_ok(port: int) -> bool:
    with _stdsocket.create_connection(("127.0.0.1", port), timeout=1):
        return True


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


# ---- the open-loop sender ----------------------------------------------------------------------------


@dataclass
class RunResult:
    n: int
    intended: list  # monotonic due time per request
    sent: list
    done: list
    status: list
    body: list  # bet id (202) or error code


def open_loop(
    host: str, port: int, requests: list[bytes], rate: float, conns: int, grace_s: float, parse=True
) -> RunResult:
    """Send `requests[i]` at t0 + i/rate on a shared pool of `conns` keep-alive connections.

    Latency is counted from the due instant, so a slow server cannot hide behind a busy generator
    (no coordinated omission). Requests not started by the end of the schedule + `grace_s` are not sent.
    """
    import gevent
    from gevent.queue import Queue

    n = len(requests)
    res = RunResult(n, [0.0] * n, [0.0] * n, [0.0] * n, [0] * n, [None] * n)
    q: Queue = Queue()
    t0 = time.monotonic() + 0.3
    hard_stop = t0 + n / rate + grace_s
    for i in range(n):
        res.intended[i] = t0 + i / rate

    def dispatcher() -> None:
        i = 0
        while i < n:
            now = time.monotonic()
            due = min(n, int((now - t0) * rate) + 1) if now >= t0 else 0
            while i < due:
                q.put(i)
                i += 1
            if i < n:
                gevent.sleep(max(0.0, t0 + i / rate - time.monotonic()))
        for _ in range(conns):
            q.put(None)

    def worker() -> None:
        http = RawHttp(host, port, timeout=grace_s)
        while True:
            i = q.get()
            if i is None:
                break
            now = time.monotonic()
            if now > hard_stop:
                res.status[i] = -2  # not sent: the generator's backlog outlived the run
                continue
            res.sent[i] = now
            try:
                status, body = http.request(requests[i])
            except Exception as exc:
                res.done[i] = time.monotonic()
                res.status[i] = -1
                res.body[i] = type(exc).__name__
                continue
            res.done[i] = time.monotonic()
            res.status[i] = status
            if parse:
                try:
                    doc = orjson.loads(body)
                    res.body[i] = doc["bet_id"] if status == 202 else doc["error"]["code"]
                except Exception:
                    res.body[i] = body[:80]
        http.close()

    greenlets = [gevent.spawn(worker) for _ in range(conns)]
    d = gevent.spawn(dispatcher)
    gevent.joinall([d, *greenlets], timeout=n / rate + grace_s + 30)
    gevent.killall([d, *greenlets], timeout=2)
    return res


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def latency_summary(res: RunResult, ok_status: int | None = None) -> dict:
    lat = [(res.done[i] - res.intended[i]) * 1000 for i in range(res.n) if res.status[i] > 0]
    svc = [(res.done[i] - res.sent[i]) * 1000 for i in range(res.n) if res.status[i] > 0]
    sent = [res.sent[i] for i in range(res.n) if res.sent[i]]
    statuses: dict[str, int] = {}
    for i in range(res.n):
        key = str(res.status[i]) if res.status[i] != 202 or ok_status is None else "202"
        if res.status[i] not in (200, 202) and res.status[i] > 0:
            key = f"{res.status[i]} {res.body[i]}"
        elif res.status[i] == -1:
            key = f"error {res.body[i]}"
        elif res.status[i] == -2:
            key = "not sent"
        statuses[key] = statuses.get(key, 0) + 1
    span = (max(sent) - min(sent)) if len(sent) > 1 else float("nan")
    return {
        "offered": res.n,
        "send_span_s": span,
        "sent_per_s": (len(sent) - 1) / span if len(sent) > 1 else float("nan"),
        "statuses": statuses,
        "p50_ms": pct(lat, 0.50),
        "p90_ms": pct(lat, 0.90),
        "p99_ms": pct(lat, 0.99),
        "p999_ms": pct(lat, 0.999),
        "max_ms": max(lat) if lat else float("nan"),
        "service_p50_ms": pct(svc, 0.50),
        "service_p99_ms": pct(svc, 0.99),
    }


# ---- websockets (time to bet:confirmed) --------------------------------------------------------------


class WsListeners:
    """One websocket per sampled trader; records when each `bet:confirmed` / `bet:rejected` arrives."""

    def __init__(self, host: str, port: int, traders: list[Trader]) -> None:
        self.url = f"ws://{host}:{port}/ws?token="
        self.traders = traders
        self.confirmed: dict[str, float] = {}
        self.rejected: dict[str, str] = {}
        self.frames = 0
        self.errors: list[str] = []
        self._greenlets = []
        self._sockets = []

    def start(self) -> None:
        import gevent
        import websocket  # websocket-client; sockets are gevent-patched in this process

        def listen(trader: Trader) -> None:
            try:
                ws = websocket.create_connection(self.url + trader.token, timeout=5)
            except Exception as exc:
                self.errors.append(f"connect: {exc!r}")
                return
            self._sockets.append(ws)
            ws.settimeout(None)
            try:
                while True:
                    raw = ws.recv()
                    now = time.monotonic()
                    self.frames += 1
                    if not raw or '"bet:' not in raw:
                        continue
                    msg = orjson.loads(raw)
                    if msg.get("type") == "bet:confirmed":
                        self.confirmed[msg["bet_id"]] = now
                    elif msg.get("type") == "bet:rejected":
                        self.rejected[msg["bet_id"]] = msg.get("reason", "")
            except Exception as exc:
                if not isinstance(exc, (websocket.WebSocketConnectionClosedException, OSError)):
                    self.errors.append(f"recv: {exc!r}")

        self._greenlets = [gevent.spawn(listen, t) for t in self.traders]
        gevent.sleep(1.0)  # connected and past the first status/price/grid frames

    def stop(self) -> None:
        import gevent

        for ws in self._sockets:
            with contextlib.suppress(Exception):
                ws.close(timeout=1)
        gevent.killall(self._greenlets, timeout=3)


# ---- planning cells ------------------------------------------------------------------------------------


def column_of(t: float, cs: int) -> int:
    return int(t // cs) * cs


def plan_cells(grid: dict, start_s: float, end_s: float, row_margin: int) -> list[str]:
    """Cells placeable at every instant of [start_s, end_s] (SPEC §3) that the grid quotes now,
    within `row_margin` rows of the current price row."""
    st = grid["settings"]
    cs, lead, ahead = st["column_seconds"], st["min_lead_columns"], st["columns_ahead"]
    lo_t = column_of(end_s, cs) + lead * cs
    hi_t = column_of(start_s, cs) + ahead * cs  # exclusive
    step_cents = round(float(st["price_step"]) * 100)
    cur_row = round(float(grid["price"]) * 100) // step_cents
    cells = []
    for ci, t in enumerate(grid["columns"]):
        if not lo_t <= t < hi_t:
            continue
        for ri, r in enumerate(grid["rows"]):
            if abs(r - cur_row) <= row_margin and grid["quotes"][ci][ri] is not None:
                cells.append(f"{t}:{r}")
    return cells


def cells_per_trader_estimate(
    duration: float, margin_s: float, cs: int = 5, lead: int = 2, ahead: int = 12, row_margin: int = 6
) -> int:
    cols = ahead - lead - math.ceil((duration + margin_s) / cs) - 1
    return max(0, cols) * (2 * row_margin + 1)


# ---- one measured run ----------------------------------------------------------------------------------


def assign_pairs(traders: list[Trader], cells: list[str], n: int) -> list[tuple[int, str]]:
    """n (trader index, cell) pairs never used before, interleaved so each trader's bets spread over the run."""
    free = [[c for c in cells if c not in t.used_cells] for t in traders]
    pairs: list[tuple[int, str]] = []
    for j in range(len(cells)):
        for k, fk in enumerate(free):
            if j < len(fk):
                pairs.append((k, fk[j]))
                if len(pairs) == n:
                    return pairs
    raise RuntimeError(f"only {len(pairs)} unused (trader, cell) pairs for {n} bets; use more --traders")


def sign_bodies(
    traders: list[Trader],
    cells: list[str],
    n: int,
    domain: str,
    chain_id: int,
    ts: int,
    host: str,
    stake: str,
) -> tuple[list[bytes], list[int]]:
    """n signed bet requests; request i belongs to traders[owner[i]], each (trader, cell) used once."""
    reqs, owner = [], []
    for k, cell in assign_pairs(traders, cells, n):
        tr = traders[k]
        tr.used_cells.add(cell)
        nonce = secrets.token_hex(8)
        text = bet_text(domain, chain_id, tr.address, cell, stake, "1.01", nonce, ts)
        body = (
            b'{"cell":"'
            + cell.encode()
            + b'","stake":"'
            + stake.encode()
            + b'","min_multiplier":"1.01","nonce":"'
            + nonce.encode()
            + b'","ts":'
            + str(ts).encode()
            + b',"signature":"'
            + tr.session_key.personal_sign(text).encode()
            + b'"}'
        )
        reqs.append(build_request("POST", "/api/v1/bets", host, body, tr.token))
        owner.append(k)
    return reqs, owner


def measure_bets(
    api: Api,
    stack_pids: dict,
    host: str,
    port: int,
    traders: list[Trader],
    rate: int,
    duration: float,
    conns: int,
    ws_sample: int,
    row_margin: int,
    domain: str,
    chain_id: int,
    profile: Path | None,
    worker_pid: int | None,
    quiet: tuple[float, float] | None = None,
) -> dict:
    import gevent

    n = int(rate * duration)
    sample = [t for t in traders[:: max(1, len(traders) // ws_sample)][:ws_sample]] if ws_sample else []
    ws = WsListeners(host, port, sample)
    if sample:
        ws.start()  # before the idle sample: connected websockets are part of the idle cost
    idle = wait_quiet(stack_pids, *quiet) if quiet else {}
    status, grid = api.call("GET", "/api/v1/grid")
    assert status == 200 and grid["price"], grid
    sign_est = n * 60e-6 + 0.5  # signing time (~45 µs each)
    start = time.time() + sign_est + 0.3
    end = start + duration + 3.0  # + the last requests' latency
    cells = plan_cells(grid, start - 0.5, end, row_margin)
    random.shuffle(cells)
    run_traders = traders  # assign_pairs spreads the bets over every trader with unused cells
    ts = int((start + end) / 2 * 1000)  # valid from end − 30 s to start + 30 s
    assert end - start < 58, "run too long for one signed batch (ts must stay within ±30 s)"

    t_sign = time.monotonic()
    reqs, owner = sign_bodies(run_traders, cells, n, domain, chain_id, ts, f"{host}:{port}", "1")
    sign_s = time.monotonic() - t_sign
    log(
        f"rate {rate}/s: {n} bodies signed in {sign_s:.1f}s ({sign_s / n * 1e6:.0f} µs each); "
        f"{len(cells)} cells × {len(run_traders)} traders; ws on {len(sample)} traders; load {loadavg()}"
    )
    wait = start - time.time()
    if wait > 0:
        time.sleep(wait)
    if time.time() > start + 2:
        log(f"warning: signing overran the plan by {time.time() - start:.1f}s")

    before = scrape(api)
    spy = None
    if profile is not None and worker_pid is not None:
        spy = subprocess.Popen(
            [
                "taskset",
                "-c",
                "1",
                str(VENV_BIN / "py-spy"),
                "record",
                "--pid",
                str(worker_pid),
                "--rate",
                os.environ.get("BET_CEILING_PYSPY_RATE", "200"),
                *(["--nonblocking"] if os.environ.get("BET_CEILING_PYSPY_NONBLOCKING") == "1" else []),
                "--threads",
                "--format",
                "raw",
                "--duration",
                str(int(duration) + 60),
                "-o",
                str(profile),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        time.sleep(0.5)
    win = CpuWindow(stack_pids)
    res = open_loop(host, port, reqs, rate, conns, grace_s=10.0)
    cpu = win.end()
    if spy is not None:
        spy.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
        try:
            spy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()
    summary = latency_summary(res, ok_status=202)
    served = sum(1 for x in res.status if x > 0)
    accepted = [i for i in range(n) if res.status[i] == 202]

    # drain: the writer commits what was accepted; then collect the websocket frames
    deadline = time.monotonic() + 20
    after = scrape(api)
    while time.monotonic() < deadline:
        settled = metric_delta(before, after, "tap_bets_confirmed_total") + sum(
            rejected_by_reason(before, after).values()
        )
        if settled >= len(accepted) and after.get("tap_write_queue_depth", 0) == 0:
            break
        gevent.sleep(0.25)
        after = scrape(api)
    gevent.sleep(1.0)
    if sample:
        ws.stop()

    # time to bet:confirmed on the websockets, from the instant the bet was due (the tap)
    sample_idx = {t.index for t in sample}
    ws_bets = [i for i in accepted if run_traders[owner[i]].index in sample_idx]
    ttc = [
        (ws.confirmed[res.body[i]] - res.intended[i]) * 1000 for i in ws_bets if res.body[i] in ws.confirmed
    ]
    ttc_after_202 = [
        (ws.confirmed[res.body[i]] - res.done[i]) * 1000 for i in ws_bets if res.body[i] in ws.confirmed
    ]

    # a sample of GET /bets/<id>
    check = random.sample(accepted, min(200, len(accepted)))
    got: dict[str, int] = {}
    for i in check:
        s, b = api.call("GET", f"/api/v1/bets/{res.body[i]}", token=run_traders[owner[i]].token)
        k = b.get("status", str(s)) if isinstance(b, dict) else str(s)
        got[k] = got.get(k, 0) + 1

    confirmed = int(metric_delta(before, after, "tap_bets_confirmed_total"))
    worker_cores = cpu.get("worker_cores", float("nan"))
    out = {
        "kind": "bets",
        "rate": rate,
        "duration_s": duration,
        "conns": conns,
        "traders": len(set(owner)),
        "cells_per_trader": len(cells),
        "sign_us": sign_s / n * 1e6,
        **summary,
        "accepted": len(accepted),
        "accepted_per_s": len(accepted) / summary["send_span_s"] if summary["send_span_s"] else float("nan"),
        "confirmed": confirmed,
        "rejected_after_accept": rejected_by_reason(before, after),
        "server_accepted_metric": int(metric_delta(before, after, "tap_bets_accepted_total")),
        "confirm_hist": hist_quantiles(before, after, "tap_bet_confirm_seconds"),
        "batch_hist": hist_quantiles(before, after, "tap_write_batch_size", qs=(0.5, 0.99), seconds=False),
        "commit_hist": hist_quantiles(before, after, "tap_write_commit_seconds"),
        "ws_traders": len(sample),
        "ws_bets": len(ws_bets),
        "ws_confirmed": len(ttc),
        "ws_errors": ws.errors[:5],
        "ttc_p50_ms": pct(ttc, 0.5),
        "ttc_p99_ms": pct(ttc, 0.99),
        "ttc_max_ms": max(ttc) if ttc else float("nan"),
        "ttc_after_202_p50_ms": pct(ttc_after_202, 0.5),
        "ttc_after_202_p99_ms": pct(ttc_after_202, 0.99),
        "get_sample": got,
        "cpu": cpu,
        "served": served,
        "served_per_s": served / cpu["wall_s"],
        "worker_us_per_request": worker_cores * cpu["wall_s"] / max(1, served) * 1e6,
        "idle": idle,
        # the worker's CPU per bet request beyond what it burns idle (price sim, quotes, websockets)
        "worker_marginal_us_per_bet": (worker_cores - idle.get("worker_cores", 0.0))
        * cpu["wall_s"]
        / max(1, served)
        * 1e6
        if idle
        else None,
        "loadavg": loadavg(),
    }
    if profile is not None:
        threads = sorted(cpu.get("worker_threads_cores", {}).values(), reverse=True)
        hub_us = threads[0] * cpu["wall_s"] / max(1, served) * 1e6 if threads else float("nan")
        out["profile_hint"] = (
            f"{VENV_BIN / 'python'} loadtest/profile_bet_path.py analyze {profile} --requests {served} "
            f"--rate {os.environ.get('BET_CEILING_PYSPY_RATE', '200')} --main-only --total-us {hub_us:.0f}"
        )
        log(f"profile written; analyse the hub thread with:\n    {out['profile_hint']}")
    return out


def measure_healthz_open(host: str, port: int, rate: int, duration: float, conns: int, pids: dict) -> dict:
    reqs = [build_request("GET", "/healthz", f"{host}:{port}")] * int(rate * duration)
    win = CpuWindow(pids)
    res = open_loop(host, port, reqs, rate, conns, grace_s=10.0, parse=False)
    cpu = win.end()
    return {
        "kind": "healthz-open",
        "rate": rate,
        "duration_s": duration,
        "conns": conns,
        **latency_summary(res),
        "cpu": cpu,
        "loadavg": loadavg(),
    }


def measure_healthz_wrk(port: int, duration: int, conns: int, pids: dict) -> dict:
    win = CpuWindow(pids)
    out = subprocess.run(
        [
            "taskset",
            "-c",
            "1",
            "timeout",
            str(duration + 30),
            "wrk",
            "-t",
            "2",
            "-c",
            str(conns),
            "-d",
            f"{duration}s",
            "--timeout",
            "10s",
            "--latency",
            f"http://127.0.0.1:{port}/healthz",
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    cpu = win.end()

    def ms(v: str) -> float:
        n = float(re.match(r"[0-9.]+", v).group(0))
        return n / 1000 if v.endswith("us") else n * 1000 if v.endswith("s") and not v.endswith("ms") else n

    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
    p50 = ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    return {
        "kind": "healthz-wrk",
        "conns": conns,
        "duration_s": duration,
        "req_per_s": rps,
        "p50_ms": p50,
        "p99_ms": p99,
        "non2xx": re.search(r"Non-2xx.*?(\d+)", out).group(1) if "Non-2xx" in out else "0",
        "cpu": cpu,
        "loadavg": loadavg(),
    }


def run_sink(rates: list[int], duration: float, conns: int) -> list[dict]:
    """The generator's own capacity: signed bet requests, offered open loop to an nginx on CPU 0 that
    answers 202 at once (nginx serves far more than these rates, so the generator is the limit)."""
    tmp = Path(tempfile.mkdtemp(prefix="bet-sink-"))
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(f"""daemon off; master_process off; worker_processes 1;
error_log {tmp}/error.log; pid {tmp}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};
  uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
  server {{
    listen 127.0.0.1:{port}; keepalive_requests 10000000; keepalive_timeout 120;
    location / {{ default_type application/json;
      return 202 '{{"bet_id":"0123456789abcdef012345","status":"pending"}}'; }}
  }}
}}
""")
    proc = subprocess.Popen(
        ["taskset", "-c", "0", shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(tmp), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    out = []
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                _tcp_ok(port)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"nginx sink did not start; see {tmp}/error.log") from None
                time.sleep(0.1)
        traders = [Trader(Key(), Key(), secrets.token_urlsafe(32), i) for i in range(200)]
        for rate in rates:
            n = int(rate * duration)
            reqs = _sink_bodies(traders, n, port)
            win = CpuWindow({"nginx": proc.pid})
            res = open_loop("127.0.0.1", port, reqs, rate, conns, grace_s=10.0)
            cpu = win.end()
            r = {
                "kind": "sink",
                "rate": rate,
                "duration_s": duration,
                "conns": conns,
                **latency_summary(res, 202),
                "cpu": cpu,
                "loadavg": loadavg(),
            }
            out.append(r)
            log(
                f"sink {rate}/s: sent {r['sent_per_s']:.0f}/s, p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.1f} ms, "
                f"generator {cpu['generator_cores'] * 100:.0f}% of a core, statuses {r['statuses']}"
            )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _sink_bodies(traders: list[Trader], n: int, port: int) -> list[bytes]:
    """n distinct signed bet requests (real signatures over real texts; the sink does not check them)."""
    ts = int(time.time() * 1000)
    reqs = []
    for i in range(n):
        tr = traders[i % len(traders)]
        cell = f"{1763712005 + 5 * (i // len(traders) % 10)}:{6700 + i // (10 * len(traders))}"
        nonce = secrets.token_hex(8)
        sig = tr.session_key.personal_sign(
            bet_text("localhost:8443", 1, tr.address, cell, "1", "1.01", nonce, ts)
        )
        body = orjson.dumps(
            {"cell": cell, "stake": "1", "min_multiplier": "1.01", "nonce": nonce, "ts": ts, "signature": sig}
        )
        reqs.append(build_request("POST", "/api/v1/bets", f"127.0.0.1:{port}", body, tr.token))
    return reqs


# ---- setup and self-check ------------------------------------------------------------------------------


def setup_traders(host: str, port: int, count: int, domain: str, chain_id: int) -> list[Trader]:
    import gevent
    from gevent.pool import Pool

    traders: list[Trader | None] = [None] * count
    pool = Pool(32)
    apis: list[Api] = []

    def one(i: int) -> None:
        api = apis.pop() if apis else Api(host, port)
        try:
            traders[i] = login_trader(api, domain, chain_id, "1000", index=i)
        finally:
            apis.append(api)

    t0 = time.monotonic()
    for i in range(count):
        pool.spawn(one, i)
    pool.join(timeout=300, raise_error=True)
    missing = sum(t is None for t in traders)
    if missing:
        raise RuntimeError(f"{missing} traders failed to log in")
    log(f"{count} traders logged in (SIWE + session key) and funded in {time.monotonic() - t0:.1f}s")
    gevent.sleep(0)
    return traders  # type: ignore[return-value]


def self_check(api: Api, trader: Trader, domain: str, chain_id: int) -> None:
    """The fast signer agrees with eth-account, and a few signed bets are accepted and then confirmed."""
    from eth_account import Account
    from eth_account.messages import encode_defunct

    text = bet_text(domain, chain_id, trader.address, "1:1", "1", "1.01", "abc", 1)
    assert (
        Account.recover_message(
            encode_defunct(text=text), signature=trader.session_key.personal_sign(text)
        ).lower()
        == trader.session_key.address
    )
    _, grid = api.call("GET", "/api/v1/grid")
    now = time.time()
    cells = plan_cells(grid, now, now + 5, 3)[:3]
    ids = []
    for cell in cells:
        nonce, ts = secrets.token_hex(8), int(time.time() * 1000)
        sig = trader.session_key.personal_sign(
            bet_text(domain, chain_id, trader.address, cell, "1", "1.01", nonce, ts)
        )
        status, body = api.call(
            "POST",
            "/api/v1/bets",
            {
                "cell": cell,
                "stake": "1",
                "min_multiplier": "1.01",
                "nonce": nonce,
                "ts": ts,
                "signature": sig,
            },
            trader.token,
        )
        assert status == 202, (status, body)
        ids.append(body["bet_id"])
        trader.used_cells.add(cell)
    deadline = time.monotonic() + 10
    for bet_id in ids:
        while True:
            status, body = api.call("GET", f"/api/v1/bets/{bet_id}", token=trader.token)
            if body.get("status") == "confirmed":
                break
            assert time.monotonic() < deadline, body
            time.sleep(0.05)
    log(f"self-check: signer matches eth-account; {len(ids)} signed bets accepted and confirmed")


def wait_betting_open(api: Api, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            status, grid = api.call("GET", "/api/v1/grid")
            if status == 200 and grid.get("price") and grid["feed"]["betting"] and grid["quotes"]:
                return grid
        if time.monotonic() > deadline:
            raise TimeoutError("betting did not open (feed/quotes)")
        time.sleep(0.25)


# ---- report -------------------------------------------------------------------------------------------


def f(v, fmt="{:.1f}") -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


def print_table(results: list[dict]) -> None:
    print(
        "| run | offered/s | sent/s | accepted (202)/s | confirmed | p50 ms | p99 ms | max ms | "
        "tap→bet:confirmed p50 / p99 ms (ws) | server accept→commit p99 | worker CPU (idle) | worker µs/bet "
        "| CPU0 / CPU1 busy | others | non-202 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|---:|---|---:|---|")
    for r in results:
        cpu = r.get("cpu", {})
        busy = f"{f(cpu.get('cpu0_busy', float('nan')) * 100, '{:.0f}')}% / {f(cpu.get('cpu1_busy', float('nan')) * 100, '{:.0f}')}%"
        if r["kind"] == "healthz-wrk":
            print(
                f"| /healthz wrk closed loop, {r['conns']} conns | max | | {f(r['req_per_s'], '{:.0f}')} (200s) | | "
                f"{f(r['p50_ms'], '{:.2f}')} | {f(r['p99_ms'], '{:.1f}')} | | | | {f(cpu.get('worker_cores', 0) * 100, '{:.0f}')}% "
                f"| {f(cpu.get('worker_cores', 0) / r['req_per_s'] * 1e6, '{:.0f}')} µs/req | {busy} | {f(cpu.get('others_cores', 0), '{:.2f}')} | non-2xx {r['non2xx']} |"
            )
            continue
        non = {k: v for k, v in r["statuses"].items() if k not in ("202", "200")}
        if r["kind"] == "healthz-open":
            print(
                f"| /healthz open loop | {r['rate']} | {f(r['sent_per_s'], '{:.0f}')} | "
                f"{r['statuses'].get('200', 0) / r['send_span_s']:.0f} (200s) | | {f(r['p50_ms'], '{:.2f}')} | "
                f"{f(r['p99_ms'])} | {f(r['max_ms'])} | | | {f(cpu.get('worker_cores', 0) * 100, '{:.0f}')}% | | {busy} | "
                f"{f(cpu.get('others_cores', 0), '{:.2f}')} | {non or 'none'} |"
            )
            continue
        print(
            f"| bets {r['duration_s']:.0f} s | {r['rate']} | {f(r['sent_per_s'], '{:.0f}')} | {f(r['accepted_per_s'], '{:.0f}')} | "
            f"{r['confirmed']}/{r['accepted']} | {f(r['p50_ms'], '{:.2f}')} | {f(r['p99_ms'])} | {f(r['max_ms'])} | "
            f"{f(r['ttc_p50_ms'])} / {f(r['ttc_p99_ms'])} (n={r['ws_confirmed']}) | {r['confirm_hist'].get('p99')} | "
            f"{f(cpu.get('worker_cores', 0) * 100, '{:.0f}')}% ({f(r['idle'].get('worker_cores', float('nan')) * 100, '{:.0f}')}%) | "
            f"{f(r['worker_marginal_us_per_bet'], '{:.0f}')} | {busy} | {f(cpu.get('others_cores', 0), '{:.2f}')} | "
            f"{non or 'none'} |"
        )


# ---- main ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="1000,2000,3000", help="offered bets/s, comma list")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per rate (≤ 45)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per rate")
    ap.add_argument(
        "--conns", type=int, default=64, help="keep-alive connections (nginx upstream keepalive: 64)"
    )
    ap.add_argument(
        "--traders", type=int, default=0, help="traders to log in (default: enough for the largest run)"
    )
    ap.add_argument("--ws-traders", type=int, default=100, help="traders listening on /ws (0: none)")
    ap.add_argument("--row-margin", type=int, default=6, help="use rows within this many of the current row")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds of warm-up at 1/4 of the first rate")
    ap.add_argument("--healthz", type=int, default=10, help="seconds of /healthz (wrk + open loop); 0: skip")
    ap.add_argument(
        "--profile", type=Path, help="py-spy raw profile of the worker during one run (see --profile-rate)"
    )
    ap.add_argument(
        "--profile-rate", type=int, help="the rate whose first run is profiled (default: the largest)"
    )
    ap.add_argument(
        "--healthz-rate", type=int, default=2000, help="offered rate of the open-loop /healthz run"
    )
    ap.add_argument(
        "--sink",
        action="store_true",
        help="generator check: offer signed bet requests at --rates to an nginx sink on CPU 0 "
        "(answers 202 at once) and report the achieved rate and this process's CPU",
    )
    ap.add_argument("--url", help="use this running server (http://127.0.0.1:PORT) instead of starting one")
    ap.add_argument("--sim-volatility", default="0.15", help="TAP_SIM_VOLATILITY for the started server")
    ap.add_argument("--env", action="append", default=[], help="extra KEY=VALUE for the started server")
    ap.add_argument(
        "--serve",
        type=float,
        default=0,
        help="only start the stack, print its URL, keep it up this many seconds, stop it (for locust)",
    )
    ap.add_argument("--json", type=Path, help="write all results here")
    ap.add_argument("--logs", type=Path, help="keep the gunicorn and redis logs here")
    ap.add_argument(
        "--max-others",
        type=float,
        default=0.15,
        help="wait before a run until other processes use at most this many cores, and repeat a run "
        "(once) if they used more during it",
    )
    ap.add_argument("--attempts", type=int, default=3, help="most runs per rate while others interfere")
    ap.add_argument(
        "--quiet-timeout", type=float, default=90, help="longest wait for a quiet machine per run"
    )
    args = ap.parse_args(argv)

    from gevent import monkey

    monkey.patch_all()
    import gevent

    rates = [int(r) for r in args.rates.split(",")]
    if args.duration > 45:
        ap.error("--duration must be ≤ 45 s (signed ts must stay within ±30 s of server time)")
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {1})

    stack = None
    results: list[dict] = []
    if args.sink:
        results = run_sink(rates, args.duration, args.conns)
        print()
        print(
            "| generator check (nginx sink) | offered/s | sent/s | 202/s | p50 ms | p99 ms | generator CPU |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        for r in results:
            print(
                f"| signed bets, {r['conns']} conns | {r['rate']} | {r['sent_per_s']:.0f} | "
                f"{r['statuses'].get('202', 0) / r['send_span_s']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.1f} | "
                f"{r['cpu']['generator_cores'] * 100:.0f}% |"
            )
        if args.json:
            args.json.write_text(json.dumps(results, indent=1, default=str))
        return 0

    api: Api | None = None
    main_greenlet = gevent.getcurrent()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # under gevent a handler runs in the hub: throw into the main greenlet so `finally` stops the stack
        gevent.signal_handler(sig, lambda sig=sig: main_greenlet.throw(SystemExit(128 + sig)))
    try:
        if args.url:
            m = re.match(r"http://([^:/]+):(\d+)", args.url)
            host, port = m.group(1), int(m.group(2))
            pids: dict[str, int] = {}
            worker = None
        else:
            env = dict(kv.split("=", 1) for kv in args.env)
            env.setdefault("TAP_SIM_VOLATILITY", args.sim_volatility)
            stack = Stack(env, args.logs)
            stack.start()
            host, port = "127.0.0.1", stack.port
            log(
                f"redis :{stack.redis_port} (CPU 1), gunicorn :{port} (CPU 0), data {stack.tmp}; "
                f"overrides: rate limits off, TAP_SIM_VOLATILITY={env['TAP_SIM_VOLATILITY']}"
                + (f", {args.env}" if args.env else "")
            )
        api = Api(host, port)
        deadline = time.monotonic() + 60
        while True:
            try:
                if api.call("GET", "/readyz")[0] == 200:
                    break
            except OSError:
                api = Api(host, port)
            if time.monotonic() > deadline:
                raise TimeoutError("server not ready")
            time.sleep(0.2)
        if args.serve:
            wait_betting_open(api)
            print(f"http://{host}:{port}", flush=True)
            log(f"serving http://{host}:{port} for {args.serve:.0f}s (betting open); Ctrl-C stops it")
            time.sleep(args.serve)
            return 0
        if stack is not None:
            worker = stack.worker_pid()
            pids = {"worker": worker, "master": stack.gunicorn.pid, "redis": stack.redis.pid}
        grid = wait_betting_open(api)
        st = grid["settings"]
        domain, chain_id = st["siwe_domain"], st["chain_id"]
        log(
            f"betting open; price {grid['price']}; grid {st['columns_ahead']} columns ahead, lead "
            f"{st['min_lead_columns']}, ±{st['rows_each_side']} rows; domain {domain}, chain {chain_id}"
        )

        per_trader = cells_per_trader_estimate(
            args.duration,
            5.0,
            st["column_seconds"],
            st["min_lead_columns"],
            st["columns_ahead"],
            args.row_margin,
        )
        per_trader = max(1, int(per_trader * 0.7))  # unquoted cells near the price, rounding
        count = args.traders or max(args.ws_traders, math.ceil(max(rates) * args.duration / per_trader))
        traders = setup_traders(host, port, count, domain, chain_id)
        self_check(api, traders[0], domain, chain_id)

        if args.warmup > 0:
            r = measure_bets(
                api,
                pids,
                host,
                port,
                traders,
                max(100, rates[0] // 4),
                args.warmup,
                args.conns,
                0,
                args.row_margin,
                domain,
                chain_id,
                None,
                None,
            )
            log(f"warm-up: {r['accepted']}/{r['offered']} accepted, p99 {r['p99_ms']:.1f} ms")

        if args.healthz:
            if pids:
                wait_quiet(pids, args.max_others, args.quiet_timeout)
            log(f"load before /healthz: {loadavg()}")
            results.append(measure_healthz_wrk(port, args.healthz, args.conns, pids))
            log(f"/healthz wrk: {results[-1]['req_per_s']:.0f} req/s, p99 {results[-1]['p99_ms']:.1f} ms")
            results.append(
                measure_healthz_open(host, port, args.healthz_rate, args.healthz, args.conns, pids)
            )
            log(
                f"/healthz open loop at {args.healthz_rate}/s: p50 {results[-1]['p50_ms']:.2f} p99 {results[-1]['p99_ms']:.1f} ms"
            )

        profiled = False
        for rate in rates:
            for rep in range(args.repeat):
                for attempt in range(args.attempts):
                    log(f"load before rate {rate} (run {rep + 1}): {loadavg()}")
                    prof_rate = args.profile_rate or max(rates)
                    prof = (
                        args.profile
                        if (args.profile and rate == prof_rate and rep == 0 and not profiled)
                        else None
                    )
                    r = measure_bets(
                        api,
                        pids,
                        host,
                        port,
                        traders,
                        rate,
                        args.duration,
                        args.conns,
                        args.ws_traders,
                        args.row_margin,
                        domain,
                        chain_id,
                        prof,
                        worker,
                        quiet=(args.max_others, args.quiet_timeout) if pids else None,
                    )
                    r["attempt"] = attempt + 1
                    r["profiled"] = prof is not None
                    profiled = profiled or prof is not None
                    results.append(r)
                    others = r["cpu"].get("others_cores", 0)
                    log(
                        f"rate {rate}: accepted {r['accepted_per_s']:.0f}/s, p50 {r['p50_ms']:.2f} ms, p99 "
                        f"{r['p99_ms']:.1f} ms, tap→confirmed p99 {r['ttc_p99_ms']:.1f} ms (ws n={r['ws_confirmed']}), "
                        f"worker {r['cpu'].get('worker_cores', 0) * 100:.0f}% CPU, others {others:.2f} cores, "
                        f"statuses {r['statuses']}"
                    )
                    if others <= args.max_others:
                        break
                    if attempt + 1 < args.attempts:
                        log(f"other processes used {others:.2f} cores during the run: repeating it")
        return 0
    finally:
        if api is not None:
            api.http.close()  # an open keep-alive connection would hold gunicorn's graceful stop for 20 s
        if stack is not None:
            stack.stop()
        if results:
            print()
            print_table(results)
            if args.json:
                args.json.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    sys.exit(main())
