"""Transfers by REFER that the trunk rejects, over real SIP.

SIPp is the trunk side: it answers the router's REFER with an error, never
answers it, or accepts it and then reports a failure in a NOTIFY. The router
must then call the destination itself (a SIPp UAS) and bridge the media,
and report the transfer on the status webhooks, in its log and metrics.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from call_helpers import StartRouter, ended_call
from harness import Daemon, MetricSamples, phone_number
from sipp_runner import SippResult, SippRuntime, requires_sipp, run_sipp
from webhook_server import WebhookServer

pytestmark = [pytest.mark.integration, requires_sipp]

FALLBACK_NUMBER = "+14155550102"
FAILURE = "assistant-request-failed"
REPORT = "end-of-call-report"
# The router waits 10 s for a final NOTIFY before it gives up on a REFER.
REFER_TIMEOUT_SECONDS = 10


@pytest.fixture
def destination(tmp_path: Path) -> Iterator[SippRuntime]:
    """The transfer destination: a SIPp UAS that answers and holds the call."""
    process = SippRuntime("uas-runtime.xml", tmp_path)
    yield process
    process.stop()


@pytest.fixture
def refusing_destination(tmp_path: Path) -> Iterator[SippRuntime]:
    """A transfer destination that answers every INVITE with 486."""
    process = SippRuntime("uas-runtime-reject-486.xml", tmp_path)
    yield process
    process.stop()


def start_with_refer_fallback(
    start_router: StartRouter,
    config: dict[str, Any],
    webhooks: WebhookServer,
    target: SippRuntime,
) -> Daemon:
    """Start the router with `target` as pn-fallback's REFER destination.

    pn-fallback's server fails with 500, so every call to it goes to the
    fallback destination.
    """
    number = phone_number(config, "pn-fallback")
    number["fallbackDestination"] = {
        "type": "sip",
        "sipUri": target.uri,
        "transferPlan": {"sipVerb": "refer"},
    }
    webhooks.reply("/broken", status=500)
    # The tests wait for `call.bridged`, a debug event.
    config["router"]["logLevel"] = "debug"
    return start_router(config)


def place_refer_call(
    router: Daemon,
    scenario: str,
    keys: dict[str, str],
    log_dir: Path,
    hold_ms: int = 1500,
) -> SippResult:
    """Place one call of a `uac-refer-*` scenario to pn-fallback.

    A `-expect-bridge` caller holds the call for `hold_ms` after the REFER,
    then hangs up.
    """
    arguments: list[str] = []
    for name, value in keys.items():
        arguments += ["-key", name, value]
    if scenario.endswith("-expect-bridge.xml"):
        arguments += ["-set", "hold", str(hold_ms)]
    result = run_sipp(
        scenario,
        router.sip_target,
        FALLBACK_NUMBER,
        arguments,
        timeout=30,
        log_dir=log_dir,
    )
    assert result.exit_code == 0, result.describe()
    return result


def status_timeline(webhooks: WebhookServer) -> list[str]:
    """Wait for the call's report, then name its status messages in order."""
    webhooks.wait_for_messages(REPORT, path="/broken")
    names = []
    for request in webhooks.requests("/broken"):
        if request.message_type == "status-update":
            names.append(request.message["status"])
        elif request.message_type == REPORT:
            names.append("report")
    return names


def transfers(metrics: MetricSamples, verb: str, result: str) -> float:
    return metrics.value("cozmox_router_transfers_total", verb=verb, result=result)


def report(webhooks: WebhookServer) -> dict[str, Any]:
    (request,) = webhooks.messages(REPORT, "/broken")
    return request.message


REFUSALS = [
    pytest.param(
        "uac-refer-rejected-expect-bridge.xml",
        {"refer_response": "SIP/2.0 405 Method Not Allowed"},
        (405, "rejected"),
        id="refer-405",
    ),
    pytest.param(
        "uac-refer-rejected-expect-bridge.xml",
        {"refer_response": "SIP/2.0 501 Not Implemented"},
        (501, "rejected"),
        id="refer-501",
    ),
    pytest.param(
        "uac-refer-rejected-expect-bridge.xml",
        {"refer_response": "SIP/2.0 603 Decline"},
        (603, "rejected"),
        id="refer-603",
    ),
    pytest.param(
        "uac-refer-notify-fails-expect-bridge.xml",
        {"sipfrag_status": "503", "sipfrag_reason": "Service Unavailable"},
        (503, "notify_failed"),
        id="notify-503",
    ),
    pytest.param(
        "uac-refer-notify-fails-expect-bridge.xml",
        {"sipfrag_status": "486", "sipfrag_reason": "Busy Here"},
        (486, "notify_failed"),
        id="notify-486",
    ),
]


@pytest.mark.parametrize(("scenario", "keys", "refusal"), REFUSALS)
def test_refused_refer_falls_back_to_dial(
    start_router: StartRouter,
    router_config: dict[str, Any],
    webhooks: WebhookServer,
    destination: SippRuntime,
    tmp_path: Path,
    scenario: str,
    keys: dict[str, str],
    refusal: tuple[int, str],
) -> None:
    status, refer_result = refusal
    router = start_with_refer_fallback(
        start_router, router_config, webhooks, destination
    )

    result = place_refer_call(router, scenario, keys, tmp_path)

    (refer,) = result.requests("REFER")
    assert destination.uri in (refer.header("Refer-To") or "")
    assert result.requests("BYE") == []
    assert len(destination.wait_for_invites(1)) == 1
    failed = router.wait_for_event("call.refer_failed")
    assert failed["status"] == status
    assert failed["result"] == refer_result
    assert router.wait_for_event("call.bridged")
    assert_bridged_transfer_reported(router, webhooks, destination, refer_result)


def test_unanswered_refer_falls_back_to_dial(
    start_router: StartRouter,
    router_config: dict[str, Any],
    webhooks: WebhookServer,
    destination: SippRuntime,
    tmp_path: Path,
) -> None:
    router = start_with_refer_fallback(
        start_router, router_config, webhooks, destination
    )
    started = time.monotonic()

    # The caller holds past the REFER timeout, so the bridge is up before
    # it hangs up.
    hold_ms = (REFER_TIMEOUT_SECONDS + 3) * 1000
    result = place_refer_call(
        router, "uac-refer-unanswered-expect-bridge.xml", {}, tmp_path, hold_ms
    )

    assert time.monotonic() - started >= REFER_TIMEOUT_SECONDS
    # pjsip retransmits the REFER over UDP until its Timer F, and SIPp
    # absorbs the copies. The test checks the first one.
    refer = result.requests("REFER")[0]
    assert destination.uri in (refer.header("Refer-To") or "")
    assert len(destination.wait_for_invites(1)) == 1
    assert router.wait_for_event("call.refer_timed_out")
    assert router.wait_for_event("call.bridged")
    assert_bridged_transfer_reported(router, webhooks, destination, "timed_out")


def assert_bridged_transfer_reported(
    router: Daemon,
    webhooks: WebhookServer,
    destination: SippRuntime,
    refer_result: str,
) -> None:
    """Check the webhooks, log event and metrics of a REFER that fell back."""
    assert status_timeline(webhooks) == [
        "ringing",
        "forwarding",
        "in-progress",
        "ended",
        "report",
    ]
    message = report(webhooks)
    assert message["endedReason"] == FAILURE
    assert message["destination"]["sipUri"] == destination.uri
    assert message["answeredAt"] is not None
    ended = ended_call(router)
    assert ended["outcome"] == "transferred"
    assert ended["ended_reason"] == FAILURE
    metrics = router.metrics()
    assert (
        metrics.value(
            "cozmox_router_calls_total", outcome="transferred", ended_reason=FAILURE
        )
        == 1
    )
    assert transfers(metrics, "refer", refer_result) == 1
    assert transfers(metrics, "dial", "bridged") == 1
    assert metrics.value("cozmox_router_active_calls") == 0


def test_refused_refer_and_dial_end_call(
    start_router: StartRouter,
    router_config: dict[str, Any],
    webhooks: WebhookServer,
    refusing_destination: SippRuntime,
    tmp_path: Path,
) -> None:
    router = start_with_refer_fallback(
        start_router, router_config, webhooks, refusing_destination
    )
    keys = {"refer_response": "SIP/2.0 405 Method Not Allowed"}

    result = place_refer_call(
        router, "uac-refer-rejected-expect-bye.xml", keys, tmp_path
    )

    (bye,) = result.requests("BYE")
    assert bye.header("Reason") == f'SIP;cause=480;text="{FAILURE}"'
    assert len(refusing_destination.wait_for_invites(1)) == 1
    assert router.wait_for_event("call.refer_failed")["status"] == 405
    assert status_timeline(webhooks) == ["ringing", "forwarding", "ended", "report"]
    message = report(webhooks)
    assert message["endedReason"] == FAILURE
    assert message["destination"]["sipUri"] == refusing_destination.uri
    ended = ended_call(router)
    assert ended["ended_reason"] == FAILURE
    metrics = router.metrics()
    assert transfers(metrics, "refer", "rejected") == 1
    assert transfers(metrics, "dial", "failed") == 1
    assert transfers(metrics, "dial", "bridged") == 0


def test_hook_transfer_refused_refer_dials(
    start_router: StartRouter,
    router_config: dict[str, Any],
    webhooks: WebhookServer,
    destination: SippRuntime,
    tmp_path: Path,
) -> None:
    number = phone_number(router_config, "pn-ask")
    number["hooks"] = [
        {
            "on": "call.ringing",
            "filters": [],
            "do": [
                {
                    "type": "transfer",
                    "destination": {
                        "type": "sip",
                        "sipUri": destination.uri,
                        "transferPlan": {"sipVerb": "refer"},
                    },
                }
            ],
        }
    ]
    router = start_router(router_config)

    result = run_sipp(
        "uac-refer-rejected-expect-bridge.xml",
        router.sip_target,
        "+14155550101",
        ["-key", "refer_response", "SIP/2.0 603 Decline", "-set", "hold", "1500"],
        timeout=30,
        log_dir=tmp_path,
    )

    assert result.exit_code == 0, result.describe()
    assert len(destination.wait_for_invites(1)) == 1
    assert router.wait_for_event("call.refer_failed")["status"] == 603
    ended = ended_call(router)
    assert ended["ended_reason"] == "call.ringing.hook-executed-transfer"
    assert ended["outcome"] == "transferred"
    webhooks.wait_for_messages(REPORT, path="/webhook")
    (request,) = webhooks.messages(REPORT, "/webhook")
    assert request.message["destination"]["sipUri"] == destination.uri
    metrics = router.metrics()
    assert transfers(metrics, "refer", "rejected") == 1
    assert transfers(metrics, "dial", "bridged") == 1
    assert webhooks.messages("assistant-request") == []
