"""Websocket streams: exchange prices through a real gunicorn, and the public / per-user relays."""

import json
import time

import pytest
import redis
import websocket

from app.keys import CHANNEL_PUBLIC, user_channel
from app.market.prices import last_tick
from app.services import services
from app.units import format_price
from tests.support.servers import Gunicorn, http_get, wait_until
from tests.test_exchanges_fakes import fake_binance, fake_coinbase

pytestmark = pytest.mark.e2e


def test_exchange_prices_flow_through_gunicorn_to_websocket_clients(tmp_path, redis_url):
    with fake_binance() as b, fake_coinbase() as c:
        env = {
            "TAP_DATA_DIR": str(tmp_path / "data"),
            "TAP_REDIS_URL": redis_url,
            "TAP_PRICE_SOURCES": "binance,coinbase",
            "TAP_BINANCE_WS_URL": b.url,
            "TAP_COINBASE_WS_URL": c.url,
        }
        server = Gunicorn(env, tmp_path / "gunicorn.log")
        server.start()
        try:
            conn = websocket.create_connection(server.url.replace("http", "ws") + "/ws", timeout=10)
            try:
                first = json.loads(conn.recv())
                assert first == {"type": "status", "feed": "healthy", "betting": True}
                median = format_price((b.price + c.price) // 2)
                alone = {format_price(b.price), format_price(c.price)}  # before the other connected
                b.price += 1000  # +$10 on Binance: the median moves by $5
                moved = format_price((b.price + c.price) // 2)
                seen, deadline = [], time.monotonic() + 10
                while moved not in seen and time.monotonic() < deadline:
                    msg = json.loads(conn.recv())
                    if msg["type"] == "price":
                        seen.append(msg["price"])
                assert moved in seen
                assert set(seen) <= {median, moved} | alone
            finally:
                conn.close()
            status, body = http_get(server.url + "/readyz")
            feed = json.loads(body)["checks"]["feed"]
            assert status == 200 and feed["state"] == "healthy" and feed["betting"] is True
            _, metrics = http_get(server.url + "/metrics")
            assert b'tap_feed_source_quotes_total{source="binance"}' in metrics
            assert b'tap_feed_source_quotes_total{source="coinbase"}' in metrics
            assert last_tick(redis.Redis.from_url(redis_url)).price in (
                (b.price + c.price) // 2,
                (b.price - 1000 + c.price) // 2,
            )
        finally:
            assert server.stop() == 0
        assert "Traceback" not in server.log(), server.log()[-3000:]


def frame_payload(frame: bytes) -> str:
    """The text of one unmasked server frame (as queued by app.realtime.fanout)."""
    n = frame[1] & 0x7F
    start = 2 if n < 126 else (4 if n == 126 else 10)
    return frame[start:].decode()


def test_private_messages_reach_only_their_owner_and_public_ones_everyone(running_app):
    svc = services(running_app)
    r = svc.redis
    alice = "0x" + "a1" * 20
    bob = "0x" + "b2" * 20
    a, b, anon = svc.fanout.register(alice), svc.fanout.register(bob), svc.fanout.register()
    try:
        wait_until(lambda: r.pubsub_numpat() >= 1, timeout=5, what="listener subscribed")
        text = '{"type":"balance","balance":"12.5"}'
        r.publish(user_channel(alice.upper().replace("0X", "0x")), text)  # lowercased by user_channel
        r.publish("tap:user:0xNOTANADDRESS", '{"type":"balance","balance":"1"}')  # dropped
        r.publish(CHANNEL_PUBLIC, '{"type":"grid","columns":[]}')
        got = {a: [], b: [], anon: []}

        def drain_until_grid():  # one connection delivers the three messages in publish order
            for client, out in got.items():
                while not client.queue.empty():
                    m = frame_payload(client.queue.get_nowait())
                    if '"type":"price"' not in m and '"type":"status"' not in m:
                        out.append(m)
            return all(any('"type":"grid"' in m for m in out) for out in got.values())

        wait_until(drain_until_grid, timeout=5, what="the public message at every client")
        assert got[a] == [text, '{"type":"grid","columns":[]}']
        assert got[b] == ['{"type":"grid","columns":[]}']
        assert got[anon] == ['{"type":"grid","columns":[]}']
        assert svc.metrics.registry.get_sample_value("tap_ws_private_messages_total") == 1
    finally:
        for client in (a, b, anon):
            svc.fanout.unregister(client)
