"""The one S3 client builder (app.storage.s3) that the weekly archive and the replica share: against a
real moto S3 server process, as tests/test_archive.py and tests/test_replication.py, and against a port
that accepts connections and never answers (how often a request is tried)."""

import re

import pytest
import yaml
from botocore.exceptions import BotoCoreError

from app.config import Settings
from app.storage.archive import S3Target
from app.storage.replication import replicated_weeks, write_config
from app.storage.s3 import S3Patience, s3_client
from tests.support.s3 import FAKE_AWS, fake_aws_fixture, moto_fixture  # noqa: F401 - fixtures
from tests.support.servers import SilentServer


def _settings(tmp_path, bucket: str, endpoint: str) -> Settings:
    return Settings.from_env(
        {"TAP_DATA_DIR": str(tmp_path / "data"), "TAP_S3_BUCKET": bucket, "TAP_S3_ENDPOINT_URL": endpoint}
    )


def test_the_archive_and_the_replica_reach_the_bucket_the_settings_name(tmp_path, moto):
    bucket = moto.create_bucket("one-builder")
    settings = _settings(tmp_path, bucket, moto.url)
    patience = S3Patience(connect_timeout_s=5, read_timeout_s=5, attempts=1)
    client = s3_client(settings, patience)
    client.put_object(Bucket=bucket, Key=f"{settings.s3_replica_prefix}bets_2026_49.db/0000.ltx", Body=b"r")
    client.put_object(Bucket=bucket, Key=f"{settings.s3_prefix}bets_2026_40.db.zst", Body=b"a")

    assert replicated_weeks(settings, patience) == ["bets_2026_49.db"]
    target = S3Target(settings, patience)
    assert [o.name for o in target.list()] == ["bets_2026_40.db.zst"]
    assert target.url("x") == f"s3://{bucket}/{settings.s3_prefix}x"


@pytest.mark.parametrize("attempts", [1, 3])
def test_attempts_count_every_try_the_first_included(tmp_path, attempts):
    """botocore's ``retries={"max_attempts": n}`` counts retries (n + 1 tries); S3Patience counts tries."""
    with SilentServer() as silent:
        client = s3_client(_settings(tmp_path, "b", silent.url), S3Patience(0.3, 0.3, attempts))
        with pytest.raises(BotoCoreError):
            client.list_objects_v2(Bucket="b")
        assert silent.connections() == attempts


@pytest.mark.parametrize(("connect", "read", "attempts"), [(1, 1, 0), (0, 1, 1), (1, -1, 1)])
def test_patience_needs_positive_timeouts_and_one_attempt(connect, read, attempts):
    with pytest.raises(ValueError, match="positive timeouts and at least one attempt"):
        S3Patience(connect, read, attempts)


@pytest.mark.parametrize("variable", ["AWS_REGION", "AWS_DEFAULT_REGION"])
def test_requests_are_signed_for_the_region_litestream_is_given(tmp_path, monkeypatch, variable):
    """Litestream's configuration takes the region from AWS_REGION or AWS_DEFAULT_REGION; boto3 reads
    only the second, so with AWS_REGION alone (the name the AWS SDKs for Go and the CLI read) it signed
    for us-east-1 while Litestream signed for the region set: an S3 API that checks the region (MinIO
    with a region configured) refused the restore and the first-start check, not the replication."""
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, "eu-central-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    with SilentServer() as silent:
        settings = _settings(tmp_path, "b", silent.url)
        with pytest.raises(BotoCoreError):
            s3_client(settings, S3Patience(0.3, 0.3, 1)).list_objects_v2(Bucket="b")
        request = silent.received().decode("latin-1")
    signed_for = re.search(r"Credential=testing/\d{8}/([a-z0-9-]+)/s3/aws4_request", request)
    assert signed_for is not None, request
    litestream = yaml.safe_load(write_config(settings).read_text())
    assert [db["replica"]["region"] for db in litestream["dbs"]] == ["eu-central-1"]
    assert signed_for.group(1) == "eu-central-1"


def _signed_region(settings: Settings) -> str:
    """The region of the signature boto3's client puts on a request (sent to a port that never answers)."""
    with SilentServer() as silent:
        endpoint = Settings.from_env(
            {"TAP_DATA_DIR": str(settings.data_dir), "TAP_S3_BUCKET": "b", "TAP_S3_ENDPOINT_URL": silent.url}
        )
        with pytest.raises(BotoCoreError):
            s3_client(endpoint, S3Patience(0.3, 0.3, 1)).list_objects_v2(Bucket="b")
        request = silent.received().decode("latin-1")
    signed_for = re.search(r"Credential=testing/\d{8}/([a-z0-9-]+)/s3/aws4_request", request)
    assert signed_for is not None, request
    return signed_for.group(1)


@pytest.mark.parametrize(
    ("profile", "config", "region"),
    [
        (None, "[default]\nregion = eu-west-3\n", "eu-west-3"),
        ("dr", "[default]\nregion = eu-west-3\n[profile dr]\nregion = ap-south-1\n", "ap-south-1"),
        (None, "", "us-east-1"),
    ],
)
def test_without_a_region_variable_both_sides_take_the_config_files_region(
    tmp_path, monkeypatch, profile, config, region
):
    """Neither AWS_REGION nor AWS_DEFAULT_REGION: boto3 took the profile's region from ~/.aws/config
    while Litestream was written us-east-1 (and, given a region, ignores that file): for a bucket
    outside us-east-1 the archive and the first-start check worked and Litestream was refused."""
    import boto3

    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # boto3 reads the config file once a process
    (tmp_path / "aws-config").write_text(config)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    if profile:
        monkeypatch.setenv("AWS_PROFILE", profile)
    settings = _settings(tmp_path, "b", "http://127.0.0.1:1")
    litestream = yaml.safe_load(write_config(settings).read_text())
    assert [db["replica"]["region"] for db in litestream["dbs"]] == [region]
    assert _signed_region(settings) == region


def test_each_client_signs_with_the_credentials_the_environment_has_now(tmp_path, monkeypatch):
    """`boto3.client` shares one session per process, and that session keeps the credentials it first
    resolved: a client made after the environment's credentials changed still signed with the old ones
    (two tests of one pytest worker, one with other fake credentials, failed in that order)."""
    keys = []
    for key in ("first-key", "second-key"):
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
        with SilentServer() as silent:
            with pytest.raises(BotoCoreError):
                s3_client(_settings(tmp_path, "b", silent.url), S3Patience(0.3, 0.3, 1)).list_objects_v2(
                    Bucket="b"
                )
            request = silent.received().decode("latin-1")
        signed = re.search(r"Credential=([a-z-]+)/\d{8}/", request)
        assert signed is not None, request
        keys.append(signed.group(1))
    assert keys == ["first-key", "second-key"]
