"""The operator console's server side (SPEC §8b halt switch, §8c console): `/api/v1/admin/*`.

- `routes`     every admin endpoint (admin only: `app.auth.decorators.admin_required`; 403 otherwise)
- `console`    the readers behind them: feed, writer, taps, exposure, house result, weeks — each cached
               about a second, SQLite only through the read pool, so a console refreshing every second
               costs the trader path nothing it would notice; the archive listing (S3) is never on a
               request's time: the last one is shown with its age, a greenlet refreshes it
- `samples`    per-second samples kept in process memory (writer latency, feed sources), filled by the
               console worker (`workers/console.py`)
- `store`      the SQL: `betting_actions` (who halted or reopened betting, when, why) and `house_days`
- `integrity`  the integrity-check run from the console: a separate, niced process; progress and the
               last result in Redis
- `schemas`    marshmallow schemas for the OpenAPI document

May import: `app.auth`, `app.bets`, `app.ledger`, `app.market`, `app.storage`, `app.http`, `app.keys`.
Nothing imports `app.admin` but the factory. Never `workers`.
"""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the admin blueprint (after `app.extensions["tap"]` is set)."""
    from app.admin.routes import EXT_KEY, AdminState, bp
    from app.services import services

    app.extensions[EXT_KEY] = AdminState(services(app))
    app.register_blueprint(bp)
