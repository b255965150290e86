"""Bets (SPEC §2–4, §6, §8a; ADR-005/009/010).

- `placement` the rules of placing a bet, in SPEC §6 order, shared by HTTP and the websocket
- `routes`    POST/GET /api/v1/bets: the HTTP adapter
- `claims`    the one Redis round trip of a bet: nonce, cell and pending record
- `store`     the SQL of a bet, a deposit, a withdrawal (jobs for the single writer) and history reads
- `notify`    after each committed batch: bet status in Redis, `bet:*` and `balance` to the trader
- `reconcile` bets lost with a dead worker's queue, announced at once
- `schemas`   marshmallow schemas of the bet resources
"""
