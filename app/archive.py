"""Weekly archival of closed week files to cold storage (ADR-006), behind `flask archive run|list|restore`.

Which weeks. A week file is *closed* when CURRENT does not name it. The `HISTORY_WEEKS` (4) newest closed
weeks before the current one stay local — the app attaches them read-only (`app.db.history_files`). Any
other closed week whose ISO week starts more than four weeks before the current week's is *eligible*.
Nothing else is ever touched: not CURRENT's file, not an attached week, not a file newer than CURRENT
(a half-made rollover), and nothing at all when CURRENT is missing.

One week, step by step (each step re-runnable after a crash at any point; state lives in files):

1. **stage** into ``<db dir>/.archive-staging/<week>/`` (same filesystem as the week file):
   a consistent snapshot with SQLite's online backup API (page copy, WAL frames included), switched to
   ``journal_mode=DELETE`` so the archive is one self-contained file; ``PRAGMA integrity_check``, row
   counts and the ledger checks of `app.integrity` on the snapshot, on two threads while zstd
   **streaming** compression (bounded memory) writes ``bets_YYYY_WW.db.zst``, hashing the raw and the
   compressed bytes (SHA-256) on the way; ``manifest.json`` is written last (temp file, fsync,
   rename), so a staging directory with a manifest is complete. The snapshot is deterministic (a page
   copy), so re-staging gives the same bytes.
2. **upload** ``bets_YYYY_WW.db.zst`` (SHA-256 in the object metadata; multipart above 64 MiB;
   `TAP_S3_STORAGE_CLASS`) and ``bets_YYYY_WW.manifest.json`` next to it. An object already there with
   the same SHA-256 is not uploaded again; one with a *different* archive of the week is never
   overwritten (error, see docs/OPERATIONS.md).
3. **verify**: HEAD (size and SHA-256 metadata), the manifest read back, and for objects up to
   `TAP_ARCHIVE_VERIFY_DOWNLOAD_MB` (or ``--verify-download``) a streaming re-download hashed again.
4. **record** it in ``<db dir>/archive-index.json``; only then **remove** the week file (and its -wal/-shm),
   after checking that it is still eligible and unchanged since the snapshot (size, mtime, inode).
5. drop the staging directory.

With no `TAP_S3_BUCKET` the target is the local directory `settings.archive_path`: same objects, same
checks, the SHA-256 in a ``sha256sum``-compatible ``.sha256`` file beside the object.

`restore` downloads, checks SHA-256 while decompressing (streaming), checks the row counts and
``PRAGMA integrity_check``, and leaves ``<db dir>/restored/bets_YYYY_WW.db`` read-only (0444).

Expected failures raise `ArchiveError`, whose message is one line for the operator.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import apsw
import zstandard

from app.config import Settings
from app.db import HISTORY_WEEKS, current_week_file, history_files, list_week_files, parse_week_filename

STAGING_DIR = ".archive-staging"
RESTORED_DIR = "restored"
INDEX_FILE = "archive-index.json"
RUN_LOCK = ".archive-run.lock"
MANIFEST_FORMAT = 1
CHUNK = 1 << 20  # 1 MiB reads and writes everywhere: memory stays flat whatever the file size
MULTIPART_THRESHOLD = 64 << 20
MULTIPART_CHUNK = 64 << 20  # 10,000 parts max → objects up to 640 GiB
MAX_CONCURRENCY = 4  # parts in flight; s3transfer streams each part from the file, never all in memory
SIDE_SUFFIXES = ("-wal", "-shm", "-journal")
_WEEK_ARG = re.compile(r"(\d{4})[_-]W?(\d{1,2})")


class ArchiveError(Exception):
    """An expected failure (no such week, missing bucket, hash mismatch …): one line, no traceback."""

    def __init__(self, message: str) -> None:
        one_line = " ".join(str(message).split())  # SQLite and botocore messages may span lines
        super().__init__(one_line if len(one_line) <= 2000 else one_line[:1997] + "…")


# ---- weeks --------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Week:
    year: int
    week: int

    @classmethod
    def parse(cls, text: str) -> Week:
        """``2026_40`` (also ``2026-W40``, ``2026-40``) → Week; ArchiveError if no such ISO week."""
        m = _WEEK_ARG.fullmatch(text.strip())
        if not m:
            raise ArchiveError(f"{text!r} is not a week: use YYYY_WW, e.g. 2026_40")
        year, week = int(m.group(1)), int(m.group(2))
        try:
            dt.date.fromisocalendar(year, week, 1)
        except ValueError:
            raise ArchiveError(f"{text!r}: ISO year {year} has no week {week}") from None
        return cls(year, week)

    @classmethod
    def of(cls, path: Path) -> Week:
        yw = parse_week_filename(path.name)
        if yw is None:
            raise ValueError(f"{path.name} is not a week file name")
        return cls(*yw)

    def __str__(self) -> str:
        return f"{self.year:04d}_{self.week:02d}"

    @property
    def filename(self) -> str:
        return f"bets_{self}.db"

    @property
    def object_name(self) -> str:
        return f"bets_{self}.db.zst"

    @property
    def manifest_name(self) -> str:
        return f"bets_{self}.manifest.json"

    @property
    def monday(self) -> dt.date:
        return dt.date.fromisocalendar(self.year, self.week, 1)

    def weeks_before(self, other: Week) -> int:
        """How many ISO weeks `self` starts before `other` (negative if after)."""
        return (other.monday - self.monday).days // 7


@dataclass(frozen=True)
class LocalWeek:
    week: Week
    path: Path
    size: int
    state: str  # current | attached | eligible | newer | kept

    @property
    def eligible(self) -> bool:
        return self.state == "eligible"


def classify(db_dir: Path) -> list[LocalWeek]:
    """Every local week file with its state, oldest first. Raises ArchiveError without CURRENT."""
    current = current_week_file(db_dir)
    if current is None:
        raise ArchiveError(f"no CURRENT pointer in {db_dir}: refusing to decide which week files are closed")
    cur = Week.of(current)
    attached = {p.name for p in history_files(db_dir, current)}
    out = []
    for path in list_week_files(db_dir):
        wk = Week.of(path)
        if path.name == current.name:
            state = "current"
        elif path.name in attached:
            state = "attached"
        elif wk > cur:
            state = "newer"  # e.g. a rollover that crashed before switching CURRENT: not closed history
        elif wk.weeks_before(cur) > HISTORY_WEEKS:
            state = "eligible"
        else:
            state = "kept"  # cannot happen with the rules above; kept for safety
        out.append(LocalWeek(wk, path, _size(path), state))
    return out


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _fingerprint(path: Path) -> dict[str, int]:
    """What must not change between the snapshot and the removal of a week file."""
    st = path.stat()
    wal = Path(f"{path}-wal")
    return {
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "inode": st.st_ino,
        "wal_size": wal.stat().st_size if wal.exists() else 0,
    }


# ---- progress -----------------------------------------------------------------------------------


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def fmt_counts(counts: dict[str, int]) -> str:
    return " ".join(f"{t}={n}" for t, n in counts.items())


class Progress:
    """Bytes done / total and MiB/s on a stream (stderr): a live line on a terminal, a line every
    `interval` seconds otherwise (cron logs), and one summary line at the end. Thread-safe (s3transfer
    reports from its worker threads)."""

    def __init__(self, label: str, total: int, stream: IO[str] | None, interval: float | None = None) -> None:
        self.label = label
        self.total = total
        self.stream = stream
        self.tty = bool(stream is not None and getattr(stream, "isatty", lambda: False)())
        self.interval = interval if interval is not None else (0.5 if self.tty else 10.0)
        self.done = 0
        self.t0 = time.monotonic()
        self._last = self.t0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.done += n
            now = time.monotonic()
            if self.stream is not None and now - self._last >= self.interval:
                self._last = now
                self._emit(now, final=False)

    def set(self, done: int) -> None:
        self.add(done - self.done)

    def _emit(self, now: float, final: bool, extra: str = "") -> None:
        assert self.stream is not None
        el = max(now - self.t0, 1e-9)
        rate = self.done / el / 2**20
        if final:
            text = f"{self.label}: {fmt_bytes(self.done)}{extra} in {el:.1f} s ({rate:.1f} MiB/s)"
        else:
            pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
            text = f"{self.label}: {fmt_bytes(self.done)} / {fmt_bytes(self.total)}{pct}, {rate:.1f} MiB/s"
        if self.tty:
            self.stream.write("\r\x1b[K" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self, extra: str = "") -> float:
        el = time.monotonic() - self.t0
        if self.stream is not None:
            self._emit(time.monotonic(), final=True, extra=extra)
        return el


class _HashingReader:
    """File-like `read` that hashes and counts what passes through (and reports progress)."""

    def __init__(self, raw: Any, progress: Progress | None = None) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()
        self.size = 0
        self.progress = progress

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        if data:
            self.sha.update(data)
            self.size += len(data)
            if self.progress is not None:
                self.progress.add(len(data))
        return data


class _HashingWriter:
    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.raw.write(data)


def sha256_file(path: Path, progress: Progress | None = None) -> str:
    reader = _HashingReader(open(path, "rb"), progress)  # noqa: SIM115 - closed below
    try:
        while reader.read(CHUNK):
            pass
    finally:
        reader.raw.close()
    return reader.sha.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


@contextlib.contextmanager
def _flock(path: Path, what: str) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise ArchiveError(f"{what} is already running (lock {path} is held)") from None
            raise
        yield
    finally:
        os.close(fd)


# ---- targets ------------------------------------------------------------------------------------


@dataclass
class ObjectInfo:
    name: str
    size: int
    metadata: dict[str, str] = field(default_factory=dict)
    last_modified: dt.datetime | None = None
    storage_class: str | None = None


class LocalTarget:
    """A directory: objects are files, written via temp file + fsync + rename; the SHA-256 "metadata"
    is a ``sha256sum``-format file beside each object (``sha256sum -c bets_2026_40.db.zst.sha256``)."""

    local = True

    def __init__(self, root: Path) -> None:
        self.root = root

    def url(self, name: str = "") -> str:
        return str(self.root / name) if name else f"{self.root}/"

    def check(self, create: bool) -> None:
        if create:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ArchiveError(f"cannot create archive directory {self.root}: {exc.strerror}") from None
            if not os.access(self.root, os.W_OK):
                raise ArchiveError(f"archive directory {self.root} is not writable")

    def head(self, name: str) -> ObjectInfo | None:
        path, side = self.root / name, self.root / f"{name}.sha256"
        try:
            st = path.stat()
            digest = side.read_text().split()[0]
        except (FileNotFoundError, IndexError):
            return None  # no sidecar: an interrupted copy, never a finished object
        return ObjectInfo(
            name, st.st_size, {"sha256": digest}, dt.datetime.fromtimestamp(st.st_mtime, dt.UTC), "local"
        )

    def put_file(self, name: str, path: Path, metadata: dict[str, str], progress: Progress | None) -> None:
        need = path.stat().st_size
        free = shutil.disk_usage(self.root).free
        if free < need + (16 << 20):
            raise ArchiveError(
                f"not enough space in {self.root}: {fmt_bytes(free)} free, {fmt_bytes(need)} needed"
            )
        dest = self.root / name
        tmp = self.root / f".{name}.tmp"
        with open(path, "rb") as src, open(tmp, "wb") as out:
            while chunk := src.read(CHUNK):
                out.write(chunk)
                if progress is not None:
                    progress.add(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        side_tmp = self.root / f".{name}.sha256.tmp"
        with open(side_tmp, "w") as fh:
            fh.write(f"{metadata['sha256']}  {name}\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
        os.replace(side_tmp, self.root / f"{name}.sha256")
        _fsync_dir(self.root)

    def put_bytes(self, name: str, data: bytes) -> None:
        _write_atomic(self.root / name, data)

    def get_bytes(self, name: str) -> bytes | None:
        try:
            return (self.root / name).read_bytes()
        except FileNotFoundError:
            return None

    @contextlib.contextmanager
    def open(self, name: str) -> Iterator[Any]:
        try:
            fh = open(self.root / name, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise ArchiveError(f"{self.url(name)} does not exist") from None
        with fh:
            yield fh

    def abort_stale_uploads(self, name: str) -> None:
        for stale in (self.root / f".{name}.tmp", self.root / f".{name}.sha256.tmp"):
            stale.unlink(missing_ok=True)

    def list(self) -> list[ObjectInfo]:
        if not self.root.is_dir():
            return []
        out = []
        for p in sorted(self.root.iterdir()):
            if p.name.endswith(".db.zst"):
                info = self.head(p.name)
                st = p.stat()
                out.append(
                    info
                    or ObjectInfo(
                        p.name, st.st_size, {}, dt.datetime.fromtimestamp(st.st_mtime, dt.UTC), "local"
                    )
                )
        return out


class S3Target:
    """An S3 bucket (or any S3 API: `TAP_S3_ENDPOINT_URL`) through boto3, under the key prefix
    `TAP_S3_PREFIX`. Credentials come from boto3's usual chain (env, ~/.aws, instance role)."""

    local = False

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        storage_class: str | None = None,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        multipart_chunksize: int = MULTIPART_CHUNK,
        max_concurrency: int = MAX_CONCURRENCY,
    ) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        for noisy in ("botocore", "boto3", "s3transfer", "urllib3"):  # the app logs at INFO; these chatter
            logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger(noisy).level))
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = endpoint_url
        self.storage_class = storage_class
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            config=Config(
                retries={"max_attempts": 5, "mode": "standard"},
                connect_timeout=10,
                read_timeout=120,
                s3={"addressing_style": "path"} if endpoint_url else {},
            ),
        )
        self.transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=multipart_chunksize,
            max_concurrency=max_concurrency,
            use_threads=True,
        )

    def key(self, name: str) -> str:
        return self.prefix + name

    def url(self, name: str = "") -> str:
        return f"s3://{self.bucket}/{self.key(name)}"

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """botocore exceptions → one-line ArchiveError."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        try:
            yield
        except NoCredentialsError:
            raise ArchiveError(
                f"{what}: no AWS credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                "~/.aws/credentials or an instance role)"
            ) from None
        except ClientError as exc:
            err = exc.response.get("Error", {})
            code = err.get("Code", "?")
            if code == "NoSuchBucket":
                raise ArchiveError(f"S3 bucket {self.bucket!r} does not exist{where}") from None
            if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise ArchiveError(f"{what}: access denied to s3://{self.bucket}{where} ({code})") from None
            raise ArchiveError(f"{what}: S3 error {code}: {err.get('Message') or exc}") from None
        except BotoCoreError as exc:
            raise ArchiveError(f"{what}: {exc}") from None

    @staticmethod
    def _code(exc: Exception) -> str:
        return getattr(exc, "response", {}).get("Error", {}).get("Code", "")

    def check(self, create: bool) -> None:
        from botocore.exceptions import ClientError

        with self._errors(f"checking bucket {self.bucket!r}"):
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if self._code(exc) in ("404", "NoSuchBucket", "NotFound"):
                    where = f" at {self.endpoint_url}" if self.endpoint_url else ""
                    raise ArchiveError(f"S3 bucket {self.bucket!r} does not exist{where}") from None
                raise

    def head(self, name: str) -> ObjectInfo | None:
        from botocore.exceptions import ClientError

        with self._errors(f"HEAD {self.url(name)}"):
            try:
                r = self.client.head_object(Bucket=self.bucket, Key=self.key(name))
            except ClientError as exc:
                if self._code(exc) in ("404", "NoSuchKey", "NotFound"):
                    return None
                raise
        return ObjectInfo(
            name,
            r["ContentLength"],
            dict(r.get("Metadata", {})),
            r.get("LastModified"),
            r.get("StorageClass"),
        )

    def put_file(self, name: str, path: Path, metadata: dict[str, str], progress: Progress | None) -> None:
        extra: dict[str, Any] = {"Metadata": metadata, "ContentType": "application/zstd"}
        if self.storage_class:
            extra["StorageClass"] = self.storage_class
        with self._errors(f"uploading {self.url(name)}"):
            self.client.upload_file(
                str(path),
                self.bucket,
                self.key(name),
                ExtraArgs=extra,
                Config=self.transfer,
                Callback=progress.add if progress is not None else None,
            )

    def put_bytes(self, name: str, data: bytes) -> None:
        extra: dict[str, Any] = {}
        if self.storage_class:
            extra["StorageClass"] = "STANDARD"  # tiny objects: IA bills 128 KiB minimum; keep them standard
        with self._errors(f"uploading {self.url(name)}"):
            self.client.put_object(
                Bucket=self.bucket, Key=self.key(name), Body=data, ContentType="application/json", **extra
            )

    def get_bytes(self, name: str) -> bytes | None:
        from botocore.exceptions import ClientError

        with self._errors(f"GET {self.url(name)}"):
            try:
                return self.client.get_object(Bucket=self.bucket, Key=self.key(name))["Body"].read()
            except ClientError as exc:
                if self._code(exc) in ("404", "NoSuchKey", "NotFound"):
                    return None
                raise

    @contextlib.contextmanager
    def open(self, name: str) -> Iterator[Any]:
        with self._errors(f"GET {self.url(name)}"):
            body = self.client.get_object(Bucket=self.bucket, Key=self.key(name))["Body"]
        try:
            with self._errors(f"downloading {self.url(name)}"):
                yield body
        finally:
            body.close()

    def abort_stale_uploads(self, name: str) -> None:
        """A crash mid-upload leaves a multipart upload open (billed storage). The run lock is held, so
        any open upload of this key is ours and dead: abort it. (Also set a bucket lifecycle rule.)"""
        with self._errors(f"listing multipart uploads of {self.url(name)}"):
            r = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=self.key(name))
            for up in r.get("Uploads", []):
                if up["Key"] == self.key(name):
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=up["Key"], UploadId=up["UploadId"]
                    )

    def list(self) -> list[ObjectInfo]:
        out = []
        with self._errors(f"listing {self.url()}"):
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix
            ):
                for obj in page.get("Contents", []):
                    name = obj["Key"][len(self.prefix) :]
                    if name.endswith(".db.zst") and "/" not in name:
                        out.append(
                            ObjectInfo(
                                name, obj["Size"], {}, obj.get("LastModified"), obj.get("StorageClass")
                            )
                        )
        return out


def make_target(settings: Settings, **s3_overrides: Any) -> LocalTarget | S3Target:
    if settings.s3_bucket:
        return S3Target(
            settings.s3_bucket,
            settings.s3_prefix,
            settings.s3_endpoint_url,
            settings.s3_storage_class,
            **s3_overrides,
        )
    return LocalTarget(settings.archive_path)


# ---- the archiver -------------------------------------------------------------------------------


@dataclass
class WeekResult:
    week: str
    action: str  # archived | would-archive | already-archived
    uploaded: bool = False
    raw_size: int = 0
    compressed_size: int = 0
    seconds: float = 0.0
    url: str = ""


class Archiver:
    """Runs the steps in the module docstring. `say` gets one-line status messages (stdout in the CLI);
    `progress` is the stream for progress lines (stderr in the CLI; None for quiet)."""

    def __init__(
        self,
        settings: Settings,
        target: LocalTarget | S3Target | None = None,
        *,
        say: Callable[[str], None] | None = None,
        progress: IO[str] | None = None,
        ledger_check: bool = True,
        verify_download: bool = False,
    ) -> None:
        self.settings = settings
        self.db_dir = settings.db_dir
        self.target = target or make_target(settings)
        self.say = say or (lambda _msg: None)
        self.progress_stream = progress
        self.ledger_check = ledger_check
        self.verify_download = verify_download
        self.level = settings.archive_zstd_level
        self.threads = settings.archive_zstd_threads
        self.verify_download_bytes = settings.archive_verify_download_mb << 20

    # -- hooks and helpers

    def _checkpoint(self, name: str, week: Week) -> None:
        """Called after each durable step; the crash tests make it raise."""

    def _progress(self, label: str, total: int) -> Progress:
        return Progress(label, total, self.progress_stream)

    @property
    def staging_root(self) -> Path:
        return self.db_dir / STAGING_DIR

    @property
    def index_path(self) -> Path:
        return self.db_dir / INDEX_FILE

    def read_index(self) -> dict[str, Any]:
        try:
            return json.loads(self.index_path.read_text())
        except FileNotFoundError:
            return {"format": MANIFEST_FORMAT, "weeks": {}}

    def _index_update(self, week: Week, **fields: Any) -> None:
        index = self.read_index()
        index.setdefault("weeks", {}).setdefault(str(week), {}).update(fields)
        _write_atomic(self.index_path, _json_bytes(index))

    # -- run

    def plan(self, week: Week | None = None) -> list[LocalWeek]:
        """The week files to archive, oldest first (only `week` if given; ArchiveError if it may not be)."""
        local = classify(self.db_dir)
        if week is None:
            return [lw for lw in local if lw.eligible]
        for lw in local:
            if lw.week == week:
                if lw.eligible:
                    return [lw]
                why = {
                    "current": "it is the CURRENT (read-write) week file",
                    "attached": f"it is one of the {HISTORY_WEEKS} newest closed weeks (attached read-only)",
                    "newer": "it is newer than the CURRENT week file",
                }.get(lw.state, f"it is not older than {HISTORY_WEEKS} weeks before the current week")
                raise ArchiveError(f"week {week} may not be archived: {why}")
        return []

    def run(self, week: Week | None = None, dry_run: bool = False) -> list[WeekResult]:
        if dry_run:
            return self._dry_run(week)
        classify(self.db_dir)  # no CURRENT, no run: before anything is created anywhere
        self.target.check(create=True)
        with _flock(self.db_dir / RUN_LOCK, "archive run"):
            try:
                self._cleanup_leftovers()
                todo = self.plan(week)
                if week is not None and not todo:
                    url = self.target.url(week.object_name)
                    if self.target.head(week.object_name) is None:
                        raise ArchiveError(
                            f"no week file {week.filename} in {self.db_dir} and no archive of it"
                        )
                    self.say(f"{week}: already archived at {url}")
                    return [WeekResult(str(week), "already-archived", url=url)]
                if not todo:
                    self.say("nothing to archive")
                return self._archive_all(todo)
            finally:
                with contextlib.suppress(OSError):
                    self.staging_root.rmdir()  # only if empty

    def _archive_all(self, todo: list[LocalWeek]) -> list[WeekResult]:
        """Archive each week in turn; one that fails does not hold back the others (a damaged old week
        must not stop every newer one from being archived). Failures end in one ArchiveError line."""
        results, failed = [], []
        for lw in todo:
            try:
                results.append(self.archive_week(lw))
            except ArchiveError as exc:
                if len(todo) == 1:
                    raise
                failed.append(f"{lw.week}: {exc}")
                self.say(f"error: {lw.week}: {exc}")
        if failed:
            raise ArchiveError(
                f"{len(failed)} of {len(todo)} weeks failed (kept locally) — " + " | ".join(failed)
            )
        return results

    def _dry_run(self, week: Week | None) -> list[WeekResult]:
        self.target.check(create=False)
        todo = self.plan(week)
        if not todo:
            self.say("nothing to archive" if week is None else f"{week}: no local week file (nothing to do)")
        out = []
        for lw in todo:
            info = self.target.head(lw.week.object_name)
            note = ", already in the target: would verify it and remove the local file" if info else ""
            staged = (self.staging_root / str(lw.week) / "manifest.json").exists()
            note += ", resuming a staged archive" if staged else ""
            self.say(
                f"would archive {lw.path.name} ({fmt_bytes(lw.size)})"
                f" → {self.target.url(lw.week.object_name)}{note}"
            )
            out.append(WeekResult(str(lw.week), "would-archive", raw_size=lw.size))
        return out

    def _cleanup_leftovers(self) -> None:
        """Staging dirs and -wal/-shm of weeks whose file is already gone (a crash after the removal)."""
        index = self.read_index().get("weeks", {})
        present = {p.name for p in list_week_files(self.db_dir)}
        if self.staging_root.is_dir():
            for d in sorted(self.staging_root.iterdir()):
                try:
                    wk = Week.parse(d.name)
                except ArchiveError:
                    continue
                if wk.filename in present:
                    continue  # resumed by archive_week
                info = self.target.head(wk.object_name)
                staged = self._staged_manifest(d)
                if info is not None and (staged is None or info.metadata.get("sha256") == staged["sha256"]):
                    shutil.rmtree(d)  # a crash after the removal: finish the bookkeeping
                    if str(wk) in index and "local_removed_at" not in index[str(wk)]:
                        self._index_update(wk, local_removed_at=_now_iso())
                else:
                    self.say(
                        f"warning: {d} kept: {wk.filename} is gone but the target holds no matching archive"
                    )
        for side in self.db_dir.iterdir():
            for suffix in SIDE_SUFFIXES:
                if side.name.endswith(suffix):
                    base = side.name[: -len(suffix)]
                    yw = parse_week_filename(base)
                    if yw and base not in present and str(Week(*yw)) in index:
                        side.unlink(missing_ok=True)

    def archive_week(self, lw: LocalWeek) -> WeekResult:
        t0 = time.monotonic()
        wk = lw.week
        staging = self.staging_root / str(wk)
        manifest = self._resume_staged(lw, staging)
        if manifest is None:
            manifest = self._stage(lw, staging)
        self._checkpoint("staged", wk)
        manifest, uploaded = self._upload(wk, staging, manifest)
        self._checkpoint("uploaded", wk)
        self._verify(wk, manifest)
        self._checkpoint("verified", wk)
        url = self.target.url(wk.object_name)
        self._index_update(
            wk,
            **{k: manifest[k] for k in ("sha256", "raw_sha256", "compressed_size", "raw_size", "row_counts")},
            url=url,
            manifest_url=self.target.url(wk.manifest_name),
            archived_at=_now_iso(),
        )
        self._remove_local(lw, manifest)
        self._checkpoint("removed", wk)
        self._index_update(wk, local_removed_at=_now_iso())
        shutil.rmtree(staging, ignore_errors=True)
        el = time.monotonic() - t0
        self.say(
            f"{wk}: archived {lw.path.name} ({fmt_bytes(manifest['raw_size'])} → "
            f"{fmt_bytes(manifest['compressed_size'])}) to {url} in {el:.1f} s"
            + ("" if uploaded else " (object was already there)")
        )
        return WeekResult(
            str(wk), "archived", uploaded, manifest["raw_size"], manifest["compressed_size"], el, url
        )

    # -- step 1: stage

    @staticmethod
    def _staged_manifest(staging: Path) -> dict[str, Any] | None:
        try:
            return json.loads((staging / "manifest.json").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def _resume_staged(self, lw: LocalWeek, staging: Path) -> dict[str, Any] | None:
        """The staged archive of a previous, interrupted run, if complete and still matching the file."""
        m = self._staged_manifest(staging)
        if m is None:
            if staging.exists():
                shutil.rmtree(staging)
            return None
        zst = staging / lw.week.object_name
        if (
            m.get("source") != _fingerprint(lw.path)
            or not zst.exists()
            or zst.stat().st_size != m["compressed_size"]
        ):
            self.say(f"{lw.week}: discarding a stale staged archive")
            shutil.rmtree(staging)
            return None
        if sha256_file(zst, self._progress(f"rehash staged {zst.name}", m["compressed_size"])) != m["sha256"]:
            self.say(f"{lw.week}: staged archive is damaged; staging again")
            shutil.rmtree(staging)
            return None
        self.say(f"{lw.week}: resuming from the staged archive")
        return m

    def _stage(self, lw: LocalWeek, staging: Path) -> dict[str, Any]:
        wk = lw.week
        staging.mkdir(parents=True, exist_ok=True)
        need = int(lw.size * 1.5) + (64 << 20)  # snapshot + compressed output (zstd ratio >= 2 on week files)
        free = shutil.disk_usage(staging).free
        if free < need:
            raise ArchiveError(
                f"not enough space to stage {lw.path.name}: {fmt_bytes(free)} free in {staging}, "
                f"about {fmt_bytes(need)} needed"
            )
        snap = staging / f"{wk.filename}.snapshot"
        self._snapshot(lw.path, snap)
        source = _fingerprint(lw.path)
        self._checkpoint("snapshot", wk)
        # The checks read the snapshot on their own connections and threads while it is compressed
        # (SQLite and zstd release the GIL): wall time is the longest of the three, not their sum.
        checks: dict[str, Any] = {}
        threads = [
            threading.Thread(target=self._run_check, args=(fn, snap, wk, checks), name=f"archive-{name}")
            for name, fn in (("integrity", self._check_integrity), ("contents", self._check_contents))
        ]
        for t in threads:
            t.start()
        zst = staging / wk.object_name
        try:
            raw_sha, raw_size, sha, size = self._compress(snap, zst)
        finally:
            for t in threads:
                t.join()
        if "error" in checks:
            zst.unlink(missing_ok=True)
            raise checks["error"]
        manifest = {
            "format": MANIFEST_FORMAT,
            "week": str(wk),
            "file": wk.filename,
            "object": wk.object_name,
            "sha256": sha,
            "compressed_size": size,
            "raw_sha256": raw_sha,
            "raw_size": raw_size,
            "compression": {"codec": "zstd", "level": self.level, "threads": self.threads},
            "integrity_check": "ok",
            **checks,
            "source": source,
            "created_at": _now_iso(),
            "host": socket.gethostname(),
        }
        snap.unlink()
        _write_atomic(staging / "manifest.json", _json_bytes(manifest))
        return manifest

    def _snapshot(self, src_path: Path, snap: Path) -> None:
        """Online backup (page copy, WAL frames included) into `snap`, then journal_mode=DELETE."""
        snap.unlink(missing_ok=True)
        try:
            src = apsw.Connection(str(src_path), flags=apsw.SQLITE_OPEN_READONLY)
        except apsw.Error as exc:
            raise ArchiveError(f"cannot open {src_path}: {exc}") from None
        try:
            src.execute("PRAGMA busy_timeout = 5000")
            page_size = src.execute("PRAGMA page_size").get
            dst = apsw.Connection(str(snap))
            try:
                dst.execute("PRAGMA cache_size = -8192")  # 8 MiB: the copy streams through, memory flat
                progress = self._progress(f"snapshot {src_path.name}", _size(src_path))
                with dst.backup("main", src, "main") as backup:
                    while not backup.done:
                        backup.step(1024)
                        progress.set((backup.pagecount - backup.remaining) * page_size)
                progress.finish()
                if dst.execute("PRAGMA journal_mode = DELETE").get != "delete":
                    raise ArchiveError(f"{snap}: could not leave WAL mode")
            finally:
                dst.close()
        except apsw.Error as exc:
            raise ArchiveError(f"snapshot of {src_path.name} failed: {exc}") from None
        finally:
            src.close()
        with open(snap, "rb+") as fh:
            os.fsync(fh.fileno())

    @staticmethod
    def _run_check(
        fn: Callable[[apsw.Connection, Week], dict[str, Any]], snap: Path, wk: Week, out: dict[str, Any]
    ) -> None:
        try:
            conn = apsw.Connection(str(snap), flags=apsw.SQLITE_OPEN_READONLY)
            try:
                conn.execute("PRAGMA cache_size = -32768")  # 32 MiB: halves integrity_check on 1 GiB
                out.update(fn(conn, wk))
            finally:
                conn.close()
        except apsw.Error as exc:
            out["error"] = ArchiveError(f"checking the snapshot of {wk.filename} failed: {exc}")
        except Exception as exc:  # noqa: BLE001 - ArchiveError, or a bug: re-raised in the caller
            out["error"] = exc

    def _check_integrity(self, conn: apsw.Connection, wk: Week) -> dict[str, Any]:
        t0 = time.monotonic()
        result = [r[0] for r in conn.execute("PRAGMA integrity_check")]
        if result != ["ok"]:
            raise ArchiveError(
                f"snapshot of {wk.filename} fails PRAGMA integrity_check: {'; '.join(result[:3])}"
                " — the week file is kept; see docs/OPERATIONS.md"
            )
        self._say_time(f"integrity {wk.filename}", t0, "PRAGMA integrity_check ok")
        return {}

    def _check_contents(self, conn: apsw.Connection, wk: Week) -> dict[str, Any]:
        t0 = time.monotonic()
        counts = _row_counts(conn)
        out: dict[str, Any] = {
            "row_counts": counts,
            "schema_version": conn.execute("PRAGMA user_version").get,
            "page_size": conn.execute("PRAGMA page_size").get,
            "week_meta": dict(conn.execute("SELECT key, value FROM week_meta"))
            if "week_meta" in counts
            else {},
            "ledger_violations": None,
        }
        if self.ledger_check:
            from app.integrity import check_connection

            violations = [str(v) for v in check_connection(conn, wk.filename)]
            out["ledger_violations"] = len(violations)
            out["ledger_violation_sample"] = violations[:20]
            if violations:
                # The archive preserves the file as it is; the violations are recorded, not fixed.
                self.say(
                    f"warning: {wk.filename}: {len(violations)} ledger violation(s), e.g. {violations[0]}"
                )
        what = (
            "ledger ok"
            if out["ledger_violations"] == 0
            else (
                "ledger not checked"
                if out["ledger_violations"] is None
                else f"{out['ledger_violations']} ledger violations"
            )
        )
        self._say_time(f"contents {wk.filename}", t0, f"rows {fmt_counts(counts)}, {what}")
        return out

    def _say_time(self, label: str, t0: float, extra: str) -> None:
        if self.progress_stream is not None:
            self.progress_stream.write(f"{label}: {extra} in {time.monotonic() - t0:.1f} s\n")
            self.progress_stream.flush()

    def _compress(self, snap: Path, zst: Path) -> tuple[str, int, str, int]:
        raw_size = snap.stat().st_size
        tmp = zst.with_name(f".{zst.name}.tmp")
        cctx = zstandard.ZstdCompressor(
            level=self.level, threads=self.threads, write_checksum=True, write_content_size=True
        )
        progress = self._progress(f"compress {snap.name.removesuffix('.snapshot')}", raw_size)
        with open(snap, "rb") as fin, open(tmp, "wb") as fout:
            reader = _HashingReader(fin, progress)
            writer = _HashingWriter(fout)
            # zstandard only calls read()/write() on these: file-like enough for its IO[bytes] stub
            cctx.copy_stream(
                cast(IO[bytes], reader),
                cast(IO[bytes], writer),
                size=raw_size,
                read_size=CHUNK,
                write_size=CHUNK,
            )
            fout.flush()
            os.fsync(fout.fileno())
        if reader.size != raw_size:
            raise ArchiveError(f"{snap} changed while compressing")
        progress.finish(f" → {fmt_bytes(writer.size)} (ratio {raw_size / max(writer.size, 1):.2f})")
        os.replace(tmp, zst)
        return reader.sha.hexdigest(), raw_size, writer.sha.hexdigest(), writer.size

    # -- steps 2 and 3: upload and verify

    def _remote_manifest(self, wk: Week) -> dict[str, Any] | None:
        data = self.target.get_bytes(wk.manifest_name)
        if data is None:
            return None
        try:
            return json.loads(data)
        except ValueError:
            return None

    def _upload(self, wk: Week, staging: Path, m: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        info = self.target.head(wk.object_name)
        remote = self._remote_manifest(wk)
        uploaded = False
        same_hash = info is not None and info.metadata.get("sha256") == m["sha256"]
        if same_hash and info is not None and info.size == m["compressed_size"]:
            self.say(
                f"{wk}: {self.target.url(wk.object_name)} already holds this archive; not uploading again"
            )
        elif (
            info is not None
            and remote is not None
            and remote.get("raw_sha256") == m["raw_sha256"]
            and remote.get("sha256") == info.metadata.get("sha256")
            and remote.get("compressed_size") == info.size
        ):
            self.say(
                f"{wk}: the target holds an archive of the same snapshot (other compression); keeping it"
            )
            return remote, False
        elif info is not None and not same_hash:
            raise ArchiveError(
                f"{self.target.url(wk.object_name)} already exists with different content "
                f"(sha256 {info.metadata.get('sha256', 'unknown')[:16]}…, "
                f"this snapshot's {m['sha256'][:16]}…); "
                "refusing to overwrite it — see docs/OPERATIONS.md"
            )
        else:  # absent, or our own archive with the wrong size (a damaged copy): (re)write it
            self.target.abort_stale_uploads(wk.object_name)
            progress = self._progress(f"upload {wk.object_name}", m["compressed_size"])
            self.target.put_file(
                wk.object_name,
                staging / wk.object_name,
                {"sha256": m["sha256"], "raw-sha256": m["raw_sha256"], "week": str(wk)},
                progress,
            )
            progress.finish()
            uploaded = True
        if remote != m:
            self.target.put_bytes(wk.manifest_name, _json_bytes(m))
        return m, uploaded

    def _verify(self, wk: Week, m: dict[str, Any]) -> None:
        url = self.target.url(wk.object_name)
        info = self.target.head(wk.object_name)
        if info is None:
            raise ArchiveError(f"verification failed: {url} is missing after upload; the week file is kept")
        if info.size != m["compressed_size"] or info.metadata.get("sha256") != m["sha256"]:
            raise ArchiveError(
                f"verification failed: {url} has size {info.size} and sha256 {info.metadata.get('sha256')}, "
                f"expected {m['compressed_size']} and {m['sha256']}; the week file is kept"
            )
        remote = self._remote_manifest(wk)
        if (
            remote is None
            or remote.get("sha256") != m["sha256"]
            or remote.get("raw_sha256") != m["raw_sha256"]
        ):
            raise ArchiveError(
                f"verification failed: {self.target.url(wk.manifest_name)} is missing or differs"
            )
        if self.target.local or self.verify_download or m["compressed_size"] <= self.verify_download_bytes:
            progress = self._progress(f"verify {wk.object_name}", m["compressed_size"])
            with self.target.open(wk.object_name) as body:
                reader = _HashingReader(body, progress)
                while reader.read(CHUNK):
                    pass
            progress.finish(" re-read, sha256 ok" if reader.sha.hexdigest() == m["sha256"] else "")
            if reader.sha.hexdigest() != m["sha256"] or reader.size != m["compressed_size"]:
                raise ArchiveError(
                    f"verification failed: {url} reads back with sha256 {reader.sha.hexdigest()}, "
                    f"expected {m['sha256']}; the week file is kept"
                )

    # -- step 4: remove the local file

    def _remove_local(self, lw: LocalWeek, m: dict[str, Any]) -> None:
        fresh = {x.path.name: x for x in classify(self.db_dir)}.get(lw.path.name)
        if fresh is None:
            return  # already removed (a crash right after the unlink)
        if not fresh.eligible:
            raise ArchiveError(f"{lw.path.name} is no longer eligible ({fresh.state}); kept")
        if _fingerprint(lw.path) != m["source"]:
            raise ArchiveError(
                f"{lw.path.name} changed after its snapshot was taken; kept. The archive in the target is of "
                "the older content — see docs/OPERATIONS.md"
            )
        lw.path.unlink()
        for suffix in SIDE_SUFFIXES:
            Path(f"{lw.path}{suffix}").unlink(missing_ok=True)
        _fsync_dir(self.db_dir)

    # -- restore

    def restore(self, week: Week, force: bool = False) -> Path:
        live = self.db_dir / week.filename
        if live.exists():
            raise ArchiveError(
                f"{week.filename} is a live week file in {self.db_dir}; it needs no restore "
                "(refusing to shadow it)"
            )
        self.target.check(create=False)
        m = self._remote_manifest(week)
        info = self.target.head(week.object_name)
        if m is None and info is None:
            raise ArchiveError(f"week {week} is not archived in {self.target.url()}")
        if m is None:
            raise ArchiveError(f"{self.target.url(week.manifest_name)} is missing or unreadable")
        if info is None:
            raise ArchiveError(f"{self.target.url(week.object_name)} is missing (its manifest exists)")
        if info.size != m["compressed_size"] or info.metadata.get("sha256", m["sha256"]) != m["sha256"]:
            raise ArchiveError(
                f"{self.target.url(week.object_name)}: size/sha256 metadata ({info.size}, "
                f"{info.metadata.get('sha256')}) differ from the manifest "
                f"({m['compressed_size']}, {m['sha256']})"
            )
        dest_dir = self.db_dir / RESTORED_DIR
        dest_dir.mkdir(parents=True, exist_ok=True)
        dest = dest_dir / week.filename
        with _flock(dest_dir / f".{week.filename}.lock", f"restore of {week}"):
            if dest.exists():
                if sha256_file(dest) == m["raw_sha256"]:
                    self.say(f"{week}: already restored at {dest}")
                    return dest
                if not force:
                    raise ArchiveError(
                        f"{dest} exists and differs from the archive; use --force to replace it"
                    )
            tmp = dest_dir / f".{week.filename}.restore.tmp"
            tmp.unlink(missing_ok=True)
            try:
                self._download(week, m, tmp)
                self._check_restored(tmp, m)
                tmp.chmod(0o444)
                os.replace(tmp, dest)
                _fsync_dir(dest_dir)
            finally:
                if tmp.exists():
                    tmp.chmod(0o644)
                    tmp.unlink()
        self.say(
            f"{week}: restored read-only to {dest} "
            f"({fmt_bytes(m['raw_size'])}, rows {fmt_counts(m['row_counts'])})"
        )
        return dest

    def _download(self, week: Week, m: dict[str, Any], tmp: Path) -> None:
        dctx = zstandard.ZstdDecompressor()
        url = self.target.url(week.object_name)
        progress = self._progress(f"restore {week.object_name}", m["compressed_size"])
        with self.target.open(week.object_name) as body, open(tmp, "wb") as fout:
            reader = _HashingReader(body, progress)
            writer = _HashingWriter(fout)
            broken = None
            try:
                dctx.copy_stream(
                    cast(IO[bytes], reader), cast(IO[bytes], writer), read_size=CHUNK, write_size=CHUNK
                )
            except zstandard.ZstdError as exc:
                broken = exc
                while reader.read(CHUNK):  # hash the rest: report a mismatch rather than a codec error
                    pass
            fout.flush()
            os.fsync(fout.fileno())
        progress.finish(f" → {fmt_bytes(writer.size)}")
        got = reader.sha.hexdigest()
        if got != m["sha256"] or reader.size != m["compressed_size"]:
            raise ArchiveError(
                f"sha256 mismatch for {url}: expected {m['sha256']}, got {got} "
                f"({reader.size} bytes) — the archive object is corrupt; nothing restored"
            )
        if broken is not None:
            raise ArchiveError(f"{url} does not decompress ({broken}) although its sha256 matches")
        if writer.sha.hexdigest() != m["raw_sha256"] or writer.size != m["raw_size"]:
            raise ArchiveError(
                f"{url} decompresses to different bytes than were archived (raw sha256 mismatch)"
            )

    @staticmethod
    def _check_restored(path: Path, m: dict[str, Any]) -> None:
        conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            conn.execute("PRAGMA cache_size = -32768")  # 32 MiB page cache: integrity_check twice as fast
            result = [r[0] for r in conn.execute("PRAGMA integrity_check")]
            if result != ["ok"]:
                raise ArchiveError(
                    f"restored {path.name} fails PRAGMA integrity_check: {'; '.join(result[:3])}"
                )
            counts = _row_counts(conn)
            if counts != m["row_counts"]:
                raise ArchiveError(
                    f"restored {path.name} has rows {counts}, the manifest says {m['row_counts']}"
                )
        finally:
            conn.close()

    # -- list

    def listing(self) -> dict[str, Any]:
        local = []
        try:
            local = classify(self.db_dir)
        except ArchiveError:
            local = [LocalWeek(Week.of(p), p, _size(p), "unknown") for p in list_week_files(self.db_dir)]
        self.target.check(create=False)
        index = self.read_index().get("weeks", {})
        restored_dir = self.db_dir / RESTORED_DIR
        archived = []
        for obj in self.target.list():
            yw = parse_week_filename(obj.name.removesuffix(".zst"))
            if yw is None:
                continue
            wk = Week(*yw)
            entry = index.get(str(wk), {})
            archived.append(
                {
                    "week": str(wk),
                    "url": self.target.url(obj.name),
                    "compressed_size": obj.size,
                    "raw_size": entry.get("raw_size"),
                    "sha256": obj.metadata.get("sha256") or entry.get("sha256"),
                    "last_modified": obj.last_modified.isoformat() if obj.last_modified else None,
                    "storage_class": obj.storage_class,
                    "restored": (restored_dir / wk.filename).exists(),
                }
            )
        return {
            "db_dir": str(self.db_dir),
            "target": self.target.url(),
            "local": [
                {"week": str(lw.week), "file": lw.path.name, "size": lw.size, "state": lw.state}
                for lw in local
            ],
            "archived": archived,
        }


def _row_counts(conn: apsw.Connection) -> dict[str, int]:
    tables = [
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )
    ]
    return {t: conn.execute(f'SELECT count(*) FROM "{t}"').get for t in tables}  # noqa: S608


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
