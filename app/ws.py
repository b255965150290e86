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

from app.services import services

sock = Sock()

IDLE_CHECK_S = 5.0


@sock.route("/ws")
def stream(ws) -> None:
    svc = services()
    # Authenticated streams (bet:* and balance for the owner) arrive with the session module;
    # until then every connection is public.
    client = svc.fanout.register(address=None)
    try:
        ws.send(orjson.dumps(svc.feed.status_message()).decode())
        if svc.feed.last_tick is not None:
            ws.send(svc.feed.last_tick.encode().decode())
        while ws.connected:
            with contextlib.suppress(Empty):
                ws.send(client.queue.get(timeout=IDLE_CHECK_S))
            while ws.receive(timeout=0) is not None:  # discard anything the client sends
                pass
    except gevent.GreenletExit:
        # Dropped for being slow, or the worker is shutting down: do not try to write to the socket
        # (that could block on a slow peer); shut it so the reader greenlet ends too.
        ws.connected = False
        with contextlib.suppress(OSError):
            ws.sock.shutdown(socket.SHUT_RDWR)
    finally:
        svc.fanout.unregister(client)
