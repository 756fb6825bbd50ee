"""Phone-number hooks and spoken prompts, on real SIP calls.

Speech is checked on the wire: the SIPp scenarios `uac-spoken-*.xml` offer
the port of an `RtpCounter` as the caller's audio, and the counter counts
the RTP packets the router sends there and those that carry sound
(`rtp_counter.py` describes how). A prompt of a few words lasts about two
seconds, which is a hundred 20 ms packets; the tests require at least
`MIN_VOICED_PACKETS` with sound, which silence never reaches.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from call_helpers import (
    ANSWERED,
    StartRouter,
    ended_call,
    place_call,
    reason_text,
    requires_espeak,
)
from harness import LOOPBACK, Daemon, free_port, phone_number
from rtp_counter import RtpCounter
from sipp_runner import SippResult, SippRuntime, requires_sipp
from webhook_server import RecordedRequest, WebhookServer

pytestmark = [pytest.mark.integration, requires_sipp]

SPOKEN = "uac-spoken-expect-bye.xml"
SPOKEN_REFER = "uac-spoken-refer-expect-202.xml"
REPORT = "end-of-call-report"
MIN_VOICED_PACKETS = 25
GREETING = "Thank you for calling. We are closed today."


@pytest.fixture
def rtp() -> Iterator[RtpCounter]:
    """The caller's audio port, counting the RTP packets that reach it."""
    counter = RtpCounter()
    yield counter
    counter.close()


def place_spoken_call(
    router: Daemon,
    rtp: RtpCounter,
    number: str,
    tmp_path: Path,
    scenario: str = SPOKEN,
    caller: str | None = None,
) -> SippResult:
    """Place a call whose caller audio goes to `rtp`; the daemon must speak."""
    assert not router.events("speech.unavailable"), "the daemon found no espeak-ng"
    extra = {"caller": caller} if caller else {}
    return place_call(
        router,
        scenario,
        number,
        tmp_path,
        ("-key", "rtp_port", str(rtp.port)),
        **extra,
    )


def bye_reason(result: SippResult) -> str | None:
    """Return the Reason header of the router's BYE."""
    (bye,) = result.requests("BYE")
    return bye.header("Reason")


def status_timeline(webhooks: WebhookServer, path: str) -> list[str]:
    """Wait for the report, then name each status message sent to `path`."""
    webhooks.wait_for_messages(REPORT, path=path)
    names = []
    for request in webhooks.requests(path):
        if request.message_type == "status-update":
            names.append(request.message["status"])
        elif request.message_type == REPORT:
            names.append("report")
    return names


def the_report(webhooks: WebhookServer) -> dict[str, Any]:
    requests: list[RecordedRequest] = webhooks.messages(REPORT)
    (report,) = requests
    return report.message


def ringing_hook(prefixes: list[str], action: dict[str, Any]) -> dict[str, Any]:
    return {
        "on": "call.ringing",
        "filters": [{"type": "startsWith", "key": "number", "startsWith": prefixes}],
        "do": [action],
    }


def ending_hook(reasons: list[str], action: dict[str, Any]) -> dict[str, Any]:
    return {
        "on": "call.ending",
        "filters": [{"type": "oneOf", "key": "call.endedReason", "oneOf": reasons}],
        "do": action,
    }


def sip_destination(verb: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": "sip",
        "sipUri": f"sip:desk@{LOOPBACK}:{free_port()}",
        "transferPlan": {"sipVerb": verb},
        **fields,
    }


# ----- call.ringing hooks -----------------------------------------------------------


@requires_espeak
def test_ringing_hook_says_and_hangs_up(
    start_router: StartRouter,
    router_config: dict[str, Any],
    runtime: SippRuntime,
    webhooks: WebhookServer,
    rtp: RtpCounter,
    tmp_path: Path,
) -> None:
    number = phone_number(router_config, "pn-static")
    number["hooks"] = [ringing_hook(["1415"], {"type": "say", "exact": GREETING})]
    router = start_router(router_config)

    result = place_spoken_call(router, rtp, "+14155550100", tmp_path)

    assert result.final_status == 200
    assert rtp.voiced_packets >= MIN_VOICED_PACKETS, rtp
    assert bye_reason(result) == 'SIP;cause=200;text="call.ringing.hook-executed-say"'
    assert runtime.invites() == []
    ended = ended_call(router)
    assert ended["ended_reason"] == "call.ringing.hook-executed-say"
    assert ended["outcome"] == "rejected"
    timeline = status_timeline(webhooks, "/webhook")
    assert timeline == ["ringing", "in-progress", "ended", "report"]
    assert the_report(webhooks)["endedReason"] == "call.ringing.hook-executed-say"


@pytest.mark.parametrize(
    ("caller", "prefixes"),
    [("+14155559876", ["44", "1212"]), ("+442071234567", ["4420"])],
    ids=["prefix-not-matching", "prefix-matching"],
)
def test_ringing_hook_prefix_picks_caller(
    start_router: StartRouter,
    router_config: dict[str, Any],
    runtime: SippRuntime,
    tmp_path: Path,
    caller: str,
    prefixes: list[str],
) -> None:
    destination = sip_destination("redirect")
    number = phone_number(router_config, "pn-static")
    number["hooks"] = [
        ringing_hook(prefixes, {"type": "transfer", "destination": destination})
    ]
    router = start_router(router_config)
    matches = caller.removeprefix("+").startswith(tuple(prefixes))

    scenario = "uac-expect-302.xml" if matches else ANSWERED
    result = place_call(router, scenario, "+14155550100", tmp_path, caller=caller)

    ended = ended_call(router)
    if matches:
        assert destination["sipUri"] in (result.final_response.header("Contact") or "")
        assert ended["ended_reason"] == "call.ringing.hook-executed-transfer"
        assert runtime.invites() == []
    else:
        assert result.final_status == 200
        assert len(runtime.wait_for_invites(1)) == 1
        assert ended["ended_reason"] == "customer-ended-call"


def test_ringing_hook_transfers_by_refer(
    start_router: StartRouter,
    router_config: dict[str, Any],
    webhooks: WebhookServer,
    tmp_path: Path,
) -> None:
    destination = sip_destination("refer")
    number = phone_number(router_config, "pn-ask")
    number["hooks"] = [
        ringing_hook(["1"], {"type": "transfer", "destination": destination})
    ]
    router = start_router(router_config)

    result = place_call(router, "uac-refer-expect-202.xml", "+14155550101", tmp_path)

    (refer,) = result.requests("REFER")
    assert destination["sipUri"] in (refer.header("Refer-To") or "")
    ended = ended_call(router)
    assert ended["ended_reason"] == "call.ringing.hook-executed-transfer"
    assert ended["outcome"] == "transferred"
    timeline = status_timeline(webhooks, "/webhook")
    assert timeline == ["ringing", "forwarding", "ended", "report"]
    report = the_report(webhooks)
    assert report["endedReason"] == "call.ringing.hook-executed-transfer"
    assert report["destination"]["sipUri"] == destination["sipUri"]
    assert webhooks.messages("assistant-request") == []


def test_ringing_transfer_without_destination_uses_fallback(
    start_router: StartRouter,
    router_config: dict[str, Any],
    webhooks: WebhookServer,
    tmp_path: Path,
) -> None:
    number = phone_number(router_config, "pn-fallback")
    number["hooks"] = [ringing_hook(["1"], {"type": "transfer"})]
    router = start_router(router_config)

    result = place_call(router, "uac-expect-302.xml", "+14155550102", tmp_path)

    fallback = number["fallbackDestination"]["sipUri"]
    assert fallback in (result.final_response.header("Contact") or "")
    ended = ended_call(router)
    assert ended["ended_reason"] == "call.ringing.hook-executed-transfer"
    assert webhooks.messages("assistant-request") == []


# ----- call.ending hooks ------------------------------------------------------------


def test_ending_hook_transfers_on_failed_request(
    start_router: StartRouter,
    router_config: dict[str, Any],
    webhooks: WebhookServer,
    tmp_path: Path,
) -> None:
    destination = sip_destination("redirect")
    number = phone_number(router_config, "pn-fallback")
    number["hooks"] = [
        ending_hook(
            ["assistant-request-failed"],
            {"type": "transfer", "destination": destination},
        )
    ]
    router = start_router(router_config)
    webhooks.reply("/broken", status=500)

    result = place_call(router, "uac-expect-302.xml", "+14155550102", tmp_path)

    # The hook runs before the fallback destination, which stays unused.
    contact = result.final_response.header("Contact") or ""
    assert destination["sipUri"] in contact
    assert number["fallbackDestination"]["sipUri"] not in contact
    ended = ended_call(router)
    assert ended["ended_reason"] == "call.ending.hook-executed-transfer"
    assert ended["outcome"] == "transferred"
    assert len(webhooks.messages("assistant-request", "/broken")) == 1
    timeline = status_timeline(webhooks, "/broken")
    assert timeline == ["ringing", "forwarding", "ended", "report"]


@requires_espeak
def test_ending_hook_says_on_failed_request(
    start_router: StartRouter,
    router_config: dict[str, Any],
    webhooks: WebhookServer,
    rtp: RtpCounter,
    tmp_path: Path,
) -> None:
    number = phone_number(router_config, "pn-ask")
    number["hooks"] = [
        ending_hook(
            ["assistant-request-failed"],
            {"type": "say", "exact": "Sorry, we cannot take your call now."},
        )
    ]
    router = start_router(router_config)
    webhooks.reply("/webhook", status=503)

    result = place_spoken_call(router, rtp, "+14155550101", tmp_path)

    assert rtp.voiced_packets >= MIN_VOICED_PACKETS, rtp
    assert bye_reason(result) == 'SIP;cause=200;text="call.ending.hook-executed-say"'
    ended = ended_call(router)
    assert ended["ended_reason"] == "call.ending.hook-executed-say"
    assert ended["outcome"] == "failed"


def test_ending_hook_for_other_reason_leaves_fallback(
    start_router: StartRouter,
    router_config: dict[str, Any],
    webhooks: WebhookServer,
    tmp_path: Path,
) -> None:
    number = phone_number(router_config, "pn-fallback")
    number["hooks"] = [
        ending_hook(
            ["assistant-request-returned-no-assistant"],
            {"type": "say", "exact": "Nobody is here."},
        )
    ]
    router = start_router(router_config)
    webhooks.reply("/broken", status=500)

    result = place_call(router, "uac-expect-302.xml", "+14155550102", tmp_path)

    fallback = number["fallbackDestination"]["sipUri"]
    assert fallback in (result.final_response.header("Contact") or "")
    assert ended_call(router)["ended_reason"] == "assistant-request-failed"


# ----- spoken replies and messages ---------------------------------------------------


@requires_espeak
def test_error_reply_is_spoken(
    router: Daemon,
    webhooks: WebhookServer,
    rtp: RtpCounter,
    tmp_path: Path,
) -> None:
    webhooks.reply("/webhook", {"error": "Sorry, this line is closed."})

    result = place_spoken_call(router, rtp, "+14155550101", tmp_path)

    assert result.final_status == 200
    assert rtp.voiced_packets >= MIN_VOICED_PACKETS, rtp
    assert rtp.other_datagrams == 0
    assert bye_reason(result) == 'SIP;cause=200;text="assistant-request-returned-error"'
    ended = ended_call(router)
    assert ended["ended_reason"] == "assistant-request-returned-error"
    assert ended["outcome"] == "failed"
    assert ended["sip_status"] == 200
    timeline = status_timeline(webhooks, "/webhook")
    assert timeline == ["ringing", "in-progress", "ended", "report"]


@requires_espeak
def test_destination_message_spoken_before_refer(
    router: Daemon,
    webhooks: WebhookServer,
    rtp: RtpCounter,
    tmp_path: Path,
) -> None:
    destination = sip_destination("refer", message="Please hold, connecting you.")
    webhooks.reply("/webhook", {"destination": destination})

    result = place_spoken_call(router, rtp, "+14155550101", tmp_path, SPOKEN_REFER)

    assert rtp.voiced_packets >= MIN_VOICED_PACKETS, rtp
    (refer,) = result.requests("REFER")
    assert destination["sipUri"] in (refer.header("Refer-To") or "")
    ended = ended_call(router)
    assert ended["ended_reason"] == "assistant-request-returned-forwarding-phone-number"
    timeline = status_timeline(webhooks, "/webhook")
    assert timeline == ["ringing", "forwarding", "ended", "report"]


@requires_espeak
def test_prompts_are_rendered_once(
    router: Daemon,
    webhooks: WebhookServer,
    tmp_path: Path,
) -> None:
    webhooks.reply("/webhook", {"error": "One moment."})

    for _ in range(2):
        with_counter = RtpCounter()
        try:
            place_spoken_call(router, with_counter, "+14155550101", tmp_path)
        finally:
            with_counter.close()
        assert with_counter.voiced_packets > 0

    assert len(router.events("speech.rendered")) == 1


# ----- without espeak-ng -----------------------------------------------------------


@pytest.mark.parametrize(
    ("hooks", "reply", "text", "reason"),
    [
        (
            [],
            {"error": "Sorry, this line is closed."},
            "Sorry, this line is closed.",
            "assistant-request-returned-error",
        ),
        (
            [ringing_hook(["1"], {"type": "say", "exact": GREETING})],
            {},
            GREETING,
            "call.ringing.hook-executed-say",
        ),
    ],
    ids=["error-reply", "say-hook"],
)
def test_text_in_reason_without_espeak(
    start_router: StartRouter,
    router_config: dict[str, Any],
    webhooks: WebhookServer,
    tmp_path: Path,
    hooks: list[dict[str, Any]],
    reply: dict[str, Any],
    text: str,
    reason: str,
) -> None:
    phone_number(router_config, "pn-ask")["hooks"] = hooks
    empty = tmp_path / "empty-path"
    empty.mkdir()
    router = start_router(router_config, env={"PATH": str(empty)})
    webhooks.reply("/webhook", reply)

    for _ in range(2):
        result = place_call(router, "uac-expect-480.xml", "+14155550101", tmp_path)
        assert result.final_status == 480
        assert reason_text(result) == f'SIP;cause=480;text="{text}"'

    assert len(router.events("speech.unavailable")) == 1
    ended = router.events("call.ended")
    assert [event["ended_reason"] for event in ended] == [reason, reason]
