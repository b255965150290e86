"""The one S3 client builder, for the weekly archive (`app.storage.archive.targets.S3Target`, the
console's weeks panel) and the replica (`app.storage.replication`: the first-start check, restore).

It reads the connection from the settings and the environment, the same way for every caller:
``TAP_S3_ENDPOINT_URL`` (any S3 API, e.g. MinIO; then path-style addressing), credentials from boto3's
usual chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``~/.aws``, an instance role; never
written anywhere, as for Litestream), the region from `s3_region`, the one Litestream's configuration
names. How long a request may take and how often it is tried is not read from anywhere: each caller
passes its own `S3Patience`, because an archive upload, an operator's restore, a start-up check and a
console poll can each afford very different waits.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from app.config import Settings


@dataclass(frozen=True, slots=True)
class S3Patience:
    """How long one S3 request may take and how often it is tried.

    `attempts` counts every try, the first included: botocore's own ``retries={"max_attempts": n}``
    counts only the retries (n + 1 tries), which gave each caller one try more than it asked for.
    """

    connect_timeout_s: float
    read_timeout_s: float
    attempts: int

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.connect_timeout_s <= 0 or self.read_timeout_s <= 0:
            raise ValueError(f"S3Patience needs positive timeouts and at least one attempt: {self}")


DEFAULT_REGION = "us-east-1"  # boto3's and Litestream's own when nothing names one


def s3_region() -> str:
    """The region both sides use: AWS_REGION (the AWS SDKs' name), else AWS_DEFAULT_REGION, else the
    profile's ``region`` in the AWS config file (``AWS_PROFILE``, ``AWS_CONFIG_FILE``, ``~/.aws/config``),
    as botocore resolves it, else `DEFAULT_REGION`.

    Passed explicitly to boto3 and written into Litestream's configuration
    (`app.storage.replication`): Litestream signs for the region it is given and ignores the config
    file then, so left to boto3's own chain the two could sign for different regions, the archive and
    the first-start check reaching the bucket while Litestream, refused, never replicated. boto3 reads
    only the second variable name, hence the first is passed too."""
    named = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if named:
        return named
    from botocore.exceptions import BotoCoreError
    from botocore.session import Session

    try:
        region = Session().get_config_variable("region")
    except BotoCoreError:  # e.g. AWS_PROFILE names no profile: boto3 says so itself where it is used
        region = None
    return str(region) if region else DEFAULT_REGION


def s3_client(settings: Settings, patience: S3Patience) -> Any:
    """A boto3 S3 client for ``TAP_S3_*`` (module docstring), bounded by the caller's `patience`.

    boto3 is imported here, not at module level: gunicorn's master must not import it
    (`app.storage.replication.check_first_start_apart`). Each client has a session of its own:
    `boto3.client` shares one per process, which keeps the credentials it first resolved, so a change
    of the environment's credentials (or a test's) after the first client went unseen."""
    import boto3
    from botocore.config import Config

    for noisy in ("botocore", "boto3", "s3transfer", "urllib3"):  # the app logs at INFO; these chatter
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger(noisy).level))
    return boto3.session.Session().client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=s3_region(),
        config=Config(
            connect_timeout=patience.connect_timeout_s,
            read_timeout=patience.read_timeout_s,
            retries={"total_max_attempts": patience.attempts, "mode": "standard"},
            s3={"addressing_style": "path"} if settings.s3_endpoint_url else {},
        ),
    )
