"""The ledger (SPEC §1, §7, §10): balances, the append-only ledger rows, money movements, integrity.

- `store`      the SQL: conditional deduction (`debit`), `credit`, deposits and withdrawals under an
               Idempotency-Key, ledger and account reads
- `routes`     GET /api/v1/me, GET /api/v1/ledger, POST /api/v1/deposits, POST /api/v1/withdrawals
- `integrity`  `flask integrity-check`: each week file on its own, and the links between weeks

May import: `app.storage`, `app.auth`, `app.http`, `app.keys`. Never `app.bets` or `workers`.
"""
