"""Scans of a daemon's whole log output for secrets and caller numbers.

Every daemon that an integration test starts is scanned at teardown, so the
log output of the whole integration run is checked, not only the lines a
test looks at.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from router.logs import is_secret_key, is_secret_parameter

# Inline secrets shorter than this are not searched for, because a short
# value such as "1" would match unrelated text.
MIN_SECRET_LENGTH = 6


# A `name=value` parameter of a URL's query or a SIP URI.
_URI_PARAMETER = re.compile(r"[?&;#]([^=&;#?]*)=([^&;#]*)")
# The password of `sip:user:password@host`.
_SIP_PASSWORD = re.compile(r"(?i)^sips?:[^:@]*:([^@;?]*)@")


def config_secrets(config: Any) -> set[str]:
    """Return every inline secret of a config.

    These are the values under secret-named keys, and in every URL or SIP
    URI of the config the password and the values of secret-named
    parameters, such as `?token=` (see `is_secret_parameter`).
    """
    values = [*_secret_values(config), *_uri_secrets(config)]
    return {
        value
        for value in values
        if isinstance(value, str) and len(value) >= MIN_SECRET_LENGTH
    }


def _uri_secrets(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from _uri_secrets(value)
    elif isinstance(node, list):
        for item in node:
            yield from _uri_secrets(item)
    elif isinstance(node, str):
        yield from _secrets_of_uri(node)


def _secrets_of_uri(text: str) -> Iterator[str]:
    if "://" in text:
        password = urlsplit(text).password
        if password:
            yield password
    elif not text.lower().startswith(("sip:", "sips:")):
        return
    sip_password = _SIP_PASSWORD.match(text)
    if sip_password:
        yield sip_password.group(1)
    for name, value in _URI_PARAMETER.findall(text):
        if is_secret_parameter(name):
            yield value


def _secret_values(node: Any, secret: bool = False) -> Iterator[Any]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _secret_values(value, secret or is_secret_key(key))
    elif isinstance(node, list):
        for item in node:
            yield from _secret_values(item, secret)
    elif secret:
        yield node


def leaks(
    log_text: str, config: dict[str, Any], caller_numbers: list[str]
) -> list[str]:
    """Return a description of each secret or unmasked caller number in the log.

    Caller numbers are searched for without their `+`, and only when the
    config masks them (`maskCallerNumbers`, true by default).
    """
    found = [
        f"secret of {len(secret)} characters"
        for secret in sorted(config_secrets(config))
        if secret in log_text
    ]
    if config.get("router", {}).get("maskCallerNumbers", True):
        found += [
            f"caller number ending {number[-4:]}"
            for number in caller_numbers
            if number.lstrip("+") in log_text
        ]
    return found
