"""Operator commands on the `flask` CLI (``flask --app wsgi <command>``)."""

from __future__ import annotations

import time

import click
from flask import Flask

from app.db import current_week_file, list_week_files, prepare_database
from app.integrity import check_file
from app.services import services


def register_cli(app: Flask) -> None:
    @app.cli.command("init-db")
    def init_db() -> None:
        """Create the current week file if needed and apply every migration."""
        settings = services(app).settings
        path = prepare_database(settings.db_dir, time.time(), settings.sqlite_synchronous)
        click.echo(f"current week file: {path}")

    @app.cli.command("integrity-check")
    @click.option("--all-weeks", is_flag=True, help="Check every local week file, not only the current one.")
    def integrity_check(all_weeks: bool) -> None:
        """Prove the ledger of the current week file (SPEC §10); exit 1 naming every bad row."""
        settings = services(app).settings
        current = current_week_file(settings.db_dir)
        files = list_week_files(settings.db_dir) if all_weeks else ([current] if current else [])
        if not files:
            raise click.ClickException(f"no week files in {settings.db_dir}")
        bad = 0
        for path in files:
            violations = check_file(path)
            bad += len(violations)
            for v in violations:
                click.echo(str(v), err=True)
            click.echo(f"{path.name}: {'OK' if not violations else f'{len(violations)} violation(s)'}")
        if bad:
            raise SystemExit(1)
