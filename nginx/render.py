"""Render nginx/nginx.conf.template for this machine and make a local TLS certificate if missing.

    python nginx/render.py                       # uses TAP_* settings; prints the rendered config's path
    python nginx/render.py --prefix DIR --exec   # render into DIR, then become nginx (make run)

nginx uses only its *runtime prefix*: config, pid, access log, temp dirs, a copy of the TLS certificate
and a copy of the built web app (web/dist). By default that is ``<data dir>/nginx``. Started as root,
nginx drops to `nobody`, who may not be able to enter the checkout or the data directory (a clone under
/root, mode 700; a `mktemp -d` data dir), so `make run` then passes a private runtime dir of its own
(under /run, removed at exit). The certificate is made once, kept in ``<data dir>/nginx/tls`` and copied
in. The error log goes to nginx's stderr, which the caller sends where it likes (make run:
logs/nginx.log).
"""

from __future__ import annotations

import argparse
import json
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

# nginx's own refusals, answered in the API's JSON error shape (SPEC §6) instead of nginx's HTML pages:
# nginx status -> (status sent, code, message, Retry-After seconds). Codes match the app's own
# (app/errors.py) where the app has one, so a client handles a refusal the same whoever made it.
# Answers the app itself sends pass through untouched (proxy_intercept_errors is off).
NGINX_ERRORS: dict[int, tuple[int, str, str, int | None]] = {
    400: (400, "bad_request", "The request could not be read.", None),
    403: (403, "forbidden", "This address may not use that resource.", None),
    404: (404, "not_found", "There is nothing here.", None),
    405: (405, "method_not_allowed", "That method is not allowed here.", None),
    408: (408, "request_timeout", "The request took too long to arrive.", None),
    413: (413, "payload_too_large", "The request body is larger than 64 KiB.", None),
    414: (414, "uri_too_long", "The request URI is too long.", None),
    429: (429, "rate_limited", "Too many requests or connections from this address; slow down.", 1),
    494: (431, "headers_too_large", "The request headers are too large.", None),
    500: (500, "internal_error", "Something went wrong on our side.", None),
    502: (502, "app_unavailable", "The service is restarting; try again in a moment.", 1),
    503: (503, "app_unavailable", "The service is unavailable; try again in a moment.", 1),
    504: (504, "gateway_timeout", "The service did not answer in time.", None),
}


# Response headers (issue: none were sent). The web app places a bet on a single tap, with no
# confirmation, and keeps its session token and session-key private key in sessionStorage: a page that
# frames it could steer a trader's taps (or an operator's halt switch) by clickjacking, and any injected
# script could read both secrets. So: never framed, scripts and connections from this origin only (the
# app loads nothing from elsewhere; 'self' covers its same-origin wss:// socket), and no MIME sniffing.
# API answers (JSON) and nginx's own refusals get the strictest policy: they are never rendered.
# `always`: 4xx/5xx answers carry them too. A location with an add_header of its own inherits none of
# the server's, so each such location repeats them (the error pages, the app's `location /`).
APP_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
API_CSP = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"


def security_headers(csp: str, indent: int = 8) -> str:
    """``add_header`` lines for one location (or the server block) with this Content-Security-Policy,
    joined for a placeholder that sits `indent` spaces in."""
    headers = {
        "Content-Security-Policy": csp,
        "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    lines = []
    for name, value in headers.items():
        if '"' in value or "$" in value:
            raise ValueError(f'nginx header {name} may not contain " or $')
        lines.append(f'add_header {name} "{value}" always;')
    return ("\n" + " " * indent).join(lines)


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


def error_pages() -> str:
    """``error_page`` lines and one named location per entry of NGINX_ERRORS, for the server block."""
    lines = []
    for status, (sent, code, message, retry_after) in NGINX_ERRORS.items():
        body = json.dumps({"error": {"code": code, "message": message}}, separators=(",", ":"))
        if "'" in body or "$" in body:  # nginx would end the string or expand a variable
            raise ValueError(f"nginx error body for {status} may not contain ' or $")
        # An internal URI rather than a named location: nginx cannot redirect a request whose line it
        # could not parse (400, 414) to a named location, and answers those with its own 500 page.
        lines.append(f"error_page {status} /.tap-error/{status};")
        lines.append(f"location = /.tap-error/{status} {{")
        lines.append("    internal;")
        lines.append("    types { }")
        lines.append("    default_type application/json;")
        # This location's own add_header (Retry-After) would drop the server's headers: repeat them.
        lines += ["    " + line for line in security_headers(API_CSP, indent=0).split("\n")]
        if retry_after is not None:
            lines.append(f"    add_header Retry-After {retry_after} always;")
        lines.append(f"    return {sent} '{body}';")
        lines.append("}")
    return "\n        ".join(lines)


def _path(p: Path) -> str:
    """A path for the config, which quotes every path (a clone under "my dir" has a space). nginx reads
    `$` in some of them as a variable and has no escape for it: such a path is refused, by name."""
    text = str(p)
    bad = sorted({c for c in text if c in '"\\$' or ord(c) < 32})
    if bad:
        raise SystemExit(
            f"nginx cannot be given the path {text!r}: it contains {' '.join(map(repr, bad))};"
            " move the checkout or set TAP_DATA_DIR to a path without them"
        )
    return text


def _fill(template: str, **values: object) -> str:
    """Replace ``{{name}}`` placeholders (nginx's own ``$vars`` stay); an unknown name is an error."""

    def sub(m: re.Match) -> str:
        if m.group(1) not in values:
            raise KeyError(f"nginx template has no value for {m.group(1)!r}")
        return str(values[m.group(1)])

    return re.sub(r"\{\{([a-z_]+)\}\}", sub, template)


WEB_DIST = ROOT / "web" / "dist"
NOT_BUILT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Tap Trading</title></head>
<body><h1>Tap Trading</h1><p>The web app is not built yet: <code>make run</code> builds it
(<code>bash scripts/web.sh build</code> on its own).</p></body></html>
"""


def copy_app(static_root: Path) -> None:
    """The one thing nginx serves at `/`: the built web app (web/dist, made by scripts/web.sh).

    Before a build exists (a checkout where only the API is used), a one-page notice says how to build it.
    """
    if static_root.exists():
        shutil.rmtree(static_root)
    if (WEB_DIST / "index.html").exists():
        shutil.copytree(WEB_DIST, static_root)
    else:
        static_root.mkdir(parents=True)
        (static_root / "index.html").write_text(NOT_BUILT)


def render(
    settings: Settings,
    *,
    prefix: Path | None = None,
    api_rate: int = 5000,
    api_burst: int = 10000,
    conn_per_ip: int = 2000,
) -> Path:
    """Write the config, a copy of the certificate and of the web app (web/dist) under `prefix` (default
    ``<data dir>/nginx``); return the config path. As root, hand the prefix to `nobody` and check that
    nobody can reach it (SystemExit naming the directory that keeps it out, if not)."""
    home = settings.data_dir / "nginx"
    prefix = prefix or home
    for sub in ("logs", "tmp"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    mime = next((p for p in MIME_TYPES_CANDIDATES if Path(p).exists()), None)
    if mime is None:
        raise SystemExit("nginx mime.types not found: is nginx installed? (make run installs it)")
    cert, key = ensure_cert(home)  # kept in the data dir: one certificate across runs
    if prefix.resolve() != home.resolve():
        (prefix / "tls").mkdir(exist_ok=True)
        cert, key = Path(shutil.copy2(cert, prefix / "tls")), Path(shutil.copy2(key, prefix / "tls"))
    static_root = prefix / "html"
    copy_app(static_root)
    text = _fill(
        (ROOT / "nginx" / "nginx.conf.template").read_text(),
        prefix=_path(prefix),
        mime_types=_path(Path(mime)),
        upstream=settings.bind,  # host:port or unix:/path, both valid in an nginx upstream
        http_port=settings.http_port,
        https_port=settings.https_port,
        cert=_path(cert),
        key=_path(key),
        static_root=_path(static_root),
        api_rate=api_rate,
        api_burst=api_burst,
        conn_per_ip=conn_per_ip,
        error_pages=error_pages(),
        api_headers=security_headers(API_CSP),
        app_headers=security_headers(APP_CSP, indent=12),
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
                f'give it a runtime prefix it can reach: --prefix "$(mktemp -d -p /run)" '
                f"(make run does this by itself)"
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
        "stderr",  # as the config's error_log: before the config is read too
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
    parser.add_argument("--prefix", type=Path, help="runtime directory (default: <data dir>/nginx)")
    args = parser.parse_args()
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise SystemExit(f"tap-trading: configuration error: {exc}") from None
    conf = render(settings, prefix=args.prefix, api_rate=args.api_rate)
    if args.exec:
        cmd = command(conf)
        os.execvp(cmd[0], cmd)  # noqa: S606
    print(conf)


if __name__ == "__main__":
    main()
