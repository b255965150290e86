"""Streaming I/O for archives: progress lines, SHA-256 while bytes pass, atomic files, the run lock."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from app.storage.archive.weeks import ArchiveError

CHUNK = 1 << 20  # 1 MiB reads and writes everywhere: memory stays flat whatever the file size


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


class HashingReader:
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


class HashingWriter:
    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.raw.write(data)


def sha256_file(path: Path, progress: Progress | None = None) -> str:
    reader = HashingReader(open(path, "rb"), progress)  # noqa: SIM115 - closed below
    try:
        while reader.read(CHUNK):
            pass
    finally:
        reader.raw.close()
    return reader.sha.hexdigest()


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


@contextlib.contextmanager
def flock(path: Path, what: str) -> Iterator[None]:
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
