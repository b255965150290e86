"""Websocket fan-out: one bounded queue per connected client.

The pub/sub listener greenlet (``workers.pubsub_listener``), the status watcher and the grid
publisher push messages here, already framed as websocket frames; each websocket's own greenlet
writes them to its socket (or, while that writer is idle on an empty queue, the greenlet that has a
broadcast or an answer writes it with one non-blocking send: `broadcast`). A client whose queue is
full is not keeping up: it is dropped (its greenlet killed, its socket closed) so it can never slow the
others or grow memory without bound.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import gevent
from gevent.queue import Full, Queue

from app.realtime.events import message_id

log = logging.getLogger(__name__)


def text_frame(text: str | bytes) -> bytes:
    """One unfragmented, unmasked websocket text frame (RFC 6455 §5.2), as a server sends it.

    Server frames are not masked, so the same bytes can go to every client: a broadcast is framed
    once instead of once per connection (the per-connection wsproto framing was most of the
    fan-out's CPU at thousands of clients).
    """
    payload = text.encode() if isinstance(text, str) else text
    n = len(payload)
    if n < 126:
        header = bytes((0x81, n))
    elif n < 1 << 16:
        header = bytes((0x81, 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + n.to_bytes(8, "big")
    return header + payload


# Queued instead of a frame: the socket's writer closes the connection with `Client.close_code`.
CLOSE = b""
# Queued by the sweeper every ping interval: the writer checks the last pong, then sends a ping. (The
# bytes are an empty ping frame; the writer recognises the object itself.)
PING = bytes((0x89, 0x00))
SWEEP_EVERY_S = 0.5  # session expiry is noticed within this (SPEC §8: closed within 1 s)


EventId = tuple[int, int]  # a trader event's Stream id (app.realtime.events), comparable


class Client:
    __slots__ = (
        "address",
        "close_code",
        "close_reason",
        "dropped",
        "expires_at_ms",
        "greenlet",
        "idle",
        "last_event",
        "next_ping",
        "queue",
        "raw",
        "resume_buffer",
        "session_key",
    )

    def __init__(self, maxsize: int, address: str | None) -> None:
        self.queue: Queue = Queue(maxsize)
        self.address = address  # lowercase wallet address for authenticated connections
        self.session_key: str | None = None  # the session's Redis key: logout closes the socket
        self.greenlet = gevent.getcurrent()
        self.dropped = False
        self.close_code: int | None = None
        self.close_reason = ""
        self.expires_at_ms: int | None = None  # the session's end: the sweeper closes it with 4401 then
        self.next_ping = 0.0  # monotonic: when the sweeper queues this socket's next PING
        # The newest trader event id queued to this socket: a replayed or relayed event at or below it
        # is already on its way, so it is not sent twice (resume, app.realtime.taps).
        self.last_event: EventId | None = None
        # While a `resume` reads the Stream, live events wait here (then go out without duplicates).
        self.resume_buffer: list[tuple[EventId, bytes]] | None = None
        # Set by the socket's writer (app.realtime.ws): its non-blocking OS socket, and True only while
        # it waits on an empty queue with nothing half-written. Then a broadcast may write to the socket
        # itself (`Fanout.broadcast`), as the writer would, without waking the writer. (A broadcast that
        # the kernel took only part of sets it False: the rest is queued for the writer. At a stop, a
        # writer killed while idle may still write a close frame: app.realtime.ws._close_now.)
        self.raw: Any = None
        self.idle = False


class Fanout:
    def __init__(
        self,
        queue_max: int,
        on_drop: Callable[[], None] | None = None,
        *,
        ping_every_s: float = 20.0,
        on_expired: tuple[int, str] = (4401, "invalid_session"),
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.queue_max = queue_max
        self._clients: set[Client] = set()
        self._by_address: dict[str, set[Client]] = {}
        self._by_session: dict[str, set[Client]] = {}
        self._on_drop = on_drop
        self.ping_every_s = ping_every_s
        self._on_expired = on_expired
        self.wall_ms = wall_ms  # the app's wall clock (Services.now_ms), for session expiry
        self._sweeper: gevent.Greenlet | None = None
        # Set by `close_all`: the worker is shutting down, and a socket it accepts meanwhile (gunicorn
        # stops accepting only at its next loop, up to a second later) is closed at once (ws.stream).
        self.closing = False

    def __len__(self) -> int:
        return len(self._clients)

    def register(self, address: str | None = None) -> Client:
        client = Client(self.queue_max, address)
        client.next_ping = time.monotonic() + self.ping_every_s
        self._clients.add(client)
        if self._sweeper is None or self._sweeper.dead:
            self._sweeper = gevent.spawn(self._sweep_forever)
        if address:
            self._by_address.setdefault(address, set()).add(client)
        return client

    def bind(
        self, client: Client, address: str, session_key: str | None = None, expires_at_ms: int | None = None
    ) -> None:
        """The connection authenticated (first message `auth`): it gets its trader's events."""
        self._forget(client)
        client.address, client.session_key = address, session_key
        client.expires_at_ms = expires_at_ms
        self._by_address.setdefault(address, set()).add(client)
        if session_key:
            self._by_session.setdefault(session_key, set()).add(client)

    def unregister(self, client: Client) -> None:
        self._clients.discard(client)
        self._forget(client)

    def _forget(self, client: Client) -> None:
        for index, key in ((self._by_address, client.address), (self._by_session, client.session_key)):
            if key:
                peers = index.get(key)
                if peers is not None:
                    peers.discard(client)
                    if not peers:
                        del index[key]

    def reply(self, client: Client, text: str | bytes) -> None:
        """Send a message to one connection (the answer to a message it sent, e.g. `bet:accepted`):
        written at once if its writer is idle, as a broadcast is (see `broadcast`), else queued."""
        self._push(client, text_frame(text))

    def queue_raw(self, client: Client, data: bytes) -> None:
        """Queue bytes already framed (a pong, a close echo from the socket's reader, app.realtime.ws)."""
        self._offer(client, data)

    def close(self, client: Client, code: int, reason: str) -> None:
        """Ask the connection's writer to close it with `code` after what is already queued."""
        if client.close_code is None:
            client.close_code, client.close_reason = code, reason
            self._offer(client, CLOSE)

    def end_session(self, session_key: str, code: int, reason: str) -> int:
        """Close every connection of a session that ended (logout); returns how many."""
        clients = list(self._by_session.get(session_key, ()))
        for client in clients:
            self.close(client, code, reason)
        return len(clients)

    def broadcast(self, text: str | bytes) -> None:
        """Send one JSON text message to every client, framed once for all of them.

        A client whose writer is idle (waiting on an empty queue, nothing half-written) gets the frame
        written at once by this greenlet with a non-blocking send: waking its writer to write it costs
        a queue put, a hub callback and two greenlet switches, most of a broadcast's CPU per socket
        (BENCHMARKS.md, fan-out). Nothing else can write meanwhile (the writer is parked, and every
        other frame goes through the queue, which is empty), so bytes never interleave; whatever the
        kernel does not take at once is queued for the writer, ahead of anything later.
        """
        frame = text_frame(text)
        for client in list(self._clients):
            self._push(client, frame)

    def _push(self, client: Client, frame: bytes) -> None:
        """`frame` written at once if the client's writer is idle (see `broadcast`), else queued."""
        if client.idle and client.raw is not None and not client.queue.qsize():
            self._write_now(client, frame)
        else:
            self._offer(client, frame)

    def _write_now(self, client: Client, frame: bytes) -> None:
        try:
            sent = client.raw.send(frame)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:  # the peer is gone: the writer finds out on its own next write
            return
        if sent < len(frame):
            if sent:
                # Half of a frame is on the wire: the writer is no longer idle in the sense above (a
                # close frame written now would land inside this one), until it has written the rest.
                client.idle = False
            self._offer(client, frame[sent:] if sent else frame)

    def send_to(self, address: str, text: str | bytes) -> None:
        """Send a trader's events (bet:* and balance; several, one JSON text per line) to every
        connection of that trader, each event once per connection (see `_due`). A connection whose
        writer is idle gets them written at once, in one send, as a broadcast is (`_push`): a
        `bet:confirmed` and its `balance` then cost no queue, no wake-up of the writer and one syscall."""
        clients = self._by_address.get(address)
        if not clients:
            return
        data = text.encode() if isinstance(text, str) else text
        events = [(message_id(part), text_frame(part)) for part in data.split(b"\n")]
        for client in list(clients):
            frames = [frame for eid, frame in events if self._due(client, eid, frame)]
            if frames:
                self._push(client, frames[0] if len(frames) == 1 else b"".join(frames))

    def deliver(self, client: Client, eid: EventId | None, frame: bytes) -> None:
        """Queue one trader event for `client`, unless it already has it (id at or below its last);
        held back while the client resumes."""
        if self._due(client, eid, frame):
            self._offer(client, frame)

    def _due(self, client: Client, eid: EventId | None, frame: bytes) -> bool:
        """Whether `client` is to get this event now: not if it already has it (id at or below its
        last), nor while it resumes (the event waits in its resume buffer)."""
        if eid is not None:
            if client.resume_buffer is not None:
                if len(client.resume_buffer) >= self.queue_max:
                    self._drop(client)  # it could not take them anyway
                    return False
                client.resume_buffer.append((eid, frame))
                return False
            if client.last_event is not None and eid <= client.last_event:
                return False
            client.last_event = eid
        return True

    def replay(self, client: Client, eid: EventId, frame: bytes) -> None:
        """Queue an event read back from the trader's Stream (during a resume)."""
        if client.last_event is None or eid > client.last_event:
            client.last_event = eid
            self._offer(client, frame)

    # ---- the sweeper: pings and session expiry, so a socket's writer never waits with a timeout ----
    def _sweep_forever(self) -> None:
        while self._clients:
            gevent.sleep(SWEEP_EVERY_S)
            try:
                self.sweep(time.monotonic(), self.wall_ms())
            except Exception:
                log.exception("websocket sweep failed")
        self._sweeper = None

    def sweep(self, now: float, now_ms: int) -> None:
        """Queue a PING for every socket whose ping is due; close (4401) those whose session ended.

        One greenlet does this for every socket every SWEEP_EVERY_S, instead of each writer waiting on
        its queue with a timeout: a timed wait costs a timer per message (≈ 4.5 µs of the ≈ 9 µs a
        queued message costs the hub, measured), and fan-out is tens of thousands of messages a second.
        """
        code, reason = self._on_expired
        for client in list(self._clients):
            if client.expires_at_ms is not None and now_ms >= client.expires_at_ms:
                self.close(client, code, reason)
            elif now >= client.next_ping:
                client.next_ping = now + self.ping_every_s
                self._offer(client, PING)

    def close_all(self) -> None:
        """Ask every client greenlet to end (used when the worker shuts down); sockets that open
        after this are closed at once (`closing`). Each writer then shuts its socket without waiting
        on it, after a 1012 close frame if the kernel takes it whole at once (app.realtime.ws)."""
        if not self.closing:
            self.closing_at = time.monotonic()
        self.closing = True
        for client in list(self._clients):
            self.unregister(client)
            client.greenlet.kill(block=False)

    def _offer(self, client: Client, frame: bytes) -> None:
        try:
            client.queue.put_nowait(frame)
        except Full:
            self._drop(client)

    def _drop(self, client: Client) -> None:
        if client.dropped:
            return
        client.dropped = True
        self.unregister(client)
        if self._on_drop:
            self._on_drop()
        log.info("dropping slow websocket client (queue of %d full)", self.queue_max)
        client.greenlet.kill(block=False)
