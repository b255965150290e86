"""End to end through real processes: gunicorn with the project's gunicorn.conf.py, nginx with the
project's config, and a private redis-server."""

import json
import os
import signal
import ssl
import time

import gevent
import pytest
import websocket

from app.config import Settings
from tests.support.servers import Gunicorn, Nginx, RedisServer, free_port, http_get, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def env(tmp_path, redis_url):
    return {"TAP_DATA_DIR": str(tmp_path / "data"), "TAP_REDIS_URL": redis_url, "TAP_LOG_LEVEL": "INFO"}


@pytest.fixture
def gunicorn(env, tmp_path):
    server = Gunicorn(env, tmp_path / "gunicorn.log")
    server.start()
    yield server
    assert server.stop() == 0
    assert "Traceback" not in server.log(), server.log()


PRICES = 4  # price messages each stream check reads


def _messages(url, timeout=10.0, **kw):
    """Everything a websocket client receives until PRICES price messages have arrived (other
    messages, e.g. the grid, come in between at a rate that does not depend on the price ticks)."""
    ws = websocket.create_connection(url, timeout=timeout, **kw)
    try:
        out = []
        deadline = time.monotonic() + timeout
        while sum(m["type"] == "price" for m in out) < PRICES and time.monotonic() < deadline:
            out.append(json.loads(ws.recv()))
        return out
    finally:
        ws.close()


def _assert_stream(msgs, feed=("healthy",)):
    assert msgs[0]["type"] == "status" and msgs[0]["feed"] in feed and msgs[0]["betting"] is True, msgs[0]
    prices = [m for m in msgs if m["type"] == "price"]
    assert len(prices) >= PRICES, msgs
    for m in prices:
        whole, frac = m["price"].split(".")
        assert whole.isdigit() and len(frac) == 2 and isinstance(m["ts"], int)
    assert [m["ts"] for m in prices] == sorted(m["ts"] for m in prices)


def test_ws_streams_prices_from_gunicorn(gunicorn):
    _assert_stream(_messages(gunicorn.url.replace("http", "ws") + "/ws"))


def test_everything_through_nginx(env, gunicorn, tmp_path):
    settings = Settings.from_env(
        {
            **env,
            "TAP_BIND": f"127.0.0.1:{gunicorn.port}",
            "TAP_HTTP_PORT": str(free_port()),
            "TAP_HTTPS_PORT": str(free_port()),
        }
    )
    nginx = Nginx(settings)
    nginx.start()
    try:
        http = f"http://127.0.0.1:{settings.http_port}"
        https = f"https://127.0.0.1:{settings.https_port}"
        for base in (http, https):
            status, body = http_get(base + "/readyz")
            assert status == 200, body
            assert json.loads(body)["status"] == "ready"
            status, body = http_get(base + "/api/v1/prices")
            assert status == 200 and json.loads(body)["prices"]
            status, body = http_get(base + "/")
            assert status == 200 and b"Tap Trading" in body
            status, body = http_get(base + "/api/v1/nope")
            assert status == 404 and json.loads(body)["error"]["code"] == "not_found"
        _assert_stream(_messages(f"ws://127.0.0.1:{settings.http_port}/ws"))
        secret = "t" * 43  # a token-shaped query string: closed with 4401, and never logged
        ws = websocket.create_connection(f"ws://127.0.0.1:{settings.http_port}/ws?token={secret}", timeout=10)
        try:
            opcode, data = ws.recv_data(control_frame=True)
            assert opcode == websocket.ABNF.OPCODE_CLOSE and int.from_bytes(data[:2], "big") == 4401
        finally:
            ws.close()
        _assert_stream(
            _messages(f"wss://127.0.0.1:{settings.https_port}/ws", sslopt={"cert_reqs": ssl.CERT_NONE})
        )
        status, _ = http_get(base + "/metrics")
        assert status == 200  # loopback is allowed; other addresses get 403 from nginx
        access = nginx.wait_for_access_log("GET /ws ")
        assert secret not in access and "token" not in access
    finally:
        nginx.stop()


def test_readyz_follows_a_redis_outage_without_restart(tmp_path):
    redis_srv = RedisServer(tmp_path / "own-redis")
    (tmp_path / "own-redis").mkdir()
    redis_srv.start()
    env = {
        "TAP_DATA_DIR": str(tmp_path / "data"),
        "TAP_REDIS_URL": redis_srv.url,
        "TAP_REDIS_TIMEOUT_S": "0.5",
    }
    server = Gunicorn(env, tmp_path / "gunicorn.log")
    server.start()
    try:
        workers = server.worker_pids()
        assert http_get(server.url + "/readyz")[0] == 200

        redis_srv.stop()
        wait_until(lambda: http_get(server.url + "/readyz")[0] == 503, timeout=10, what="readyz 503")
        status, body = http_get(server.url + "/readyz")
        checks = json.loads(body)["checks"]
        assert status == 503 and not checks["redis"]["ok"]
        assert checks["sqlite"]["ok"]
        assert http_get(server.url + "/healthz")[0] == 200  # liveness does not depend on Redis

        redis_srv.start()
        wait_until(lambda: http_get(server.url + "/readyz")[0] == 200, timeout=20, what="readyz 200 again")
        assert server.worker_pids() == workers  # recovered by itself, no restart
    finally:
        server.stop()
        redis_srv.stop()


def test_sighup_reload_keeps_serving(gunicorn):
    old_workers = gunicorn.worker_pids()
    statuses = []
    stop = False

    def hammer():
        while not stop:
            try:
                # Patient: gunicorn stops the old worker as soon as it has forked the new one, so a
                # request can wait in the listen backlog while the new worker boots (seconds on a
                # busy machine). Waiting is serving; a refusal, a reset or an error is not.
                statuses.append(http_get(gunicorn.url + "/healthz", timeout=20)[0])
            except OSError as exc:  # recorded, so the assertion below names it
                statuses.append(repr(exc))
            gevent.sleep(0.02)

    g = gevent.spawn(hammer)
    # requests before, during and after the reload, however long each part takes
    wait_until(lambda: len(statuses) >= 5, what="requests before the reload")
    os.kill(gunicorn.proc.pid, signal.SIGHUP)

    def replaced():
        pids = gunicorn.worker_pids()
        return pids and not set(pids) & set(old_workers)

    wait_until(replaced, timeout=25, what="the old worker replaced by a new one")
    wait_until(lambda: http_get(gunicorn.url + "/readyz")[0] == 200, what="ready after reload")
    served = len(statuses)
    wait_until(lambda: len(statuses) >= served + 5, what="requests after the reload")
    stop = True
    g.join(25)
    assert statuses and set(statuses) == {200}, statuses
    # The old worker stops at the fork, so the ticks pause while the new one boots; when that takes
    # longer than TAP_FEED_DEGRADED_S (3 s, a busy machine) the new worker rightly reports the feed
    # DEGRADED for the recovery period. Betting stays open either way.
    _assert_stream(_messages(gunicorn.url.replace("http", "ws") + "/ws"), feed=("healthy", "degraded"))
