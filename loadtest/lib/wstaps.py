"""Taps over websockets for the load scripts: raw-socket clients, pre-framed signed taps, open loop.

Each trader holds one websocket (`/ws`, authenticated by a first `auth` message, as the SPA does).
Taps are pre-signed and pre-framed (a masked text frame with a zero mask key: RFC 6455 masking with
key 0 is the identity, so the bytes are ready to write and the server still unmasks them) before the
run. One dispatcher greenlet writes tap i on its trader's socket at t0 + i/R; every latency counts
from that instant, so a server that falls behind shows it in the latency, not in a lower offered rate.
A reader greenlet per socket timestamps `bet:accepted` / `bet:error` (by `req`) and `bet:confirmed` /
`bet:rejected` (by bet id), answers pings, and skips everything else (price, grid) without parsing.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import socket
import time
from dataclasses import dataclass, field

import orjson

from loadtest.lib.cells import assign_pairs
from loadtest.lib.rawhttp import Trader
from loadtest.lib.signing import bet_text

_ZERO_MASK = b"\x00\x00\x00\x00"


def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One masked client frame (mask key 0: the payload bytes go out unchanged)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 1 << 16:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + _ZERO_MASK + payload


@dataclass
class TapRun:
    """One run's schedule and what came back; index i is tap i."""

    n: int
    intended: list[float]
    owner: list[int]  # index into the socket list
    accepted: list[float] = field(default_factory=list)  # monotonic time of bet:accepted (0: none)
    error: list[str | None] = field(default_factory=list)
    bet_id: list[str | None] = field(default_factory=list)
    not_sent: int = 0


class TapSocket:
    """A trader's websocket: authenticated, answering pings, recording answers and confirmations."""

    def __init__(self, host: str, port: int, trader: Trader) -> None:
        self.host, self.port, self.trader = host, port, trader
        self.sock: socket.socket | None = None
        self.run: TapRun | None = None
        self.confirmed: dict[str, float] = {}
        self.rejected: dict[str, str] = {}
        self.resolved = 0  # bet:resolved events heard (tap_ceiling --settle)
        self.frames = 0
        self.closed: str | None = None
        self.events: list[dict] = []  # bet:* / balance events with their ids (when `keep_events`)
        self.keep_events = False
        self._authed = None

    def connect(self, token_in_message: bool = True) -> None:
        import gevent.event

        s = socket.create_connection((self.host, self.port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        path = "/ws" if token_in_message else f"/ws?token={self.trader.token}"
        s.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head[:80])
        s.settimeout(None)
        self.sock = s
        self._authed = gevent.event.Event()
        self._reader = gevent.spawn(self._read, rest)
        if token_in_message:
            s.sendall(client_frame(orjson.dumps({"type": "auth", "token": self.trader.token})))
            if not self._authed.wait(15):
                raise ConnectionError("no auth:ok")
        else:
            self._authed.set()

    def send(self, frame: bytes) -> None:
        assert self.sock is not None
        self.sock.sendall(frame)

    def _read(self, buf: bytes) -> None:
        s = self.sock
        try:
            while True:
                while len(buf) >= 2:
                    n = buf[1] & 0x7F
                    off = 2
                    if n == 126:
                        if len(buf) < 4:
                            break
                        n, off = int.from_bytes(buf[2:4], "big"), 4
                    elif n == 127:
                        if len(buf) < 10:
                            break
                        n, off = int.from_bytes(buf[2:10], "big"), 10
                    if len(buf) < off + n:
                        break
                    payload = buf[off : off + n]
                    opcode = buf[0] & 0x0F
                    buf = buf[off + n :]
                    if opcode == 0x9:  # ping: answer with a pong carrying the same payload
                        s.sendall(client_frame(payload, 0xA))
                        continue
                    if opcode == 0x8:
                        code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                        self.closed = f"close {code}"
                        return
                    self.frames += 1
                    self._message(payload)
                chunk = s.recv(262144)
                if not chunk:
                    self.closed = self.closed or "eof"
                    return
                buf += chunk
        except OSError as exc:
            self.closed = self.closed or f"error {exc!r}"

    def _message(self, payload: bytes) -> None:
        if b'"bet:' not in payload[:40] and not payload.startswith(b'{"type":"auth:ok"'):
            if self.keep_events and b'"balance"' in payload[:40]:
                self.events.append(orjson.loads(payload))
            return
        now = time.monotonic()
        msg = orjson.loads(payload)
        kind = msg.get("type")
        if self.keep_events and kind not in ("bet:accepted", "bet:error", "auth:ok"):
            self.events.append(msg)
        run = self.run
        if kind == "bet:accepted":
            if run is not None:
                i = int(msg["req"])
                run.accepted[i] = now
                run.bet_id[i] = msg["bet_id"]
        elif kind == "bet:error":
            if run is not None:
                run.error[int(msg["req"])] = f"{msg['status']} {msg['error']['code']}"
        elif kind == "bet:confirmed":
            self.confirmed[msg["bet_id"]] = now
        elif kind == "bet:rejected":
            self.rejected[msg["bet_id"]] = msg.get("reason", "")
        elif kind == "bet:resolved":
            self.resolved += 1
        elif kind == "auth:ok" and self._authed is not None:
            self._authed.set()

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.sendall(client_frame(b"\x03\xe8", 0x8))
            with contextlib.suppress(OSError):
                self.sock.close()
        self.sock = None


def connect_all(host: str, port: int, traders: list[Trader], concurrency: int = 64) -> list[TapSocket]:
    """One authenticated socket per trader (handshakes bounded to `concurrency` at a time)."""
    from gevent.pool import Pool

    socks = [TapSocket(host, port, t) for t in traders]
    pool = Pool(concurrency)
    for s in socks:
        pool.spawn(s.connect)
    pool.join(timeout=120, raise_error=True)
    return socks


def sign_taps(
    socks: list[TapSocket],
    cells: list[str],
    n: int,
    domain: str,
    chain_id: int,
    ts: int,
    stake: str,
    first: int = 0,
) -> tuple[list[bytes], list[int]]:
    """n pre-framed `bet` messages; message i goes on socks[owner[i]] with req = str(first + i)."""
    traders = [s.trader for s in socks]
    frames, owner = [], []
    for i, (k, cell) in enumerate(assign_pairs(traders, cells, n)):
        tr = traders[k]
        tr.used_cells.add(cell)
        nonce = secrets.token_hex(8)
        text = bet_text(domain, chain_id, tr.address, cell, stake, "1.01", nonce, ts)
        body = (
            b'{"type":"bet","req":"'
            + str(first + i).encode()
            + b'","cell":"'
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
        frames.append(client_frame(body))
        owner.append(k)
    return frames, owner


def open_loop_taps(
    socks: list[TapSocket], frames: list[bytes], owner: list[int], rate: float, grace_s: float
) -> TapRun:
    """Write frames[i] on socks[owner[i]] at t0 + i/rate from one dispatcher; wait for the answers."""
    import gevent

    n = len(frames)
    run = TapRun(n, [0.0] * n, owner, [0.0] * n, [None] * n, [None] * n)
    t0 = time.monotonic() + 0.3
    for i in range(n):
        run.intended[i] = t0 + i / rate
    for s in socks:
        s.run = run
    hard_stop = t0 + n / rate + grace_s
    i = 0
    while i < n:
        now = time.monotonic()
        if now > hard_stop:
            run.not_sent = n - i
            break
        due = min(n, int((now - t0) * rate) + 1) if now >= t0 else 0
        while i < due:
            try:
                socks[owner[i]].send(frames[i])
            except OSError as exc:
                run.error[i] = f"send {type(exc).__name__}"
            i += 1
        if i < n:
            gevent.sleep(max(0.0, t0 + i / rate - time.monotonic()))
    # wait for every answer (bounded)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if all(run.accepted[j] or run.error[j] for j in range(n - run.not_sent)):
            break
        gevent.sleep(0.1)
    return run
