"""The app without the per-request yield (`app.http.middleware.YieldFirst`), for benchmarks only.

`loadtest/healthz_bench.sh --yield off` passes ``loadtest.wsgi_noyield:app`` to gunicorn to measure
what the middleware buys; production always serves ``wsgi:app``. The gunicorn hooks still run
(`post_worker_init` starts the worker greenlets on this Flask object), so only the yield differs.
"""

from app import create_app
from app.http.middleware import YieldFirst

app = create_app()
if not isinstance(app.wsgi_app, YieldFirst):
    raise RuntimeError("expected app.wsgi_app to be YieldFirst; update loadtest/wsgi_noyield.py")
app.wsgi_app = app.wsgi_app.wsgi_app  # type: ignore[method-assign]
