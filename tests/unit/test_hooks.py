from typing import Any

import pytest

from router.calls.hooks import (
    ending_action,
    matching_ending_hook,
    matching_ringing_hook,
    ringing_action,
)
from router.config import PhoneNumber, SayAction, TransferAction

FALLBACK = {"type": "sip", "sipUri": "sip:fallback@127.0.0.1:5090"}


def make_number(*hooks: dict[str, Any]) -> PhoneNumber:
    return PhoneNumber.model_validate(
        {
            "id": "pn-1",
            "credentialId": "trunk-1",
            "number": "+14155550100",
            "fallbackDestination": FALLBACK,
            "hooks": list(hooks),
        }
    )


def ringing(prefixes: list[str] | None, *actions: dict[str, Any]) -> dict[str, Any]:
    filters = []
    if prefixes is not None:
        filters = [{"type": "startsWith", "key": "number", "startsWith": prefixes}]
    return {"on": "call.ringing", "filters": filters, "do": list(actions)}


def ending(reasons: list[str] | None, action: dict[str, Any]) -> dict[str, Any]:
    filters = []
    if reasons is not None:
        filters = [{"type": "oneOf", "key": "call.endedReason", "oneOf": reasons}]
    return {"on": "call.ending", "filters": filters, "do": action}


def say(text: str) -> dict[str, Any]:
    return {"type": "say", "exact": text}


TRANSFER = {"type": "transfer"}


# ----- call.ringing ------------------------------------------------------------


@pytest.mark.parametrize(
    ("caller", "expected"),
    [
        ("+14155559876", True),
        ("14155559876", True),
        ("+4930123456", False),
        ("+1", False),
        (None, False),
        ("", False),
    ],
    ids=[
        "e164",
        "without-plus",
        "other-country",
        "shorter-than-prefix",
        "none",
        "empty",
    ],
)
def test_ringing_prefix_matches_caller_without_plus(
    caller: str | None, expected: bool
) -> None:
    number = make_number(ringing(["1415"], say("hello")))

    action = ringing_action(number, caller)

    assert (action is not None) == expected


def test_ringing_any_prefix_of_a_filter_matches() -> None:
    number = make_number(ringing(["44", "1415"], say("hello")))

    assert ringing_action(number, "+14155559876") is not None


def test_ringing_every_filter_must_match() -> None:
    hook = ringing(["1"], say("hello"))
    hook["filters"].append(
        {"type": "startsWith", "key": "number", "startsWith": ["1212"]}
    )
    number = make_number(hook)

    assert ringing_action(number, "+14155559876") is None
    assert ringing_action(number, "+12125550000") is not None


def test_ringing_runs_only_first_action() -> None:
    number = make_number(ringing(["1"], say("first"), say("second"), TRANSFER))

    action = ringing_action(number, "+14155559876")

    assert isinstance(action, SayAction)
    assert action.exact == "first"


def test_ringing_first_matching_hook_wins() -> None:
    number = make_number(
        ringing(["44"], say("uk")),
        ringing(["1415"], say("san francisco")),
        ringing(["1"], say("north america")),
    )

    action = ringing_action(number, "+14155559876")

    assert isinstance(action, SayAction)
    assert action.exact == "san francisco"


def test_ringing_hook_without_filters_matches_anonymous() -> None:
    number = make_number(ringing(None, TRANSFER))

    assert isinstance(ringing_action(number, None), TransferAction)


def test_ringing_ignores_ending_hooks() -> None:
    number = make_number(ending(None, say("ending")))

    assert ringing_action(number, "+14155559876") is None


def test_ringing_without_hooks_returns_none() -> None:
    assert ringing_action(make_number(), "+14155559876") is None


# ----- call.ending -------------------------------------------------------------


def test_ending_matches_listed_reason() -> None:
    number = make_number(ending(["assistant-request-failed"], say("sorry")))

    action = ending_action(number, "assistant-request-failed")

    assert isinstance(action, SayAction)
    assert action.exact == "sorry"


def test_ending_ignores_unlisted_reason() -> None:
    number = make_number(ending(["assistant-request-failed"], say("sorry")))

    assert ending_action(number, "assistant-request-returned-no-assistant") is None
    assert ending_action(number, "call.start.error-runtime-rejected") is None


def test_ending_first_listing_hook_wins() -> None:
    number = make_number(
        ending(["assistant-request-returned-error"], say("error")),
        ending(["assistant-request-failed"], TRANSFER),
        ending(["assistant-request-failed"], say("too late")),
    )

    action = ending_action(number, "assistant-request-failed")

    assert isinstance(action, TransferAction)


def test_ending_hook_without_filters_matches_every_reason() -> None:
    number = make_number(ending(None, TRANSFER))

    assert ending_action(number, "call.start.error-runtime-rejected") is not None
    assert ending_action(number, "assistant-request-failed") is not None


def test_ending_ignores_ringing_hooks() -> None:
    number = make_number(ringing(None, say("ringing")))

    assert ending_action(number, "assistant-request-failed") is None


# ----- hook indexes, as the dry run reports them ---------------------------------


def test_matching_hooks_return_config_index() -> None:
    number = make_number(
        ending(["assistant-request-failed"], say("first ending")),
        ringing(["44"], say("uk")),
        ringing(["1"], say("us")),
        ending(None, say("any ending")),
    )

    ringing_match = matching_ringing_hook(number, "+14155559876")
    ending_match = matching_ending_hook(number, "call.start.error-get-phone-number")

    assert ringing_match is not None
    assert ringing_match[0] == 2
    assert ending_match is not None
    assert ending_match[0] == 3


def test_matching_hooks_return_none_without_match() -> None:
    number = make_number(
        ringing(["44"], say("uk")),
        ending(["assistant-request-returned-error"], say("x")),
    )

    assert matching_ringing_hook(number, "+14155559876") is None
    assert matching_ending_hook(number, "assistant-request-failed") is None
