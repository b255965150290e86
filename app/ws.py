"""`GET /ws`: the websocket stream (SPEC §8).

Each connection registers a bounded queue with the fan-out and this greenlet is the only writer to
its socket. It sends `status` (and the last price) on connect, then relays whatever the pub/sub
listener queues. A client that cannot keep up is dropped by the fan-out; a client that sends us
data has it read and discarded, so its buffer cannot grow.
"""

from __future__ import annotations

import contextlib
import socket

import gevent
import orjson
from flask_sock import Sock
from gevent.queue import Empty

from app.auth.decorators import WebsocketRefused, websocket_address
from app.fanout import text_frame
from app.services import services

sock = Sock()

IDLE_CHECK_S = 5.0
# Kernel send buffer per websocket (Linux doubles it). Fixed instead of autotuned (up to 4 MiB), so
# a client that stops reading is detected after ~0.5 MiB plus TAP_WS_QUEUE_MAX messages, and memory
# per connection stays bounded; still far above what the streams need on a slow link.
SEND_BUFFER_BYTES = 256 * 1024


@sock.route("/ws")
def stream(ws) -> None:
    svc = services()
    # ?token= gives this connection its owner's bet:* and balance events; a bad token is refused
    # with close code 4401 (1013 while Redis is down), never downgraded to public (docs/API.md).
    try:
        address = websocket_address()
    except WebsocketRefused as exc:
        ws.close(reason=exc.close_code, message=exc.reason)
        return
    client = svc.fanout.register(address=address)
    with contextlib.suppress(OSError, AttributeError):
        ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
    out = ws.sock
    try:
        out.sendall(text_frame(orjson.dumps(svc.feed.status_message())))
        if svc.feed.last_tick is not None:
            out.sendall(text_frame(svc.feed.last_tick.encode()))
        inbox = ws.input_buffer  # what the client sent us: discarded, so it cannot grow
        while ws.connected:
            with contextlib.suppress(Empty):
                # Pre-framed bytes (app.fanout.text_frame), written whole: simple-websocket's own
                # send() uses sock.send() and would truncate a frame on a partial write.
                out.sendall(client.queue.get(timeout=IDLE_CHECK_S))
            if inbox:  # a list check, not ws.receive(timeout=0): that was ~40 % of the worker's CPU
                inbox.clear()
    except OSError:
        ws.connected = False  # the peer went away mid-write
    except gevent.GreenletExit:
        # Dropped for being slow, or the worker is shutting down: do not try to write to the socket
        # (that could block on a slow peer); shut it so the reader greenlet ends too.
        ws.connected = False
        with contextlib.suppress(OSError):
            ws.sock.shutdown(socket.SHUT_RDWR)
    finally:
        svc.fanout.unregister(client)
