"""The integrity-check started from the console (SPEC §8c): in the background, one at a time.

`POST /api/v1/admin/integrity-check` returns at once. The check itself runs in a separate process
(`python -m app.admin.integrity_run`, at a lower CPU priority), so its loops over every ledger row
never hold this worker's GIL; a greenlet here reads its progress lines and keeps the state in Redis:

- ``tap:integrity:lock`` (SET NX, a short TTL renewed every third of it by a greenlet while the check
  runs, however long one week file takes): one run at a time, across workers — a second POST while one
  runs answers 409 `integrity_check_running`;
- ``tap:integrity:last``: the last run as JSON — ``state`` running / ok / violations / failed /
  interrupted, who started it and when, progress (files done of total), the finish time, the number
  of violations and the first ones. Kept (no TTL) until the next run replaces it.

A run whose worker died mid-way (its lock expired while the record still says running) is reported
``interrupted``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import sys
import time
from typing import Any

import gevent
import orjson
import redis
from gevent import subprocess

from app.keys import INTEGRITY_LAST_KEY, INTEGRITY_LOCK_KEY
from app.services import Services

log = logging.getLogger(__name__)

LOCK_TTL_S = 30
NICENESS = 10
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# Store the result and release the lock (only if still ours) in one step: no reader sees one without
# the other.
_FINISH = """
redis.call('SET', KEYS[1], ARGV[1])
if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2]) end
return 1
"""


class AlreadyRunning(Exception):
    pass


class IntegrityRunner:
    def __init__(
        self, svc: Services, lock_ttl_s: float = LOCK_TTL_S, command: list[str] | None = None
    ) -> None:
        """`command`: the check's process (default: `python -m app.admin.integrity_run <db dir>`); a
        test gives a slower one, with a short `lock_ttl_s`, to see the lock held throughout."""
        self.svc = svc
        self.lock_ttl_s = lock_ttl_s
        self.command = command or [sys.executable, "-m", "app.admin.integrity_run", str(svc.settings.db_dir)]
        self.greenlet: gevent.Greenlet | None = None

    def last(self) -> dict[str, Any] | None:
        """The last run (None if none ever ran); a run whose lock has lapsed is `interrupted`."""
        r = self.svc.redis
        pipe = r.pipeline(transaction=False)
        pipe.get(INTEGRITY_LAST_KEY)
        pipe.get(INTEGRITY_LOCK_KEY)
        raw, lock = pipe.execute()
        if raw is None:
            return None
        run: dict[str, Any] = orjson.loads(raw)
        if run.get("state") == "running" and (lock is None or lock.decode() != run.get("id")):
            run["state"] = "interrupted"
        return run

    def start(self, by: str) -> dict[str, Any]:
        """Start a run in the background and return its record; AlreadyRunning if one runs."""
        r = self.svc.redis
        run_id = secrets.token_hex(8)
        if not r.set(INTEGRITY_LOCK_KEY, run_id, nx=True, px=int(self.lock_ttl_s * 1000)):
            raise AlreadyRunning
        run: dict[str, Any] = {
            "id": run_id,
            "state": "running",
            "by": by,
            "started_at": self.svc.now_ms(),
            "finished_at": None,
            "files_done": 0,
            "files_total": None,
            "current_file": None,
            "violations": 0,
            "first_violations": [],
            "files": [],
        }
        self._save(run)
        self.greenlet = gevent.spawn(self._run, run)
        return run

    def _save(self, run: dict[str, Any]) -> None:
        self.svc.redis.set(INTEGRITY_LAST_KEY, orjson.dumps(run))

    def _keep_lock(self, run_id: str) -> None:
        """Renew the lock every third of its TTL while the check runs (killed when it ends). Renewed per
        progress line, it lapsed while one large week file took longer than the TTL, and a second run
        could start beside the first."""
        r = self.svc.redis
        while True:
            gevent.sleep(self.lock_ttl_s / 3)
            with contextlib.suppress(redis.RedisError):  # missed once: the next one is in time
                if r.get(INTEGRITY_LOCK_KEY) == run_id.encode():
                    r.pexpire(INTEGRITY_LOCK_KEY, int(self.lock_ttl_s * 1000))

    def _run(self, run: dict[str, Any]) -> None:
        t0 = time.monotonic()
        keeper = gevent.spawn(self._keep_lock, run["id"])
        try:
            proc = subprocess.Popen(
                self.command,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=PROJECT_ROOT,
                preexec_fn=lambda: os.nice(NICENESS),
            )
            assert proc.stdout is not None and proc.stderr is not None
            final: str | None = None  # the outcome, published with finished_at once the process exits
            for line in proc.stdout:
                final = self._apply(run, orjson.loads(line)) or final
                self._save(run)
            err = proc.stderr.read().decode(errors="replace")
            code = proc.wait()
            if code in (0, 1) and final is not None:
                run["state"] = final
            else:
                run["state"] = "failed"
                run["error"] = (err.strip().splitlines() or [f"exit status {code}"])[-1][:500]
                log.error("integrity-check from the console failed (%s): %s", code, err[-2000:])
        except (OSError, ValueError) as exc:
            run["state"] = "failed"
            run["error"] = str(exc)[:500]
            log.exception("integrity-check from the console could not run")
        finally:
            keeper.kill()
            run["finished_at"] = self.svc.now_ms()
            run["seconds"] = round(time.monotonic() - t0, 3)
            run["current_file"] = None
            with contextlib.suppress(redis.RedisError):  # the result and the lock's release together
                self.svc.redis.eval(
                    _FINISH, 2, INTEGRITY_LAST_KEY, INTEGRITY_LOCK_KEY, orjson.dumps(run), run["id"]
                )
            log.info("integrity-check from the console: %s (%d violations)", run["state"], run["violations"])

    @staticmethod
    def _apply(run: dict[str, Any], msg: dict[str, Any]) -> str | None:
        """Fold one progress line into `run`; the final state once the check says it is done."""
        kind = msg.get("type")
        if kind == "progress":
            run.update(files_done=msg["done"], files_total=msg["total"], current_file=msg["file"])
        elif kind == "violation":
            run["first_violations"].append(msg["text"])
        elif kind == "file":
            run["files"].append({"file": msg["file"], "violations": msg["violations"]})
            run["files_done"] = len(run["files"])
        elif kind == "done":
            run["violations"] = msg["violations"]
            run["files_total"] = msg["files"]
            return "violations" if msg["violations"] else "ok"
        return None
