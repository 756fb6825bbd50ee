"""The `route` dry run: every step and verdict, without SIP or a server."""

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from router.config import Config, load_config, parse_config
from router.dry_run import CallInput, render_text, route_call
from router.errors import AssistantRequestFailed
from router.routing import ended_reasons
from router.routing.decision import Route
from router.routing.replies import DestinationReply, ErrorReply, RouteReply

EXAMPLE = Path(__file__).parents[2] / "config" / "router.example.yaml"
CALLER = "+14155559876"


@pytest.fixture(scope="module")
def example() -> Config:
    return load_config(EXAMPLE)


def call(to: str, src: str = "127.0.0.1", **extra: Any) -> CallInput:
    return CallInput(to=to, caller=CALLER, source_ip=src, **extra)


def replying(reply: Any):
    async def ask_server(request, server):
        if isinstance(reply, Exception):
            raise reply
        return reply

    return ask_server


def step_names(decision) -> list[str]:
    return [step.name for step in decision.steps]


def with_number(config: Config, number_id: str, **changes: Any) -> Config:
    numbers = [
        number.model_copy(update=changes) if number.id == number_id else number
        for number in config.phone_numbers
    ]
    return config.model_copy(update={"phone_numbers": numbers})


async def test_static_route_hands_off(example):
    decision = await route_call(example, call("+14155550100"), None)

    assert step_names(decision) == [
        "receive",
        "trunk",
        "number",
        "status",
        "ring",
        "hooks",
        "route",
    ]
    assert decision.verdict == {
        "action": "hand-off",
        "mode": "bridge",
        "runtimeUri": "sip:runtime@127.0.0.1:5080",
        "header": {"X-Cozmox-Assistant-Id": "asst-support"},
    }


async def test_number_found_in_to_when_ruri_is_contact(example):
    request_uri = "sip:router@127.0.0.1:5060"

    decision = await route_call(
        example, call("+14155550100", request_uri=request_uri), None
    )

    number_step = decision.steps[2]
    assert number_step.details["phoneNumberId"] == "pn-support"
    assert "dialled in the To" in number_step.result


async def test_skipped_webhook_shows_failure_chain(example):
    decision = await route_call(example, call("+14155550101"), None)

    skipped = [step for step in decision.steps if step.name == "assistant-request"]
    assert skipped[0].result == "skipped (--no-webhook)"
    assert skipped[0].details["url"] == "http://127.0.0.1:8090/webhook"
    assert decision.verdict["action"] == "reject"
    assert decision.verdict["sipStatus"] == 480
    assert decision.verdict["endedReason"] == "assistant-request-failed"
    assert decision.verdict["headers"]["Reason"] == (
        'SIP;cause=480;text="assistant-request-failed"'
    )


async def test_skipped_webhook_with_fallback_redirects(example):
    decision = await route_call(example, call("+14155550102"), None)

    assert decision.verdict == {
        "action": "transfer",
        "verb": "redirect",
        "target": "sip:fallback@127.0.0.1:5090",
        "headers": {},
        "endedReason": "assistant-request-failed",
    }


async def test_server_reply_route_hands_off(example):
    reply = RouteReply(Route("squad", id="squad-sales"))

    decision = await route_call(example, call("+14155550101"), replying(reply))

    request_step = [step for step in decision.steps if step.name == "assistant-request"]
    assert request_step[0].result == "squad squad-sales"
    assert decision.verdict["header"] == {"X-Cozmox-Squad-Id": "squad-sales"}


async def test_server_failure_reported_with_detail(example):
    failure = AssistantRequestFailed(
        ended_reasons.ASSISTANT_REQUEST_FAILED, "server answered HTTP 500"
    )

    decision = await route_call(example, call("+14155550102"), replying(failure))

    request_step = [step for step in decision.steps if step.name == "assistant-request"]
    assert request_step[0].result == "failed"
    assert request_step[0].details["detail"] == "server answered HTTP 500"
    assert decision.verdict["action"] == "transfer"


async def test_server_error_reply_rejects_with_text(example):
    decision = await route_call(
        example, call("+14155550101"), replying(ErrorReply("Closed today."))
    )

    assert decision.verdict == {
        "action": "reject",
        "sipStatus": 480,
        "endedReason": "assistant-request-returned-error",
        "text": "Closed today.",
    }


async def test_server_destination_transfers(example):
    destination = example.phone_numbers[2].fallback_destination

    decision = await route_call(
        example, call("+14155550101"), replying(DestinationReply(destination))
    )

    assert decision.verdict["action"] == "transfer"
    assert decision.verdict["endedReason"] == (
        "assistant-request-returned-forwarding-phone-number"
    )


@pytest.mark.parametrize(
    ("to", "src", "status", "reason"),
    [
        ("+14155550103", "127.0.0.1", 403, "call.start.error-phone-number-blocked"),
        ("+14155550199", "127.0.0.1", 404, "call.start.error-get-phone-number"),
        ("+14155550100", "127.0.0.2", 403, "call.start.error-source-not-allowed"),
    ],
    ids=["blocked", "unknown-number", "unknown-source"],
)
async def test_rejected_calls(example, to, src, status, reason):
    decision = await route_call(example, call(to, src), None)

    assert decision.verdict["action"] == "reject"
    assert decision.verdict["sipStatus"] == status
    assert decision.verdict["endedReason"] == reason


async def test_activating_number_gets_480_retry_after(example):
    config = with_number(example, "pn-support", status="activating")

    decision = await route_call(config, call("+14155550100"), None)

    assert decision.verdict["sipStatus"] == 480
    assert decision.verdict["headers"]["Retry-After"] == "300"


async def test_ringing_hook_by_caller_prefix(example):
    hooks = [
        {
            "on": "call.ringing",
            "filters": [
                {"type": "startsWith", "key": "number", "startsWith": ["1212"]}
            ],
            "do": [{"type": "say", "exact": "Not you."}],
        },
        {
            "on": "call.ringing",
            "filters": [
                {"type": "startsWith", "key": "number", "startsWith": ["1415"]}
            ],
            "do": [{"type": "say", "exact": "Hello caller."}],
        },
    ]
    config = _with_hooks("pn-support", hooks)

    decision = await route_call(config, call("+14155550100"), None)

    hook_step = [step for step in decision.steps if step.name == "hooks"][0]
    assert hook_step.result == "call.ringing hook 1 matches"
    assert decision.verdict == {
        "action": "say",
        "endedReason": "call.ringing.hook-executed-say",
        "text": "Hello caller.",
    }


async def test_ending_hook_before_fallback(example):
    hooks = [
        {
            "on": "call.ending",
            "filters": [
                {
                    "type": "oneOf",
                    "key": "call.endedReason",
                    "oneOf": ["assistant-request-failed"],
                }
            ],
            "do": {
                "type": "transfer",
                "destination": {"type": "sip", "sipUri": "sip:desk@127.0.0.1:5091"},
            },
        }
    ]
    config = _with_hooks("pn-fallback", hooks)

    decision = await route_call(config, call("+14155550102"), None)

    assert "call.ending hook 0 matches" in [step.result for step in decision.steps]
    assert decision.verdict["target"] == "sip:desk@127.0.0.1:5091"
    assert decision.verdict["verb"] == "refer"


async def test_render_text_lists_steps_and_verdict(example):
    decision = await route_call(example, call("+14155550101"), None)

    text = render_text(decision)

    assert "  2 trunk" in text
    assert "skipped (--no-webhook)" in text
    assert "verdict: reject" in text
    assert "sipStatus: 480" in text


async def test_json_names_the_call(example):
    decision = await route_call(example, call("+14155550100"), None)

    body = decision.as_json()

    assert body["call"] == {
        "to": "+14155550100",
        "from": CALLER,
        "src": "127.0.0.1",
        "requestUri": "sip:+14155550100@127.0.0.1",
    }
    assert body["steps"][1] == {
        "step": 2,
        "name": "trunk",
        "result": "matched trunk-local",
        "trunks": ["trunk-local"],
    }


def _with_hooks(number_id: str, hooks: list[dict]) -> Config:
    # The example file quotes its numbers, so YAML 1.1 reads them unchanged,
    # but it reads a hook's `on:` key as True.
    data = yaml.safe_load(EXAMPLE.read_text())
    for number in data["phoneNumbers"]:
        for hook in number.get("hooks", []):
            if True in hook:
                hook["on"] = hook.pop(True)
        if number["id"] == number_id:
            number["hooks"] = hooks
    return parse_config(json.dumps(data), config_dir=EXAMPLE.parent)
