import subprocess
import sys

import pytest

from app.config import ConfigError, Settings, env_table
from tests.support.servers import ROOT


def test_defaults_parse_to_typed_values():
    s = Settings.from_env({})
    assert s.chain_id == 1
    assert s.column_seconds == 5
    assert s.price_step == 1000  # "10.00" dollars in cents
    assert s.house_edge == 500  # 0.05 in 1e-4 units
    assert s.min_stake == 1_000_000 and s.max_stake == 1_000_000_000
    assert s.price_sources == ("sim",)
    assert s.bind == "127.0.0.1:8000" and s.http_port == 8080 and s.https_port == 8443
    assert s.feed_degraded_s == 3 and s.feed_critical_s == 10 and s.feed_recovery_s == 30
    assert s.sqlite_synchronous == "FULL"
    assert s.dev_mode is False


def test_env_values_are_read():
    s = Settings.from_env(
        {
            "TAP_CHAIN_ID": "8453",
            "TAP_PRICE_SOURCES": "binance, coinbase",
            "TAP_ADMIN_ADDRESSES": "0xAbCdEf0123456789aBcDeF0123456789ABCDEF01",
            "TAP_DEV_MODE": "yes",
            "TAP_PRICE_STEP": "2.5",
        }
    )
    assert s.chain_id == 8453
    assert s.price_sources == ("binance", "coinbase")
    assert s.admin_addresses == frozenset({"0xabcdef0123456789abcdef0123456789abcdef01"})
    assert s.dev_mode is True
    assert s.price_step == 250


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"TAP_CHAIN_ID": "abc"}, "TAP_CHAIN_ID"),
        ({"TAP_CHAIN_ID": "0"}, "TAP_CHAIN_ID"),
        ({"TAP_HTTP_PORT": "70000"}, "TAP_HTTP_PORT"),
        ({"TAP_PRICE_SOURCES": "kraken"}, "TAP_PRICE_SOURCES"),
        ({"TAP_PRICE_SOURCES": "sim,sim"}, "TAP_PRICE_SOURCES"),
        ({"TAP_PRICE_SOURCES": "sim,binance"}, "TAP_PRICE_SOURCES"),  # a random walk in a real price
        ({"TAP_PRICE_SOURCES": ""}, "TAP_PRICE_SOURCES"),
        ({"TAP_PRICE_STEP": "10.001"}, "TAP_PRICE_STEP"),
        ({"TAP_PRICE_STEP": "1e3"}, "TAP_PRICE_STEP"),
        ({"TAP_HOUSE_EDGE": "1"}, "TAP_HOUSE_EDGE"),
        ({"TAP_HOUSE_EDGE": "-0.1"}, "TAP_HOUSE_EDGE"),
        ({"TAP_DEV_MODE": "maybe"}, "TAP_DEV_MODE"),
        ({"TAP_REDIS_URL": "http://x"}, "TAP_REDIS_URL"),
        ({"TAP_REDIS_URL": "redis://127.0.0.1:abc/0"}, "TAP_REDIS_URL"),  # was a traceback in make run
        ({"TAP_REDIS_URL": "redis://127.0.0.1:70000/0"}, "TAP_REDIS_URL"),
        ({"TAP_BINANCE_WS_URL": "https://example"}, "TAP_BINANCE_WS_URL"),
        ({"TAP_ADMIN_ADDRESSES": "0x1234"}, "TAP_ADMIN_ADDRESSES"),
        ({"TAP_FEED_CRITICAL_S": "soon"}, "TAP_FEED_CRITICAL_S"),
        ({"TAP_FEED_DEGRADED_S": "20"}, "TAP_FEED_DEGRADED_S"),  # not below critical
        ({"TAP_COLUMNS_AHEAD": "2"}, "TAP_COLUMNS_AHEAD"),  # not beyond min lead
        ({"TAP_MIN_STAKE": "5000"}, "TAP_MIN_STAKE"),  # above max stake
        ({"TAP_STAKE_PRESETS": "1,2000"}, "TAP_STAKE_PRESETS"),
        ({"TAP_SQLITE_SYNCHRONOUS": "OFF"}, "TAP_SQLITE_SYNCHRONOUS"),
        ({"TAP_BIND": "nohost"}, "TAP_BIND"),
    ],
)
def test_bad_value_names_the_variable(env, name):
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env)
    message = str(err.value)
    assert message.startswith(name)
    assert "\n" not in message


def test_sim_mixed_with_an_exchange_is_for_dev_mode_only():
    s = Settings.from_env({"TAP_PRICE_SOURCES": "sim,binance", "TAP_DEV_MODE": "1"})
    assert s.price_sources == ("sim", "binance")


def test_every_setting_has_a_documented_tap_variable():
    rows = env_table()
    assert all(var.startswith("TAP_") and doc for var, _default, doc in rows)
    readme = (ROOT / "README.md").read_text()
    missing = [var for var, _, _ in rows if var not in readme]
    assert missing == [], f"README configuration table lacks {missing}"


def _start_with(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_wsgi_start_stops_with_one_line_naming_the_variable():
    proc = _start_with({"TAP_CHAIN_ID": "abc"}, "-c", "import wsgi")
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "TAP_CHAIN_ID" in lines[0]


def test_gunicorn_start_stops_with_one_line_naming_the_variable(tmp_path):
    gunicorn = str(ROOT / ".venv" / "bin" / "gunicorn") if (ROOT / ".venv").exists() else "gunicorn"
    proc = subprocess.run(
        [gunicorn, "-c", "gunicorn.conf.py", "--check-config"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "TAP_HOUSE_EDGE": "2", "TAP_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "TAP_HOUSE_EDGE" in proc.stderr
    assert "Traceback" not in proc.stderr
