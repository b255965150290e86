import datetime as dt
import threading
import time

import apsw
import pytest

from app.bets.store import list_bets
from app.ledger.store import account
from app.storage import db
from tests.support.sqlite_steps import vm_steps


def test_week_file_names_follow_iso_weeks():
    assert db.week_filename(2026, 7) == "bets_2026_07.db"
    assert db.parse_week_filename("bets_2026_07.db") == (2026, 7)
    assert db.parse_week_filename("bets_2026_7.db") is None
    # 2027-01-01 is a Friday: ISO week 53 of 2026
    assert db.iso_week(dt.datetime(2027, 1, 1, tzinfo=dt.UTC)) == (2026, 53)
    assert db.iso_week(dt.datetime(2026, 11, 21, 12, tzinfo=dt.UTC).timestamp()) == (2026, 47)


def test_prepare_creates_current_week_file_with_schema(tmp_path):
    now = dt.datetime(2026, 11, 21, tzinfo=dt.UTC).timestamp()
    path = db.prepare_database(tmp_path, now)
    assert path.name == "bets_2026_47.db"
    assert db.current_week_file(tmp_path) == path
    conn = db.connect(path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table','index')")}
    assert {"users", "bets", "transaction_ledger", "week_meta", "bets_by_window"} <= tables
    assert db.schema_version(conn) == len(db.migrations())
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_covering_index_is_used_for_window_resolution(tmp_path):
    conn = db.connect(db.prepare_database(tmp_path, time.time()))
    plan = " ".join(
        str(r)
        for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT count(*) FROM bets WHERE target_time = ? AND min_price <= ? AND max_price >= ?",
            (100, 5, 5),
        )
    )
    assert "COVERING INDEX bets_by_window" in plan


def test_migrations_are_idempotent(tmp_path):
    path = db.prepare_database(tmp_path, time.time())
    conn = db.connect(path)
    assert db.migrate(conn) == []
    assert db.prepare_database(tmp_path, time.time() + 30 * 86400) == path  # CURRENT wins over the calendar
    assert db.migrate(conn) == []
    assert db.schema_version(conn) == len(db.migrations())


def test_a_new_migration_is_applied_once(tmp_path):
    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()
    for _version, p in db.migrations():
        (sql_dir / p.name).write_text(p.read_text())
    n = len(db.migrations())
    (sql_dir / f"{n + 1:03d}_extra.sql").write_text("CREATE TABLE extra (x INTEGER) STRICT;")
    conn = db.connect(tmp_path / "w.db")
    assert db.migrate(conn, sql_dir) == list(range(1, n + 2))
    assert db.migrate(conn, sql_dir) == []


def test_migration_numbering_gap_is_refused(tmp_path):
    (tmp_path / "001_a.sql").write_text("SELECT 1;")
    (tmp_path / "003_c.sql").write_text("SELECT 1;")
    with pytest.raises(RuntimeError, match="expected version 002"):
        db.migrations(tmp_path)


def test_failed_migration_leaves_nothing_behind(tmp_path):
    (tmp_path / "001_bad.sql").write_text("CREATE TABLE a (x INTEGER); CREATE TABLE a (y INTEGER);")
    conn = db.connect(tmp_path / "w.db")
    with pytest.raises(apsw.SQLError):
        db.migrate(conn, tmp_path)
    assert db.schema_version(conn) == 0
    assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'a'").fetchone()[0] == 0


@pytest.fixture
def conn(tmp_path):
    c = db.connect(db.prepare_database(tmp_path, time.time()))
    c.execute("INSERT INTO users (id, address, balance, created_at) VALUES (1, ?, 0, 0)", ("0x" + "ab" * 20,))
    return c


def test_ledger_is_append_only(conn):
    conn.execute(
        "INSERT INTO transaction_ledger (user_id, amount, balance_after, ref_type, ref_id, created_at) "
        "VALUES (1, 5, 5, 'deposit', 'd1', 0)"
    )
    with pytest.raises(apsw.ConstraintError, match="append-only"):
        conn.execute("UPDATE transaction_ledger SET amount = 6")
    with pytest.raises(apsw.ConstraintError, match="append-only"):
        conn.execute("DELETE FROM transaction_ledger")


def test_money_columns_refuse_floats_and_negatives(conn):
    with pytest.raises(apsw.ConstraintError):
        conn.execute("UPDATE users SET balance = 1.5 WHERE id = 1")
    with pytest.raises(apsw.ConstraintError):
        conn.execute("UPDATE users SET balance = -1 WHERE id = 1")


def test_a_debit_payout_or_refund_row_exists_once(conn):
    row = "INSERT INTO transaction_ledger (user_id, amount, balance_after, ref_type, ref_id, created_at) VALUES (1, 5, 5, 'payout', 'b1', 0)"
    conn.execute(row)
    with pytest.raises(apsw.ConstraintError):
        conn.execute(row)


def test_one_bet_per_trader_per_cell(conn):
    bet = (
        "INSERT INTO bets (bet_id, user_id, target_time, row, min_price, max_price, stake, multiplier, payout, "
        "nonce, placed_at) VALUES (?, 1, 100, 7, 7000, 8000, 10, 20000, 20, 'n', 0)"
    )
    conn.execute(bet, ("a",))
    with pytest.raises(apsw.ConstraintError):
        conn.execute(bet, ("b",))


def test_read_pool_is_separate_and_read_only(tmp_path):
    path = db.prepare_database(tmp_path, time.time())
    writer = db.connect(path)
    pool = db.ReadPool(tmp_path, size=2)
    with pool.connection() as reader:
        assert reader is not writer
        with pytest.raises(apsw.ReadOnlyError):
            reader.execute("INSERT INTO week_meta (key, value) VALUES ('x', 'y')")
    writer.execute("INSERT INTO week_meta (key, value) VALUES ('seen', 'yes')")
    value = pool.run(lambda c: c.execute("SELECT value FROM week_meta WHERE key = 'seen'").fetchone()[0])
    assert value == "yes"
    pool.close()


def test_readers_do_not_block_on_an_open_write_transaction(tmp_path):
    path = db.prepare_database(tmp_path, time.time())
    writer = db.connect(path)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO week_meta (key, value) VALUES ('uncommitted', '1')")
    pool = db.ReadPool(tmp_path)
    # WAL: the reader sees the last committed state immediately, without waiting for the writer.
    assert (
        pool.run(lambda c: c.execute("SELECT count(*) FROM week_meta WHERE key='uncommitted'").fetchone()[0])
        == 0
    )
    writer.execute("COMMIT")
    assert (
        pool.run(lambda c: c.execute("SELECT count(*) FROM week_meta WHERE key='uncommitted'").fetchone()[0])
        == 1
    )
    pool.close()


def test_a_read_runs_on_the_threadpool_unless_inline(tmp_path):
    """`inline` is for index-bounded reads: the thread hop costs more than they do (ReadPool.run)."""
    db.prepare_database(tmp_path, time.time())
    pool = db.ReadPool(tmp_path, size=1)
    here = threading.get_ident()
    assert pool.run(lambda c: threading.get_ident()) != here
    assert pool.run(lambda c: threading.get_ident(), inline=True) == here
    with pytest.raises(apsw.ReadOnlyError):  # the same connection, so the same guard and the same error
        pool.run(lambda c: c.execute("INSERT INTO week_meta (key, value) VALUES ('x', 'y')"), inline=True)
    assert pool.run(lambda c: c.execute("SELECT count(*) FROM week_meta").fetchone()[0], inline=True) == 1
    pool.close()


# A bet of trader 1: (bet_id, target_time, status, nonce).
_BET = (
    "INSERT INTO bets (bet_id, user_id, target_time, row, min_price, max_price, stake, multiplier,"
    " payout, status, nonce, placed_at) VALUES (?, 1, ?, 0, 0, 1, 1000, 20000, 2000, ?, ?, 0)"
)


def _add_trader(conn: apsw.Connection) -> None:
    conn.execute(
        "INSERT INTO users (id, address, balance, created_at) VALUES (1, ?, 0, 0)", ("0x" + "1" * 40,)
    )


def test_open_bets_are_read_without_walking_the_settled_ones(tmp_path):
    """/me (open stakes) and /bets?status=confirmed read a trader's open bets by index (migration 005):
    their work does not grow with the bets the trader settled this week, so they may run inline."""
    path = db.prepare_database(tmp_path, time.time())
    conn = db.connect(path)
    _add_trader(conn)
    n = 0

    def settle(count: int) -> None:
        nonlocal n
        with conn:
            for _ in range(count):
                conn.execute(_BET, (f"s{n}", n, "lost", f"n{n}"))
                n += 1

    with conn:
        for i in range(3):
            conn.execute(_BET, (f"open{i}", 10**9 + i, "confirmed", f"o{i}"))
    reader = db.connect(path, readonly=True)
    work = lambda: (  # noqa: E731
        vm_steps(reader, lambda: account(reader, 1)),
        vm_steps(reader, lambda: list_bets(reader, 1, "confirmed", None, 21)),
    )
    settle(200)
    work()  # the first run also prepares the statements
    small = work()
    settle(5000)
    assert work() == small
    assert account(reader, 1)["open_stakes"] == 3000
    assert [b["bet_id"] for b in list_bets(reader, 1, "confirmed", None, 21)] == ["open2", "open1", "open0"]


def test_the_open_bets_page_does_not_walk_older_weeks(tmp_path):
    """An older week's 'confirmed' rows were carried into the newer week at rollover: /bets?status=
    confirmed lists them from there, without reading the older files (which may predate the index:
    SQLite sees that `status = 'confirmed' AND status != 'confirmed'` holds for no row)."""
    older = db.prepare_database(tmp_path, dt.datetime(2026, 11, 2, tzinfo=dt.UTC).timestamp())
    newer = tmp_path / db.week_filename(2026, 46)
    old_conn = db.connect(older)
    old_conn.execute("DROP INDEX bets_open_by_user")  # a week file written before migration 005
    _add_trader(old_conn)
    old_conn.execute(_BET, ("carried", 10**9, "confirmed", "c"))
    new_conn = db.connect(newer)
    db.migrate(new_conn)
    new_conn.execute("INSERT INTO week_meta (key, value) VALUES ('week', '2026_46')")
    _add_trader(new_conn)
    new_conn.execute(_BET, ("carried", 10**9, "confirmed", "c"))
    db.set_current_week_file(tmp_path, newer)
    pool = db.ReadPool(tmp_path, size=1)

    def page(c: apsw.Connection) -> tuple[int, list[str]]:
        rows: list[dict] = []
        steps = vm_steps(c, lambda: rows.extend(list_bets(c, 1, "confirmed", None, 21)))
        return steps, [r["bet_id"] for r in rows]

    pool.run(page)  # prepares the statements
    small = pool.run(page)
    with old_conn:
        for i in range(3000):
            old_conn.execute(_BET, (f"s{i}", i, "lost", f"n{i}"))
    assert pool.run(page) == small
    assert small[1] == ["carried"]
    pool.close()


def test_an_idle_read_connection_follows_current_after_a_rollover(tmp_path):
    """Issue 10 item 9: CURRENT is checked when a connection is taken, not only when it is returned."""
    old = db.prepare_database(tmp_path, time.time())
    pool = db.ReadPool(tmp_path, size=1)
    week = lambda c: c.execute("SELECT value FROM week_meta WHERE key = 'week'").fetchone()[0]  # noqa: E731
    assert pool.run(week) == old.stem[5:]  # the one connection is now idle, on the old file
    new = tmp_path / db.week_filename(2099, 1)
    conn = db.connect(new)
    db.migrate(conn)
    conn.execute("INSERT INTO week_meta (key, value) VALUES ('week', '2099_01')")
    conn.close()
    db.set_current_week_file(tmp_path, new)
    assert pool.run(week) == "2099_01"  # the very next read answers from the new week
    with pool.connection() as c:
        assert week(c) == "2099_01"
    pool.close()
