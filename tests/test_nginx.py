"""nginx with the project's config, in front of a real gunicorn: where its files live, and its own
refusals (not the app's) in the API's JSON error shape (SPEC §6) instead of nginx's HTML pages."""

import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import urllib.request
from pathlib import Path

import pytest
import websocket

from app.config import Settings
from tests.support.servers import Gunicorn, Nginx, free_port, http_get, wait_until

pytestmark = pytest.mark.e2e

_INSECURE = ssl.create_default_context()
_INSECURE.check_hostname = False
_INSECURE.verify_mode = ssl.CERT_NONE


def _request(url: str, method: str = "GET", data: bytes | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5, context=_INSECURE) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _raw(port: int, request: bytes) -> tuple[int, dict, bytes]:
    """One hand-written HTTP/1.1 request (for what urllib refuses to send); reads until close."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return int(status_line.split()[1]), headers, body


def _assert_json_error(answer: tuple[int, dict, bytes], status: int, code: str, retry_after: bool) -> None:
    got, headers, body = answer
    assert got == status, (got, body[:200])
    assert headers["Content-Type"] == "application/json", headers
    error = json.loads(body)["error"]
    assert error["code"] == code and error["message"].endswith("."), error
    assert ("Retry-After" in headers) == retry_after, headers
    if retry_after:
        assert int(headers["Retry-After"]) >= 1


@pytest.fixture
def private_env(tmp_path, redis_url):
    """A data directory under a parent that only root may enter (a clone under /root, mktemp -d)."""
    parent = tmp_path / "private"
    parent.mkdir(mode=0o700)
    parent.chmod(0o700)
    return {"TAP_DATA_DIR": str(parent / "data"), "TAP_REDIS_URL": redis_url}


def _nginx_settings(env: dict, gunicorn: Gunicorn) -> Settings:
    return Settings.from_env(
        {
            **env,
            "TAP_BIND": f"127.0.0.1:{gunicorn.port}",
            "TAP_HTTP_PORT": str(free_port()),
            "TAP_HTTPS_PORT": str(free_port()),
        }
    )


def test_nginx_serves_with_the_data_dir_under_a_0700_parent(private_env, tmp_path):
    server = Gunicorn(private_env, tmp_path / "gunicorn.log")
    server.start()
    settings = _nginx_settings(private_env, server)
    nginx = Nginx(settings)
    try:
        nginx.start()
        for base in (f"http://127.0.0.1:{settings.http_port}", f"https://127.0.0.1:{settings.https_port}"):
            status, body = http_get(base + "/")
            assert status == 200 and b"Tap Trading" in body
            status, body = http_get(base + "/healthz")
            assert status == 200 and json.loads(body)["status"] == "ok", body
        if os.geteuid() == 0:
            # Unprivileged: nginx's processes run as nobody, who cannot enter the data directory.
            users = subprocess.run(
                ["ps", "-o", "user=", "--pid", str(nginx.proc.pid), "--ppid", str(nginx.proc.pid)],
                capture_output=True,
                text=True,
            ).stdout.split()
            assert users and set(users) == {"nobody"}, users
            probe = subprocess.run(
                [
                    "setpriv",
                    "--reuid=65534",
                    "--regid=65534",
                    "--clear-groups",
                    "ls",
                    private_env["TAP_DATA_DIR"],
                ],
                capture_output=True,
            )
            assert probe.returncode != 0
        assert "[emerg]" not in nginx.error_log() and "[crit]" not in nginx.error_log(), nginx.error_log()
    finally:
        nginx.stop()
        server.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root makes nginx drop to nobody")
def test_render_into_the_unreachable_data_dir_says_what_to_do(private_env):
    from nginx.render import render

    with pytest.raises(SystemExit, match=r"cannot enter .*private \(mode 700\).*--prefix"):
        render(Settings.from_env(private_env))


def test_paths_with_a_space_are_quoted_in_the_config(redis_url):
    """A clone (so a data directory) under "my dir": nginx read `pid /…/my dir/…;` as two arguments and
    refused to start (a user without root; as root its files live under /run)."""
    from nginx.render import command, render

    spaced = Path(tempfile.mkdtemp(prefix="tap nginx "))
    try:
        spaced.chmod(0o755)  # as root, nginx's workers run as nobody, who must reach it
        conf = render(
            Settings.from_env({"TAP_DATA_DIR": str(spaced / "data dir"), "TAP_REDIS_URL": redis_url})
        )
        assert " " in str(conf)
        checked = subprocess.run([*command(conf), "-t", "-q"], capture_output=True, text=True, timeout=30)
        assert checked.returncode == 0, checked.stderr
    finally:
        shutil.rmtree(spaced)


def test_nginx_refusals_are_json_with_retry_after(private_env, tmp_path):
    server = Gunicorn(private_env, tmp_path / "gunicorn.log")
    server.start()
    settings = _nginx_settings(private_env, server)
    nginx = Nginx(settings)
    strict = Nginx(_nginx_settings(private_env, server), api_rate=1, api_burst=1)
    try:
        nginx.start()
        strict.start()
        http = f"http://127.0.0.1:{settings.http_port}"
        https = f"https://127.0.0.1:{settings.https_port}"
        # The app's own answers pass through untouched.
        _assert_json_error(_request(http + "/api/v1/nope"), 404, "not_found", retry_after=False)

        too_big = json.dumps({"pad": "x" * 70_000}).encode()
        for base in (http, https):
            _assert_json_error(
                _request(base + "/api/v1/bets", "POST", too_big), 413, "payload_too_large", retry_after=False
            )
        _assert_json_error(_request(http + "/api/v1/" + "a" * 10_000), 414, "uri_too_long", retry_after=False)
        _assert_json_error(
            _raw(settings.http_port, b"GET /api/v1/prices HTTP/1.1\r\n\r\n"),
            400,
            "bad_request",
            retry_after=False,
        )
        _assert_json_error(_request(http + "/index.html", "POST", b"{}"), 405, "method_not_allowed", False)

        strict_http = f"http://127.0.0.1:{strict.settings.http_port}/api/v1/prices"
        answers = [_request(strict_http) for _ in range(4)]  # 1 request/s, a burst of 1
        assert answers[0][0] == 200
        _assert_json_error(answers[-1], 429, "rate_limited", retry_after=True)

        server.stop()  # the app is down (or restarting): nginx answers for it
        for path in ("/api/v1/prices", "/healthz", "/readyz"):
            _assert_json_error(_request(http + path), 502, "app_unavailable", retry_after=True)
        status, _, body = _request(http + "/")
        assert status == 200 and b"Tap Trading" in body  # the static page does not need the app
        # A websocket with its token in the URL while the app is down: nginx refuses it and logs an
        # error, and neither of its logs holds the token (SPEC §8).
        secret = "S3cr3tT0ken" + "x" * 32
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(f"ws://127.0.0.1:{settings.http_port}/ws?token={secret}", timeout=5)
        assert refused.value.status_code == 502
        assert "connect() failed" in nginx.error_log()  # the /api refusals above were logged
        assert secret not in nginx.error_log()
        access = wait_until(  # the three refusals above, then the websocket's (under the error page's path)
            lambda: (
                (log := nginx.wait_for_access_log("/.tap-error/502 ")).count("/.tap-error/502 ") == 4 and log
            ),
            what="the websocket's 502 in the access log",
        )
        assert secret not in access, access
    finally:
        nginx.stop()
        strict.stop()
        server.stop()


def _csp(headers: dict) -> dict[str, str]:
    policy = headers.get("Content-Security-Policy", "")
    return {d.split(" ", 1)[0]: d.partition(" ")[2] for d in (p.strip() for p in policy.split(";")) if d}


def test_security_headers_on_the_app_the_api_and_nginx_refusals(private_env, tmp_path):
    """A tap is a bet with no confirmation, and the app keeps its token and session key in
    sessionStorage: the app must never be framed (clickjacking) and may run only its own scripts and
    talk only to its own origin (an injected script could read both); no answer may be MIME-sniffed.
    nginx's own refusals (413, 429, 502: locations with an add_header of their own) carry them too."""
    server = Gunicorn(private_env, tmp_path / "gunicorn.log")
    server.start()
    settings = _nginx_settings(private_env, server)
    nginx = Nginx(settings)
    try:
        nginx.start()
        for base in (f"http://127.0.0.1:{settings.http_port}", f"https://127.0.0.1:{settings.https_port}"):
            answers = {
                "app": _request(base + "/"),
                "console": _request(base + "/admin"),
                "api": _request(base + "/api/v1/grid"),
                "api 401": _request(base + "/api/v1/me"),
                "api 404": _request(base + "/api/v1/nope"),
                "nginx 413": _request(base + "/api/v1/bets", "POST", b"x" * 70_000),
                "health": _request(base + "/healthz"),
            }
            assert answers["api 401"][0] == 401 and answers["nginx 413"][0] == 413
            for what, (_, headers, _) in answers.items():
                assert headers.get("X-Content-Type-Options") == "nosniff", (what, headers)
                assert headers.get("X-Frame-Options") == "DENY", (what, headers)
                assert headers.get("Referrer-Policy") == "no-referrer", (what, headers)
                csp = _csp(headers)
                assert csp.get("frame-ancestors") == "'none'", (what, headers)
                assert csp.get("base-uri") == "'none'", (what, headers)
                if what in ("app", "console"):
                    assert csp["default-src"] == csp["script-src"] == csp["connect-src"] == "'self'", csp
                    assert "unsafe" not in headers["Content-Security-Policy"], csp
                    assert csp["object-src"] == "'none'", csp
                else:
                    assert csp.get("default-src") == "'none'", (what, csp)
        server.stop()  # nginx's 502 for the app: an error page with a Retry-After of its own
        status, headers, _ = _request(f"http://127.0.0.1:{settings.http_port}/api/v1/grid")
        assert status == 502 and headers.get("Retry-After") == "1", headers
        assert (
            headers.get("X-Content-Type-Options") == "nosniff"
            and _csp(headers)["frame-ancestors"] == "'none'"
        )
    finally:
        nginx.stop()
        server.stop()
