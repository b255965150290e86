"""SQLite virtual-machine steps a call makes: how much of a table a query walks, independent of the
machine's speed (tests/test_db.py asserts on it; loadtest/tap_micro.py prints it beside the CPU)."""

from __future__ import annotations

from collections.abc import Callable

import apsw


def vm_steps(conn: apsw.Connection, fn: Callable[[], object]) -> int:
    """The steps `fn()` makes on `conn` (a progress handler called at every step)."""
    steps = 0

    def count() -> bool:
        nonlocal steps
        steps += 1
        return False  # never interrupt

    conn.set_progress_handler(count, 1)
    try:
        fn()
    finally:
        conn.set_progress_handler(None)
    return steps
