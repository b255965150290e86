"""Weekly archival of closed week files to cold storage (ADR-006), behind `flask archive run|list|restore`.

Which weeks. A week file is *closed* when CURRENT does not name it. The `HISTORY_WEEKS` (4) newest
closed weeks before the current one stay local — the app attaches them read-only
(`app.storage.db.history_files`). Any other closed week whose ISO week starts more than four weeks
before the current week's is *eligible*. Nothing else is ever touched: not CURRENT's file, not an
attached week, not a file newer than CURRENT (a half-made rollover), and nothing at all when CURRENT
is missing.

One week, step by step (each step re-runnable after a crash at any point; state lives in files):

1. **stage** into ``<db dir>/.archive-staging/<week>/`` (same filesystem as the week file):
   a consistent snapshot with SQLite's online backup API (page copy, WAL frames included), switched to
   ``journal_mode=DELETE`` so the archive is one self-contained file; ``PRAGMA integrity_check``, row
   counts and the ledger checks of `app.ledger.integrity` on the snapshot, on two threads while zstd
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

from app.storage.archive.archiver import Archiver, WeekResult, local_listing
from app.storage.archive.streams import Progress, fmt_bytes, fmt_counts, sha256_file
from app.storage.archive.targets import ARCHIVE_RUN_S3, LocalTarget, ObjectInfo, S3Target, make_target
from app.storage.archive.weeks import ArchiveError, LocalWeek, Week, classify

__all__ = [
    "ARCHIVE_RUN_S3",
    "ArchiveError",
    "Archiver",
    "LocalTarget",
    "LocalWeek",
    "ObjectInfo",
    "Progress",
    "S3Target",
    "Week",
    "WeekResult",
    "classify",
    "fmt_bytes",
    "fmt_counts",
    "local_listing",
    "make_target",
    "sha256_file",
]
