"""`GET /ws`: the websocket stream (SPEC §8) and taps over it (SPEC §8a).

Each connection registers a bounded queue with the fan-out, and the route's greenlet is the only writer
to its socket: it sends `status` (and the last price) on connect, then whatever is queued — broadcasts,
the trader's `bet:*`/`balance` events, the answers to its own messages — and the pings. A reader greenlet
parses the client's frames (app.realtime.frames; simple-websocket does only the opening handshake) and
hands each message to `app.realtime.taps` one at a time; the control frames it answers (a pong to a
client's ping, the echo of a close) go through the same queue, so no two greenlets ever write to one
socket at once. What is already queued when the writer wakes goes out in one `sendall` (one syscall for
`bet:confirmed` + `balance`). While the writer is parked on an empty queue with nothing half-written
(`Client.idle`), a broadcast or an answer is written by the greenlet that has it, in one non-blocking
send, instead of waking the writer for it (`Fanout.broadcast`/`reply`); what the kernel does not take is
queued.

Pings: every `TAP_WS_PING_S` the writer sends a ping; a socket that leaves two pings in a row
unanswered is closed (1008, counted in `tap_ws_idle_closed`). A client that cannot keep up is dropped
by the fan-out. A socket whose session is logged out (a control message from any worker) or expires is
closed with 4401 by its writer. Once its close frame is out, the server sends FIN and reads what the
peer still sends until it closes too (`_linger`), so the close code is never lost to a TCP reset.
When the worker stops (a reload, a shutdown: `Fanout.close_all`) nothing waits on a socket: each gets
its 1012 close frame only if the kernel takes it whole at once (`_close_now`), then the TCP shutdown.
Whoever closes the socket, the reader first finishes the message it holds (`_stop_reader`): a tap
mid-claim is queued (or refused and released), never left claimed and unanswered.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import socket
import sys
import time
from typing import Any

import gevent
import orjson
from flask import request
from flask_sock import Sock
from gevent.event import Event
from gevent.queue import Empty

from app.auth.decorators import WebsocketRefused, websocket_session
from app.auth.state import auth_state
from app.realtime.fanout import CLOSE, PING, Client, text_frame
from app.realtime.frames import (
    CLOSE_OP,
    PING_OP,
    PONG_OP,
    FrameReader,
    ProtocolError,
    close_frame,
    control_frame,
)
from app.realtime.taps import WS_CLOSE_POLICY_VIOLATION, TapSocket
from app.services import services

log = logging.getLogger(__name__)
sock = Sock()

MISSED_PINGS = 2  # unanswered pings in a row before the socket is closed
# Kernel send buffer per websocket (Linux doubles it). Fixed instead of autotuned (up to 4 MiB), so
# a client that stops reading is detected after ~0.5 MiB plus TAP_WS_QUEUE_MAX messages, and memory
# per connection stays bounded; still far above what the streams need on a slow link.
SEND_BUFFER_BYTES = 256 * 1024
# At most this many bytes of queued frames are joined into one write (app.realtime.ws._write).
COALESCE_MAX_BYTES = 64 * 1024
# A client message larger than TAP_WS_MAX_MESSAGE gets a JSON `error` from app.realtime.taps (SPEC
# §8a); past this many times that, the reader closes with 1009 before buffering any more of it.
MAX_MESSAGE_FACTOR = 16
RECV_BYTES = 16 * 1024
# After the server's close frame, what the peer still sends is read and dropped for at most this
# long and this much (`_linger`), so that closing the socket does not reset the connection.
LINGER_S = 2.0
LINGER_BYTES = 1024 * 1024
WS_CLOSE_SERVICE_RESTART = 1012  # RFC 6455 registry: "Service Restart": reconnect
SIOCOUTQNSD = 0x894B  # Linux (linux/sockios.h): the bytes of a TCP socket's send queue not yet sent
# Close codes a client may send (RFC 6455 §7.4): anything else in its close frame is a protocol error.
_VALID_CLOSE_CODES = frozenset((*range(1000, 1004), *range(1007, 1015), *range(3000, 5000)))


class NoReaderThread:
    """simple-websocket's `thread_class` (SOCK_SERVER_OPTIONS): its reader thread is never started.
    It does the opening handshake only; `_read` below reads and parses the frames."""

    def __init__(self, target: Any = None, **_: Any) -> None:
        self.name = "simple-websocket reader (not started)"

    def start(self) -> None:
        pass


@sock.route("/ws")
def stream(ws: Any) -> None:
    """The websocket (SPEC §8, §8a; docs/API.md "WebSocket streams" and "Taps over the websocket").
    ---
    get:
      tags: [realtime]
      summary: Websocket upgrade (price, grid, status, the trader's bet and balance events, taps)
      parameters:
        - {name: token, in: query, required: false, schema: {type: string}}
      responses:
        101: {description: Switching Protocols}
    """
    svc = services()
    # ?token= gives this connection its owner's bet:* and balance events; a bad token is refused
    # with close code 4401 (1013 while Redis is down), never downgraded to public (docs/API.md).
    # A client may send {"type": "auth", "token": …} as its first message instead (app.realtime.taps).
    try:
        session = websocket_session()
    except WebsocketRefused as exc:
        ws.close(reason=exc.close_code, message=exc.reason)
        return
    if svc.fanout.closing:
        # This worker is shutting down (a reload or a stop) but its listener still took the socket:
        # left open, it would hold the worker until gunicorn's graceful timeout (20 s) and then drop.
        # Closed now, the client reconnects to the new worker. No yield between here and `register`.
        ws.close(reason=WS_CLOSE_SERVICE_RESTART, message="service_restart")
        return
    client = svc.fanout.register()
    state = auth_state()
    taps = TapSocket(svc, client, session, state.limits, state.counter)
    out = ws.sock
    with contextlib.suppress(OSError, AttributeError):
        out.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
    # gevent's socket keeps the non-blocking OS socket as `_sock`: an idle writer's broadcasts are
    # written from the broadcasting greenlet (Fanout.broadcast); without it they are queued.
    raw: Any = getattr(out, "_sock", None)
    with contextlib.suppress(AttributeError, OSError):
        if raw.gettimeout() == 0.0:  # non-blocking, as gevent keeps it: a send never waits
            client.raw = raw
    waiting = Event()  # set while the reader waits for bytes: it holds no message then
    reader = gevent.spawn(_read, ws, out, taps, waiting)
    reader.link_exception(lambda g: log.error("websocket reader failed", exc_info=g.exc_info))
    try:
        _write(ws, out, client, taps)
    except OSError:  # the peer went away mid-write; a tap it sent before may still be mid-claim
        _stop_reader(ws, reader, waiting)
    except gevent.GreenletExit:
        # Dropped for being slow, or the worker is shutting down: never wait on the socket (a slow peer
        # would hold the stop); shut it so the reader greenlet ends too, once it has finished the message
        # it holds. At a stop, a socket whose writer was idle (nothing half-written) gets its 1012 first
        # if the kernel takes the whole frame at once (`_close_now`): the client then knows to reconnect.
        _stop_reader(ws, reader, waiting)
        if svc.fanout.closing and not client.dropped and client.idle:
            _close_now(client.raw, WS_CLOSE_SERVICE_RESTART, "service_restart")
        with contextlib.suppress(OSError):
            out.shutdown(socket.SHUT_RDWR)
        out.close()  # nothing is left to write, by anyone
    else:
        _stop_reader(ws, reader, waiting)  # it must not read what `_linger` reads
        if reader.dead:
            _linger(out)
    finally:
        ws.connected = False  # flask-sock's own close() afterwards then writes nothing
        reader.kill(block=False)
        svc.fanout.unregister(client)


@sock.bp.before_request  # flask-sock's blueprint, made by @sock.route
def _decline_extensions() -> None:
    """No permessage-deflate (RFC 7692): simple-websocket's handshake would accept a client's offer,
    and the client would then compress its messages, which `_read` does not inflate. (The server's
    frames were never compressed: each is framed once for every socket, fanout.text_frame.)"""
    request.environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)


def _write(ws: Any, out: Any, client: Client, taps: TapSocket) -> None:
    """The writer loop: queued frames in order; a PING (queued by the fan-out's sweeper every
    TAP_WS_PING_S) first checks the last one was answered; CLOSE ends it (logout, expiry, malformed)."""
    svc = taps.svc
    missed = 0
    out.sendall(text_frame(orjson.dumps(svc.status_message())))
    if svc.feed.last_tick is not None:
        out.sendall(text_frame(svc.feed.last_tick.encode()))
    queue = client.queue
    get, get_nowait = queue.get, queue.get_nowait
    held: bytes | None = None  # a PING or CLOSE met while draining: handled on the next turn
    while ws.connected:
        # No timeout: pings and session expiry arrive as queued items (Fanout.sweep), so a message
        # costs no timer. Pre-framed bytes (app.realtime.fanout.text_frame) are written whole:
        # simple-websocket's own send() uses sock.send() and would truncate a frame on a partial write.
        if held is None:
            client.idle = True  # a broadcast may write to the socket itself meanwhile (Fanout.broadcast)
            frame = get()
            client.idle = False
        else:
            frame, held = held, None
        if frame is PING:
            missed = 0 if ws.pong_received else missed + 1
            if missed >= MISSED_PINGS:  # two intervals without a pong: the peer is gone
                svc.metrics.ws_idle_closed.inc()
                _close(ws, out, WS_CLOSE_POLICY_VIOLATION, "ping timeout")
                break
            ws.pong_received = False
        elif frame is CLOSE:
            _close(ws, out, client.close_code or 1000, client.close_reason)
            break
        if queue.qsize():
            # Frames already queued behind this one (`bet:confirmed` + `balance` arrive together, a
            # broadcast lands beside an answer) go out in one sendall: one syscall and one gevent
            # socket call instead of one each. Taken in order, up to a PING/CLOSE (which needs its own
            # turn above) or COALESCE_MAX_BYTES, so what waits in this greenlet stays bounded too.
            parts = [frame]
            size = len(frame)
            while size < COALESCE_MAX_BYTES and queue.qsize():
                nxt = get_nowait()
                if nxt is PING or nxt is CLOSE:
                    held = nxt
                    break
                parts.append(nxt)
                size += len(nxt)
            frame = b"".join(parts)
        out.sendall(frame)
    _echo_close(client, out)


def _echo_close(client: Client, out: Any) -> None:
    """The peer closed: write the close echo `_read` queued, if the loop ended before it (the rest
    of the queue is not worth writing to a closing peer)."""
    while True:
        try:
            frame = client.queue.get_nowait()
        except Empty:
            return
        if frame and frame[0] == 0x88:
            out.sendall(frame)
            return


def _stop_reader(ws: Any, reader: gevent.Greenlet, waiting: Event) -> None:
    """Mark the socket closing (`ws.connected` False) and end the reader, but not in the middle of a
    message: killed inside a tap's claim, it would leave the cell claimed and the bet never queued or
    answered, until the reconciler rejected it 30 s later (a logout, an expiry, a ping timeout or a
    worker's shutdown while the trader taps). It finishes the message it holds, within LINGER_S, then
    stops at its next message or is killed where it waits for bytes."""
    ws.connected = False
    gevent.wait([reader, waiting], timeout=LINGER_S, count=1)
    reader.kill(timeout=LINGER_S)


def _linger(out: Any) -> None:
    """The close frame is written: send FIN, then read and drop what the peer still sends until it
    closes its side too (or LINGER_S / LINGER_BYTES run out).

    Closing a TCP socket that has unread bytes sends a reset, not a FIN, and a reset makes the peer's
    kernel throw away what it has not yet handed to the peer, the close frame among it (RFC 6455
    §7.1.1 has the server close the connection only after the closing handshake). A client that
    broke the protocol mid-message (1009 for a message too large is decided from its header) or that
    was still tapping when its session ended would otherwise see a reset instead of the close code."""
    deadline = time.monotonic() + LINGER_S
    left = LINGER_BYTES
    with contextlib.suppress(OSError):  # a timeout is an OSError too
        out.shutdown(socket.SHUT_WR)
        while left > 0 and (wait := deadline - time.monotonic()) > 0:
            out.settimeout(wait)
            data = out.recv(RECV_BYTES)
            if not data:
                return
            left -= len(data)


def _close_now(raw: Any, code: int, reason: str) -> None:
    """A close frame written at once or not at all, never waited for: the worker is stopping (a reload's
    old worker, which must exit promptly), and a peer that does not read must not hold it.

    Sent only when the socket has no byte left unsent (SIOCOUTQNSD is 0, as for any client that reads):
    the kernel then puts it in a new segment, all of it or, if the send buffer is full, none (EAGAIN),
    since the frame is far smaller than a segment and than the ≥ 32 bytes the kernel ensures of its
    page fragment before it copies anything. Behind unsent bytes it could land partly in the last
    segment and the rest be refused, and a torn frame would corrupt the stream: such a socket (a peer
    that stopped reading, its window full) is shut without a close frame, as before. `raw` is the
    non-blocking OS socket (`Client.raw`); None: nothing is sent."""
    if raw is None:
        return
    frame = close_frame(code, reason)
    with contextlib.suppress(OSError):  # a peer already gone, EAGAIN: shut without it
        unsent = int.from_bytes(fcntl.ioctl(raw.fileno(), SIOCOUTQNSD, bytes(4)), sys.byteorder)
        if unsent == 0:
            # MSG_MORE: held for the shutdown that follows (`stream`), whose FIN then leaves in the same
            # segment: one delivery to the peer instead of two. Measured with 3,000 sockets on a reload:
            # ~15 µs a socket (45 ms in all, 110 ms without MSG_MORE), the stop unchanged (~0.7 s).
            raw.send(frame, socket.MSG_DONTWAIT | socket.MSG_MORE)


def _close(ws: Any, out: Any, code: int, reason: str) -> None:
    """Write a close frame from the writer itself."""
    if ws.connected:
        ws.connected = False
        out.sendall(close_frame(code, reason))


def _read(ws: Any, out: Any, taps: TapSocket, waiting: Event) -> None:
    """The socket's reader: frames parsed here (app.realtime.frames), one message at a time handed to
    the taps, control frames answered through the writer's queue. A protocol error closes the socket
    with its code (1002, 1007, 1009) after what is already queued. `waiting` is set while it waits
    for bytes (`_stop_reader`); once the socket is closing it takes no further message."""
    fanout, client = taps.svc.fanout, taps.client
    frames = FrameReader(MAX_MESSAGE_FACTOR * taps.svc.settings.ws_max_message)
    recv, handle = out.recv, taps.handle
    try:
        while ws.connected:
            waiting.set()
            data = recv(RECV_BYTES)
            waiting.clear()
            if not data:
                break  # the peer is gone
            frames.feed(data)
            while (item := frames.next()) is not None:
                if not ws.connected:
                    return  # closing (by the writer, or the worker's shutdown): answer no more
                op, payload = item
                if op < CLOSE_OP:
                    handle(payload)
                elif op == PING_OP:
                    fanout.queue_raw(client, control_frame(PONG_OP, payload))  # type: ignore[arg-type]
                elif op == PONG_OP:
                    ws.pong_received = True
                else:
                    fanout.queue_raw(client, _close_echo(payload))  # type: ignore[arg-type]
                    return
    except ProtocolError as exc:
        fanout.close(client, exc.code, exc.reason)
        return
    except OSError:
        pass
    finally:
        if client.close_code is None:
            ws.connected = False
            fanout.queue_raw(client, CLOSE)  # wakes the writer: it writes what is queued, and ends


def _close_echo(payload: bytes) -> bytes:
    """The answer to a client's close frame: its status code echoed (RFC 6455 §5.5.1)."""
    if not payload:
        return close_frame(1000)
    code = int.from_bytes(payload[:2], "big")
    if len(payload) == 1 or code not in _VALID_CLOSE_CODES:
        return close_frame(1002, "invalid close frame")
    try:
        payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        return close_frame(1007, "close reason is not valid UTF-8")
    return close_frame(code)
