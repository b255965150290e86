"""The API describes itself: schemathesis generates requests from the served /api/openapi.json and
checks every answer against it — no server error, no undocumented status, no schema violation.

The app runs in-process with its workers (writer, simulated feed), and the generated requests carry a
real trader's bearer token, so the authenticated operations are exercised past the session check.
Examples per operation are bounded to keep the suite quick; the seed is fixed, so a failure repeats.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app import create_app
from app.config import Settings
from app.services import services
from app.storage.db import prepare_database
from tests.support.servers import wait_until
from tests.support.traders import Trader
from workers import runtime

# Not HTTP APIs: the websocket upgrade and the Prometheus text exposition.
EXCLUDED = ("/ws", "/metrics", "/api/openapi.json")
# What "describes itself" means here: no 5xx, every status documented, bodies and headers as documented,
# invalid input refused. Not "every schema-valid request accepted": a SIWE message or a signature is a
# string to the schema, and only the server can tell a good one.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
]
MAX_EXAMPLES = 15  # per operation and mode: enough to reach every documented branch, cheap


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory, module_redis_url) -> Iterator[tuple[object, dict[str, str]]]:
    s = Settings.from_env(
        {},
        data_dir=tmp_path_factory.mktemp("fuzz") / "data",
        redis_url=module_redis_url,
        dev_mode=True,
        rate_per_address=0,
        rate_per_ip=0,
        rate_auth_per_ip=0,
    )
    prepare_database(s.db_dir, time.time(), s.sqlite_synchronous)
    app = create_app(s)
    runtime.start(app)
    try:
        wait_until(lambda: services(app).quotes.book is not None, timeout=15, what="a quote book")
        trader = Trader(app.test_client(), s).login()
        trader.deposit("1000")
        schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
        yield schema, {"Authorization": f"Bearer {trader.token}"}
    finally:
        runtime.stop(app)
        services(app).reads.close()


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_every_operation_answers_as_documented(fuzzed, mode):
    """Valid requests (positive) and invalid ones (negative): every answer is documented and valid."""
    schema, headers = fuzzed
    generation = GenerationMode.POSITIVE if mode == "positive" else GenerationMode.NEGATIVE
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        op = result.ok()
        if op.path in EXCLUDED:
            continue
        operations += 1

        @given(case=op.as_strategy(generation_mode=generation))
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS)

        try:
            check()
        except Unsatisfiable:  # negative mode, an operation that takes no input: nothing to break
            assert mode == "negative", op.path
        except Exception as exc:  # collect every operation's failure, then report
            failures.append(f"{op.method.upper()} {op.path}: {exc}")
    assert operations >= 12, "the document lists fewer operations than the app serves"
    assert not failures, "\n\n".join(failures)
