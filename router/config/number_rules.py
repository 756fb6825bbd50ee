"""The rules for a phone number written in the config.

A number is 3 to 40 characters. With the E.164 check on (the default) it is
'+', a non-zero digit and at most 15 digits in all (ITU-T E.164). With the
check off it is letters and digits with an optional leading '+'.
"""

import re

import phonenumbers
from pydantic import ValidationInfo

NUMBER_MIN_CHARS = 3
NUMBER_MAX_CHARS = 40
E164_MAX_DIGITS = 15

_E164 = re.compile(r"^\+[1-9][0-9]*$")
_PLAIN = re.compile(r"^\+?[a-zA-Z0-9]+$")


def check_number(number: str, e164_check_enabled: bool) -> None:
    """Raise ValueError, naming the value and the fix, unless number is valid."""
    if not NUMBER_MIN_CHARS <= len(number) <= NUMBER_MAX_CHARS:
        raise ValueError(
            f"number {number!r} has {len(number)} characters;"
            f" expected {NUMBER_MIN_CHARS} to {NUMBER_MAX_CHARS}"
        )

    if e164_check_enabled:
        _check_e164(number)
    elif not _PLAIN.match(number):
        raise ValueError(
            f"invalid number {number!r}: expected letters and digits"
            " with an optional leading '+'"
        )


def _check_e164(number: str) -> None:
    if _E164.match(number) and len(number) - 1 <= E164_MAX_DIGITS:
        return

    raise ValueError(
        f"number {number!r} is not E.164: expected '+', a non-zero digit and"
        f" at most {E164_MAX_DIGITS} digits in all; {_e164_hint(number)}"
    )


def _e164_hint(number: str) -> str:
    # phonenumbers strips separators from a number written with its country
    # code, so "+1 (415) 555-0100" gets a suggestion. Without a '+' the
    # country code is unknown, and guessing one could name a wrong number.
    if number.startswith("+"):
        try:
            parsed = phonenumbers.parse(number, None)
        except phonenumbers.NumberParseException:
            parsed = None
        if parsed is not None and phonenumbers.is_possible_number(parsed):
            formatted = phonenumbers.format_number(
                parsed, phonenumbers.PhoneNumberFormat.E164
            )
            return f"write it as {formatted!r}"

    return (
        "write it with '+' and the country code, as in '+14155550100',"
        " or set numberE164CheckEnabled: false"
    )


def validate_number_field(number: str, info: ValidationInfo) -> str:
    """Check a model's `number` against its `number_e164_check_enabled` field.

    The flag must be declared before `number` so that pydantic has validated
    it first. When the flag is itself invalid it is missing from info.data and
    already reported, so only the plain syntax is checked here.
    """
    e164_check_enabled = info.data.get("number_e164_check_enabled", False)
    check_number(number, e164_check_enabled)
    return number


def normalize_config_number(number: str) -> str:
    """Return the form two config numbers are compared in: no leading '+'."""
    return number.removeprefix("+")
