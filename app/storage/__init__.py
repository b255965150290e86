"""Where the money lives: SQLite week files, the single writer's queue, the weekly rollover and the
archive, and the Redis connection.

- `db`            week files, CURRENT, migrations (`sql/`), pragmas, the read pool, paging across weeks
- `writes`        the bounded queue in front of the one SQLite writer (`workers/sqlite_writer.py`)
- `rollover`      the writer job that opens next week's file (balances and open bets carried over)
- `archive`       weekly archives of closed weeks to S3 or a local directory
- `redis_client`  the Redis connection pool
- `files`         durable, atomic file replacement (CURRENT, archive manifests and index)

Imports nothing from the rest of `app` but `app.config`.
"""
