"""Webhook servers that misbehave: every call still ends on time.

A number without a fallback gets 480 with the endedReason in its Reason
header, and one with a fallback is redirected to it. Both happen within
the assistant-request deadline, and calls that need no webhook go on
meanwhile.
Replies that are plain failures (HTTP 500, invalid JSON) and a CANCEL
during the request are covered in test_call_routes.py.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from call_helpers import ANSWERED, StartRouter, ended_call, place_call, reason_text
from harness import Daemon, phone_number
from sipp_runner import SippRuntime, requires_sipp, start_sipp
from webhook_server import REDIRECT_PATH, WebhookServer

pytestmark = [pytest.mark.integration, requires_sipp]

DEADLINE_SECONDS = 2
# SIPp, the daemon and the webhook server share 2 cores with other tests.
MARGIN_SECONDS = 1.5


@pytest.fixture
def router(start_router: StartRouter, router_config: dict[str, Any]) -> Daemon:
    """The daemon with a 2 s assistant-request deadline."""
    router_config["router"]["assistantRequestDeadlineSeconds"] = DEADLINE_SECONDS
    return start_router(router_config)


def result_count(router: Daemon, result: str) -> float:
    return router.metrics().value(
        "cozmox_router_assistant_request_seconds_count", result=result
    )


@pytest.mark.parametrize(
    ("reply", "result"),
    [
        ({"json_body": {"assistantId": "asst-late"}, "delay_seconds": 60}, "timeout"),
        ({"misbehaviour": "slow-headers"}, "timeout"),
        ({"misbehaviour": "reset"}, "transport-error"),
        ({"misbehaviour": "redirect"}, "http-error"),
        ({"status": 503, "json_body": {"error": "overloaded"}}, "http-error"),
        # The response never ends after its 10 MB, so only a cap enforced while reading
        # gives "oversize" before the deadline.
        ({"misbehaviour": "huge-body"}, "oversize"),
    ],
    ids=["hang", "slow-headers", "reset", "redirect-302", "status-503", "body-10mb"],
)
def test_misbehaving_server_gets_480_in_time(
    router: Daemon,
    webhooks: WebhookServer,
    runtime: SippRuntime,
    tmp_path: Path,
    reply: dict[str, Any],
    result: str,
) -> None:
    webhooks.reply("/webhook", **reply)
    # Reached only if the router followed the redirect.
    webhooks.reply(REDIRECT_PATH, {"assistantId": "asst-redirected"})

    started = time.monotonic()
    sipp = place_call(router, "uac-expect-480.xml", "+14155550101", tmp_path)
    elapsed = time.monotonic() - started

    assert sipp.final_status == 480
    assert reason_text(sipp) == 'SIP;cause=480;text="assistant-request-failed"'
    assert elapsed < DEADLINE_SECONDS + MARGIN_SECONDS, f"took {elapsed:.1f} s"
    ended = ended_call(router)
    assert ended["outcome"] == "failed"
    assert ended["ended_reason"] == "assistant-request-failed"
    assert result_count(router, result) == 1
    assert webhooks.requests(REDIRECT_PATH) == []
    assert runtime.invites() == []


def test_hanging_server_falls_back_in_time(
    router: Daemon, webhooks: WebhookServer, tmp_path: Path
) -> None:
    webhooks.reply("/broken", {"assistantId": "asst-late"}, delay_seconds=60)
    fallback = phone_number(router.config, "pn-fallback")["fallbackDestination"]

    started = time.monotonic()
    sipp = place_call(router, "uac-expect-302.xml", "+14155550102", tmp_path)
    elapsed = time.monotonic() - started

    assert sipp.final_status == 302
    assert fallback["sipUri"] in (sipp.final_response.header("Contact") or "")
    assert elapsed < DEADLINE_SECONDS + MARGIN_SECONDS, f"took {elapsed:.1f} s"
    ended = ended_call(router)
    assert ended["outcome"] == "transferred"
    assert ended["ended_reason"] == "assistant-request-failed"
    assert result_count(router, "timeout") == 1


def test_static_call_connects_while_webhook_hangs(
    start_router: StartRouter,
    router_config: dict[str, Any],
    webhooks: WebhookServer,
    tmp_path: Path,
) -> None:
    # In redirect mode a call holds one slot, so both calls fit the 4 slots
    # of the PyPI wheel; a bridged call would take the spare one.
    router_config["router"]["runtime"]["mode"] = "redirect"
    router_config["router"]["assistantRequestDeadlineSeconds"] = 5
    router = start_router(router_config)
    webhooks.reply("/webhook", {"assistantId": "asst-late"}, delay_seconds=60)

    pending = start_sipp(
        "uac-expect-480.xml",
        router.sip_target,
        "+14155550101",
        timeout=20,
        log_dir=tmp_path,
    )
    try:
        webhooks.wait_for_messages("assistant-request", path="/webhook")
        started = time.monotonic()
        static = place_call(router, "uac-expect-302.xml", "+14155550100", tmp_path)
        elapsed = time.monotonic() - started

        assert static.final_status == 302
        assert elapsed < 1.0, f"static call answered after {elapsed:.2f} s"
        # The hanging request is still pending when the static call ends.
        assert pending.process.poll() is None
        assert webhooks.requests("/webhook")[0].status is None
        waiting = pending.finish()
    finally:
        pending.stop()
    assert waiting.final_status == 480
    assert reason_text(waiting) == 'SIP;cause=480;text="assistant-request-failed"'


def test_resetting_status_receiver_leaves_calls_alone(
    start_router: StartRouter,
    router_config: dict[str, Any],
    webhooks: WebhookServer,
    runtime: SippRuntime,
    tmp_path: Path,
) -> None:
    # A hanging status receiver is covered in test_status_webhooks.py.
    router_config["org"]["server"]["url"] = webhooks.url("/status")
    router = start_router(router_config)
    webhooks.reply("/status", misbehaviour="reset")

    started = time.monotonic()
    sipp = place_call(router, ANSWERED, "+14155550100", tmp_path)
    elapsed = time.monotonic() - started

    assert sipp.final_status == 200
    # The call is held for 0.3 s after the answer.
    assert elapsed < 2.0, f"call took {elapsed:.1f} s"
    assert ended_call(router)["ended_reason"] == "customer-ended-call"
    webhooks.wait_for_requests("/status", count=4)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        failed = router.metrics().value(
            "cozmox_router_webhook_deliveries_total", result="transport-error"
        )
        if failed >= 4:
            break
        time.sleep(0.1)
    assert failed >= 4
