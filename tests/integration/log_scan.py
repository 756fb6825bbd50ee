"""Scans of a daemon's whole log output for secrets and caller numbers.

Every daemon that an integration test starts is scanned at teardown, so the
log output of the whole integration run is checked, not only the lines a
test looks at.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from router.logs import is_secret_key

# Inline secrets shorter than this are not searched for, because a short
# value such as "1" would match unrelated text.
MIN_SECRET_LENGTH = 6


def config_secrets(config: Any) -> set[str]:
    """Return every inline secret of a config: values under secret-named keys."""
    return {
        value
        for value in _secret_values(config)
        if isinstance(value, str) and len(value) >= MIN_SECRET_LENGTH
    }


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
