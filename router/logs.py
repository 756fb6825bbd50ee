"""structlog set-up, secret redaction and caller-number masking.

Every log line is one event with fields. JSON lines go to stderr by default,
and a console renderer is used when stderr is a terminal. Records from the
standard library's `logging` (aiohttp's own loggers) pass through the same
redaction and renderer, so the output has one format.
"""

import functools
import io
import logging
import re
import sys
from collections.abc import Mapping
from typing import Any, Literal, TextIO
from urllib.parse import unquote_plus, urlsplit, urlunsplit

import structlog
from pydantic import BaseModel, SecretBytes, SecretStr
from structlog.typing import EventDict, ExcInfo, Processor, WrappedLogger

LogFormat = Literal["auto", "json", "console"]

REDACTED = "[redacted]"

# Matched against the end of a key lowercased with every non-alphanumeric
# character removed, so `authPassword`, `X-Cozmox-Secret`, `secret_key`,
# `api-key` and `adminToken` match, while `maxTokens` and `tokenCount` in an
# inline assistant's model settings do not.
_SECRET_KEY_SUFFIXES = (
    "password",
    "passwd",
    "secret",
    "secretkey",
    "token",
    "authorization",
    "apikey",
)
_NON_ALPHANUMERIC = re.compile(r"[^a-z0-9]")
# Query parameters of URLs, and parameters and headers of SIP URIs, also
# carry credentials under names that are too general for mapping keys:
# `key` (an API key, `subscription-key`), `sig` and `signature` (signed URLs
# such as `X-Amz-Signature`), `auth`, `pass` and `pwd`. The value of a
# parameter is masked when its name ends in one of these or `is_secret_key`
# matches it.
_SECRET_PARAMETER_SUFFIXES = ("key", "sig", "signature", "auth", "pass", "pwd")

# Secrets inside logged text, such as a SIP or HTTP message that pjsip or
# aiohttp includes in an error. These patterns find the value of an
# Authorization or Proxy-Authorization header line (RFC 3261 section 20.7,
# RFC 9110 section 11.6.2), a bearer, basic or digest credential, and the
# user information of a URL.
_AUTHORIZATION_LINE = re.compile(
    r"(?im)^([ \t]*(?:proxy-)?authorization[ \t]*:)[^\r\n]*"
)
# A token68 of 8 characters or more (RFC 9110 section 11.2), so that words
# such as "bearer token missing" stay readable.
_CREDENTIAL = re.compile(r"(?i)\b(bearer|basic)[ \t]+[A-Za-z0-9._~+/-]{8,}=*")
_DIGEST = re.compile(r"(?i)\b(digest)[ \t]+\w+[ \t]*=[^\r\n]*")
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@")
# A URL, or a SIP URI (RFC 3261 section 19.1.1), inside free text. It ends
# at white space, a quote or an angle bracket, the characters that delimit
# a URI in messages and headers.
_URI_IN_TEXT = re.compile(r"(?i)\b(?:[a-z][a-z0-9+.-]*://|sips?:)[^\s\"'<>]+")
# The password of `sip:user:password@host`, which RFC 3261 (section 25.1)
# allows. A password cannot contain `;` or `?`, so either one ends it.
_SIP_PASSWORD = re.compile(r"(?i)^(sips?:[^:@]*:)[^@;?]*@")
# A `name=value` parameter after the `?`, `&`, `;` or `#` that starts it:
# the query of a URL, or the parameters and headers of a SIP URI.
_URI_PARAMETER = re.compile(r"([?&;#])([^=&;#?]*)=([^&;#]*)")
# Each of the five patterns above needs one of the words authorization,
# bearer, basic or digest, or `://`, `sip:` or `sips:`, so text without any
# of them is logged as it is (`_may_hold_credential`). Most logged strings
# are ids and names, and for them that check costs far less than five
# substitutions. Non-ASCII text is checked with the patterns' own flags,
# because under IGNORECASE a look-alike such as the long s in "baſic"
# matches `basic`.
_MAY_HOLD_CREDENTIAL = re.compile(r"(?i)authorization|bearer|basic|digest|://|sips?:")
# Values of these types are logged as they are, without any check.
_PLAIN_TYPES = frozenset({int, float, bool, type(None)})

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def is_secret_key(key: object) -> bool:
    """Return whether a mapping key is named like a password, secret or token."""
    if not isinstance(key, str):
        return False
    return _is_secret_name(key)


# Log events use a few dozen keys over and over. The cache is bounded because
# nested mappings, such as a call's X- headers, bring keys from outside.
@functools.lru_cache(maxsize=1024)
def _is_secret_name(key: str) -> bool:
    normalized = _NON_ALPHANUMERIC.sub("", key.lower())
    return normalized.endswith(_SECRET_KEY_SUFFIXES)


# Percent-encoded names are decoded first, so `api%5Fkey` matches too.
@functools.lru_cache(maxsize=1024)
def is_secret_parameter(name: str) -> bool:
    """Return whether a URL query or SIP URI parameter is named like a credential.

    Besides the names that `is_secret_key` matches, names ending in key,
    sig, signature, auth, pass or pwd match, such as `key`, `sig` and
    `X-Amz-Signature`.
    """
    normalized = _NON_ALPHANUMERIC.sub("", unquote_plus(name).lower())
    return normalized.endswith(_SECRET_KEY_SUFFIXES + _SECRET_PARAMETER_SUFFIXES)


def _redact_value(value: Any) -> Any:
    if type(value) in _PLAIN_TYPES:
        return value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, SecretStr | SecretBytes):
        return REDACTED
    if isinstance(value, Mapping):
        return {
            key: REDACTED if is_secret_key(key) else _redact_value(item)
            for key, item in value.items()
        }
    if _is_secret_header_pair(value):
        return [value[0], REDACTED]
    if isinstance(value, list | tuple):
        return [_redact_value(item) for item in value]
    # NOTE: the renderers write any other object, such as an exception or a
    # yarl.URL, with repr() and without this check, so log str() of those.
    return value


def _is_secret_header_pair(value: Any) -> bool:
    # Headers are often kept as (name, value) pairs, as the SIP engine takes
    # them, rather than as a mapping.
    return (
        isinstance(value, list | tuple)
        and len(value) == 2
        and isinstance(value[0], str)
        and is_secret_key(value[0])
    )


def redact_text(text: str) -> str:
    """Replace credentials inside free text with a marker.

    Covers Authorization and Proxy-Authorization header lines, `Bearer`,
    `Basic` and `Digest` credentials, `user:password@` in URLs, and in
    each URL or SIP URI of the text the parts that `redact_uri` masks.
    """
    if not text or not _may_hold_credential(text):
        return text
    text = _AUTHORIZATION_LINE.sub(rf"\1 {REDACTED}", text)
    text = _CREDENTIAL.sub(rf"\1 {REDACTED}", text)
    text = _DIGEST.sub(rf"\1 {REDACTED}", text)
    text = _URL_USERINFO.sub(rf"\1{REDACTED}@", text)
    return _redact_uris(text)


def _redact_uris(text: str) -> str:
    return _URI_IN_TEXT.sub(lambda match: redact_uri(match.group()), text)


def redact_uri(uri: str) -> str:
    """Mask the credentials of a URL or SIP URI that may not parse.

    The user information of `scheme://user:password@` and the password of
    `sip:user:password@` are replaced, and so is the value of each
    `name=value` after a `?`, `&`, `;` or `#` whose name
    `is_secret_parameter` matches. The whole string counts as one URI, so
    an invalid one, with spaces in it, is masked too. The user of a SIP URI
    is kept, because it is the dialled number or name.
    """
    uri = _URL_USERINFO.sub(rf"\1{REDACTED}@", uri)
    uri = _SIP_PASSWORD.sub(rf"\1{REDACTED}@", uri)
    if "=" not in uri:
        return uri
    return _URI_PARAMETER.sub(_redact_parameter, uri)


def _redact_parameter(match: re.Match[str]) -> str:
    separator, name, _ = match.groups()
    if not is_secret_parameter(name):
        return match.group()
    return f"{separator}{name}={REDACTED}"


def redact_url(url: str) -> str:
    """Replace the credentials in a URL with a marker, keeping the rest as written.

    The password of `user:password@` is replaced, and so is a user name
    with no password, because a token is often sent that way. So is the
    value of each query parameter whose name `is_secret_parameter`
    matches, such as `token`, `api_key` or `sig`. A string that does not
    parse as a URL with a scheme and a host is returned as it is.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.scheme or not parts.netloc:
        return url
    netloc = _redact_netloc(parts.netloc)
    query = _redact_query(parts.query)
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _redact_netloc(netloc: str) -> str:
    userinfo, at, host = netloc.rpartition("@")
    if not at:
        return netloc
    user, colon, _ = userinfo.partition(":")
    if colon:
        return f"{user}:{REDACTED}@{host}"
    return f"{REDACTED}@{host}"


def _redact_query(query: str) -> str:
    if not query:
        return query
    fields = []
    for field in query.split("&"):
        name, equals, _ = field.partition("=")
        if equals and is_secret_parameter(name):
            field = f"{name}={REDACTED}"
        fields.append(field)
    return "&".join(fields)


def _may_hold_credential(text: str) -> bool:
    if text.isascii():
        lowered = text.lower()
        return (
            "authorization" in lowered
            or "bearer" in lowered
            or "basic" in lowered
            or "digest" in lowered
            # Each URI mark has a colon, so most ids and names skip the three.
            or (
                ":" in text
                and ("://" in text or "sip:" in lowered or "sips:" in lowered)
            )
        )
    return _MAY_HOLD_CREDENTIAL.search(text) is not None


def redact_secrets(
    logger: WrappedLogger, method_name: str, event_dict: EventDict
) -> EventDict:
    """Replace the value of every secret-named key, at any depth, with a marker.

    A key is secret-named when `is_secret_key` matches it. Pydantic
    `SecretStr` and `SecretBytes` values are replaced wherever they are,
    and so are the value of a (name, value) header pair with a secret name
    and the credentials that `redact_text` finds in strings.
    """
    for key, value in event_dict.items():
        if key == "event":
            # A record of the standard library's logging carries its whole
            # message here, so its text is scrubbed too.
            event_dict[key] = _redact_value(value)
            continue
        event_dict[key] = REDACTED if is_secret_key(key) else _redact_value(value)
    return event_dict


def without_secrets(value: Any) -> Any:
    """Return a copy of nested mappings, lists and models with every secret removed.

    Secret-named keys (see `is_secret_key`) are dropped with their values,
    and so are `SecretStr` and `SecretBytes` values, so the result can be
    sent to another service or returned by an API. A pydantic model becomes
    a dict by its field aliases, without its None fields.
    """
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="python", by_alias=True, exclude_none=True)
    if isinstance(value, Mapping):
        return {
            key: without_secrets(item)
            for key, item in value.items()
            if not is_secret_key(key) and not _is_secret_value(item)
        }
    if isinstance(value, list | tuple):
        return [without_secrets(item) for item in value if not _is_secret_value(item)]
    return value


def _is_secret_value(value: Any) -> bool:
    return isinstance(value, SecretStr | SecretBytes)


def mask_number(number: str | None, enabled: bool = True) -> str | None:
    """Mask a phone number for logs, keeping a leading `+` and the last 4 digits.

    `+14155551234` becomes `+*******1234`. A number of 4 characters or fewer
    is masked entirely, because keeping 4 of 4 would log it in full. With
    `enabled` false, or for `None` or an empty string, the value is returned
    unchanged.
    """
    if not enabled or not number:
        return number

    plus = "+" if number.startswith("+") else ""
    digits = number.removeprefix("+")
    if len(digits) <= 4:
        return plus + "*" * len(digits)
    return plus + "*" * (len(digits) - 4) + digits[-4:]


def configure_logging(
    log_format: LogFormat = "auto",
    level: str = "info",
    stream: TextIO | None = None,
) -> None:
    """Configure structlog and the standard library's logging for the daemon.

    `level` is one of debug, info, warning, error, critical. `stream`
    defaults to stderr. With `log_format` auto, the console renderer is used
    when the stream is a terminal and JSON lines otherwise.
    """
    level_number = _LEVELS.get(level.lower())
    if level_number is None:
        raise ValueError(
            f"invalid log level {level!r}: use one of {', '.join(_LEVELS)}"
        )

    output = stream if stream is not None else sys.stderr
    console = _use_console(log_format, output)
    renderer = _renderer(console, output)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if not console:
        # The console renderer formats exceptions itself, with
        # `_format_redacted_traceback`.
        shared.append(structlog.processors.format_exc_info)
    # Redaction comes after the traceback is rendered as text, because an
    # exception's message may quote a URL with its token.
    shared.append(redact_secrets)

    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level_number),
        logger_factory=structlog.WriteLoggerFactory(file=output),
        cache_logger_on_first_use=False,
    )
    _configure_stdlib_logging(level_number, output, shared, renderer)


def _use_console(log_format: LogFormat, stream: TextIO) -> bool:
    if log_format == "console":
        return True
    if log_format == "json":
        return False
    if log_format == "auto":
        return stream.isatty()
    raise ValueError(f"invalid log format {log_format!r}: use auto, json or console")


def _renderer(console: bool, stream: TextIO) -> Processor:
    if console:
        return structlog.dev.ConsoleRenderer(
            colors=stream.isatty(), exception_formatter=_format_redacted_traceback
        )
    return structlog.processors.JSONRenderer()


def _format_redacted_traceback(stream: TextIO, exc_info: ExcInfo) -> None:
    # Always the plain formatter: colour codes of a Rich traceback could
    # fall inside a URL and hide it from the redaction.
    traceback = io.StringIO()
    structlog.dev.plain_traceback(traceback, exc_info)
    stream.write(redact_text(traceback.getvalue()))


def _configure_stdlib_logging(
    level_number: int,
    stream: TextIO,
    shared: list[Processor],
    renderer: Processor,
) -> None:
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for old_handler in list(root.handlers):
        root.removeHandler(old_handler)
    root.addHandler(handler)
    root.setLevel(level_number)
