"""Sign-In with Ethereum (EIP-4361): a strict parser and the server-side checks (SPEC §5).

`parse_message` accepts exactly the ABNF of EIP-4361, line by line, and nothing else: LF line ends
only, no trailing newline, fields in the EIP's order, ASCII only, every field length-limited. Its
only exception is `SiweError` (400 ``siwe_malformed`` or a more specific ``siwe_*`` code); a
property test feeds it arbitrary text to hold it to that.

`check_message` then compares every field with what this server expects and raises
`SiweCheckError` (401) with one code per check. The signature and the single-use nonce are checked
by the login route (`app.auth.routes`), in that order, after these.

Message layout (no statement: three LFs after the address; with one: blank, statement, blank)::

    [scheme://]<domain> wants you to sign in with your Ethereum account:
    <EIP-55 address>

    [<statement>
    ]
    URI: <uri>
    Version: 1
    Chain ID: <chain id>
    Nonce: <nonce>
    Issued At: <RFC 3339 date-time>
    [Expiration Time: <date-time>]
    [Not Before: <date-time>]
    [Request ID: <request id>]
    [Resources:
    - <uri>
    - urn:tap-trading:session-key:<0x address>]
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from app.auth.errors import SiweCheckError, SiweError
from app.auth.signatures import to_checksum_address

# ---- limits (also in docs/API.md) ---------------------------------------------------------------
MESSAGE_MAX = 4096
DOMAIN_MAX = 255
URI_MAX = 512
STATEMENT_MAX = 512
NONCE_MIN = 8
NONCE_MAX = 64
REQUEST_ID_MAX = 128
RESOURCES_MAX = 8
ISSUED_AT_WINDOW_MS = 5 * 60 * 1000
SESSION_KEY_URN = "urn:tap-trading:session-key:"

HEADER_SUFFIX = " wants you to sign in with your Ethereum account:"

_SCHEME = r"[A-Za-z][A-Za-z0-9+.\-]*"
# RFC 3986 authority characters (userinfo@host:port, IPv6 in brackets); compared to TAP_SIWE_DOMAIN.
_HEADER_RE = re.compile(rf"(?:({_SCHEME})://)?([A-Za-z0-9\-._~%!$&'()*+,;=:@\[\]]{{1,{DOMAIN_MAX}}})")
_ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")
# statement = *( reserved / unreserved / " " ): no LF, no '%', no '"', ASCII only.
_STATEMENT_RE = re.compile(rf"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;= ]{{1,{STATEMENT_MAX}}}")
# A URI: scheme ":" then reserved / unreserved / pct-encoded characters.
_URI_RE = re.compile(rf"{_SCHEME}:(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{{2}})*")
_VERSION_RE = re.compile(r"[0-9]{1,4}")
_CHAIN_ID_RE = re.compile(r"[1-9][0-9]{0,19}")
_NONCE_RE = re.compile(rf"[A-Za-z0-9]{{{NONCE_MIN},{NONCE_MAX}}}")
_REQUEST_ID_RE = re.compile(rf"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-Fa-f]{{2}}){{0,{REQUEST_ID_MAX}}}")
_DATETIME_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]{1,9})?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))"
)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MS = dt.timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class SiweMessage:
    """A parsed EIP-4361 message. Times are kept as sent (`*_raw`) and as Unix milliseconds."""

    domain: str
    address: str  # EIP-55 form, as in the message
    uri: str
    version: str
    chain_id: int
    nonce: str
    issued_at_raw: str
    issued_at_ms: int
    scheme: str | None = None
    statement: str | None = None
    expiration_time_raw: str | None = None
    expiration_time_ms: int | None = None
    not_before_raw: str | None = None
    not_before_ms: int | None = None
    request_id: str | None = None
    resources: tuple[str, ...] = field(default_factory=tuple)
    session_key: str | None = None  # lowercase 0x address from the session-key resource, if any

    def to_text(self) -> str:
        """The message text again, exactly as EIP-4361 lays it out (parse(to_text(m)) == m)."""
        prefix = f"{self.scheme}://" if self.scheme else ""
        lines = [f"{prefix}{self.domain}{HEADER_SUFFIX}", self.address, ""]
        if self.statement is not None:
            lines += [self.statement, ""]
        else:
            lines += [""]
        lines += [
            f"URI: {self.uri}",
            f"Version: {self.version}",
            f"Chain ID: {self.chain_id}",
            f"Nonce: {self.nonce}",
            f"Issued At: {self.issued_at_raw}",
        ]
        if self.expiration_time_raw is not None:
            lines.append(f"Expiration Time: {self.expiration_time_raw}")
        if self.not_before_raw is not None:
            lines.append(f"Not Before: {self.not_before_raw}")
        if self.request_id is not None:
            lines.append(f"Request ID: {self.request_id}")
        if self.resources:
            lines.append("Resources:")
            lines += [f"- {r}" for r in self.resources]
        return "\n".join(lines)


# ---- parsing ------------------------------------------------------------------------------------


def parse_message(text: object) -> SiweMessage:
    """Parse an EIP-4361 message strictly. Raises only `SiweError`."""
    if not isinstance(text, str):
        raise SiweError("message must be a string")
    if len(text) > MESSAGE_MAX:
        raise SiweError(f"message is longer than {MESSAGE_MAX} characters")
    if not text.isascii():
        raise SiweError("message must be ASCII (EIP-4361 fields allow no other characters)")
    if "\r" in text:
        raise SiweError("lines must end with LF only, not CRLF")
    return _Parser(text.split("\n")).parse()


class _Parser:
    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.i = 0

    def _peek(self) -> str | None:
        return self.lines[self.i] if self.i < len(self.lines) else None

    def _next(self, what: str) -> str:
        line = self._peek()
        if line is None:
            raise SiweError(f"message ends before {what} (line {self.i + 1})")
        self.i += 1
        return line

    def _field(self, tag: str, *, optional: bool = False) -> str | None:
        line = self._peek()
        prefix = f"{tag}: "
        if line is None or not line.startswith(prefix):
            if optional:
                return None
            raise SiweError(f"line {self.i + 1} must be '{prefix}…'")
        self.i += 1
        return line[len(prefix) :]

    def _blank(self, why: str) -> None:
        if self._next(why) != "":
            raise SiweError(f"line {self.i} must be empty ({why})")

    def parse(self) -> SiweMessage:
        scheme, domain = self._header()
        address = self._address()
        statement = self._statement()
        uri = self._uri(self._field("URI"), "URI")
        version = self._field("Version") or ""
        if not _VERSION_RE.fullmatch(version):
            raise SiweError("Version must be a number")
        chain = self._field("Chain ID") or ""
        if not _CHAIN_ID_RE.fullmatch(chain):
            raise SiweError("Chain ID must be a positive integer without leading zeros")
        nonce = self._field("Nonce") or ""
        if not _NONCE_RE.fullmatch(nonce):
            raise SiweError(f"Nonce must be {NONCE_MIN}..{NONCE_MAX} letters or digits")
        issued_raw = self._field("Issued At") or ""
        issued_ms = _datetime_ms(issued_raw, "Issued At")
        exp_raw = self._field("Expiration Time", optional=True)
        nbf_raw = self._field("Not Before", optional=True)
        request_id = self._field("Request ID", optional=True)
        if request_id is not None and not _REQUEST_ID_RE.fullmatch(request_id):
            raise SiweError(f"Request ID must be at most {REQUEST_ID_MAX} URI path characters")
        resources = self._resources()
        return SiweMessage(
            scheme=scheme,
            domain=domain,
            address=address,
            statement=statement,
            uri=uri,
            version=version,
            chain_id=int(chain),
            nonce=nonce,
            issued_at_raw=issued_raw,
            issued_at_ms=issued_ms,
            expiration_time_raw=exp_raw,
            expiration_time_ms=None if exp_raw is None else _datetime_ms(exp_raw, "Expiration Time"),
            not_before_raw=nbf_raw,
            not_before_ms=None if nbf_raw is None else _datetime_ms(nbf_raw, "Not Before"),
            request_id=request_id,
            resources=resources,
            session_key=_session_key(resources),
        )

    def _header(self) -> tuple[str | None, str]:
        header = self._next("the header")
        if not header.endswith(HEADER_SUFFIX):
            raise SiweError(f"line 1 must end with '{HEADER_SUFFIX.strip()}'")
        m = _HEADER_RE.fullmatch(header[: -len(HEADER_SUFFIX)])
        if m is None:
            raise SiweError(f"line 1 must start with a domain of at most {DOMAIN_MAX} characters")
        return m.group(1), m.group(2)

    def _address(self) -> str:
        address = self._next("the address")
        if not _ADDRESS_RE.fullmatch(address):
            raise SiweError("line 2 must be a 0x-prefixed 20-byte hex address")
        if to_checksum_address(address) != address:
            raise SiweError("line 2: the address must be in EIP-55 checksum form")
        self._blank("after the address")
        return address

    def _statement(self) -> str | None:
        line = self._next("the URI")
        if line == "":
            return None
        if not _STATEMENT_RE.fullmatch(line):
            raise SiweError(
                f"line {self.i}: the statement must be 1..{STATEMENT_MAX} characters of RFC 3986 "
                "reserved/unreserved characters and spaces"
            )
        self._blank("after the statement")
        return line

    def _resources(self) -> tuple[str, ...]:
        resources: list[str] = []
        if self._peek() == "Resources:":
            self.i += 1
            while (line := self._peek()) is not None:
                if not line.startswith("- "):
                    raise SiweError(f"line {self.i + 1}: each resource must be '- <uri>'")
                self.i += 1
                resources.append(self._uri(line[2:], "resource"))
                if len(resources) > RESOURCES_MAX:
                    raise SiweError(f"at most {RESOURCES_MAX} resources")
        if self._peek() is not None:
            raise SiweError(f"line {self.i + 1} is not expected here (field order, or a trailing newline)")
        return tuple(resources)

    @staticmethod
    def _uri(value: str | None, what: str) -> str:
        value = value or ""
        if len(value) > URI_MAX:
            raise SiweError(f"{what} is longer than {URI_MAX} characters")
        if not _URI_RE.fullmatch(value):
            raise SiweError(f"{what} must be an RFC 3986 URI")
        return value


def _datetime_ms(raw: str, what: str) -> int:
    """RFC 3339 date-time (as EIP-4361 requires) to Unix milliseconds."""
    m = _DATETIME_RE.fullmatch(raw)
    if m is None:
        raise SiweError(f"{what} must be an RFC 3339 date-time, e.g. 2025-01-31T12:00:00.000Z")
    year, month, day, hour, minute, second = (int(m.group(k)) for k in range(1, 7))
    frac = m.group(7)
    micros = int(frac[1:7].ljust(6, "0")) if frac else 0
    try:
        if m.group(8):
            tz = dt.UTC
        else:
            oh, om = int(m.group(10)), int(m.group(11))
            if oh > 23 or om > 59:
                raise ValueError("offset out of range")
            sign = 1 if m.group(9) == "+" else -1
            tz = dt.timezone(sign * dt.timedelta(hours=oh, minutes=om))
        when = dt.datetime(year, month, day, hour, minute, second, micros, tzinfo=tz)
        return (when - _EPOCH) // _MS
    except (ValueError, OverflowError):
        raise SiweError(f"{what} is not a valid date-time") from None


def _session_key(resources: tuple[str, ...]) -> str | None:
    found = None
    for r in resources:
        if r[: len(SESSION_KEY_URN)].lower() != SESSION_KEY_URN:
            continue
        if found is not None:
            raise SiweError("only one session-key resource is allowed", code="siwe_invalid_session_key")
        key = r[len(SESSION_KEY_URN) :]
        if not _ADDRESS_RE.fullmatch(key):
            raise SiweError(
                f"the session-key resource must be {SESSION_KEY_URN}<0x 20-byte hex address>",
                code="siwe_invalid_session_key",
            )
        body = key[2:]
        if body != body.lower() and body != body.upper() and to_checksum_address(key) != key:
            raise SiweError(
                "the session key has mixed case but is not a valid EIP-55 checksum",
                code="siwe_invalid_session_key",
            )
        if int(body, 16) == 0:
            raise SiweError("the session key must not be the zero address", code="siwe_invalid_session_key")
        found = key.lower()
    return found


# ---- checks -------------------------------------------------------------------------------------


def check_message(
    msg: SiweMessage, *, domain: str, chain_id: int, now_ms: int, allow_http: bool = False
) -> None:
    """Check a parsed message against this server; raise `SiweCheckError` with one code per check.

    - scheme (if given) and the URI's scheme: https (http too when `allow_http`, i.e. dev mode)
    - domain == TAP_SIWE_DOMAIN, and the URI's authority is that same domain
    - version 1, chain id == TAP_CHAIN_ID
    - |now − issued-at| ≤ 5 min; expiration-time (if any) in the future; not-before (if any) passed
    """
    schemes = ("https", "http") if allow_http else ("https",)
    expected = domain.lower()
    if msg.scheme is not None and msg.scheme.lower() not in schemes:
        raise SiweCheckError(
            f"scheme must be {' or '.join(schemes)}, not {msg.scheme[:16]!r}", code="siwe_scheme_mismatch"
        )
    if msg.domain.lower() != expected:
        raise SiweCheckError(
            f"domain must be {domain!r}, not {msg.domain[:64]!r}", code="siwe_domain_mismatch"
        )
    try:
        parts = urlsplit(msg.uri)
        uri_ok = parts.scheme.lower() in schemes and parts.netloc.lower() == expected
    except ValueError:
        uri_ok = False
    if not uri_ok:
        raise SiweCheckError(
            f"URI must be an {'/'.join(schemes)} URI on {domain!r}", code="siwe_uri_mismatch"
        )
    if msg.version != "1":
        raise SiweCheckError("only SIWE version 1 is supported", code="siwe_version_unsupported")
    if msg.chain_id != chain_id:
        raise SiweCheckError(f"Chain ID must be {chain_id}", code="siwe_chain_id_mismatch")
    if abs(now_ms - msg.issued_at_ms) > ISSUED_AT_WINDOW_MS:
        raise SiweCheckError(
            "Issued At must be within 5 minutes of the server's time; build a fresh message",
            code="siwe_issued_at_out_of_window",
        )
    if msg.expiration_time_ms is not None and msg.expiration_time_ms <= now_ms:
        raise SiweCheckError("the message has expired (Expiration Time)", code="siwe_expired")
    if msg.not_before_ms is not None and msg.not_before_ms > now_ms:
        raise SiweCheckError("the message is not valid yet (Not Before)", code="siwe_not_yet_valid")
