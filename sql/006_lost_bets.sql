-- 006: bets the reconciler declared lost (app.bets.reconcile), so that no writer can commit them after.
-- A bet answered 202 waits in its worker's in-memory write queue. Another worker's reconciler may judge
-- it lost (its owner's heartbeat lapsed: a Redis outage during a reload overlap, a Redis restart) while
-- that queue is alive and about to commit it. The judgement and the commit must exclude each other, and
-- SQLite's write lock is the one place both pass: the reconciler's writer job either finds the bet in
-- `bets` (then it is confirmed) or records it here (then it is rejected, `not_committed`), and the
-- trigger refuses any later insert of that bet, which the bet's writer reports as that same rejection.
-- Rows are tiny and rare (only lost bets); the weekly rollover copies the recent ones to the new file.
CREATE TABLE lost_bets (
    bet_id  TEXT    PRIMARY KEY,
    lost_at INTEGER NOT NULL                             -- Unix ms, the reconciler's clock
) STRICT, WITHOUT ROWID;

CREATE TRIGGER bets_never_after_lost BEFORE INSERT ON bets
WHEN EXISTS (SELECT 1 FROM lost_bets WHERE bet_id = NEW.bet_id)
BEGIN
    SELECT RAISE(ABORT, 'bet_declared_lost');
END;
