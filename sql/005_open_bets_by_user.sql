-- 005: a trader's open bets by index (GET /api/v1/me, GET /api/v1/bets?status=confirmed).
-- Before it, /me summed the open stakes by walking every bet the trader had placed in the week
-- (bets_by_user, then each row for its status): 7-8 ms of SQLite for a trader with 50,000 bets, and
-- growing all week. This partial index holds the open bets only: at most the cells a trader can have
-- open, whatever the week's history (BENCHMARKS.md, "Issue 12, seventh pass").
CREATE INDEX bets_open_by_user ON bets (user_id, id) WHERE status = 'confirmed';
