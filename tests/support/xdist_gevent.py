"""pytest-xdist workers and gevent's monkey patching, made to agree.

An xdist worker talks to the controller through execnet: a real OS thread reads the controller's
commands ("run tests 3..7") and hands them to the main thread through a queue guarded by a lock and an
event that execnet's execution model creates *after* conftest.py has run `monkey.patch_all()`, i.e.
gevent's. A gevent event set from that foreign thread never wakes the main thread's hub, which then
stops with `LoopExit: This operation would block forever` before the first test.

`use_real_thread_primitives()`, called before the patching and only inside an xdist worker, makes that
execution model hand out real (OS-thread) locks and events. Only xdist's own hand-over between its two
threads uses them; the tests and the app run on gevent as in a serial run.
"""

from __future__ import annotations

import _thread
import os

# Bound at import, before conftest.py patches: gevent later swaps `_thread`'s functions for its own.
_allocate_lock = _thread.allocate_lock
_RLock = _thread.RLock


class _ThreadEvent:
    """A minimal `threading.Event` (set, clear, is_set, wait) built only on `_thread` locks, so that it
    stays an OS-level primitive whatever gevent later patches in the `threading` module."""

    def __init__(self) -> None:
        self._mutex = _allocate_lock()
        self._gate = _allocate_lock()  # held while the event is clear
        self._gate.acquire()
        self._flag = False

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        with self._mutex:
            if not self._flag:
                self._flag = True
                self._gate.release()

    def clear(self) -> None:
        with self._mutex:
            if self._flag:
                self._flag = False
                self._gate.acquire()

    def wait(self, timeout: float | None = None) -> bool:
        if self._gate.acquire(True, -1 if timeout is None else timeout):
            self._gate.release()
        return self._flag


def use_real_thread_primitives() -> None:
    """In an xdist worker (PYTEST_XDIST_WORKER is set), before `monkey.patch_all()`."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    from execnet import gateway_base

    model = gateway_base.MainThreadOnlyExecModel
    model.Lock = lambda self: _RLock()  # type: ignore[method-assign]
    model.RLock = lambda self: _RLock()  # type: ignore[method-assign]
    model.Event = lambda self: _ThreadEvent()  # type: ignore[method-assign]
