"""The base model and the small value types shared by the config models."""

import ipaddress
import re
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict
from pydantic.alias_generators import to_camel

from router.logs import redact_uri


class ConfigModel(BaseModel):
    """Base of every config object: camelCase keys in files, snake_case in Python.

    Unknown keys are errors. Models are frozen, so a reload replaces the whole
    Config while calls in progress keep reading the old one. Their lists and
    dicts are plain Python containers, which no caller may change.
    """

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        alias_generator=to_camel,
        frozen=True,
    )


def _number_to_text(value: object) -> object:
    # The config loader reads a plain YAML scalar as an integer only when it
    # has no '+' and no leading zero, and JSON integers have neither, so
    # str() gives back what was written.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


NumberText = Annotated[str, BeforeValidator(_number_to_text)]
"""A phone number or a digit string, also accepted when written unquoted."""

# RFC 3261 section 25.1: a header name is a token.
_SIP_TOKEN = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")
# RFC 9110 section 5.6.2: an HTTP field name is a token.
_HTTP_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
_LINE_BREAK = re.compile(r"[\r\n\x00]")


def _check_headers(headers: dict[str, str], token: re.Pattern[str]) -> None:
    for name, value in headers.items():
        if not token.match(name):
            raise ValueError(f"invalid header name {name!r}")

        # A line break in a value would start a new header or end the message.
        if _LINE_BREAK.search(value):
            raise ValueError(f"header {name!r} contains a line break")


def _check_sip_headers(headers: dict[str, str]) -> dict[str, str]:
    _check_headers(headers, _SIP_TOKEN)
    return headers


def _check_http_headers(headers: dict[str, str]) -> dict[str, str]:
    _check_headers(headers, _HTTP_TOKEN)
    return headers


SipHeaders = Annotated[dict[str, str], AfterValidator(_check_sip_headers)]
HttpHeaders = Annotated[dict[str, str], AfterValidator(_check_http_headers)]


def _check_http_url(url: str) -> str:
    parts = urlsplit(url)
    valid = parts.scheme in ("http", "https") and bool(parts.hostname)
    try:
        valid = valid and parts.port != 0
    except ValueError:  # a port that is not a number from 0 to 65535
        valid = False
    if not valid:
        # The URL may carry user:password, so only its parts without them
        # are shown.
        shown = f"{parts.scheme}://{parts.hostname or ''}{parts.path}"
        raise ValueError(
            f"invalid URL {shown!r}: expected http://HOST[:PORT]/PATH or "
            "https://HOST[:PORT]/PATH with a port from 1 to 65535"
        )
    return url


# Characters that would end the URI inside a Contact or Refer-To header.
_URI_BREAKERS = re.compile(r'[\s<>"\x00-\x1f\x7f]')


def _check_sip_uri(uri: str) -> str:
    scheme, _, rest = uri.partition(":")
    if scheme.lower() not in ("sip", "sips") or not rest or _URI_BREAKERS.search(uri):
        # The value is masked as one URI, because `redact_text` would stop
        # at a space that made it invalid and miss a token after it.
        shown = redact_uri(uri)
        raise ValueError(
            f"invalid SIP URI {shown!r}: expected sip:USER@HOST[:PORT], without"
            " spaces, quotes or angle brackets"
        )
    return uri


HttpUrl = Annotated[str, AfterValidator(_check_http_url)]
"""An http or https URL, kept as the string written so clients can use it as is."""

SipUri = Annotated[str, AfterValidator(_check_sip_uri)]


def _check_ipv4(host: str) -> str:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        raise ValueError(f"invalid IPv4 address {host!r}") from None
    return host


IPv4Text = Annotated[str, AfterValidator(_check_ipv4)]
"""An IPv4 address in dotted-quad form, kept as a string."""

_HOST_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def is_host_name(text: str) -> bool:
    """Check the RFC 1123 host name syntax.

    An all-numeric last label is rejected (RFC 3696 section 2), so a mistyped
    IPv4 address such as 10.0.0.300 is not taken for a host name.
    """
    name = text.removesuffix(".")
    if not name or len(name) > 253:
        return False

    labels = name.split(".")
    if labels[-1].isdigit():
        return False
    return all(_HOST_LABEL.match(label) for label in labels)
