-- 002: resolution and weekly rollover (ADR-006).
-- `carried` marks a bet copied into this week file by the rollover while still open: its debit row
-- is in the previous week's file, and this file's opening-balance row already accounts for it.
ALTER TABLE bets ADD COLUMN carried INTEGER NOT NULL DEFAULT 0 CHECK (carried IN (0, 1));

-- Open bets only (a partial index): the resolver finds the closed windows that still hold
-- unresolved bets, and readiness measures resolver lag, without walking a week of settled bets.
CREATE INDEX bets_open ON bets (target_time) WHERE status = 'confirmed';
