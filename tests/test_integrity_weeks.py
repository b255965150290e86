"""Issue 10 item 8: integrity-check links weeks — each week's opening rows against the previous week's
closing balances, and carried bets against the previous file's open bets. The broken states are the
ones issue 10 items 1 and 2 produced, made here with the same SQL the writer ran."""

import datetime as dt

import apsw
import pytest

from app.bets.store import NewBet, insert_bet
from app.ledger.integrity import check_file, check_link
from app.ledger.store import credit, debit
from app.services import services
from app.storage import db
from app.storage.rollover import rollover_job

ALICE = "0x" + "a1" * 20
T = 1_900_000_000


@pytest.fixture
def db_dir(app):
    return services(app).settings.db_dir


def _next_week_file(db_dir):
    year, week = db.parse_week_filename(db.current_week_file(db_dir).name)
    monday = dt.date.fromisocalendar(year, week, 1) + dt.timedelta(days=7)
    return db_dir / db.week_filename(*monday.isocalendar()[:2])


def _bet(bet_id, stake=10, t_start=T):
    return NewBet(
        bet_id, 1, ALICE, f"{t_start}:7", t_start, 7, 7000, 8000, stake, 20_000, 2 * stake, bet_id, 0
    )


def _old_with_alice(db_dir, balance=100):
    old = db.current_week_file(db_dir)
    conn = db.connect(old)
    conn.execute("INSERT INTO users (id, address, balance, created_at) VALUES (1, ?, 0, 0)", (ALICE,))
    credit(conn, 1, balance, "deposit", "dep-1", 0)
    return old, conn


def _roll(conn, db_dir, new):
    """Run the rollover job on `conn` inside its own write transaction, as the writer does."""
    conn.execute("BEGIN IMMEDIATE")
    rollover_job(db_dir, new, "FULL")(conn)
    conn.execute("COMMIT")


def _check_all(runner):
    result = runner.invoke(args=["integrity-check", "--all-weeks"])
    return result.exit_code, result.output


def test_a_clean_rollover_links_cleanly(db_dir, runner):
    old, conn = _old_with_alice(db_dir)
    insert_bet(_bet("open1"))(conn)
    new = _next_week_file(db_dir)
    _roll(conn, db_dir, new)
    conn.close()
    assert check_link(old, new) == []
    code, out = _check_all(runner)
    assert code == 0, out
    assert f"{old.name} -> {new.name}: OK" in out


def test_writes_landing_in_the_closed_week_after_the_copy_are_named(db_dir, runner):
    """Item 1's state: [rollover, withdraw 50, bet 10] in one batch, the last two in the old file."""
    old, conn = _old_with_alice(db_dir)
    new = _next_week_file(db_dir)
    _roll(conn, db_dir, new)
    debit(conn, 1, 50, "withdrawal", "w1", 0)  # what the old writer committed after the switch
    insert_bet(_bet("late1"))(conn)
    conn.close()
    assert check_file(old) == [] and check_file(new) == []  # each week alone looks fine
    kinds = {v.kind: v.detail for v in check_link(old, new)}
    assert "opening_mismatch" in kinds and "closes at 40" in kinds["opening_mismatch"]
    assert "opens at 100" in kinds["opening_mismatch"]
    assert "carried_bet_missing" in kinds and "late1" in kinds["carried_bet_missing"]
    code, out = _check_all(runner)
    assert code == 1
    assert "opening_mismatch" in out and "late1" in out


def test_a_new_week_built_from_an_uncommitted_transaction_is_named(db_dir, runner):
    """Item 2's state: the copy saw a bet whose transaction then rolled back in the old file."""
    old, conn = _old_with_alice(db_dir)
    new = _next_week_file(db_dir)
    conn.execute("BEGIN IMMEDIATE")
    insert_bet(_bet("ghost1"))(conn)
    rollover_job(db_dir, new, "FULL")(conn)  # copies the open transaction
    conn.execute("ROLLBACK")  # ... whose COMMIT then failed
    conn.close()
    kinds = {v.kind: v.detail for v in check_link(old, new)}
    assert "closes at 100" in kinds["opening_mismatch"] and "opens at 90" in kinds["opening_mismatch"]
    assert "ghost1" in kinds["carried_bet_unknown"]
    code, out = _check_all(runner)
    assert code == 1 and "ghost1" in out


def test_a_bet_settled_in_both_weeks_and_a_bet_in_both_are_named(db_dir):
    old, conn = _old_with_alice(db_dir)
    insert_bet(_bet("both1"))(conn)
    new = _next_week_file(db_dir)
    _roll(conn, db_dir, new)
    # the resolver settled it in the closed file after the copy (item 1), and again in the new one
    conn.execute("UPDATE bets SET status = 'won', settled_at = 1 WHERE bet_id = 'both1'")
    credit(conn, 1, 20, "payout", "both1", 0)
    conn.close()
    conn = db.connect(new)
    conn.execute("UPDATE bets SET status = 'won', settled_at = 1 WHERE bet_id = 'both1'")
    credit(conn, 1, 20, "payout", "both1", 0)
    insert_bet(_bet("dup1", t_start=T + 5))(conn)
    conn.close()
    conn = db.connect(old)
    insert_bet(_bet("dup1", t_start=T + 5))(conn)  # the same bet committed in both files, not carried
    conn.close()
    violations = check_link(old, new)
    details = "\n".join(str(v) for v in violations)
    assert {"settled_in_both", "bet_in_both_weeks"} <= {v.kind for v in violations}, details
    assert "both1" in details and "dup1" in details


def test_a_user_missing_from_the_new_week_is_named(db_dir):
    old, conn = _old_with_alice(db_dir)
    new = _next_week_file(db_dir)
    _roll(conn, db_dir, new)
    conn.close()
    c = apsw.Connection(str(new))
    c.execute("DROP TRIGGER ledger_no_delete")
    c.execute("DELETE FROM transaction_ledger WHERE ref_type = 'opening'")
    c.close()
    assert [v.kind for v in check_link(old, new)] == ["opening_missing"]
