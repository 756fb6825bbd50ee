"""Parse the raw text of a received SIP request into plain data.

pjsua2 has no structured API for the Request-URI or arbitrary headers, so
the engine copies `rdata.wholeMsg` inside the callback and this module
reads it. Nothing here imports pjsua2, so it can be tested on its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# RFC 3261 section 7.3.3: compact header names.
_COMPACT_NAMES = {
    "i": "call-id",
    "f": "from",
    "t": "to",
    "v": "via",
    "l": "content-length",
    "m": "contact",
    "c": "content-type",
}

# ASCII digits only: str.isdigit() also accepts characters such as "\u00b2"
# that int() rejects.
_DIGITS = re.compile(r"[0-9]+")
# A Content-Length past this is clamped to it. It is far larger than any
# message, and int() refuses strings of more than 4300 digits.
MAX_CONTENT_LENGTH = 2**63 - 1
# The largest Max-Forwards that RFC 3261 section 20.22 allows.
MAX_FORWARDS = 255

_VIA_TRANSPORT = re.compile(r"SIP\s*/\s*2\.0\s*/\s*([A-Za-z]+)", re.IGNORECASE)
_DISPLAY_NAME = re.compile(r'^\s*(?:"((?:[^"\\]|\\.)*)"|([^<"]*?))\s*<')


class MalformedRequest(ValueError):
    """The request cannot be read: no request line or no header block."""


def _clamped_number(value: str | None, maximum: int) -> int | None:
    """Return a header's decimal value, at most `maximum`; None if not digits.

    Leading zeros are read, and a value with more digits than `maximum` is
    clamped before int() could meet a huge string.
    """
    if value is None or not _DIGITS.fullmatch(value.strip()):
        return None
    digits = value.strip().lstrip("0") or "0"
    if len(digits) > len(str(maximum)):
        return maximum
    return min(int(digits), maximum)


@dataclass(frozen=True)
class SipRequest:
    """A request as text: its request line, headers in order and body."""

    method: str
    request_uri: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    size_bytes: int

    def header(self, name: str) -> str | None:
        """Return the first value of header `name` (case-insensitive)."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    def x_headers(self) -> dict[str, str]:
        """Return the custom `X-` headers, first value of each name."""
        found: dict[str, str] = {}
        for key, value in self.headers:
            if key.lower().startswith("x-") and key not in found:
                found[key] = value
        return found

    def content_length(self) -> int | None:
        """Return Content-Length as an int, or None when absent or invalid.

        pjsip 2.15.1 accepts leading zeros and any number of digits, so
        both are read here too, and a huge value is clamped to
        `MAX_CONTENT_LENGTH`.
        """
        return _clamped_number(self.header("content-length"), MAX_CONTENT_LENGTH)

    def max_forwards(self) -> int | None:
        """Return Max-Forwards as an int, or None when absent or invalid.

        RFC 3261 section 20.22 gives the range 0 to 255, so a larger value
        is clamped to `MAX_FORWARDS`.
        """
        return _clamped_number(self.header("max-forwards"), MAX_FORWARDS)

    @property
    def truncated(self) -> bool:
        """True when the body is shorter than its Content-Length."""
        declared = self.content_length()
        return declared is not None and len(self.body) < declared

    def transport(self) -> str:
        """Return the transport of the top Via (`udp`, `tcp`, ...)."""
        via = self.header("via") or ""
        match = _VIA_TRANSPORT.search(via)
        return match.group(1).lower() if match else "udp"


def parse_request(raw: bytes | str) -> SipRequest:
    """Parse a SIP request's start line, headers and body.

    Header folding (RFC 3261 section 7.3.1) is joined, compact names are
    expanded, and bytes that are not UTF-8 are replaced rather than raised.
    A `str` carries such bytes as the surrogate escapes that pjsua2 decodes
    them to. Raises MalformedRequest for anything else that is unreadable.
    """
    data = _as_bytes(raw)
    head, body = _split_head(data)
    lines = head.decode("utf-8", "replace").splitlines()
    if not lines:
        raise MalformedRequest("empty message")

    parts = lines[0].split()
    if len(parts) != 3 or not parts[2].upper().startswith("SIP/"):
        raise MalformedRequest("invalid request line")

    return SipRequest(
        method=parts[0].upper(),
        request_uri=parts[1],
        headers=tuple(_parse_headers(lines[1:])),
        body=body,
        size_bytes=len(data),
    )


def _as_bytes(raw: bytes | str) -> bytes:
    if isinstance(raw, bytes):
        return raw
    try:
        return raw.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        # A surrogate outside U+DC80..U+DCFF did not come from a byte.
        raise MalformedRequest("text that is neither UTF-8 nor bytes") from None


def display_name(name_addr: str) -> str | None:
    """Return the display name of a From/To value, unquoted, or None."""
    match = _DISPLAY_NAME.match(name_addr)
    if not match:
        return None
    quoted, bare = match.groups()
    name = quoted if quoted is not None else bare
    name = re.sub(r"\\(.)", r"\1", name).strip()
    return name or None


def address_uri(name_addr: str) -> str:
    """Return the URI of a From/To/Contact value, without its parameters."""
    start = name_addr.find("<")
    if start >= 0:
        end = name_addr.find(">", start)
        return name_addr[start + 1 : end if end > 0 else None].strip()
    # Without angle brackets, parameters after ';' belong to the header
    # (RFC 3261 section 20.10), not to the URI.
    return name_addr.split(";", 1)[0].strip()


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    for separator in (b"\r\n\r\n", b"\n\n"):
        index = data.find(separator)
        if index >= 0:
            return data[:index], data[index + len(separator) :]
    return data, b""


def _parse_headers(lines: list[str]) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    for line in lines:
        if line[:1] in (" ", "\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}")
            continue
        name, separator, value = line.partition(":")
        if not separator:
            continue
        name = name.strip()
        name = _COMPACT_NAMES.get(name.lower(), name)
        headers.append((name, value.strip()))
    return headers


@dataclass(frozen=True)
class CallKey:
    """Names one call: its pjsua slot and a serial that is never reused."""

    slot: int
    serial: int


@dataclass(frozen=True)
class InboundInvite:
    """Everything the call path needs from an INVITE, copied off pjsua2."""

    key: CallKey
    call_id: str
    source_ip: str
    source_port: int
    transport: str
    request_uri: str
    from_header: str
    to_header: str
    x_headers: dict[str, str] = field(default_factory=dict)
    content_length: int | None = None
    body_bytes: int = 0
    message_bytes: int = 0
    # False when the call got the loop media transport: it can be rejected,
    # redirected or referred, but not bridged or spoken to.
    has_media: bool = True
    # A final status the engine already sent (503 when no slot was free, or
    # a 302 of a static redirect).
    pre_rejected: int | None = None
    # True when the message filled the stack's packet buffer or its body is
    # shorter than Content-Length (router.sip.cut_invites.is_cut).
    cut: bool = False
    # The router's call id that the engine chose with its final response.
    router_call_id: str | None = None
    # None when the header is absent or not a number.
    max_forwards: int | None = None

    @property
    def truncated(self) -> bool:
        """True when the stack's packet buffer may have cut the INVITE."""
        return self.cut or (
            self.content_length is not None and self.body_bytes < self.content_length
        )


def split_host_port(address: str) -> tuple[str, int]:
    """Split `1.2.3.4:5060` or `[::1]:5060` into host and port."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port = rest.lstrip(":")
    else:
        host, _, port = address.rpartition(":")
        if not host:
            host, port = address, ""
    return host, int(port) if port.isdigit() else 0
