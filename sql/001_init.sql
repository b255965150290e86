-- 001: one week file = users + bets + transaction_ledger (ADR-001/006/009/010).
-- All three live in the same file because SQLite transactions across ATTACHed files are not atomic in
-- WAL mode: a balance change, its ledger row and its bet must commit together.
-- Money is INTEGER micro-units (1e-6), prices INTEGER cents, multipliers INTEGER 1e-4 units, times Unix ms
-- unless the column says seconds. STRICT tables refuse a REAL sneaking into a money column.

CREATE TABLE week_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE users (
    id         INTEGER PRIMARY KEY,
    address    TEXT    NOT NULL UNIQUE CHECK (address GLOB '0x[0-9a-f]*' AND length(address) = 42),
    balance    INTEGER NOT NULL DEFAULT 0 CHECK (balance >= 0),
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE bets (
    id          INTEGER PRIMARY KEY,
    bet_id      TEXT    NOT NULL UNIQUE,                 -- public id, stable across week files
    user_id     INTEGER NOT NULL REFERENCES users (id),
    target_time INTEGER NOT NULL,                        -- column start, Unix seconds
    row         INTEGER NOT NULL,                        -- price band index
    min_price   INTEGER NOT NULL,                        -- band low, cents (inclusive)
    max_price   INTEGER NOT NULL,                        -- band high, cents (inclusive)
    stake       INTEGER NOT NULL CHECK (stake > 0),
    multiplier  INTEGER NOT NULL CHECK (multiplier >= 10000),
    payout      INTEGER NOT NULL CHECK (payout >= stake), -- floor(stake * multiplier) if it wins
    status      TEXT    NOT NULL DEFAULT 'confirmed' CHECK (status IN ('confirmed', 'won', 'lost', 'void')),
    nonce       TEXT    NOT NULL,
    placed_at   INTEGER NOT NULL,
    settled_at  INTEGER,
    UNIQUE (user_id, target_time, row)                   -- one bet per trader per cell
) STRICT;

-- The resolver settles a whole column set-wise: WHERE target_time = ? and the band test on min/max price.
CREATE INDEX bets_by_window ON bets (target_time, min_price, max_price);
CREATE INDEX bets_by_user ON bets (user_id, id);

CREATE TABLE transaction_ledger (
    id            INTEGER PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users (id),
    amount        INTEGER NOT NULL CHECK (amount <> 0 OR ref_type = 'opening'),  -- signed micro-units
    balance_after INTEGER NOT NULL CHECK (balance_after >= 0),
    ref_type      TEXT    NOT NULL CHECK (ref_type IN ('opening', 'deposit', 'withdrawal', 'bet', 'payout', 'refund')),
    ref_id        TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    UNIQUE (ref_type, ref_id)                            -- a debit, payout or refund is written exactly once
) STRICT;

CREATE INDEX ledger_by_user ON transaction_ledger (user_id, id);

-- Append-only: the ledger is the audit trail, so the database itself refuses edits.
CREATE TRIGGER ledger_no_update BEFORE UPDATE ON transaction_ledger
BEGIN
    SELECT RAISE(ABORT, 'transaction_ledger is append-only');
END;

CREATE TRIGGER ledger_no_delete BEFORE DELETE ON transaction_ledger
BEGIN
    SELECT RAISE(ABORT, 'transaction_ledger is append-only');
END;
