-- 003: idempotent deposits and withdrawals (SPEC §7, issue 10 item 3).
-- One row per (user, Idempotency-Key), written in the same savepoint as the balance change and its
-- ledger row, so the key is exactly as durable as the money it guards: a retry finds the first
-- outcome here, committed or refused, and never moves money a second time.
-- Refusals (insufficient_funds) are remembered too: the same key answers the same 422.
-- Not copied by the weekly rollover: the API looks keys up in the attached previous weeks as well.
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
