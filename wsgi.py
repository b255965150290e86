"""WSGI entry point for gunicorn (``wsgi:app``) and the flask CLI (``flask --app wsgi``).

A bad `TAP_*` setting stops here with one line naming the variable, not a traceback.
"""

from app import create_app
from app.config import ConfigError

try:
    app = create_app()
except ConfigError as exc:
    raise SystemExit(f"tap-trading: configuration error: {exc}") from None
