"""Per-app auth state: the clock (injectable for tests), the limits and the session-lookup script."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask, current_app

from app.auth.ratelimit import Limits, SessionLookup

EXT_KEY = "tap.auth"


@dataclass
class AuthState:
    clock: Callable[[], float]  # wall-clock seconds (timestamps leave the process: wall time, not monotonic)
    limits: Limits
    lookup: SessionLookup

    def now_ms(self) -> int:
        return int(self.clock() * 1000)


def auth_state(app: Flask | None = None) -> AuthState:
    return (app or current_app).extensions[EXT_KEY]


def set_clock(app: Flask, clock: Callable[[], float] = time.time) -> None:
    """Replace the wall clock the auth checks use (tests: a fixed or shifted time)."""
    auth_state(app).clock = clock
