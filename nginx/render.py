"""Render nginx/nginx.conf.template for this machine and make a local TLS certificate if missing.

    python nginx/render.py            # uses TAP_* settings; prints the path of the rendered config

Everything lands under ``<data dir>/nginx`` (config, pid, logs, temp dirs, cert), so nginx runs
without root and touches nothing outside the data directory.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.config import ConfigError, Settings  # noqa: E402

UNPRIVILEGED_UID = UNPRIVILEGED_GID = 65534  # nobody / nogroup on Debian
MIME_TYPES_CANDIDATES = ("/etc/nginx/mime.types", "/usr/local/nginx/conf/mime.types")


def ensure_cert(prefix: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost, made once with openssl (local use only)."""
    cert, key = prefix / "tls" / "localhost.crt", prefix / "tls" / "localhost.key"
    if not (cert.exists() and key.exists()):
        cert.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(  # noqa: S603
            [
                shutil.which("openssl") or "/usr/bin/openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "825",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
                "-keyout",
                str(key),
                "-out",
                str(cert),
            ],
            check=True,
            capture_output=True,
        )
        key.chmod(0o600)
    return cert, key


def _fill(template: str, **values: object) -> str:
    """Replace ``{{name}}`` placeholders (nginx's own ``$vars`` stay); an unknown name is an error."""

    def sub(m: re.Match) -> str:
        if m.group(1) not in values:
            raise KeyError(f"nginx template has no value for {m.group(1)!r}")
        return str(values[m.group(1)])

    return re.sub(r"\{\{([a-z_]+)\}\}", sub, template)


def render(
    settings: Settings,
    *,
    prefix: Path | None = None,
    api_rate: int = 5000,
    api_burst: int = 10000,
    conn_per_ip: int = 2000,
) -> Path:
    """Write the config (and cert) under `prefix` (default ``<data dir>/nginx``); return the config path."""
    prefix = prefix or settings.data_dir / "nginx"
    for sub in ("logs", "tmp"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    mime = next((p for p in MIME_TYPES_CANDIDATES if Path(p).exists()), None)
    if mime is None:
        raise SystemExit("nginx mime.types not found: is nginx installed? (make run installs it)")
    cert, key = ensure_cert(prefix)
    # Static files are copied under the prefix, so nginx needs to reach nothing outside it.
    static_root = prefix / "html"
    shutil.copytree(ROOT / "static", static_root, dirs_exist_ok=True)
    text = _fill(
        (ROOT / "nginx" / "nginx.conf.template").read_text(),
        prefix=prefix,
        mime_types=mime,
        upstream=settings.bind,  # host:port or unix:/path, both valid in an nginx upstream
        http_port=settings.http_port,
        https_port=settings.https_port,
        cert=cert,
        key=key,
        static_root=static_root,
        api_rate=api_rate,
        api_burst=api_burst,
        conn_per_ip=conn_per_ip,
    )
    out = prefix / "nginx.conf"
    out.write_text(text)
    if os.geteuid() == 0:
        # Started by root (a fresh VM, CI): nginx runs as nobody, so nobody owns its own files.
        for path in [prefix, *prefix.rglob("*")]:
            os.chown(path, UNPRIVILEGED_UID, UNPRIVILEGED_GID)
        _check_reachable_by_nobody(prefix)
    return out


def _check_reachable_by_nobody(prefix: Path) -> None:
    """Fail with a clear message if an ancestor directory keeps `nobody` out (e.g. under /root)."""
    for parent in prefix.resolve().parents:
        st = parent.stat()
        if st.st_uid != UNPRIVILEGED_UID and not st.st_mode & 0o001:
            raise SystemExit(
                f"nginx runs as 'nobody' but cannot enter {parent} (mode {st.st_mode & 0o777:o}); "
                f"set TAP_DATA_DIR to a directory outside it (e.g. /var/lib/tap-trading) "
                f"or chmod o+x {parent}"
            )


def command(conf: Path) -> list[str]:
    """The foreground nginx command for `conf`, dropped to nobody when we are root."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    prefix = conf.parent
    cmd = [
        nginx,
        "-p",
        str(prefix),
        "-c",
        str(conf),
        "-e",
        str(prefix / "logs" / "error.log"),
        "-g",
        "daemon off;",
    ]
    if os.geteuid() == 0:
        cmd = [
            "setpriv",
            f"--reuid={UNPRIVILEGED_UID}",
            f"--regid={UNPRIVILEGED_GID}",
            "--clear-groups",
            *cmd,
        ]
    return cmd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--api-rate", type=int, default=5000, help="requests/s per IP on /api (limit_req)")
    parser.add_argument("--exec", action="store_true", help="render, then replace this process with nginx")
    args = parser.parse_args()
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise SystemExit(f"tap-trading: configuration error: {exc}") from None
    conf = render(settings, api_rate=args.api_rate)
    if args.exec:
        cmd = command(conf)
        os.execvp(cmd[0], cmd)  # noqa: S606
    print(conf)


if __name__ == "__main__":
    main()
