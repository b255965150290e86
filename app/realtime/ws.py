"""`GET /ws`: the websocket stream (SPEC §8) and taps over it (SPEC §8a).

Each connection registers a bounded queue with the fan-out, and the route's greenlet is the only
writer to its socket: it sends `status` (and the last price) on connect, then whatever is queued —
broadcasts, the trader's `bet:*`/`balance` events, the answers to its own messages — and the pings.
A reader greenlet (simple-websocket's) hands each client message to `app.realtime.taps` one at a time;
the few frames simple-websocket itself writes (a pong to a client's ping, the echo of a close) go
through the same queue (`_QueuedSocket`), so no two greenlets ever write to one socket at once. What is
already queued when the writer wakes goes out in one `sendall` (one syscall for `bet:confirmed` +
`balance`). While the writer is parked on an empty queue with nothing half-written (`Client.idle`), a
broadcast or an answer is written by the greenlet that has it, in one non-blocking send, instead of
waking the writer for it (`Fanout.broadcast`/`reply`); what the kernel does not take is queued.

Pings: every `TAP_WS_PING_S` the writer sends a ping; a socket that leaves two pings in a row
unanswered is closed (1008, counted in `tap_ws_idle_closed`). A client that cannot keep up is dropped
by the fan-out. A socket whose session is logged out (a control message from any worker) or expires is
closed with 4401 by its writer.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from typing import Any

import gevent
import orjson
from flask_sock import Sock
from gevent.queue import Empty
from simple_websocket import ConnectionClosed
from wsproto.events import CloseConnection

from app.auth.decorators import WebsocketRefused, websocket_session
from app.auth.state import auth_state
from app.realtime.fanout import CLOSE, PING, Client, Fanout, text_frame
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


class _QueuedSocket:
    """Stands in for the socket inside simple-websocket: reads go to the socket, writes (its pongs and
    close echoes) are queued for the connection's writer greenlet like any other frame."""

    def __init__(self, real: Any, fanout: Fanout, client: Client) -> None:
        self._real, self._fanout, self._client = real, fanout, client

    def send(self, data: bytes) -> int:
        if data:
            self._fanout.queue_raw(self._client, bytes(data))
        return len(data)

    sendall = send

    def close(self) -> None:
        """simple-websocket's reader is done (close handshake, or the peer vanished): instead of
        closing the socket under the writer, wake the writer, which writes what is queued before it
        (the close echo) and ends; gunicorn then closes the connection."""
        self._fanout.queue_raw(self._client, CLOSE)

    def __getattr__(self, name: str) -> Any:  # recv, close, fileno, setsockopt, shutdown …
        return getattr(self._real, name)


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
    client = svc.fanout.register()
    state = auth_state()
    taps = TapSocket(svc, client, session, state.limits, state.counter)
    out = ws.sock
    with contextlib.suppress(OSError, AttributeError):
        out.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
    ws.sock = _QueuedSocket(out, svc.fanout, client)
    # gevent's socket keeps the non-blocking OS socket as `_sock`: an idle writer's broadcasts are
    # written from the broadcasting greenlet (Fanout.broadcast); without it they are queued.
    raw: Any = getattr(out, "_sock", None)
    with contextlib.suppress(AttributeError, OSError):
        if raw.gettimeout() == 0.0:  # non-blocking, as gevent keeps it: a send never waits
            client.raw = raw
    reader = gevent.spawn(_read, ws, taps)
    reader.link_exception(lambda g: log.error("websocket reader failed", exc_info=g.exc_info))
    try:
        _write(ws, out, client, taps)
    except OSError:
        ws.connected = False  # the peer went away mid-write
    except gevent.GreenletExit:
        # Dropped for being slow, or the worker is shutting down: do not try to write to the socket
        # (that could block on a slow peer); shut it so the reader greenlet ends too.
        ws.connected = False
        with contextlib.suppress(OSError):
            out.shutdown(socket.SHUT_RDWR)
        out.close()  # as simple-websocket's reader used to: nothing is left to write, by anyone
    finally:
        reader.kill(block=False)
        svc.fanout.unregister(client)


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
    """The peer closed: write the close echo simple-websocket's reader queued, if the loop ended
    before it (the rest of the queue is not worth writing to a closing peer)."""
    while True:
        try:
            frame = client.queue.get_nowait()
        except Empty:
            return
        if frame and frame[0] == 0x88:
            out.sendall(frame)
            return


def _close(ws: Any, out: Any, code: int, reason: str) -> None:
    """Write a close frame from the writer itself (simple-websocket's close() would queue it)."""
    if ws.connected:
        ws.connected = False
        with contextlib.suppress(Exception):  # the state machine may already be closing
            out.sendall(ws.ws.send(CloseConnection(code, reason)))


def _read(ws: Any, taps: TapSocket) -> None:
    """The socket's reader: one message at a time, each answered through the fan-out queue."""
    with contextlib.suppress(ConnectionClosed):
        while ws.connected:
            data = ws.receive()
            if data is not None:
                taps.handle(data)
