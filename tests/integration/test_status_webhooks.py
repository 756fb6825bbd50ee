"""Status webhooks of real SIP calls: what a receiver on 127.0.0.1 gets.

SIPp places each call; `webhook_server.WebhookServer` records every request
with the status it returned. A call's messages are sent one after the
other, so once its end-of-call-report has arrived every earlier message of
the call has too.
"""

from __future__ import annotations

import base64
import hmac
import re
import time
from pathlib import Path
from typing import Any

import pytest
from call_helpers import ANSWERED, StartRouter, ended_call, place_call
from harness import Daemon, phone_number
from sip_sender import Request, send_udp
from sipp_runner import CALLER_NUMBER, SippRuntime, requires_sipp
from webhook_server import RecordedRequest, WebhookServer

pytestmark = [pytest.mark.integration, requires_sipp]

REPORT = "end-of-call-report"
# How long a test waits for messages that must not come.
QUIET_SECONDS = 0.5


def timeline(requests: list[RecordedRequest]) -> list[str]:
    """Name each status message: its status, or `report` for the report."""
    names = []
    for request in requests:
        if request.message_type == "status-update":
            names.append(request.message["status"])
        elif request.message_type == REPORT:
            names.append("report")
    return names


def reports_of_one_call(webhooks: WebhookServer, path: str) -> list[RecordedRequest]:
    """Wait for the one end-of-call-report, then return every status message.

    Fails if a second report arrives within QUIET_SECONDS.
    """
    webhooks.wait_for_messages(REPORT, path=path)
    time.sleep(QUIET_SECONDS)
    assert len(webhooks.messages(REPORT)) == 1
    return [
        request
        for request in webhooks.requests(path)
        if request.message_type in ("status-update", REPORT)
    ]


def report_of(requests: list[RecordedRequest]) -> dict[str, Any]:
    (report,) = [r.message for r in requests if r.message_type == REPORT]
    return report


# ----- the messages of each outcome -----------------------------------------------


def test_answered_call_reports(
    router: Daemon, runtime: SippRuntime, webhooks: WebhookServer, tmp_path: Path
) -> None:
    place_call(router, ANSWERED, "+14155550100", tmp_path)

    requests = reports_of_one_call(webhooks, "/webhook")

    assert timeline(requests) == ["ringing", "in-progress", "ended", "report"]
    (invite,) = runtime.wait_for_invites(1)
    call_id = invite.header("X-Cozmox-Call-Id")
    assert {r.message["call"]["id"] for r in requests} == {call_id}
    ended = requests[2].message
    assert ended["endedReason"] == "customer-ended-call"
    report = report_of(requests)
    assert report["endedReason"] == "customer-ended-call"
    assert report["call"]["assistantId"] == "asst-support"
    assert report["phoneNumber"]["id"] == "pn-static"
    assert report["customer"]["number"] == CALLER_NUMBER
    assert report["startedAt"] < report["answeredAt"] < report["endedAt"]
    assert 0.3 <= report["durationSeconds"] < 10
    assert "destination" not in report
    assert ended_call(router, call_id=call_id)["outcome"] == "assistant"


def test_failed_call_reports(
    router: Daemon, webhooks: WebhookServer, tmp_path: Path
) -> None:
    webhooks.reply("/webhook", {})

    place_call(router, "uac-expect-480.xml", "+14155550101", tmp_path)

    requests = reports_of_one_call(webhooks, "/webhook")
    assert timeline(requests) == ["ringing", "ended", "report"]
    reason = "assistant-request-returned-no-assistant"
    assert requests[1].message["endedReason"] == reason
    report = report_of(requests)
    assert report["endedReason"] == reason
    assert report["answeredAt"] is None
    assert len(webhooks.messages("assistant-request")) == 1


def test_fallback_call_reports_destination(
    router: Daemon, webhooks: WebhookServer, tmp_path: Path
) -> None:
    webhooks.reply("/broken", status=500)
    fallback = phone_number(router.config, "pn-fallback")["fallbackDestination"]

    place_call(router, "uac-expect-302.xml", "+14155550102", tmp_path)

    # The number's own server gets its messages, even though it fails them.
    requests = reports_of_one_call(webhooks, "/broken")
    assert timeline(requests) == ["ringing", "forwarding", "ended", "report"]
    assert requests[1].message["destination"]["sipUri"] == fallback["sipUri"]
    report = report_of(requests)
    assert report["endedReason"] == "assistant-request-failed"
    assert report["destination"]["sipUri"] == fallback["sipUri"]
    assert webhooks.messages(path="/webhook") == []


def test_refer_fallback_reports(
    start_router: StartRouter,
    router_config: dict[str, Any],
    webhooks: WebhookServer,
    tmp_path: Path,
) -> None:
    fallback = phone_number(router_config, "pn-fallback")["fallbackDestination"]
    fallback["transferPlan"]["sipVerb"] = "refer"
    router = start_router(router_config)
    webhooks.reply("/broken", status=500)

    place_call(router, "uac-refer-expect-202.xml", "+14155550102", tmp_path)

    requests = reports_of_one_call(webhooks, "/broken")
    assert timeline(requests) == ["ringing", "forwarding", "ended", "report"]
    report = report_of(requests)
    assert report["endedReason"] == "assistant-request-failed"
    assert report["destination"]["transferPlan"]["sipVerb"] == "refer"
    assert report["answeredAt"] is not None


@pytest.mark.parametrize(
    ("scenario", "number", "reason", "number_id"),
    [
        (
            "uac-expect-404.xml",
            "+14155550199",
            "call.start.error-get-phone-number",
            None,
        ),
        (
            "uac-expect-403.xml",
            "+14155550103",
            "call.start.error-phone-number-blocked",
            "pn-blocked",
        ),
    ],
    ids=["unknown-number", "blocked-number"],
)
def test_rejected_call_reports(
    router: Daemon,
    webhooks: WebhookServer,
    tmp_path: Path,
    scenario: str,
    number: str,
    reason: str,
    number_id: str | None,
) -> None:
    place_call(router, scenario, number, tmp_path)

    requests = reports_of_one_call(webhooks, "/webhook")
    assert timeline(requests) == ["ended", "report"]
    report = report_of(requests)
    assert report["endedReason"] == reason
    assert report["call"]["phoneNumberId"] == number_id
    assert webhooks.messages("assistant-request") == []


def test_static_redirect_reports(
    start_router: StartRouter,
    router_config: dict[str, Any],
    runtime: SippRuntime,
    webhooks: WebhookServer,
    tmp_path: Path,
) -> None:
    # The engine sends this 302 from the INVITE alone, before the call path
    # runs, so the Contact and the reports must still name one call.
    router_config["router"]["runtime"]["mode"] = "redirect"
    router = start_router(router_config)

    result = place_call(router, "uac-expect-302.xml", "+14155550100", tmp_path)

    assert result.final_status == 302
    # Decided before the call path ran, but the call still rings first.
    statuses = [response.status for response in result.responses("INVITE")]
    assert 180 in statuses, statuses
    assert statuses.index(180) < statuses.index(302), statuses
    contact = result.final_response.header("Contact") or ""
    assert runtime.uri.removeprefix("sip:") in contact
    assert "X-Cozmox-Assistant-Id=asst-support" in contact
    assert "X-Cozmox-Phone-Number-Id=pn-static" in contact
    call_id = re.search(r"X-Cozmox-Call-Id=([0-9a-f-]{36})", contact).group(1)
    requests = reports_of_one_call(webhooks, "/webhook")
    assert timeline(requests) == ["ringing", "ended", "report"]
    assert {r.message["call"]["id"] for r in requests} == {call_id}
    report = report_of(requests)
    assert report["endedReason"] == "call.handoff.transferred-to-runtime"
    assert report["call"]["assistantId"] == "asst-support"
    ended = ended_call(router, call_id=call_id)
    assert ended["outcome"] == "assistant"
    assert ended["sip_status"] == 302
    metrics = router.metrics()
    assert (
        metrics.value(
            "cozmox_router_calls_total",
            outcome="assistant",
            ended_reason="call.handoff.transferred-to-runtime",
        )
        == 1
    )


def test_static_redirect_without_sdp(
    start_router: StartRouter,
    router_config: dict[str, Any],
    runtime: SippRuntime,
    webhooks: WebhookServer,
    tmp_path: Path,
) -> None:
    # An INVITE without SDP gets its 180 and 302 from the operation queue,
    # because pjsua aborts when they are sent inside onIncomingCall.
    router_config["router"]["runtime"]["mode"] = "redirect"
    router = start_router(router_config)
    no_sdp = Request(
        router.sip_port, number="+14155550100", body="", drop=("Content-Type",)
    )

    exchanges = send_udp([no_sdp.build] * 3, router.sip_port, interval_seconds=0.2)

    for exchange in exchanges:
        assert exchange.final == 302, exchange.statuses
        assert 180 in exchange.statuses, exchange.statuses
        assert exchange.statuses.index(180) < exchange.statuses.index(302)
    assert router.process.poll() is None, router.stderr_text()[-2000:]
    requests = webhooks.requests("/webhook")
    reports = [r for r in requests if r.message["type"] == "end-of-call-report"]
    assert len(reports) == 3
    assert {r.message["endedReason"] for r in reports} == {
        "call.handoff.transferred-to-runtime"
    }
    # A call with SDP still routes afterwards.
    result = place_call(router, "uac-expect-302.xml", "+14155550100", tmp_path)
    assert result.final_status == 302


def test_unknown_source_gets_no_webhook(
    start_router: StartRouter,
    router_config: dict[str, Any],
    webhooks: WebhookServer,
    tmp_path: Path,
) -> None:
    router_config["credentials"][0]["gateways"] = [{"ip": "127.0.0.2", "netmask": 32}]
    router = start_router(router_config)

    place_call(router, "uac-expect-403.xml", "+14155550100", tmp_path)

    ended_call(router)
    time.sleep(QUIET_SECONDS)
    assert webhooks.requests() == []


# ----- which server ---------------------------------------------------------------


def test_inline_assistant_server_first(
    router: Daemon, runtime: SippRuntime, webhooks: WebhookServer, tmp_path: Path
) -> None:
    assistant = {"name": "Inline", "server": {"url": webhooks.url("/inline")}}
    webhooks.reply("/webhook", {"assistant": assistant})

    place_call(router, ANSWERED, "+14155550101", tmp_path)

    inline = reports_of_one_call(webhooks, "/inline")
    assert timeline(inline) == ["in-progress", "ended", "report"]
    # Before the reply chose the assistant, the org's server got them. The
    # status-update is queued and the assistant-request is not, so either
    # may arrive first.
    org = webhooks.messages(path="/webhook")
    assert sorted(r.message_type for r in org) == [
        "assistant-request",
        "status-update",
    ]
    assert timeline(org) == ["ringing"]


# ----- retries and a receiver that hangs ------------------------------------------


def test_receiver_recovers_after_failures(
    start_router: StartRouter,
    router_config: dict[str, Any],
    runtime: SippRuntime,
    webhooks: WebhookServer,
    tmp_path: Path,
) -> None:
    router_config["org"]["server"]["backoffPlan"] = {
        "type": "fixed",
        "maxRetries": 3,
        "baseDelaySeconds": 0.2,
    }
    router = start_router(router_config)
    webhooks.fail_first("/webhook", 3, status=503)

    place_call(router, ANSWERED, "+14155550100", tmp_path)

    webhooks.wait_for_messages(REPORT, accepted_only=True, timeout=10)
    requests = webhooks.requests("/webhook")
    assert [r.status for r in requests[:4]] == [503, 503, 503, 200]
    assert timeline(requests[:4]) == ["ringing"] * 4
    accepted = webhooks.messages(accepted_only=True)
    assert timeline(accepted) == ["ringing", "in-progress", "ended", "report"]
    metrics = router.metrics()
    ok = metrics.value("cozmox_router_webhook_deliveries_total", result="ok")
    assert ok == 4


def test_excluded_status_is_not_retried(
    start_router: StartRouter,
    router_config: dict[str, Any],
    runtime: SippRuntime,
    webhooks: WebhookServer,
    tmp_path: Path,
) -> None:
    router_config["org"]["server"]["backoffPlan"] = {
        "maxRetries": 3,
        "baseDelaySeconds": 0.1,
        "excludedStatusCodes": [400],
    }
    router = start_router(router_config)
    webhooks.fail_first("/webhook", 1, status=400)

    place_call(router, ANSWERED, "+14155550100", tmp_path)

    requests = reports_of_one_call(webhooks, "/webhook")
    assert timeline(requests) == ["ringing", "in-progress", "ended", "report"]
    assert [r.status for r in requests] == [400, 200, 200, 200]
    metrics = router.metrics()
    assert (
        metrics.value(
            "cozmox_router_webhook_deliveries_total",
            type="status-update",
            result="http-error",
        )
        == 1
    )


def test_hanging_receiver_leaves_calls_alone(
    start_router: StartRouter,
    router_config: dict[str, Any],
    webhooks: WebhookServer,
    tmp_path: Path,
) -> None:
    router_config["org"]["server"] = {
        "url": webhooks.url("/hang"),
        "timeoutSeconds": 30,
    }
    router_config["router"]["webhookDelivery"] = {
        "queueSize": 3,
        "maxConcurrentRequests": 1,
        "flushSeconds": 1,
    }
    router = start_router(router_config)
    webhooks.reply("/hang", {}, delay_seconds=60)
    calls = 4

    for _ in range(calls):
        started = time.monotonic()
        result = place_call(router, "uac-expect-403.xml", "+14155550103", tmp_path)
        assert result.final_status == 403
        assert time.monotonic() - started < 2

    # A call queues its report right after it logs `call.ended`.
    deadline = time.monotonic() + 5
    while len(router.events("call.ended")) < calls and time.monotonic() < deadline:
        time.sleep(0.05)
    # Each call queues 2 messages: 1 is in flight, 3 wait and the rest drop.
    metrics = router.metrics()
    assert metrics.value("cozmox_router_webhook_queue_depth") == 3
    assert metrics.value("cozmox_router_webhook_queue_dropped_total") == 2 * calls - 4
    assert len(webhooks.requests("/hang")) == 1
    assert router.events("webhook.dropped")


# ----- authentication -------------------------------------------------------------

HMAC_KEY = "integration-hmac-key"


def verify_hmac(
    request: RecordedRequest, plan: dict[str, Any], key: str, url: str
) -> bool:
    """Check a request's signature as a receiver would, per `plan`.

    `url` is the server URL the router was configured with.
    """
    timestamp = request.header(plan.get("timestampHeader", "x-timestamp")) or ""
    signature = request.header(plan.get("signatureHeader", "x-signature")) or ""
    values = {
        b"timestamp": timestamp.encode(),
        b"method": request.method.encode(),
        b"url": url.encode(),
        b"body": request.body,
    }
    # One pass over the format, so a placeholder inside the body stays as is.
    payload = re.sub(
        rb"\{(timestamp|method|url|body)\}",
        lambda match: values[match.group(1)],
        plan.get("payloadFormat", "{timestamp}.{body}").encode(),
    )
    digest = hmac.new(key.encode(), payload, plan.get("algorithm", "sha256")).digest()
    if plan.get("signatureEncoding") == "base64":
        expected = base64.b64encode(digest).decode()
    else:
        expected = digest.hex()
    expected = plan.get("signaturePrefix", "") + expected
    return hmac.compare_digest(signature, expected)


HMAC_PLANS = [
    pytest.param({"algorithm": "sha256"}, id="defaults"),
    pytest.param(
        {
            "algorithm": "sha512",
            "signatureHeader": "X-Hub-Signature",
            "timestampHeader": "X-Hub-Time",
            "payloadFormat": "{method}\n{url}\n{timestamp}\n{body}",
            "signaturePrefix": "v1=",
            "signatureEncoding": "base64",
        },
        id="custom",
    ),
]


@pytest.mark.parametrize("plan", HMAC_PLANS)
def test_receiver_verifies_hmac(
    start_router: StartRouter,
    router_config: dict[str, Any],
    runtime: SippRuntime,
    webhooks: WebhookServer,
    tmp_path: Path,
    plan: dict[str, Any],
) -> None:
    router_config["credentials"].append(
        {
            "id": "signing",
            "provider": "webhook",
            "name": "Signing",
            "authenticationPlan": {"type": "hmac", "secretKey": HMAC_KEY, **plan},
        }
    )
    router_config["org"]["server"]["credentialId"] = "signing"
    url = router_config["org"]["server"]["url"]
    webhooks.reply("/webhook", {"assistantId": "asst-sales"})
    router = start_router(router_config)

    place_call(router, ANSWERED, "+14155550101", tmp_path)

    webhooks.wait_for_messages(REPORT)
    requests = webhooks.requests()
    assert len(requests) == 5
    assert len(webhooks.messages("assistant-request")) == 1
    for request in requests:
        assert verify_hmac(request, plan, HMAC_KEY, url), request.headers
        assert not verify_hmac(request, plan, "a-wrong-key", url)


def test_receiver_checks_bearer_and_headers(
    start_router: StartRouter,
    router_config: dict[str, Any],
    runtime: SippRuntime,
    webhooks: WebhookServer,
    tmp_path: Path,
) -> None:
    router_config["credentials"].append(
        {
            "id": "bearer",
            "provider": "webhook",
            "name": "Bearer",
            "authenticationPlan": {"type": "bearer", "token": "integration-token"},
        }
    )
    router_config["org"]["server"].update(
        credentialId="bearer", secret="shared-secret", headers={"X-Tenant": "acme"}
    )
    router = start_router(router_config)
    webhooks.reply("/webhook", {"assistantId": "asst-sales"})

    place_call(router, ANSWERED, "+14155550101", tmp_path)

    webhooks.wait_for_messages(REPORT)
    requests = webhooks.requests("/webhook")
    assert len(requests) == 5
    for request in requests:
        assert request.header("Authorization") == "Bearer integration-token"
        assert request.header("Authorization") != "Bearer a-wrong-token"
        assert request.header("X-Cozmox-Secret") == "shared-secret"
        assert request.header("X-Tenant") == "acme"
    assert "integration-token" not in router.stderr_text()
    assert "shared-secret" not in router.stderr_text()
