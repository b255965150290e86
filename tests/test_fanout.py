"""Per-client bounded queues: a client that stops reading is dropped, the others keep receiving."""

import gevent
import gevent.event

from app.realtime.fanout import Fanout
from tests.support.waiting import wait_until


def test_slow_client_is_dropped_while_others_keep_receiving():
    drops = []
    fanout = Fanout(queue_max=10, on_drop=lambda: drops.append(1))
    received = {i: [] for i in range(50)}
    stuck = gevent.event.Event()

    def reader(i):
        client = fanout.register()
        try:
            while True:
                received[i].append(client.queue.get())
        finally:
            fanout.unregister(client)

    def slow():
        fanout.register()
        stuck.wait()  # never reads

    readers = [gevent.spawn(reader, i) for i in range(50)]
    slowpoke = gevent.spawn(slow)
    gevent.sleep(0)
    for n in range(100):
        fanout.broadcast(f"m{n}")
        gevent.sleep(0)
    wait_until(
        lambda: slowpoke.dead and all(len(msgs) == 100 for msgs in received.values()),
        what="the slow client dropped and the others served",
    )
    assert slowpoke.dead  # killed after its queue filled up
    assert drops == [1]
    assert len(fanout) == 50
    assert all(len(msgs) == 100 for msgs in received.values())
    gevent.killall(readers)
    assert len(fanout) == 0


def test_send_to_reaches_only_that_address():
    fanout = Fanout(queue_max=10)
    a1, a2, b = fanout.register("0xa"), fanout.register("0xa"), fanout.register("0xb")
    anon = fanout.register()
    fanout.send_to("0xa", "hello")
    assert a1.queue.qsize() == a2.queue.qsize() == 1
    assert b.queue.qsize() == anon.queue.qsize() == 0
    fanout.unregister(a1)
    fanout.unregister(a2)
    fanout.send_to("0xa", "again")  # nobody left: no error, nothing queued
    assert a1.queue.qsize() == 1


def test_frames_are_valid_unmasked_text_frames():
    from app.realtime.fanout import text_frame

    for size in (0, 125, 126, 65535, 65536):
        payload = "x" * size
        frame = text_frame(payload)
        assert frame[0] == 0x81  # FIN + text
        assert not frame[1] & 0x80  # server frames are not masked
        n = frame[1] & 0x7F
        if size < 126:
            assert n == size and frame[2:] == payload.encode()
        elif size < 65536:
            assert n == 126 and int.from_bytes(frame[2:4], "big") == size and len(frame) == 4 + size
        else:
            assert n == 127 and int.from_bytes(frame[2:10], "big") == size and len(frame) == 10 + size


class _Raw:
    """A non-blocking socket's send: takes `room` bytes at most, raises BlockingIOError when full."""

    def __init__(self, room: int) -> None:
        self.room, self.sent, self.calls = room, b"", 0

    def send(self, data: bytes) -> int:
        self.calls += 1
        if self.room == 0:
            raise BlockingIOError
        n = min(self.room, len(data))
        self.sent += data[:n]
        self.room -= n
        return n


def test_a_broadcast_is_written_to_an_idle_writer_s_socket_and_the_rest_queued_in_order():
    from app.realtime.fanout import text_frame

    fanout = Fanout(queue_max=10)
    idle, busy, no_raw = fanout.register(), fanout.register(), fanout.register()
    idle.raw, idle.idle = _Raw(room=3 + len(text_frame("one"))), True
    busy.raw, busy.idle = _Raw(room=1000), False  # its writer is mid-write: never written to directly
    no_raw.idle = True
    fanout.broadcast("one")
    assert idle.raw.sent == text_frame("one") and idle.queue.qsize() == 0
    assert busy.raw.sent == b"" and busy.queue.get_nowait() == text_frame("one")
    assert no_raw.queue.get_nowait() == text_frame("one")
    fanout.broadcast("two")  # the kernel takes 3 bytes: the rest waits for the writer
    assert idle.raw.sent == text_frame("one") + text_frame("two")[:3]
    assert idle.queue.get_nowait() == text_frame("two")[3:]
    fanout.reply(idle, "three")  # queued: not empty any more, so nothing is written directly after it
    fanout.broadcast("four")
    assert [idle.queue.get_nowait() for _ in range(2)] == [text_frame("three"), text_frame("four")]
    fanout.broadcast("five")  # queue empty again but the socket is full: queued whole
    assert idle.queue.get_nowait() == text_frame("five")
    assert idle.raw.sent == text_frame("one") + text_frame("two")[:3]


def test_a_frame_the_kernel_took_only_part_of_leaves_the_writer_not_idle():
    """Half a frame on the wire: until its writer has written the rest, nothing may be written after
    it — the 1012 close frame a stopping worker writes to an idle writer's socket (app.realtime.ws)
    would land inside it. A frame the kernel refused whole leaves nothing half-written."""
    from app.realtime.fanout import text_frame

    fanout = Fanout(queue_max=10)
    client = fanout.register()
    client.raw, client.idle = _Raw(room=0), True
    fanout.broadcast("refused")  # nothing taken: queued whole, the socket holds no part of it
    assert client.idle and client.queue.get_nowait() == text_frame("refused")
    client.raw.room = 3
    fanout.broadcast("torn")
    assert client.raw.sent == text_frame("torn")[:3]
    assert not client.idle and client.queue.get_nowait() == text_frame("torn")[3:]


def test_an_answer_is_written_to_an_idle_writer_s_socket_else_queued():
    from app.realtime.fanout import text_frame

    fanout = Fanout(queue_max=10)
    client = fanout.register()
    client.raw, client.idle = _Raw(room=1000), True
    fanout.reply(client, "accepted")
    assert client.raw.sent == text_frame("accepted") and client.queue.qsize() == 0
    client.idle = False  # its writer is busy: queued, in order
    fanout.reply(client, "second")
    client.idle = True
    fanout.reply(client, "third")  # the queue is not empty: queued behind it
    assert [client.queue.get_nowait() for _ in range(2)] == [text_frame("second"), text_frame("third")]
    assert client.raw.sent == text_frame("accepted")


def test_a_trader_s_events_are_written_at_once_in_one_send_to_an_idle_writer_s_socket():
    from app.realtime.fanout import text_frame

    confirmed = b'{"id":"5-0","type":"bet:confirmed"}'
    balance = b'{"id":"5-1","type":"balance"}'
    fanout = Fanout(queue_max=10)
    idle, busy = fanout.register("0xa"), fanout.register("0xa")
    idle.raw, idle.idle = _Raw(room=1000), True
    busy.raw, busy.idle = _Raw(room=1000), False
    both = text_frame(confirmed) + text_frame(balance)
    fanout.send_to("0xa", confirmed + b"\n" + balance)
    assert (idle.raw.sent, idle.raw.calls, idle.queue.qsize()) == (both, 1, 0)
    assert busy.queue.get_nowait() == both and busy.raw.sent == b""  # its writer sends them, in order
    fanout.send_to("0xa", balance)  # already had: nothing written or queued
    assert (idle.raw.calls, idle.queue.qsize(), busy.queue.qsize()) == (1, 0, 0)
