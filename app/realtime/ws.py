"""`GET /ws`: the websocket stream (SPEC §8) and taps over it (SPEC §8a).

Each connection registers a bounded queue with the fan-out, and the route's greenlet is the only
writer to its socket: it sends `status` (and the last price) on connect, then whatever is queued —
broadcasts, the trader's `bet:*`/`balance` events, and the answers to its own messages. A reader
greenlet hands each client message to `app.realtime.taps` one at a time. A client that cannot keep up
is dropped by the fan-out. A socket whose session is logged out (a control message from any worker)
or expires is closed with 4401 by its writer.
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

from app.auth import errors as E
from app.auth.decorators import WS_CLOSE_INVALID_SESSION, WebsocketRefused, websocket_session
from app.auth.state import auth_state
from app.realtime.fanout import CLOSE, text_frame
from app.realtime.taps import TapSocket
from app.services import services

log = logging.getLogger(__name__)
sock = Sock()

IDLE_CHECK_S = 5.0
# Kernel send buffer per websocket (Linux doubles it). Fixed instead of autotuned (up to 4 MiB), so
# a client that stops reading is detected after ~0.5 MiB plus TAP_WS_QUEUE_MAX messages, and memory
# per connection stays bounded; still far above what the streams need on a slow link.
SEND_BUFFER_BYTES = 256 * 1024


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
    taps = TapSocket(svc, client, session, auth_state().limits)
    with contextlib.suppress(OSError, AttributeError):
        ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
    out = ws.sock
    reader = gevent.spawn(_read, ws, taps)
    reader.link_exception(lambda g: log.error("websocket reader failed", exc_info=g.exc_info))
    try:
        out.sendall(text_frame(orjson.dumps(svc.status_message())))
        if svc.feed.last_tick is not None:
            out.sendall(text_frame(svc.feed.last_tick.encode()))
        while ws.connected:
            try:
                # Pre-framed bytes (app.realtime.fanout.text_frame), written whole: simple-websocket's
                # own send() uses sock.send() and would truncate a frame on a partial write.
                frame = client.queue.get(timeout=_wait_s(taps, svc.now_ms()))
            except Empty:
                if _expired(taps, svc.now_ms()):  # the session ended while the socket was open
                    ws.close(reason=WS_CLOSE_INVALID_SESSION, message=E.INVALID_SESSION)
                continue
            if frame is CLOSE:
                ws.close(reason=client.close_code, message=client.close_reason)
                break
            out.sendall(frame)
    except OSError:
        ws.connected = False  # the peer went away mid-write
    except gevent.GreenletExit:
        # Dropped for being slow, or the worker is shutting down: do not try to write to the socket
        # (that could block on a slow peer); shut it so the reader greenlet ends too.
        ws.connected = False
        with contextlib.suppress(OSError):
            ws.sock.shutdown(socket.SHUT_RDWR)
    finally:
        reader.kill(block=False)
        svc.fanout.unregister(client)


def _read(ws: Any, taps: TapSocket) -> None:
    """The socket's reader: one message at a time, each answered through the fan-out queue."""
    with contextlib.suppress(ConnectionClosed):
        while ws.connected:
            data = ws.receive()
            if data is not None:
                taps.handle(data)


def _wait_s(taps: TapSocket, now_ms: int) -> float:
    """How long the writer may wait for a frame: until the session expires, at most IDLE_CHECK_S."""
    expires = taps.expires_at_ms
    if expires is None:
        return IDLE_CHECK_S
    return max(0.0, min(IDLE_CHECK_S, (expires - now_ms) / 1000))


def _expired(taps: TapSocket, now_ms: int) -> bool:
    expires = taps.expires_at_ms
    return expires is not None and now_ms >= expires
