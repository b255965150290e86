"""Per-app auth state: the limits and the session-lookup script (the clock is `Services.clock`)."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app

from app.auth.ratelimit import Counter, Limits, SessionLookup

EXT_KEY = "tap.auth"


@dataclass
class AuthState:
    limits: Limits
    lookup: SessionLookup
    counter: Counter  # rate counters whose calls can share a round trip (taps)


def auth_state(app: Flask | None = None) -> AuthState:
    return (app or current_app).extensions[EXT_KEY]
