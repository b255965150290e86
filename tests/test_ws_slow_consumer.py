"""A websocket client that stops reading is dropped while 500 others keep receiving everything.

Real gunicorn (the project's gunicorn.conf.py, one gevent worker), 500 websocket-client readers in
this process, and one raw-socket client with a 4 KiB receive buffer that completes the handshake and
never reads again. The test publishes 8 KiB messages on ``tap:public``: the slow client's kernel
buffers fill (the server's send buffer is fixed at 2 × 256 KiB by app/realtime/ws.py), then its queue of
``TAP_WS_QUEUE_MAX`` messages, and it is dropped; every other client gets every message, in order.
"""

import base64
import json
import os
import resource
import socket
import time

import gevent
import pytest
import redis
import websocket

from tests.support.servers import Gunicorn, http_get, wait_until

pytestmark = pytest.mark.e2e

READERS = 500
MESSAGES = 120
QUEUE_MAX = 48
PAD = "x" * 8000


def _metric(url: str, name: str) -> float:
    _, body = http_get(url + "/metrics")
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def _non_reading_client(port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return s  # … and never read from again


def test_a_client_that_stops_reading_is_dropped_while_500_others_keep_receiving(tmp_path, redis_url):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    env = {
        "TAP_DATA_DIR": str(tmp_path / "data"),
        "TAP_REDIS_URL": redis_url,
        "TAP_WS_QUEUE_MAX": str(QUEUE_MAX),
        "TAP_LOG_LEVEL": "WARNING",
    }
    server = Gunicorn(env, tmp_path / "gunicorn.log")
    server.start()
    received: list[list[int]] = [[] for _ in range(READERS)]
    conns: list[websocket.WebSocket] = []

    def read(i: int, conn: websocket.WebSocket) -> None:
        while True:
            opcode, data = conn.recv_data()
            if opcode != websocket.ABNF.OPCODE_TEXT:
                return
            if data.startswith(b'{"type":"bulk"'):
                received[i].append(json.loads(data)["seq"])

    readers = []
    try:
        ws_url = server.url.replace("http", "ws") + "/ws"
        for i in range(READERS):
            conn = websocket.create_connection(ws_url, timeout=30, skip_utf8_validation=True)
            conns.append(conn)
            readers.append(gevent.spawn(read, i, conn))
        slow = _non_reading_client(server.port)
        wait_until(
            lambda: _metric(server.url, "tap_ws_clients") == READERS + 1, timeout=20, what="all connected"
        )

        r = redis.Redis.from_url(redis_url)
        dropped_at = None
        for seq in range(MESSAGES):
            r.publish(
                "tap:public", json.dumps({"type": "bulk", "seq": seq, "pad": PAD}, separators=(",", ":"))
            )
            gevent.sleep(0.04)
            if dropped_at is None and seq % 5 == 4 and _metric(server.url, "tap_ws_dropped_total") == 1:
                dropped_at = seq
        assert dropped_at is not None, "the slow client should be dropped while messages still flow"
        wait_until(
            lambda: all(len(got) == MESSAGES for got in received),
            timeout=30,
            what="every reader got everything",
        )
        assert all(got == list(range(MESSAGES)) for got in received)  # nothing lost, nothing reordered
        assert _metric(server.url, "tap_ws_dropped_total") == 1
        assert _metric(server.url, "tap_ws_clients") == READERS
        assert all(not g.dead for g in readers)  # all 500 still connected

        # the dropped client's socket was shut by the server: draining it ends in EOF or a reset
        slow.settimeout(5)
        with pytest.raises((ConnectionResetError, BrokenPipeError, EOFError)):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if not slow.recv(65536):
                    raise EOFError
        slow.close()
    finally:
        for g in readers:
            g.kill()
        for conn in conns:
            conn.close(timeout=0)
        assert server.stop() == 0
    assert "Traceback" not in server.log(), server.log()[-3000:]
