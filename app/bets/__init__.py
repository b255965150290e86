"""Bets (SPEC §2–4, §6, §8a; ADR-005/009/010).

- `placement` the rules of placing a bet, in SPEC §6 order, shared by HTTP and the websocket
- `routes`    POST/GET /api/v1/bets: the HTTP adapter
- `claims`    the one Redis round trip of a bet: nonce, cell and pending record, the halt switch and
              the exposure caps (SPEC §8b); releasing liability per bet and per column
- `exposure`  reading the open liability (the quote book's shading, the console)
- `halt`      the operator's halt switch: its Redis state and this worker's copy
- `tapstats`  taps per second by outcome, in memory, for the console
- `store`     the SQL of a bet, a deposit, a withdrawal (jobs for the single writer) and history reads
- `notify`    after each committed batch: bet status in Redis, `bet:*` and `balance` to the trader
- `reconcile` bets lost with a dead worker's queue, announced at once
- `schemas`   marshmallow schemas of the bet resources
"""
