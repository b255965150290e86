"""Operator commands on the `flask` CLI (``flask --app wsgi <command>``)."""

from __future__ import annotations

import time

import click
from flask import Flask

from app.db import prepare_database
from app.services import services


def register_cli(app: Flask) -> None:
    @app.cli.command("init-db")
    def init_db() -> None:
        """Create the current week file if needed and apply every migration."""
        settings = services(app).settings
        path = prepare_database(settings.db_dir, time.time(), settings.sqlite_synchronous)
        click.echo(f"current week file: {path}")
