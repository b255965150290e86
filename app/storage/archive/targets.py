"""Where archives go: a local directory or an S3 bucket, behind one small interface."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.config import Settings
from app.storage.archive.streams import CHUNK, Progress, fmt_bytes
from app.storage.archive.weeks import ArchiveError
from app.storage.files import fsync_dir, write_atomic
from app.storage.s3 import S3Patience, s3_client

MULTIPART_THRESHOLD = 64 << 20
MULTIPART_CHUNK = 64 << 20  # 10,000 parts max → objects up to 640 GiB
MAX_CONCURRENCY = 4  # parts in flight; s3transfer streams each part from the file, never all in memory
# An archive run's S3 requests: large uploads and patient retries (an unattended job, nobody waiting).
ARCHIVE_RUN_S3 = S3Patience(connect_timeout_s=10, read_timeout_s=120, attempts=5)


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
        fsync_dir(self.root)

    def put_bytes(self, name: str, data: bytes) -> None:
        write_atomic(self.root / name, data)

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
    `TAP_S3_PREFIX`. The client comes from `app.storage.s3.s3_client` (endpoint, credentials), bounded
    by the caller's `S3Patience`: `ARCHIVE_RUN_S3` for archive runs, shorter for a caller that must
    answer quickly (the console's weeks panel)."""

    local = False

    def __init__(
        self,
        settings: Settings,
        patience: S3Patience,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        multipart_chunksize: int = MULTIPART_CHUNK,
        max_concurrency: int = MAX_CONCURRENCY,
    ) -> None:
        from boto3.s3.transfer import TransferConfig

        if not settings.s3_bucket:
            raise ValueError("S3Target needs TAP_S3_BUCKET")
        self.bucket = settings.s3_bucket
        self.prefix = settings.s3_prefix
        self.endpoint_url = settings.s3_endpoint_url
        self.storage_class = settings.s3_storage_class
        self.client = s3_client(settings, patience)
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


def make_target(settings: Settings, patience: S3Patience, **transfer: int) -> LocalTarget | S3Target:
    """The archive target of `settings`: its S3 bucket, with `patience` for each request, or else the
    local directory (`patience` unused). `transfer` overrides S3Target's multipart sizes."""
    if settings.s3_bucket:
        return S3Target(settings, patience, **transfer)
    return LocalTarget(settings.archive_path)
