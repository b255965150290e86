"""Long-running greenlets: the SQLite writer, the price feed, the pub/sub listener, the feed watcher,
and the supervisor that keeps them running. Nothing here starts on import; `workers.runtime.start`
is called by gunicorn's `post_worker_init` hook (or by a test)."""
