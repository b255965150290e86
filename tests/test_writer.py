"""The single SQLite writer: batching, isolation of failing jobs, back-pressure, flush on stop."""

import itertools
import time

import apsw
import gevent
import pytest
from gevent.monkey import get_original

from app import db
from app.errors import Overloaded, Unavailable
from app.metrics import Metrics
from app.writes import WriteQueue
from workers.sqlite_writer import SqliteWriter

blocking_sleep = get_original("time", "sleep")


@pytest.fixture
def db_dir(tmp_path):
    db.prepare_database(tmp_path, time.time())
    return tmp_path


def _start(queue, db_dir, batch_max=100):
    writer = SqliteWriter(queue, db_dir, synchronous="FULL", batch_max=batch_max, metrics=Metrics())
    return writer, gevent.spawn(writer.run)


def _put(key):
    def job(conn):
        conn.execute("INSERT INTO week_meta (key, value) VALUES (?, 'v')", (key,))
        return key

    return job


def _count(db_dir, prefix):
    with db.ReadPool(db_dir).connection() as c:
        return c.execute("SELECT count(*) FROM week_meta WHERE key LIKE ?", (prefix + "%",)).fetchone()[0]


def test_result_arrives_after_commit_and_is_visible_to_readers(db_dir):
    q = WriteQueue(100)
    writer, g = _start(q, db_dir)
    reads = db.ReadPool(db_dir)
    assert q.call(_put("k1")) == "k1"
    assert reads.run(lambda c: c.execute("SELECT value FROM week_meta WHERE key='k1'").fetchone()) == ("v",)
    writer.stop()
    g.join(5)
    assert g.successful()


def test_failing_job_is_rolled_back_alone(db_dir):
    q = WriteQueue(100)

    def boom(conn):
        conn.execute("INSERT INTO week_meta (key, value) VALUES ('half', 'written')")
        raise ValueError("business rule")

    results = [q.submit(_put("a1")), q.submit(boom), q.submit(_put("a2"))]
    writer, g = _start(q, db_dir)  # all three land in one batch
    assert results[0].get(5) == "a1"
    with pytest.raises(ValueError, match="business rule"):
        results[1].get(5)
    assert results[2].get(5) == "a2"
    assert _count(db_dir, "a") == 2
    assert _count(db_dir, "half") == 0
    writer.stop()
    g.join(5)


def test_constraint_violation_fails_only_that_job(db_dir):
    q = WriteQueue(100)
    first, dup = q.submit(_put("same")), q.submit(_put("same"))
    writer, g = _start(q, db_dir)
    assert first.get(5) == "same"
    with pytest.raises(apsw.ConstraintError):
        dup.get(5)
    writer.stop()
    g.join(5)


def test_jobs_are_grouped_into_batches(db_dir):
    q = WriteQueue(1000)
    results = [q.submit(_put(f"b{i}")) for i in range(250)]
    writer, g = _start(q, db_dir, batch_max=100)
    for r in results:
        r.get(5)
    sizes = writer.metrics.write_batch_size.collect()[0].samples
    count = next(s.value for s in sizes if s.name.endswith("_count"))
    total = next(s.value for s in sizes if s.name.endswith("_sum"))
    assert (count, total) == (3, 250)  # 100 + 100 + 50
    writer.stop()
    g.join(5)


def test_full_queue_refuses_with_overloaded(db_dir):
    q = WriteQueue(3)
    for i in range(3):
        q.submit(_put(f"f{i}"))
    with pytest.raises(Overloaded) as err:
        q.submit(_put("f3"))
    assert err.value.status == 503 and err.value.retry_after
    writer, g = _start(q, db_dir)
    writer.stop()
    g.join(5)
    assert _count(db_dir, "f") == 3  # the accepted ones were all committed, the refused one never


def test_stop_commits_everything_queued_then_refuses(db_dir):
    q = WriteQueue(1000)
    writer, g = _start(q, db_dir, batch_max=10)
    results = [q.submit(_put(f"s{i}")) for i in range(95)]
    writer.stop()
    with pytest.raises(Unavailable):
        q.submit(_put("late"))
    g.join(10)
    assert g.dead
    assert all(r.successful() for r in results)
    assert _count(db_dir, "s") == 95


def test_hub_keeps_running_during_a_slow_write(db_dir):
    """SQLite runs on the writer's native thread: other greenlets are not blocked meanwhile."""
    q = WriteQueue(10)
    writer, g = _start(q, db_dir)

    def slow(conn):
        blocking_sleep(0.4)  # a real blocking call, as a long SQLite statement would be
        conn.execute("INSERT INTO week_meta (key, value) VALUES ('slow', '1')")

    ticks = []

    def ticker():
        for _ in range(30):
            ticks.append(time.monotonic())
            gevent.sleep(0.01)

    t = gevent.spawn(ticker)
    result = q.submit(slow)
    result.get(5)
    t.join(5)
    assert len(ticks) == 30
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert max(gaps) < 0.2, f"hub was blocked for {max(gaps):.3f}s"
    writer.stop()
    g.join(5)


def test_commit_failure_reports_every_job_and_writer_recovers(db_dir):
    q = WriteQueue(10)
    _, g = _start(q, db_dir)

    def breaks_transaction(conn):
        conn.execute("COMMIT")  # ends the batch's transaction under the writer's feet

    r1 = q.submit(breaks_transaction)
    with pytest.raises(apsw.Error):
        r1.get(5)
    g.join(5)
    assert g.dead and not g.successful()  # crashed: the supervisor restarts it
    writer2, g2 = _start(q, db_dir)
    assert q.call(_put("after")) == "after"
    writer2.stop()
    g2.join(5)
