"""Settings from the `TAP_*` environment variables (SPEC §9), validated once at start-up.

A bad value stops start-up with one line that names the variable, e.g.
``TAP_CHAIN_ID='x': must be an integer``; nothing falls back silently to a default.

One module on purpose: it is the table of every setting (name, parser, default, one line of doc),
from which the README's configuration table is generated (`scripts/readme_config_table.py`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from app.units import MULTIPLIER_DECIMALS, UnitError, parse_decimal, parse_money, parse_price

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PRICE_SOURCES = ("sim", "binance", "coinbase")
_ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")


class ConfigError(ValueError):
    """One invalid setting; its message is the one line printed before start-up stops."""


def _int(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        if not re.fullmatch(r"-?[0-9]+", raw.strip()):
            raise ValueError("must be an integer")
        v = int(raw)
        if lo is not None and v < lo:
            raise ValueError(f"must be >= {lo}")
        if hi is not None and v > hi:
            raise ValueError(f"must be <= {hi}")
        return v

    return parse


def _seconds(raw: str) -> float:
    # Durations are not money: a float of seconds is fine here.
    try:
        v = float(raw)
    except ValueError:
        raise ValueError("must be a number of seconds") from None
    if not v > 0 or v > 86400:
        raise ValueError("must be > 0 and <= 86400 seconds")
    return v


def _ms_window(raw: str) -> float:
    try:
        v = float(raw)
    except ValueError:
        raise ValueError("must be a number of milliseconds") from None
    if not 0 <= v <= 50:
        raise ValueError("must be >= 0 and <= 50 milliseconds")

    return v


def _bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be 1/0, true/false, yes/no or on/off")


def _str(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw.strip()


def _opt_str(raw: str) -> str | None:
    return raw.strip() or None


def _path(raw: str) -> Path:
    if not raw.strip():
        raise ValueError("must not be empty")
    return Path(raw).expanduser().resolve()


def _url(*schemes: str, optional: bool = False) -> Callable[[str], str | None]:
    def parse(raw: str) -> str | None:
        raw = raw.strip()
        if not raw and optional:
            return None
        parts = urlsplit(raw)
        if parts.scheme not in schemes or not parts.netloc:
            raise ValueError(f"must be a {'/'.join(s + '://' for s in schemes)} URL")
        try:
            port = parts.port  # urllib only reads it here: "abc" or 70000 raise ValueError
        except ValueError:
            raise ValueError("has a port that is not a number from 1 to 65535") from None
        if port == 0:
            raise ValueError("has a port that is not a number from 1 to 65535")
        return raw

    return parse


def _money(raw: str) -> int:
    return parse_money(raw.strip(), "value")


def _money_list(raw: str) -> tuple[int, ...]:
    items = [s.strip() for s in raw.split(",") if s.strip()]
    if not items:
        raise ValueError("must list at least one amount")
    return tuple(parse_money(s, "preset") for s in items)


def _price(raw: str) -> int:
    return parse_price(raw.strip(), "value")


def _fraction(raw: str) -> int:
    """A fraction in [0, 1) as 1e-4 units, e.g. "0.05" -> 500."""
    v = parse_decimal(raw.strip(), MULTIPLIER_DECIMALS, "value", allow_zero=True)
    if v >= 10**MULTIPLIER_DECIMALS:
        raise ValueError("must be below 1")
    return v


def _addresses(raw: str) -> frozenset[str]:
    out = set()
    for item in (s.strip() for s in raw.split(",")):
        if not item:
            continue
        if not _ADDRESS_RE.fullmatch(item):
            raise ValueError(f"{item[:48]!r} is not a 0x-prefixed 20-byte hex address")
        out.add(item.lower())
    return frozenset(out)


def _sources(raw: str) -> tuple[str, ...]:
    items = [s.strip().lower() for s in raw.split(",") if s.strip()]
    if not items:
        raise ValueError(f"must list at least one of {', '.join(PRICE_SOURCES)}")
    for s in items:
        if s not in PRICE_SOURCES:
            raise ValueError(f"unknown source {s!r} (known: {', '.join(PRICE_SOURCES)})")
    if len(set(items)) != len(items):
        raise ValueError("lists a source twice")
    return tuple(items)


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        v = raw.strip().upper()
        if v not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return v

    return parse


def _bind(raw: str) -> str:
    raw = raw.strip()
    if raw.startswith("unix:"):
        return raw
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("must be host:port or unix:/path")
    return raw


def _s3_prefix(raw: str) -> str:
    prefix = raw.strip().lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    if not re.fullmatch(r"[A-Za-z0-9._/=-]*", prefix) or "//" in prefix:
        raise ValueError("must be a key prefix of letters, digits and . _ - = /")
    return prefix


# Objects must stay readable without a restore request, so GLACIER and DEEP_ARCHIVE are not offered.
S3_STORAGE_CLASSES = ("STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR")


def _storage_class(raw: str) -> str | None:
    v = raw.strip().upper()
    if not v:
        return None
    if v not in S3_STORAGE_CLASSES:
        raise ValueError(f"must be one of {', '.join(S3_STORAGE_CLASSES)} or empty")
    return v


def _setting(env: str, parse: Callable[[str], Any], default: str, doc: str) -> Any:
    return field(metadata={"env": env, "parse": parse, "default": default, "doc": doc})


@dataclass(frozen=True)
class Settings:
    """Every runtime setting. Build with `Settings.from_env()`; fields are already typed and checked."""

    data_dir: Path = _setting(
        "TAP_DATA_DIR",
        _path,
        str(PROJECT_ROOT / "var"),
        "Where SQLite week files, Redis and nginx state live",
    )
    redis_url: str = _setting(
        "TAP_REDIS_URL",
        _url("redis", "unix"),
        "redis://127.0.0.1:6390/0",
        "Redis for sessions, nonces, prices, pub/sub",
    )
    bind: str = _setting("TAP_BIND", _bind, "127.0.0.1:8000", "gunicorn listen address")
    http_port: int = _setting("TAP_HTTP_PORT", _int(1, 65535), "8080", "nginx plain HTTP port")
    https_port: int = _setting("TAP_HTTPS_PORT", _int(1, 65535), "8443", "nginx HTTPS port")
    chain_id: int = _setting(
        "TAP_CHAIN_ID", _int(1, 2**53), "1", "EIP-155 chain id bound into SIWE and bet signatures"
    )
    siwe_domain: str = _setting(
        "TAP_SIWE_DOMAIN", _str, "localhost:8443", "SIWE domain (authority) the server expects"
    )
    dev_mode: bool = _setting("TAP_DEV_MODE", _bool, "0", "Enables mock deposits; never on in production")
    admin_addresses: frozenset[str] = _setting(
        "TAP_ADMIN_ADDRESSES", _addresses, "", "Comma list of operator wallet addresses"
    )
    price_sources: tuple[str, ...] = _setting(
        "TAP_PRICE_SOURCES",
        _sources,
        "sim",
        "Comma list of sim, binance, coinbase (sim with an exchange only in dev mode)",
    )
    binance_ws_url: str = _setting(
        "TAP_BINANCE_WS_URL",
        _url("ws", "wss"),
        "wss://stream.binance.com:9443/ws/btcusdt@aggTrade",
        "Binance stream endpoint",
    )
    coinbase_ws_url: str = _setting(
        "TAP_COINBASE_WS_URL",
        _url("ws", "wss"),
        "wss://ws-feed.exchange.coinbase.com",
        "Coinbase Exchange feed endpoint",
    )
    column_seconds: int = _setting(
        "TAP_COLUMN_SECONDS", _int(1, 3600), "5", "Width of a grid column in seconds"
    )
    price_step: int = _setting(
        "TAP_PRICE_STEP", _price, "10.00", "Height of a grid row (price band), dollars"
    )
    min_lead_columns: int = _setting(
        "TAP_MIN_LEAD_COLUMNS", _int(1, 1000), "2", "First placeable column, counted from the current one"
    )
    columns_ahead: int = _setting(
        "TAP_COLUMNS_AHEAD", _int(2, 1000), "12", "Columns shown ahead of the current one"
    )
    rows_each_side: int = _setting(
        "TAP_ROWS_EACH_SIDE", _int(1, 1000), "10", "Placeable rows above and below the current price"
    )
    house_edge: int = _setting(
        "TAP_HOUSE_EDGE", _fraction, "0.05", "House edge as a fraction; stored in 1e-4 units"
    )
    stake_presets: tuple[int, ...] = _setting(
        "TAP_STAKE_PRESETS", _money_list, "1,5,10,25,100", "Stake buttons shown to traders"
    )
    min_stake: int = _setting("TAP_MIN_STAKE", _money, "1", "Smallest accepted stake")
    max_stake: int = _setting("TAP_MAX_STAKE", _money, "1000", "Largest accepted stake")
    feed_degraded_s: float = _setting("TAP_FEED_DEGRADED_S", _seconds, "3", "Feed age that marks it DEGRADED")
    feed_critical_s: float = _setting("TAP_FEED_CRITICAL_S", _seconds, "10", "Feed age that suspends betting")
    feed_recovery_s: float = _setting(
        "TAP_FEED_RECOVERY_S", _seconds, "30", "Steady feed needed before betting reopens"
    )
    archive_dir: Path | None = _setting(
        "TAP_ARCHIVE_DIR",
        lambda r: _path(r) if r.strip() else None,
        "",
        "Local archive target (default <data dir>/archive)",
    )
    s3_bucket: str | None = _setting(
        "TAP_S3_BUCKET", _opt_str, "", "S3 bucket for weekly archives (empty: local only)"
    )
    s3_endpoint_url: str | None = _setting(
        "TAP_S3_ENDPOINT_URL", _url("http", "https", optional=True), "", "S3 API endpoint override"
    )
    sim_volatility: int = _setting(
        "TAP_SIM_VOLATILITY", _fraction, "0.60", "Annualised volatility of the simulated feed"
    )
    sim_tick_ms: int = _setting(
        "TAP_SIM_TICK_MS",
        _int(10, 60000),
        "250",
        "Simulated feed tick interval (never below TAP_FEED_PUBLISH_MS)",
    )
    sim_start_price: int = _setting("TAP_SIM_START_PRICE", _price, "67000.00", "Simulated feed first price")
    sqlite_synchronous: str = _setting(
        "TAP_SQLITE_SYNCHRONOUS",
        _choice("FULL", "NORMAL"),
        "FULL",
        "SQLite durability; see docs/ARCHITECTURE.md",
    )
    write_queue_max: int = _setting(
        "TAP_WRITE_QUEUE_MAX", _int(1, 1_000_000), "10000", "Writes waiting for the SQLite writer before 503"
    )
    batch_max: int = _setting(
        # 500, not 100: one transaction at a time, so under load the writer commits at most this many per
        # cycle (hub wake-up + GIL round trips + fsync: 30-100 ms on a saturated core); 100 capped taps
        # at ~1-2k/s there (BENCHMARKS.md, taps over the websocket).
        "TAP_BATCH_MAX",
        _int(1, 100_000),
        "500",
        "Most writes committed in one transaction",
    )
    writer_linger_ms: float = _setting(
        "TAP_WRITER_LINGER_MS",
        _ms_window,
        # measured against 0 and 10 in the mixed run at 3,000 taps/s: BENCHMARKS.md, issue 12 sixth pass
        "5",
        "Under load, how long the SQLite writer waits for more writes before a transaction (0: never)",
    )
    ws_queue_max: int = _setting(
        "TAP_WS_QUEUE_MAX", _int(1, 100_000), "256", "Messages buffered per websocket before it is dropped"
    )
    ws_ping_s: float = _setting("TAP_WS_PING_S", _seconds, "20", "Websocket ping interval")
    ws_max_message: int = _setting(
        "TAP_WS_MAX_MESSAGE", _int(64, 1 << 20), "4096", "Largest websocket message accepted from a client"
    )
    redis_pool_size: int = _setting(
        "TAP_REDIS_POOL_SIZE", _int(1, 10_000), "64", "Redis connections shared by all greenlets"
    )
    redis_batch_window_ms: float = _setting(
        "TAP_REDIS_BATCH_WINDOW_MS",
        _ms_window,
        "2",  # measured against 0 and 1 at 3,000-3,500 taps/s: BENCHMARKS.md, issue 12 third pass
        "How long a tap's Redis call waits for others to share its round trip (0: one hub pass)",
    )
    redis_batch_max: int = _setting(
        "TAP_REDIS_BATCH_MAX",
        _int(1, 10_000),
        "64",
        "Most Redis script calls sent in one round trip (1: no batching)",
    )
    switch_interval_ms: float = _setting(
        "TAP_SWITCH_INTERVAL_MS",
        _ms_window,
        "1",  # measured better than Python's 5 ms under tap load (BENCHMARKS.md, taps over the websocket)
        "sys.setswitchinterval of the worker: how long the busy hub may hold the GIL from the SQLite writer",
    )
    redis_timeout_s: float = _setting("TAP_REDIS_TIMEOUT_S", _seconds, "2", "Redis connect/read timeout")
    log_level: str = _setting(
        "TAP_LOG_LEVEL", _choice("DEBUG", "INFO", "WARNING", "ERROR"), "INFO", "Log level"
    )
    rate_auth_per_ip: int = _setting(
        "TAP_RATE_AUTH_PER_IP", _int(0, 1_000_000), "60", "Nonce + login requests per IP per minute (0: off)"
    )
    rate_per_ip: int = _setting(
        "TAP_RATE_PER_IP", _int(0, 1_000_000), "1000", "Authenticated requests per IP per second (0: off)"
    )
    rate_per_address: int = _setting(
        "TAP_RATE_PER_ADDRESS", _int(0, 1_000_000), "20", "Authenticated requests per wallet per s (0: off)"
    )
    feed_source_fresh_s: float = _setting(
        "TAP_FEED_SOURCE_FRESH_S",
        _seconds,
        "2",
        "A source's quote counts while its exchange and receive times are this recent",
    )
    feed_max_deviation: int = _setting(
        "TAP_FEED_MAX_DEVIATION",
        _fraction,
        "0.01",
        "Sources further than this fraction from the median are dropped",
    )
    feed_publish_ms: int = _setting(
        "TAP_FEED_PUBLISH_MS", _int(10, 60000), "250", "Shortest interval between two normalised ticks"
    )
    feed_idle_s: float = _setting(
        "TAP_FEED_IDLE_S", _seconds, "5", "Reconnect an exchange websocket that sent no data this long"
    )
    s3_prefix: str = _setting(
        "TAP_S3_PREFIX", _s3_prefix, "weeks/", "Key prefix of weekly archives in TAP_S3_BUCKET"
    )
    s3_storage_class: str | None = _setting(
        "TAP_S3_STORAGE_CLASS",
        _storage_class,
        "STANDARD_IA",
        "S3 storage class of archives (empty: the bucket's default)",
    )
    archive_zstd_level: int = _setting(
        "TAP_ARCHIVE_ZSTD_LEVEL", _int(1, 19), "3", "zstd level for weekly archives; see BENCHMARKS.md"
    )
    archive_zstd_threads: int = _setting(
        "TAP_ARCHIVE_ZSTD_THREADS", _int(0, 16), "1", "zstd worker threads for archives (0: in the caller)"
    )
    archive_verify_download_mb: int = _setting(
        "TAP_ARCHIVE_VERIFY_DOWNLOAD_MB",
        _int(0, 1 << 30),
        "1024",
        "Archives up to this size are re-downloaded and hashed after upload",
    )
    quote_prior_vol: int = _setting(
        "TAP_QUOTE_PRIOR_VOL",
        _fraction,
        "0.60",
        "Annualised volatility the quotes assume until 30 ticks of history exist",
    )
    quote_max_age_s: float = _setting(
        "TAP_QUOTE_MAX_AGE_S",
        _seconds,
        "2",
        "Taps are refused (503 quotes_stale) when the quote book or its price is older than this",
    )
    max_cell_payout: int = _setting(
        "TAP_MAX_CELL_PAYOUT",
        _money,
        "50000",
        "Most open potential payout on one cell, all traders together (SPEC §8b; 422 exposure_limit)",
    )
    max_column_payout: int = _setting(
        "TAP_MAX_COLUMN_PAYOUT",
        _money,
        "1000000",
        "Most open potential payout on one column, all cells together (SPEC §8b)",
    )
    money_wait_s: float = _setting(
        "TAP_MONEY_WAIT_S",
        _seconds,
        "5",
        "Deposits/withdrawals not committed by then answer 202 pending (the movement still happens)",
    )
    replication: str = _setting(
        "TAP_REPLICATION",
        _choice("AUTO", "ON", "OFF"),
        "AUTO",
        "Litestream replication of the week files to S3: AUTO (on when TAP_S3_BUCKET is set), ON, OFF",
    )
    s3_replica_prefix: str = _setting(
        "TAP_S3_REPLICA_PREFIX",
        _s3_prefix,
        "replica/",
        "Key prefix of the Litestream replica in TAP_S3_BUCKET (beside the archives)",
    )
    replica_sync_ms: int = _setting(
        "TAP_REPLICA_SYNC_MS",
        _int(50, 60000),
        "200",
        "Litestream's WAL poll and upload interval (bounds the recovery point; each upload is an S3 PUT)",
    )
    replica_lag_max_s: float = _setting(
        "TAP_REPLICA_LAG_MAX_S",
        _seconds,
        "30",
        "Replication lag above which /readyz reports the replica not ready",
    )
    new_database_over_replica: bool = _setting(
        "TAP_NEW_DATABASE_OVER_REPLICA",
        _bool,
        "0",
        "Start a new, empty database although the replica holds week files (else such a start refuses)",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read every `TAP_*` variable, parse and cross-check; raise ConfigError on the first bad one."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in overrides:
                values[f.name] = overrides.pop(f.name)
                continue
            name, parse = f.metadata["env"], f.metadata["parse"]
            raw = env.get(name)
            try:
                values[f.name] = parse(f.metadata["default"] if raw is None else raw)
            except (ValueError, UnitError) as exc:
                shown = f"={raw!r}" if raw is not None else " (default)"
                raise ConfigError(f"{name}{shown}: {exc}") from None
        if overrides:
            raise TypeError(f"unknown settings: {', '.join(sorted(overrides))}")
        settings = cls(**values)
        settings._cross_check()
        return settings

    def _cross_check(self) -> None:
        def bad(name: str, msg: str) -> None:
            raise ConfigError(f"{name}: {msg}")

        if self.columns_ahead <= self.min_lead_columns:
            bad("TAP_COLUMNS_AHEAD", f"must be greater than TAP_MIN_LEAD_COLUMNS ({self.min_lead_columns})")
        if self.min_stake > self.max_stake:
            bad("TAP_MIN_STAKE", "must not exceed TAP_MAX_STAKE")
        for p in self.stake_presets:
            if not self.min_stake <= p <= self.max_stake:
                bad("TAP_STAKE_PRESETS", "every preset must lie within TAP_MIN_STAKE..TAP_MAX_STAKE")
        if "sim" in self.price_sources and len(self.price_sources) > 1 and not self.dev_mode:
            # the simulated walk would be a source like any other in the median: a real-money price
            # moved by a random walk (up to twice TAP_FEED_MAX_DEVIATION away before it is dropped)
            bad("TAP_PRICE_SOURCES", "sim cannot be mixed with an exchange outside TAP_DEV_MODE=1")
        if not self.feed_degraded_s < self.feed_critical_s:
            bad("TAP_FEED_DEGRADED_S", "must be below TAP_FEED_CRITICAL_S")
        if self.max_cell_payout > self.max_column_payout:
            bad("TAP_MAX_CELL_PAYOUT", "must not exceed TAP_MAX_COLUMN_PAYOUT")
        if self.http_port == self.https_port:
            bad("TAP_HTTPS_PORT", "must differ from TAP_HTTP_PORT")
        if self.replication == "ON" and not self.s3_bucket:
            bad("TAP_REPLICATION", "on needs TAP_S3_BUCKET")
        if self.s3_replica_prefix == "" or (
            self.s3_replica_prefix.startswith(self.s3_prefix)
            or self.s3_prefix.startswith(self.s3_replica_prefix)
        ):
            bad(
                "TAP_S3_REPLICA_PREFIX",
                f"must be non-empty and apart from TAP_S3_PREFIX ({self.s3_prefix!r})",
            )

    # ---- derived paths ---------------------------------------------------------------------------
    @property
    def db_dir(self) -> Path:
        return self.data_dir / "db"

    @property
    def archive_path(self) -> Path:
        return self.archive_dir or self.data_dir / "archive"

    @property
    def replicating(self) -> bool:
        """Whether Litestream replicates the week files (and so owns their WAL checkpoints)."""
        return self.replication == "ON" or (self.replication == "AUTO" and self.s3_bucket is not None)


def env_table() -> list[tuple[str, str, str]]:
    """(variable, default, description) rows, used to keep the README's table honest."""
    return [(f.metadata["env"], f.metadata["default"], f.metadata["doc"]) for f in fields(Settings)]
