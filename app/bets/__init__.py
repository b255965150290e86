"""Bet ingestion (SPEC §2–4, §6–7; ADR-005/009/010).

- `routes`   POST/GET /api/v1/bets — the hot path reads top to bottom in `place_bet`
- `claims`   the one Redis round trip of a bet: nonce, cell and pending record
- `store`    the SQL of a bet, a deposit, a withdrawal (jobs for the single writer) and history reads
- `notify`   after each committed batch: bet status in Redis, `bet:*` and `balance` to the trader
- `schemas`  marshmallow schemas of the bet resources
"""
