"""What the tests that talk to S3 share: fake credentials that reach no real AWS, and moto's S3 server.

Import the fixtures into a test module (`from tests.support.s3 import fake_aws_fixture, moto_fixture`):
`fake_aws` is autouse there, so no test of that module can pick up a developer's own ~/.aws files or
ask an instance-metadata endpoint for credentials.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.servers import MotoServer

FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


@pytest.fixture(name="fake_aws", autouse=True)
def fake_aws_fixture(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in FAKE_AWS.items():
        monkeypatch.setenv(k, v)


@pytest.fixture(name="moto", scope="module")
def moto_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """A real `moto_server` process (S3 over HTTP) on a free loopback port, one per test module."""
    server = MotoServer(tmp_path_factory.mktemp("moto"))
    server.start()
    yield server
    server.stop()
