"""Weekly archival (issue 6): real SQLite week files, a real moto S3 server process on 127.0.0.1,
the real flask CLI and the bash wrapper.

Week files are made with `app.storage.db.connect`/`migrate` and realistic rows (`loadtest.archive_bench.fill_week`:
users, bets, ledger with balance chains that pass the integrity check); CURRENT is set with
`app.storage.db.set_current_week_file`. Current week 2026_47, so 46..43 are the four attached closed weeks and
42 and older are eligible.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import apsw
import boto3
import pytest

from app import create_app
from app.config import ConfigError, Settings
from app.storage.archive import ARCHIVE_RUN_S3, ArchiveError, Archiver, S3Target, Week, classify, make_target
from app.storage.db import connect, set_current_week_file, week_filename
from loadtest.archive_bench import fill_week
from tests.support.s3 import FAKE_AWS, fake_aws_fixture  # noqa: F401 - fixtures
from tests.support.servers import ROOT, VENV_BIN, free_port, wait_until

CURRENT = (2026, 47)


# ---- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_url(tmp_path_factory):
    """A real `moto_server` process (S3 API over HTTP) on a free loopback port."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **FAKE_AWS},
    )
    url = f"http://127.0.0.1:{port}"
    import urllib.request

    wait_until(
        lambda: urllib.request.urlopen(url + "/moto-api/", timeout=1).status == 200, what="moto_server"
    )
    yield url
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


def s3_client(url: str):
    return boto3.client("s3", endpoint_url=url, region_name="us-east-1")


@pytest.fixture
def bucket(moto_url, request):
    name = "tap-" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:20]
    s3_client(moto_url).create_bucket(Bucket=name)
    return name


def make_weeks(db_dir: Path, weeks: list[tuple[int, int]], big: dict | None = None) -> dict[str, Path]:
    """Week files for `weeks` (small unless listed in `big`: {week: bets}) and CURRENT = 2026_47."""
    db_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    big = big or {}
    for yw in [*weeks, CURRENT]:
        path = db_dir / week_filename(*yw)
        if not path.exists():
            fill_week(path, week=yw, bets=big.get(yw, 120), users=30, seed=yw[0] * 100 + yw[1])
        paths[f"{yw[0]:04d}_{yw[1]:02d}"] = path
    set_current_week_file(db_dir, paths["2026_47"])
    return paths


def standard_weeks(db_dir: Path, big: dict | None = None) -> dict[str, Path]:
    return make_weeks(db_dir, [(2026, w) for w in range(38, 47)], big)


def settings_for(tmp_path: Path, **kw) -> Settings:
    return Settings.from_env({}, data_dir=tmp_path / "data", **kw)


def dump(path: Path) -> dict:
    """Every table's rows (by rowid, or by primary key in a WITHOUT ROWID table) and the schema of a
    week file, for exact comparisons."""
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        out = {"schema": conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()}
        out["user_version"] = conn.execute("PRAGMA user_version").fetchone()[0]
        for table, sql in conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        ).fetchall():
            order = "1" if "WITHOUT ROWID" in sql.upper() else "rowid"  # the key is the first column
            out[table] = conn.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()
        return out
    finally:
        conn.close()


def file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))
    }


# ---- which weeks --------------------------------------------------------------------------------


def test_week_parsing():
    assert str(Week.parse("2026_07")) == "2026_07"
    assert Week.parse("2026-W40") == Week(2026, 40) == Week.parse("2026-40")
    assert Week(2026, 40).filename == "bets_2026_40.db"
    assert Week(2027, 2).weeks_before(Week(2027, 2)) == 0
    assert Week(2026, 50).weeks_before(Week(2027, 2)) == 5  # 2026 has 53 ISO weeks
    for bad in ("2026_99", "2025_53", "26_40", "week 40", ""):
        with pytest.raises(ArchiveError):
            Week.parse(bad)


def test_current_and_four_latest_closed_are_never_eligible(tmp_path):
    db_dir = tmp_path / "db"
    standard_weeks(db_dir)
    states = {str(lw.week): lw.state for lw in classify(db_dir)}
    assert states == {
        "2026_47": "current",
        **{f"2026_{w}": "attached" for w in (46, 45, 44, 43)},
        **{f"2026_{w}": "eligible" for w in (42, 41, 40, 39, 38)},
    }


def test_gaps_year_boundary_and_a_file_newer_than_current(tmp_path):
    db_dir = tmp_path / "db"
    # current 2027_03; closed 2027_01, 2026_53, 2026_50, 2026_49 (the four newest: attached even though
    # 2026_50 and 2026_49 are more than four weeks old), 2026_48 eligible; 2027_04 is a half-made rollover
    for yw in [(2027, 3), (2027, 1), (2026, 53), (2026, 50), (2026, 49), (2026, 48), (2027, 4)]:
        fill_week(db_dir / week_filename(*yw), week=yw, bets=5, users=3)
    set_current_week_file(db_dir, db_dir / week_filename(2027, 3))
    states = {str(lw.week): lw.state for lw in classify(db_dir)}
    assert states == {
        "2027_04": "newer",
        "2027_03": "current",
        "2027_01": "attached",
        "2026_53": "attached",
        "2026_50": "attached",
        "2026_49": "attached",
        "2026_48": "eligible",
    }


def test_no_current_pointer_means_no_archival(tmp_path):
    db_dir = tmp_path / "data" / "db"
    fill_week(db_dir.parent / "x.db", week=(2026, 1), bets=1, users=1)  # db_dir exists, no CURRENT
    db_dir.mkdir()
    with pytest.raises(ArchiveError, match="no CURRENT pointer"):
        Archiver(settings_for(tmp_path)).run()


def test_new_settings_are_validated():
    s = Settings.from_env({"TAP_S3_PREFIX": "/prod/tap", "TAP_S3_STORAGE_CLASS": ""})
    assert s.s3_prefix == "prod/tap/" and s.s3_storage_class is None
    assert Settings.from_env({}).s3_storage_class == "STANDARD_IA"
    for env in (
        {"TAP_S3_STORAGE_CLASS": "GLACIER"},
        {"TAP_S3_PREFIX": "a b"},
        {"TAP_ARCHIVE_ZSTD_LEVEL": "30"},
    ):
        with pytest.raises(ConfigError, match=next(iter(env))):
            Settings.from_env(env)


# ---- archive and restore ------------------------------------------------------------------------


def test_archive_to_moto_s3_multipart_and_restore_gives_identical_rows(tmp_path, moto_url, bucket):
    s = settings_for(tmp_path, s3_bucket=bucket, s3_endpoint_url=moto_url)
    paths = standard_weeks(s.db_dir, big={(2026, 38): 40_000})  # ~14 MiB raw, > 5 MiB compressed
    before = {w: dump(p) for w, p in paths.items()}
    kept_sha = {w: file_sha(paths[w]) for w in ("2026_47", "2026_46", "2026_45", "2026_44", "2026_43")}
    # 5 MiB parts (S3's minimum) so that the big week goes up as a real multipart upload
    target = make_target(s, ARCHIVE_RUN_S3, multipart_threshold=5 << 20, multipart_chunksize=5 << 20)
    progress = io.StringIO()
    results = Archiver(s, target, progress=progress).run()

    assert [r.week for r in results] == ["2026_38", "2026_39", "2026_40", "2026_41", "2026_42"]
    assert all(r.action == "archived" and r.uploaded for r in results)
    s3 = s3_client(moto_url)
    head = s3.head_object(Bucket=bucket, Key="weeks/bets_2026_38.db.zst")
    manifest = json.loads(s3.get_object(Bucket=bucket, Key="weeks/bets_2026_38.manifest.json")["Body"].read())
    assert head["ETag"].strip('"').endswith("-2")  # two parts
    assert head["StorageClass"] == "STANDARD_IA"
    assert head["Metadata"]["sha256"] == manifest["sha256"]
    assert head["ContentLength"] == manifest["compressed_size"]
    assert manifest["row_counts"]["bets"] == 40_000 and manifest["integrity_check"] == "ok"
    assert manifest["ledger_violations"] == 0 and manifest["week"] == "2026_38"
    assert "compress bets_2026_38.db" in progress.getvalue() and "MiB/s" in progress.getvalue()

    # the archived weeks are gone locally (with their -wal/-shm); the others are byte-for-byte untouched
    for w in ("2026_38", "2026_39", "2026_40", "2026_41", "2026_42"):
        assert not paths[w].exists()
        assert not Path(f"{paths[w]}-wal").exists() and not Path(f"{paths[w]}-shm").exists()
    assert {w: file_sha(paths[w]) for w in kept_sha} == kept_sha
    index = json.loads((s.db_dir / "archive-index.json").read_text())["weeks"]
    assert set(index) == {"2026_38", "2026_39", "2026_40", "2026_41", "2026_42"}
    assert index["2026_38"]["url"] == f"s3://{bucket}/weeks/bets_2026_38.db.zst"
    assert "local_removed_at" in index["2026_38"]
    assert not (s.db_dir / ".archive-staging").exists()

    archiver = Archiver(s)
    for w in ("2026_38", "2026_39", "2026_42"):
        restored = archiver.restore(Week.parse(w))
        assert restored == s.db_dir / "restored" / f"bets_{w}.db"
        assert (restored.stat().st_mode & 0o777) == 0o444
        assert dump(restored) == before[w]
    # restoring again is a no-op; a live week file is never shadowed
    assert archiver.restore(Week.parse("2026_38")) == s.db_dir / "restored" / "bets_2026_38.db"
    with pytest.raises(ArchiveError, match="live week file"):
        archiver.restore(Week.parse("2026_44"))
    # a second run has nothing to do
    assert Archiver(s).run() == []


def test_local_directory_target_same_format_and_checks(tmp_path):
    s = settings_for(tmp_path, archive_dir=tmp_path / "cold")
    paths = standard_weeks(s.db_dir)
    before = dump(paths["2026_40"])
    Archiver(s).run(Week.parse("2026_40"))
    cold = tmp_path / "cold"
    assert sorted(p.name for p in cold.iterdir()) == [
        "bets_2026_40.db.zst",
        "bets_2026_40.db.zst.sha256",
        "bets_2026_40.manifest.json",
    ]
    check = subprocess.run(["sha256sum", "-c", "bets_2026_40.db.zst.sha256"], cwd=cold, capture_output=True)
    assert check.returncode == 0, check.stderr
    manifest = json.loads((cold / "bets_2026_40.manifest.json").read_text())
    assert manifest["sha256"] == file_sha(cold / "bets_2026_40.db.zst")
    assert not paths["2026_40"].exists() and paths["2026_39"].exists()  # only the week asked for
    assert dump(Archiver(s).restore(Week.parse("2026_40"))) == before


@pytest.mark.parametrize("where", ["s3", "local"])
def test_restore_detects_a_corrupt_object(tmp_path, moto_url, bucket, where):
    kw = {"s3_bucket": bucket, "s3_endpoint_url": moto_url} if where == "s3" else {}
    s = settings_for(tmp_path, **kw)
    standard_weeks(s.db_dir)
    Archiver(s).run(Week.parse("2026_39"))
    # flip one byte in the middle of the archived object, keeping its size and metadata
    if where == "s3":
        c = s3_client(moto_url)
        key = "weeks/bets_2026_39.db.zst"
        obj = c.get_object(Bucket=bucket, Key=key)
        data = bytearray(obj["Body"].read())
        data[len(data) // 2] ^= 0x55
        c.put_object(Bucket=bucket, Key=key, Body=bytes(data), Metadata=obj["Metadata"])
    else:
        p = s.archive_path / "bets_2026_39.db.zst"
        data = bytearray(p.read_bytes())
        data[len(data) // 2] ^= 0x55
        p.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match="sha256 mismatch"):
        Archiver(s).restore(Week.parse("2026_39"))
    assert list((s.db_dir / "restored").glob("bets_*")) == []
    assert not list((s.db_dir / "restored").glob(".*.tmp"))


class Crash(Exception):
    pass


@pytest.mark.parametrize(
    ("point", "uploads_on_rerun"),
    [("snapshot", 1), ("staged", 1), ("uploaded", 0), ("verified", 0), ("removed", 0)],
)
def test_a_crash_at_any_step_is_completed_by_a_rerun(
    tmp_path, moto_url, bucket, monkeypatch, point, uploads_on_rerun
):
    s = settings_for(tmp_path, s3_bucket=bucket, s3_endpoint_url=moto_url)
    paths = standard_weeks(s.db_dir)
    before = dump(paths["2026_41"])
    uploads = []
    real_put = S3Target.put_file
    monkeypatch.setattr(
        S3Target, "put_file", lambda self, *a, **k: (uploads.append(a[0]), real_put(self, *a, **k))
    )

    def crash(self, name, week):
        if name == point:
            raise Crash(name)

    monkeypatch.setattr(Archiver, "_checkpoint", crash)
    with pytest.raises(Crash):
        Archiver(s).run(Week.parse("2026_41"))
    assert paths["2026_41"].exists() == (point != "removed")  # never gone before "verified" passed
    first = len(uploads)

    monkeypatch.setattr(Archiver, "_checkpoint", lambda self, name, week: None)
    Archiver(s).run(Week.parse("2026_41"))
    assert len(uploads) - first == uploads_on_rerun
    assert uploads.count("bets_2026_41.db.zst") == 1  # uploaded exactly once over both runs
    assert not paths["2026_41"].exists()
    assert not (s.db_dir / ".archive-staging").exists()
    assert "local_removed_at" in json.loads((s.db_dir / "archive-index.json").read_text())["weeks"]["2026_41"]
    assert dump(Archiver(s).restore(Week.parse("2026_41"))) == before


def test_a_multipart_upload_left_open_by_a_crash_is_aborted(tmp_path, moto_url, bucket):
    s = settings_for(tmp_path, s3_bucket=bucket, s3_endpoint_url=moto_url)
    standard_weeks(s.db_dir)
    c = s3_client(moto_url)
    c.create_multipart_upload(Bucket=bucket, Key="weeks/bets_2026_42.db.zst")  # what a kill -9 leaves
    Archiver(s).run(Week.parse("2026_42"))
    assert c.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_a_week_changed_after_upload_is_kept_and_the_archive_never_overwritten(
    tmp_path, moto_url, bucket, monkeypatch
):
    s = settings_for(tmp_path, s3_bucket=bucket, s3_endpoint_url=moto_url)
    paths = standard_weeks(s.db_dir)
    monkeypatch.setattr(
        Archiver,
        "_checkpoint",
        lambda self, n, w: (_ for _ in ()).throw(Crash()) if n == "verified" else None,
    )
    with pytest.raises(Crash):
        Archiver(s).run(Week.parse("2026_40"))
    sha = s3_client(moto_url).head_object(Bucket=bucket, Key="weeks/bets_2026_40.db.zst")["Metadata"][
        "sha256"
    ]
    conn = connect(paths["2026_40"])  # something writes into the closed week (it must not, but…)
    conn.execute("INSERT INTO week_meta (key, value) VALUES ('late', 'write')")
    conn.close()
    monkeypatch.setattr(Archiver, "_checkpoint", lambda self, n, w: None)
    with pytest.raises(ArchiveError, match="already exists with different content"):
        Archiver(s).run(Week.parse("2026_40"))
    assert paths["2026_40"].exists()
    assert (
        s3_client(moto_url).head_object(Bucket=bucket, Key="weeks/bets_2026_40.db.zst")["Metadata"]["sha256"]
        == sha
    )


def test_a_damaged_week_is_kept_and_does_not_hold_back_the_others(tmp_path):
    s = settings_for(tmp_path)
    paths = standard_weeks(s.db_dir, big={(2026, 39): 3000})
    damaged = paths["2026_39"]
    with open(damaged, "r+b") as fh:  # scribble over a b-tree page in the middle of the file
        fh.seek((damaged.stat().st_size // 4096 // 2) * 4096 + 8)
        fh.write(b"\xff" * 2000)
    before = file_sha(damaged)
    with pytest.raises(
        ArchiveError, match=r"^1 of 5 weeks failed .* 2026_39: .*(integrity_check|malformed)"
    ) as exc:
        Archiver(s).run()
    assert "\n" not in str(exc.value)
    assert damaged.exists() and file_sha(damaged) == before
    assert not (s.archive_path / "bets_2026_39.db.zst").exists()
    for w in ("2026_38", "2026_40", "2026_41", "2026_42"):
        assert not paths[w].exists() and (s.archive_path / f"bets_{w}.db.zst").exists()


def test_dry_run_changes_nothing(tmp_path, moto_url, bucket):
    s = settings_for(tmp_path, s3_bucket=bucket, s3_endpoint_url=moto_url)
    standard_weeks(s.db_dir)
    said = []
    before = tree(s.data_dir)
    results = Archiver(s, say=said.append).run(dry_run=True)
    assert [r.week for r in results] == ["2026_38", "2026_39", "2026_40", "2026_41", "2026_42"]
    assert all(r.action == "would-archive" for r in results)
    assert said[0].startswith("would archive bets_2026_38.db")
    assert tree(s.data_dir) == before
    assert s3_client(moto_url).list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_week_option_refuses_the_current_and_attached_weeks(tmp_path):
    s = settings_for(tmp_path)
    standard_weeks(s.db_dir)
    with pytest.raises(ArchiveError, match="CURRENT"):
        Archiver(s).run(Week.parse("2026_47"))
    with pytest.raises(ArchiveError, match=r"4 newest closed weeks \(attached"):
        Archiver(s).run(Week.parse("2026_43"))
    with pytest.raises(ArchiveError, match=r"no week file bets_2026_30\.db"):
        Archiver(s).run(Week.parse("2026_30"))
    assert not s.archive_path.exists() or not list(s.archive_path.iterdir())


def test_two_runs_never_overlap(tmp_path):
    import fcntl

    s = settings_for(tmp_path)
    standard_weeks(s.db_dir)
    with open(s.db_dir / ".archive-run.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        with pytest.raises(ArchiveError, match="already running"):
            Archiver(s).run()
    assert (s.db_dir / "bets_2026_38.db").exists()


# ---- the CLI ------------------------------------------------------------------------------------


def cli(settings: Settings, *args: str):
    app = create_app(settings)
    try:
        return app.test_cli_runner().invoke(args=["archive", *args])
    finally:
        app.extensions["tap"].reads.close()


def test_cli_run_list_restore(tmp_path, moto_url, bucket):
    s = settings_for(tmp_path, s3_bucket=bucket, s3_endpoint_url=moto_url)
    standard_weeks(s.db_dir)
    r = cli(s, "list")
    assert r.exit_code == 0, r.output
    assert "bets_2026_47.db    current" in r.output and "bets_2026_43.db    attached" in r.output
    assert "bets_2026_42.db    eligible" in r.output
    r = cli(s, "run", "--dry-run")
    assert r.exit_code == 0 and r.output.count("would archive") == 5
    r = cli(s, "run", "--quiet")
    assert r.exit_code == 0 and r.output == ""
    r = cli(s, "list", "--json")
    listing = json.loads(r.output)
    assert [a["week"] for a in listing["archived"]] == ["2026_38", "2026_39", "2026_40", "2026_41", "2026_42"]
    assert {lw["state"] for lw in listing["local"]} == {"current", "attached"}
    r = cli(s, "restore", "2026_40", "--quiet")
    assert r.exit_code == 0 and r.stdout.strip().endswith("restored/bets_2026_40.db")


@pytest.mark.parametrize(
    ("args", "kw", "message"),
    [
        (["run"], {"s3_bucket": "no-such-bucket"}, "Error: S3 bucket 'no-such-bucket' does not exist"),
        (["restore", "2026_30"], {}, "Error: week 2026_30 is not archived"),
        (["restore", "2026_99"], {}, "Error: '2026_99': ISO year 2026 has no week 99"),
        (["run", "--week", "2026_45"], {}, "Error: week 2026_45 may not be archived"),
    ],
)
def test_cli_errors_are_one_line_and_non_zero(tmp_path, moto_url, args, kw, message):
    if kw:
        kw["s3_endpoint_url"] = moto_url
    s = settings_for(tmp_path, **kw)
    standard_weeks(s.db_dir)
    r = cli(s, *args)
    assert r.exit_code == 1
    assert r.stderr.startswith(message) and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.output


def test_flask_cli_process_hash_mismatch_is_one_line(tmp_path, moto_url, bucket):
    """The real `flask --app wsgi` in a subprocess, configured only by TAP_* variables."""
    data = tmp_path / "data"
    standard_weeks(data / "db")
    env = {
        **os.environ,
        **FAKE_AWS,
        "TAP_DATA_DIR": str(data),
        "TAP_S3_BUCKET": bucket,
        "TAP_S3_ENDPOINT_URL": moto_url,
    }
    flask = [str(VENV_BIN / "flask"), "--app", "wsgi", "archive"]
    r = subprocess.run(
        [*flask, "run", "--week", "2026_38"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert "archived bets_2026_38.db" in r.stdout and "upload bets_2026_38.db.zst" in r.stderr
    c = s3_client(moto_url)
    key = "weeks/bets_2026_38.db.zst"
    meta = c.head_object(Bucket=bucket, Key=key)["Metadata"]
    data_bytes = bytearray(c.get_object(Bucket=bucket, Key=key)["Body"].read())
    data_bytes[100] ^= 1
    c.put_object(Bucket=bucket, Key=key, Body=bytes(data_bytes), Metadata=meta)
    r = subprocess.run(
        [*flask, "restore", "2026_38", "-q"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert r.returncode == 1
    assert r.stderr.startswith("Error: sha256 mismatch for s3://") and r.stderr.count("\n") == 1, r.stderr
    assert r.stdout == ""


# ---- the wrapper --------------------------------------------------------------------------------


def test_wrapper_script_locks_logs_and_exits_with_status(tmp_path):
    import fcntl

    data = tmp_path / "data"
    standard_weeks(data / "db")
    env = {**os.environ, "TAP_DATA_DIR": str(data), "TAP_FLASK": str(VENV_BIN / "flask"), "ARCHIVE_NICE": "0"}
    script = str(ROOT / "scripts" / "archive.sh")
    r = subprocess.run([script], env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and r.stderr == ""  # silent on success (cron mails nothing)
    log = (data / "logs" / "archive.log").read_text()
    assert "start:" in log and "end: exit 0" in log and "2026_42: archived bets_2026_42.db" in log
    assert not (data / "db" / "bets_2026_42.db").exists()

    with open(data / "archive.lock", "w") as fh:  # a run in progress
        fcntl.flock(fh, fcntl.LOCK_EX)
        r = subprocess.run([script], env=env, capture_output=True, text=True)
    assert r.returncode == 75 and "another archive run holds" in r.stderr

    r = subprocess.run([script, "--week", "2026_44"], env=env, capture_output=True, text=True)
    assert r.returncode == 1
    assert "Error: week 2026_44 may not be archived" in r.stderr  # the log's tail, for MAILTO


@pytest.mark.skipif(sys.platform != "linux", reason="systemd unit files")
def test_deploy_files_point_at_the_wrapper():
    service = (ROOT / "deploy" / "tap-archive.service").read_text()
    timer = (ROOT / "deploy" / "tap-archive.timer").read_text()
    cron = (ROOT / "deploy" / "tap-archive.cron").read_text()
    assert "ExecStart=/opt/tap-trading/scripts/archive.sh" in service and "Type=oneshot" in service
    assert "OnCalendar=Mon *-*-* 03:30:00 UTC" in timer and "Persistent=true" in timer
    assert "scripts/archive.sh" in cron and cron.count("\n30 3 * * 1 ") == 1
