"""A minimal keep-alive HTTP/1.1 client and the JSON API calls the load scripts make with it."""

from __future__ import annotations

import contextlib
import re
import socket
import time
from dataclasses import dataclass, field

import orjson

from loadtest.lib.signing import Key, siwe_message

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
