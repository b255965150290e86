"""The archiver: stage, upload, verify, record and remove one week at a time (steps in the package
docstring). One class because the steps share one state machine on disk; each step is its own method."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import apsw
import zstandard

from app.config import Settings
from app.storage.archive.streams import (
    CHUNK,
    HashingReader,
    HashingWriter,
    Progress,
    flock,
    fmt_bytes,
    fmt_counts,
    json_bytes,
    sha256_file,
)
from app.storage.archive.targets import ARCHIVE_RUN_S3, LocalTarget, S3Target, make_target
from app.storage.archive.weeks import (
    INDEX_FILE,
    MANIFEST_FORMAT,
    RESTORED_DIR,
    RUN_LOCK,
    SIDE_SUFFIXES,
    STAGING_DIR,
    ArchiveError,
    LocalWeek,
    Week,
    classify,
    file_size,
    fingerprint,
)
from app.storage.db import HISTORY_WEEKS, list_week_files, parse_week_filename
from app.storage.files import fsync_dir, write_atomic

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
        self.target = target or make_target(settings, ARCHIVE_RUN_S3)
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
        write_atomic(self.index_path, json_bytes(index))

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
        with flock(self.db_dir / RUN_LOCK, "archive run"):
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
            m.get("source") != fingerprint(lw.path)
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
        source = fingerprint(lw.path)
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
        write_atomic(staging / "manifest.json", json_bytes(manifest))
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
                progress = self._progress(f"snapshot {src_path.name}", file_size(src_path))
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
            from app.ledger.integrity import check_connection

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
            reader = HashingReader(fin, progress)
            writer = HashingWriter(fout)
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
            self.target.put_bytes(wk.manifest_name, json_bytes(m))
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
                reader = HashingReader(body, progress)
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
        if fingerprint(lw.path) != m["source"]:
            raise ArchiveError(
                f"{lw.path.name} changed after its snapshot was taken; kept. The archive in the target is of "
                "the older content — see docs/OPERATIONS.md"
            )
        lw.path.unlink()
        for suffix in SIDE_SUFFIXES:
            Path(f"{lw.path}{suffix}").unlink(missing_ok=True)
        fsync_dir(self.db_dir)

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
        with flock(dest_dir / f".{week.filename}.lock", f"restore of {week}"):
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
                fsync_dir(dest_dir)
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
            reader = HashingReader(body, progress)
            writer = HashingWriter(fout)
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
        local = local_listing(self.db_dir)
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
            "local": local,
            "archived": archived,
        }


def local_listing(db_dir: Path) -> list[dict[str, Any]]:
    """The week files on this machine and what archiving would do with each: no archive target needed
    (the console lists them while S3 is unreachable)."""
    try:
        local = classify(db_dir)
    except ArchiveError:
        local = [LocalWeek(Week.of(p), p, file_size(p), "unknown") for p in list_week_files(db_dir)]
    return [{"week": str(lw.week), "file": lw.path.name, "size": lw.size, "state": lw.state} for lw in local]


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
