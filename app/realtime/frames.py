"""Reading a client's websocket frames (RFC 6455 §5), and the control frames a server writes.

The `/ws` reader greenlet parses frames itself (app.realtime.ws): simple-websocket's reader thread
parsed them with wsproto, then set an Event to wake the greenlet that handles the message — one more
greenlet switch, an Event and wsproto's per-frame generators for every tap (~12 % of the worker's CPU
at 3,000 taps/s, BENCHMARKS.md). simple-websocket still does the opening handshake.

What a server must check of a client's frames, and does here: every frame is masked; no reserved bit
is set (no extension is negotiated: the handshake declines permessage-deflate, see app.realtime.ws);
control frames are final and ≤ 125 bytes; continuation frames continue a message and only then; a
text message is valid UTF-8 (1007 otherwise); a message over `max_message` bytes is refused with
1009 before more of it is buffered. Any other violation closes with 1002.
"""

from __future__ import annotations

__all__ = ["CLOSE_OP", "PING_OP", "PONG_OP", "FrameReader", "ProtocolError", "close_frame", "control_frame"]

CONTINUATION, TEXT, BINARY = 0x0, 0x1, 0x2
CLOSE_OP, PING_OP, PONG_OP = 0x8, 0x9, 0xA


class ProtocolError(Exception):
    """The client broke the protocol: close the connection with `code` (1002, 1007, 1009)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


def control_frame(opcode: int, payload: bytes = b"") -> bytes:
    """An unmasked control frame (a pong, a close) as a server writes it; `payload` ≤ 125 bytes."""
    return bytes((0x80 | opcode, len(payload))) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame with `code` and `reason` (cut to fit the 125-byte control payload, on a
    character boundary: the reason must stay valid UTF-8)."""
    payload = code.to_bytes(2, "big") + reason.encode()[:123].decode("utf-8", "ignore").encode()
    return control_frame(CLOSE_OP, payload)


def _unmask(data: bytes | bytearray, mask: bytes | bytearray) -> bytes:
    n = len(data)
    if n == 0:
        return b""
    key = (bytes(mask) * ((n + 3) // 4))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


def _check_header(b0: int, b1: int) -> None:
    """The first two bytes of a client's frame: raise ProtocolError unless they are allowed."""
    opcode, length = b0 & 0x0F, b1 & 0x7F
    if b0 & 0x70:
        raise ProtocolError(1002, "reserved bits set")
    if not b1 & 0x80:
        raise ProtocolError(1002, "client frames must be masked")
    if opcode not in (CONTINUATION, TEXT, BINARY, CLOSE_OP, PING_OP, PONG_OP):
        raise ProtocolError(1002, f"unknown opcode {opcode}")
    if opcode >= CLOSE_OP and (not b0 & 0x80 or length > 125):
        raise ProtocolError(1002, "control frames are final and at most 125 bytes")


class FrameReader:
    """Bytes in (`feed`), whole messages and control frames out (`next`), for one connection."""

    def __init__(self, max_message: int) -> None:
        self.max_message = max_message
        self._buf = bytearray()
        self._parts: list[bytes] = []  # the fragments of the message in progress
        self._size = 0
        self._opcode: int | None = None  # TEXT or BINARY while a fragmented message is in progress

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next(self) -> tuple[int, str | bytes] | None:
        """The next complete item: (TEXT, str), (BINARY, bytes), or a control frame's (opcode,
        payload); None until more bytes arrive. Raises ProtocolError."""
        while True:
            frame = self._frame()
            if frame is None:
                return None
            fin, opcode, payload = frame
            if opcode >= CLOSE_OP:
                return opcode, payload
            if opcode == CONTINUATION:
                if self._opcode is None:
                    raise ProtocolError(1002, "continuation frame without a message")
            elif self._opcode is not None:
                raise ProtocolError(1002, "a new message inside a fragmented one")
            else:
                self._opcode = opcode
            self._parts.append(payload)
            if not fin:
                continue
            kind = self._opcode
            data = payload if len(self._parts) == 1 else b"".join(self._parts)
            self._parts, self._size, self._opcode = [], 0, None
            if kind == TEXT:
                try:
                    return TEXT, data.decode("utf-8")
                except UnicodeDecodeError:
                    raise ProtocolError(1007, "text message is not valid UTF-8") from None
            return BINARY, data

    def _frame(self) -> tuple[bool, int, bytes] | None:
        buf = self._buf
        if len(buf) < 2:
            return None
        b0, b1 = buf[0], buf[1]
        _check_header(b0, b1)
        opcode, length, at = b0 & 0x0F, b1 & 0x7F, 2
        if length == 126:
            if len(buf) < 4:
                return None
            length, at = int.from_bytes(buf[2:4], "big"), 4
        elif length == 127:
            if len(buf) < 10:
                return None
            length, at = int.from_bytes(buf[2:10], "big"), 10
            if length >> 63:
                raise ProtocolError(1002, "frame length out of range")
        if opcode < CLOSE_OP and self._size + length > self.max_message:
            raise ProtocolError(1009, "message too big")  # from the header, before the payload
        end = at + 4 + length
        if len(buf) < end:
            return None
        payload = _unmask(buf[at + 4 : end], buf[at : at + 4])
        del buf[:end]
        if opcode < CLOSE_OP:
            self._size += length
        return bool(b0 & 0x80), opcode, payload
