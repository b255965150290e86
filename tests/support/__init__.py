"""What the tests and the load tests share: a reference client written from docs/API.md alone (`client`:
the SIWE message and the bet text; `traders`: a trader over the Flask test client or real HTTP),
server launchers (`servers`: redis-server, gunicorn, nginx, exactly as `make run` starts them),
`waiting` (poll with a deadline instead of sleeping), `auth` (login helpers, a fake clock),
`pinned` (an app with a frozen clock and a pinned quote book) and `quote_sim` (simulated price paths).
"""
