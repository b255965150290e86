"""Exchange message parsing against the stored samples: strings → integer cents and Unix ms."""

import json

import pytest

from tests.test_exchanges_fakes import sample
from workers.aggregator import PriceFormatError, median_cents, parse_price_cents
from workers.exchanges.binance import BinanceFormatError, parse_trade
from workers.exchanges.coinbase import CoinbaseFormatError, parse_time_ms, subscribe_message
from workers.exchanges.wsclient import Backoff, Rotate


@pytest.mark.parametrize(
    ("text", "cents"),
    [
        ("67123.45000000", 6_712_345),
        ("67123.45", 6_712_345),
        ("67123.4", 6_712_340),
        ("67123", 6_712_300),
        ("0.01", 1),
        ("0.005", 1),  # sub-cent digits: round half up
        ("0.00499999", 0 + 0),  # rounds to 0 → refused below; kept here for the rounding rule
        ("67123.454999", 6_712_345),
        ("67123.455", 6_712_346),
        ("67123.999", 6_712_400),
        ("999999999999.99", 99_999_999_999_999),
    ],
)
def test_price_strings_become_cents_without_floats(text, cents):
    if cents == 0:
        with pytest.raises(PriceFormatError):
            parse_price_cents(text)
    else:
        assert parse_price_cents(text) == cents


@pytest.mark.parametrize(
    "bad",
    [
        67123.45,
        67123,
        None,
        "",
        " 1",
        "1 ",
        "+1",
        "-1",
        "1e3",
        "1.",
        ".5",
        "01.5",
        "0",
        "0.00",
        "NaN",
        "inf",
        "1,5",
        "１２",
        "1000000000000.00",
        "1.0000000000000000000",
    ],
)
def test_price_parser_is_strict(bad):
    with pytest.raises(PriceFormatError):
        parse_price_cents(bad)


def test_median_of_cents():
    assert median_cents([5]) == 5
    assert median_cents([3, 1, 2]) == 2
    assert median_cents([1, 4]) == 2  # even count: mean of the middle two, rounded down
    assert median_cents([6_712_345, 6_712_350]) == 6_712_347


def test_binance_samples_parse():
    assert parse_trade(sample("binance_aggTrade.json")) == (6_712_345, 1_763_711_990_123)
    assert parse_trade(sample("binance_trade.json")) == (6_712_345, 1_763_711_990_123)
    assert parse_trade(sample("binance_combined_aggTrade.json")) == (6_712_345, 1_763_711_990_123)
    assert parse_trade(sample("binance_subscribe_reply.json")) is None
    with pytest.raises(Rotate):
        parse_trade(sample("binance_serverShutdown.json"))


@pytest.mark.parametrize(
    "mutate",
    [
        {"p": 67123.45},  # a number, not a string
        {"p": "abc"},
        {"p": "-1.00"},
        {"T": "1763711990123"},
        {"T": True},
        {"T": None},
    ],
)
def test_binance_malformed_trades_are_refused(mutate):
    msg = {**sample("binance_aggTrade.json"), **mutate}
    with pytest.raises(BinanceFormatError):
        parse_trade(msg)


def test_binance_unknown_messages_are_refused():
    for msg in ([1, 2], "x", {"hello": "world"}, {"e": "kline"}):
        with pytest.raises(BinanceFormatError):
            parse_trade(msg)


def test_coinbase_sample_times_and_subscription():
    assert parse_time_ms(sample("coinbase_ticker.json")["time"]) == 1_763_711_990_123
    assert parse_time_ms(sample("coinbase_heartbeat.json")["time"]) == 1_763_711_991_000
    assert parse_time_ms("2025-11-21T07:59:50Z") == 1_763_711_990_000
    assert parse_time_ms("2025-11-21T07:59:50.1+00:00") == 1_763_711_990_100
    assert subscribe_message() == sample("coinbase_subscribe.json")
    assert json.loads(json.dumps(subscribe_message())) == {
        "type": "subscribe",
        "product_ids": ["BTC-USD"],
        "channels": ["ticker", "heartbeat"],
    }


@pytest.mark.parametrize(
    "bad",
    [
        "2025-11-21 07:59:50Z",
        "2025-13-21T07:59:50Z",
        "2025-02-30T00:00:00Z",
        "2025-11-21T07:59:50+01:00",
        "1763711990123",
        1763711990123,
        None,
    ],
)
def test_coinbase_bad_times_are_refused(bad):
    with pytest.raises(CoinbaseFormatError):
        parse_time_ms(bad)


def test_backoff_grows_with_equal_jitter_and_resets():
    import random

    b = Backoff(0.5, 8.0, random.Random(3))
    delays = [b.next() for _ in range(7)]
    steps = [0.5, 1, 2, 4, 8, 8, 8]
    assert all(s / 2 <= d <= s for d, s in zip(delays, steps, strict=True))
    assert len(set(delays)) == len(delays)  # jittered
    b.reset()
    assert 0.25 <= b.next() <= 0.5
