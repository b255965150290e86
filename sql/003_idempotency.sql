-- 003: idempotent deposits and withdrawals (SPEC §7; app/ledger/store.py: move_money, find_movement).
-- One row per (trader, Idempotency-Key), for a request that carried the header (one without it is a new
-- movement each time and leaves no row here). The writer's job looks the key up, then writes this row in
-- the same savepoint as the balance change and its ledger row: the key is exactly as durable as the
-- money it guards, and money moves once per key. A retry finds the first outcome and gets it again (a
-- 200 with Idempotent-Replayed: true). A refusal is stored too (status rejected, reason
-- insufficient_funds, or unknown_user for a deposit; no balance change, no ledger row): the same key
-- answers the same 422. kind and amount are what a retry is compared with: the same key for another
-- amount or the other endpoint is 409 idempotency_key_conflict and moves nothing. ref_id is the
-- movement's id derived from (trader, key) (movement_ref_id), stored for a refusal as well: a 202
-- pending names it before the commit, and a committed movement's ledger row carries it.
-- Not copied by the weekly rollover. The key is looked up in the current week file and the attached
-- previous ones (HISTORY_WEEKS = 4), by the route on the read pool and again by the writer's job inside
-- its transaction, so a retry queued before a rollover that lands between the two still finds the
-- first attempt. A key stored in an older week (no longer attached) is forgotten: reused, it moves
-- money again.
-- The column comments inside CREATE TABLE stay as first written: SQLite stores that text in every
-- week file's schema.
CREATE TABLE money_requests (
    user_id    INTEGER NOT NULL,
    idem_key   TEXT    NOT NULL CHECK (length(idem_key) BETWEEN 1 AND 64),
    kind       TEXT    NOT NULL CHECK (kind IN ('deposit', 'withdrawal')),
    amount     INTEGER NOT NULL CHECK (amount > 0),
    ref_id     TEXT    NOT NULL,                    -- the ledger row's ref_id when committed
    status     TEXT    NOT NULL CHECK (status IN ('committed', 'rejected')),
    reason     TEXT,                                -- the refusal's code when rejected
    balance    INTEGER,                             -- the balance right after it, when committed
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, idem_key)
) STRICT;
