"""Operator commands on the `flask` CLI (``flask --app wsgi <command>``)."""

from __future__ import annotations

import sys
import time

import click
from flask import Flask

from app.ledger.integrity import check_file, check_link, previous_week_file
from app.services import services
from app.storage.db import current_week_file, list_week_files, parse_week_filename, prepare_database


def register_cli(app: Flask) -> None:
    @app.cli.command("init-db")
    def init_db() -> None:
        """Create the current week file if needed and apply every migration. Refuses an empty data
        directory while the replica holds week files (restore first)."""
        from app.storage.replication import ReplicationError, check_first_start

        settings = services(app).settings
        try:
            check_first_start(settings)
        except ReplicationError as exc:
            raise click.ClickException(str(exc)) from None
        path = prepare_database(
            settings.db_dir, time.time(), settings.sqlite_synchronous, autocheckpoint=not settings.replicating
        )
        click.echo(f"current week file: {path}")

    @app.cli.command("integrity-check")
    @click.option("--all-weeks", is_flag=True, help="Check every local week file, not only the current one.")
    def integrity_check(all_weeks: bool) -> None:
        """Prove the ledger of the current week file (SPEC §10) and its carry from the previous week;
        exit 1 naming every bad row."""
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
            # and the carry from the week before, if that file is still local (issue 10 item 8)
            prev = previous_week_file(path)
            if prev is not None:
                violations = check_link(prev, path)
                bad += len(violations)
                for v in violations:
                    click.echo(str(v), err=True)
                status = "OK" if not violations else f"{len(violations)} violation(s)"
                click.echo(f"{prev.name} -> {path.name}: {status}")
        if bad:
            raise SystemExit(1)

    @app.cli.command("rollover")
    @click.option("--to", "to_week", metavar="YYYY_WW", help="Week to roll over to (default: the next one).")
    def rollover(to_week: str | None) -> None:
        """Roll the current week file over now, while the server runs (tests, drills, a stuck Monday)."""
        from app.storage.rollover import force_rollover

        settings = services(app).settings
        target = settings.db_dir / f"bets_{to_week}.db" if to_week else None
        if target is not None and parse_week_filename(target.name) is None:
            raise click.BadParameter("expected YYYY_WW, e.g. 2026_49", param_hint="--to")
        try:
            result = force_rollover(
                settings.db_dir, target, settings.sqlite_synchronous, autocheckpoint=not settings.replicating
            )
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        if result.already_done:
            click.echo(f"already on {result.new}")
        else:
            click.echo(
                f"rolled over {result.old} -> {result.new}: {result.users} users,"
                f" {result.carried_bets} open bets carried, {result.seconds:.2f}s"
            )

    register_archive_cli(app)
    register_replication_cli(app)


# ---- archive (ADR-006; app/storage/archive/, runbook in docs/OPERATIONS.md) ---------------------------


def register_archive_cli(app: Flask) -> None:
    @app.cli.group("archive")
    def archive() -> None:
        """Weekly archival of closed week files to S3 (or TAP_ARCHIVE_DIR without a bucket)."""

    def _archiver(quiet: bool, **kwargs):
        from app.storage.archive import Archiver

        return Archiver(
            services(app).settings,
            say=(lambda _m: None) if quiet else click.echo,
            progress=None if quiet else sys.stderr,
            **kwargs,
        )

    def _week(value: str | None):
        from app.storage.archive import Week

        return Week.parse(value) if value else None

    @archive.command("run")
    @click.option("--week", "week", metavar="YYYY_WW", help="Archive this eligible week only.")
    @click.option("--dry-run", is_flag=True, help="Print what would be archived; change nothing.")
    @click.option("--verify-download", is_flag=True, help="Re-download and hash every object after upload.")
    @click.option("--no-ledger-check", is_flag=True, help="Skip the ledger checks on the snapshot.")
    @click.option("-q", "--quiet", is_flag=True, help="No progress or status lines (cron); errors only.")
    def archive_run(
        week: str | None, dry_run: bool, verify_download: bool, no_ledger_check: bool, quiet: bool
    ):
        """Archive every closed week older than four weeks (oldest first), then remove it locally."""
        from app.storage.archive import ArchiveError

        try:
            _archiver(quiet, verify_download=verify_download, ledger_check=not no_ledger_check).run(
                _week(week), dry_run=dry_run
            )
        except ArchiveError as exc:
            raise click.ClickException(str(exc)) from None

    @archive.command("list")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    def archive_list(as_json: bool) -> None:
        """Local week files (current / attached / eligible) and archived weeks, with sizes."""
        import json

        from app.storage.archive import ArchiveError, fmt_bytes

        try:
            listing = _archiver(True).listing()
        except ArchiveError as exc:
            raise click.ClickException(str(exc)) from None
        if as_json:
            click.echo(json.dumps(listing, indent=2))
            return
        click.echo(f"local week files ({listing['db_dir']}):")
        for lw in reversed(listing["local"]):
            click.echo(f"  {lw['file']:<18} {lw['state']:<9} {fmt_bytes(lw['size']):>10}")
        if not listing["local"]:
            click.echo("  (none)")
        click.echo(f"archived ({listing['target']}):")
        for a in reversed(listing["archived"]):
            raw = f" (raw {fmt_bytes(a['raw_size'])})" if a["raw_size"] else ""
            extra = f" {a['storage_class']}" if a["storage_class"] else ""
            restored = "  [restored]" if a["restored"] else ""
            click.echo(
                f"  {a['week']:<8} {fmt_bytes(a['compressed_size']):>10}{raw}{extra}"
                f"  sha256 {(a['sha256'] or '?')[:16]}…{restored}"
            )
        if not listing["archived"]:
            click.echo("  (none)")

    @archive.command("restore")
    @click.argument("week", metavar="YYYY_WW")
    @click.option("--force", is_flag=True, help="Replace a restored copy that differs from the archive.")
    @click.option("-q", "--quiet", is_flag=True, help="No progress lines.")
    def archive_restore(week: str, force: bool, quiet: bool) -> None:
        """Fetch, verify and decompress an archived week to <data dir>/db/restored/ (read-only)."""
        from app.storage.archive import ArchiveError

        try:
            path = _archiver(quiet).restore(_week(week), force=force)
        except ArchiveError as exc:
            raise click.ClickException(str(exc)) from None
        if quiet:
            click.echo(str(path))


# ---- replication and restore (issue 15; app/storage/replication.py, runbook in docs/OPERATIONS.md) -------


def register_replication_cli(app: Flask) -> None:
    @app.cli.command("restore")
    @click.option("--force", is_flag=True, help="Move a non-empty <data dir>/db aside instead of refusing.")
    @click.option(
        "--include-archived", is_flag=True, help="Also restore old weeks the weekly archive already holds."
    )
    def restore_cmd(force: bool, include_archived: bool) -> None:
        """Disaster recovery: bring <data dir>/db back from the Litestream replica in S3 (every replicated
        week file, CURRENT on the newest), then run integrity-check --all-weeks on it. Exit 1 on any
        violation. Run it with the server stopped, on the machine that replaces the lost one."""
        from app.storage.replication import ReplicationError, restore

        settings = services(app).settings
        try:
            result = restore(settings, force=force, include_archived=include_archived, say=click.echo)
        except ReplicationError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(
            f"restored {len(result.files)} week file(s) into {result.db_dir} in {result.seconds:.1f}s;"
            f" checking them (integrity-check --all-weeks)"
        )
        ctx = click.get_current_context()
        check = app.cli.get_command(ctx, "integrity-check")
        assert check is not None
        ctx.invoke(check, all_weeks=True)

    @app.cli.group("replication")
    def replication() -> None:
        """Litestream replication of the week files (on when TAP_S3_BUCKET is set)."""

    @replication.command("config")
    @click.option(
        "--write", "write", is_flag=True, help="Write <data dir>/litestream.yml and print its path."
    )
    def replication_config(write: bool) -> None:
        """Print (or write) the `litestream replicate` configuration for these TAP_* settings."""
        import yaml

        from app.storage.replication import ReplicationError, replicate_config, write_config

        settings = services(app).settings
        try:
            if write:
                click.echo(str(write_config(settings)))
            else:
                click.echo(yaml.safe_dump(replicate_config(settings), sort_keys=False), nl=False)
        except ReplicationError as exc:
            raise click.ClickException(str(exc)) from None

    @replication.command("status")
    def replication_status() -> None:
        """Replication lag of the current week file, as /readyz reports it; exit 1 if not replicating."""
        from app.storage.replication import lag

        settings = services(app).settings
        current = current_week_file(settings.db_dir)
        if current is None:
            raise click.ClickException(f"no current week file in {settings.db_dir}")
        info = lag(settings, current)
        click.echo(" ".join(f"{k}={v}" for k, v in info.items()))
        if not info.get("running") or info.get("lag_s", 0) > settings.replica_lag_max_s:
            raise SystemExit(1)
