-- 004: house risk and the operator console (SPEC §8b, §8c).
--
-- betting_actions: every halt and reopen of betting by an operator, with the operator's address, the
-- time and the reason (the Redis switch is the live state; this is the durable record). Each week
-- file holds its own week's actions; GET /api/v1/admin/betting reads the attached weeks too.
CREATE TABLE betting_actions (
    id       INTEGER PRIMARY KEY,
    at       INTEGER NOT NULL,                                  -- Unix ms
    address  TEXT    NOT NULL,                                  -- the operator's wallet, lowercase
    action   TEXT    NOT NULL CHECK (action IN ('halt', 'reopen')),
    reason   TEXT    CHECK (reason IS NULL OR length(reason) BETWEEN 1 AND 200),
    ip       TEXT                                               -- the client address nginx saw
) STRICT;

-- house_days: the house's result per UTC day of settlement and multiplier bucket, maintained by the
-- settlement transaction itself (app/bets/resolution.py), so the console reads a handful of rows
-- instead of a day of bets. won/lost bets only in bets/staked/paid; voids counted apart (refunded).
-- Realised return to players = paid / staked; the house's result = staked - paid.
CREATE TABLE house_days (
    id       INTEGER PRIMARY KEY,
    day      TEXT    NOT NULL,                                  -- 'YYYY-MM-DD', UTC
    bucket   TEXT    NOT NULL CHECK (bucket IN ('1-2', '2-5', '5-10', '10-30', '30-100')),
    bets     INTEGER NOT NULL DEFAULT 0,
    won      INTEGER NOT NULL DEFAULT 0,
    staked   INTEGER NOT NULL DEFAULT 0,                        -- micro-units
    paid     INTEGER NOT NULL DEFAULT 0,                        -- micro-units (payouts of won bets)
    voided   INTEGER NOT NULL DEFAULT 0,
    refunded INTEGER NOT NULL DEFAULT 0,                        -- micro-units
    UNIQUE (day, bucket)
) STRICT;

-- bets settled before this migration
INSERT INTO house_days (day, bucket, bets, won, staked, paid, voided, refunded)
SELECT date(settled_at / 1000, 'unixepoch'),
       CASE WHEN multiplier < 20000 THEN '1-2' WHEN multiplier < 50000 THEN '2-5'
            WHEN multiplier < 100000 THEN '5-10' WHEN multiplier < 300000 THEN '10-30' ELSE '30-100' END,
       sum(status <> 'void'), sum(status = 'won'),
       sum(CASE WHEN status <> 'void' THEN stake ELSE 0 END),
       sum(CASE WHEN status = 'won' THEN payout ELSE 0 END),
       sum(status = 'void'), sum(CASE WHEN status = 'void' THEN stake ELSE 0 END)
FROM bets WHERE status IN ('won', 'lost', 'void') AND settled_at IS NOT NULL
GROUP BY 1, 2;
