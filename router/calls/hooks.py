"""Matching a phone number's hooks: pure functions, no I/O.

A `call.ringing` hook runs when the call rings, before any route is tried.
Its `startsWith` filters compare the caller's number without its leading
`+`. A `call.ending` hook runs when a route fails, before the fallback
destination, and its `oneOf` filters list the `endedReason` values it
handles. In both kinds every filter must match, so a hook without filters
matches every call. The first hook that matches wins, and of a ringing hook
only the first action runs.
"""

from __future__ import annotations

from router.config import (
    Action,
    EndingHook,
    OneOfFilter,
    PhoneNumber,
    RingingHook,
    StartsWithFilter,
)


def matching_ringing_hook(
    number: PhoneNumber, caller_number: str | None
) -> tuple[int, RingingHook] | None:
    """Return the index and the first ringing hook that matches the caller.

    `caller_number` is the user part of the From URI, normalised. A caller
    without a number (anonymous) matches only hooks without filters.
    """
    digits = (caller_number or "").removeprefix("+")
    for index, hook in enumerate(number.hooks):
        if not isinstance(hook, RingingHook):
            continue
        if all(_starts_with(rule, digits) for rule in hook.filters):
            return index, hook
    return None


def matching_ending_hook(
    number: PhoneNumber, ended_reason: str
) -> tuple[int, EndingHook] | None:
    """Return the index and the first ending hook that lists `ended_reason`."""
    for index, hook in enumerate(number.hooks):
        if not isinstance(hook, EndingHook):
            continue
        if all(_one_of(rule, ended_reason) for rule in hook.filters):
            return index, hook
    return None


def ringing_action(number: PhoneNumber, caller_number: str | None) -> Action | None:
    """Return the first action of the first ringing hook that matches the caller."""
    match = matching_ringing_hook(number, caller_number)
    return None if match is None else match[1].do[0]


def ending_action(number: PhoneNumber, ended_reason: str) -> Action | None:
    """Return the action of the first ending hook that lists `ended_reason`."""
    match = matching_ending_hook(number, ended_reason)
    return None if match is None else match[1].do


def _starts_with(rule: StartsWithFilter, digits: str) -> bool:
    # An empty number never matches a prefix, because every prefix has at
    # least one character.
    return any(digits.startswith(prefix) for prefix in rule.starts_with)


def _one_of(rule: OneOfFilter, ended_reason: str) -> bool:
    return ended_reason in rule.one_of
