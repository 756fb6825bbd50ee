"""One real SIP call per route: SIPp calls the daemon on 127.0.0.1.

Each test asserts the response SIPp received and the log event or metric
that the call produced. The numbers and their routes are those of
`harness.base_config()`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from call_helpers import (
    ANSWERED,
    StartRouter,
    ended_call,
    place_call,
    reason_text,
)
from harness import Daemon, free_port, phone_number
from sipp_runner import (
    CALLER_NUMBER,
    SippCall,
    SippRuntime,
    requires_sipp,
    start_sipp,
)
from webhook_server import WebhookServer

pytestmark = [pytest.mark.integration, requires_sipp]

# ----- hand-off to the runtime -------------------------------------------------


def test_static_assistant_reaches_runtime(
    router: Daemon, runtime: SippRuntime, tmp_path: Path
) -> None:
    result = place_call(router, ANSWERED, "+14155550100", tmp_path)

    assert result.final_status == 200
    (invite,) = runtime.wait_for_invites(1)
    assert invite.header("X-Cozmox-Assistant-Id") == "asst-support"
    assert invite.header("X-Cozmox-Phone-Number-Id") == "pn-static"
    assert invite.header("X-Cozmox-Squad-Id") == ""
    assert invite.header("X-Cozmox-Workflow-Id") == ""
    call_id = invite.header("X-Cozmox-Call-Id")
    assert call_id

    ended = ended_call(router, call_id=call_id)
    assert ended["outcome"] == "assistant"
    assert ended["ended_reason"] == "customer-ended-call"
    metrics = router.metrics()
    assert (
        metrics.value("cozmox_router_sip_invites_received_total", transport="udp") == 1
    )
    assert (
        metrics.value(
            "cozmox_router_calls_total",
            outcome="assistant",
            ended_reason="customer-ended-call",
        )
        == 1
    )
    assert metrics.value("cozmox_router_active_calls") == 0


def test_static_assistant_over_tcp(
    router: Daemon, runtime: SippRuntime, tmp_path: Path
) -> None:
    result = place_call(router, ANSWERED, "+14155550100", tmp_path, ("-t", "t1"))

    assert result.final_status == 200
    (invite,) = runtime.wait_for_invites(1)
    assert invite.header("X-Cozmox-Assistant-Id") == "asst-support"
    ended = ended_call(router, call_id=invite.header("X-Cozmox-Call-Id"))
    assert ended["outcome"] == "assistant"
    metrics = router.metrics()
    assert (
        metrics.value("cozmox_router_sip_invites_received_total", transport="tcp") == 1
    )


@pytest.mark.parametrize("dialled", ["14155550100", "%2B14155550100"])
def test_dialled_number_forms_match(
    router: Daemon, runtime: SippRuntime, tmp_path: Path, dialled: str
) -> None:
    result = place_call(router, ANSWERED, dialled, tmp_path)

    assert result.final_status == 200
    (invite,) = runtime.wait_for_invites(1)
    assert invite.header("X-Cozmox-Phone-Number-Id") == "pn-static"
    assert invite.header("X-Cozmox-Assistant-Id") == "asst-support"
    ended = ended_call(router, call_id=invite.header("X-Cozmox-Call-Id"))
    assert ended["outcome"] == "assistant"


def test_assistant_request_id_reaches_runtime(
    router: Daemon, runtime: SippRuntime, webhooks: WebhookServer, tmp_path: Path
) -> None:
    webhooks.reply("/webhook", {"assistantId": "asst-sales"})

    result = place_call(router, ANSWERED, "+14155550101", tmp_path)

    assert result.final_status == 200
    (invite,) = runtime.wait_for_invites(1)
    assert invite.header("X-Cozmox-Assistant-Id") == "asst-sales"
    assert invite.header("X-Cozmox-Phone-Number-Id") == "pn-ask"
    (request,) = webhooks.messages("assistant-request", "/webhook")
    message = request.json["message"]
    assert message["type"] == "assistant-request"
    assert message["call"]["id"] == invite.header("X-Cozmox-Call-Id")
    assert message["call"]["phoneNumberId"] == "pn-ask"
    assert message["call"]["phoneCallProviderId"] == result.messages[0].header(
        "Call-ID"
    )
    assert message["phoneNumber"]["id"] == "pn-ask"
    assert message["customer"]["number"] == CALLER_NUMBER
    ended = ended_call(router, call_id=invite.header("X-Cozmox-Call-Id"))
    assert ended["outcome"] == "assistant"
    metrics = router.metrics()
    assert (
        metrics.value("cozmox_router_assistant_request_seconds_count", result="ok") == 1
    )


def test_inline_assistant_in_call_record(
    router: Daemon, runtime: SippRuntime, webhooks: WebhookServer, tmp_path: Path
) -> None:
    assistant = {"name": "Inline helper", "firstMessage": "Hello from the router test"}
    overrides = {"variableValues": {"plan": "gold"}}
    webhooks.reply(
        "/webhook", {"assistant": assistant, "assistantOverrides": overrides}
    )

    result = place_call(router, ANSWERED, "+14155550101", tmp_path)

    assert result.final_status == 200
    (invite,) = runtime.wait_for_invites(1)
    assert invite.header("X-Cozmox-Assistant-Id") == "inline"
    call_id = invite.header("X-Cozmox-Call-Id")
    status, record = router.call_record(call_id)
    assert status == 200, record
    assert record["id"] == call_id
    assert record["phoneNumberId"] == "pn-ask"
    assert record["route"]["kind"] == "assistant"
    assert record["route"]["inline"] == assistant
    assert record["route"]["overrides"] == overrides
    assert router.get_json(f"/calls/{call_id}")[0] == 401
    ended = ended_call(router, call_id=call_id)
    assert ended["outcome"] == "assistant"


def test_squad_in_message_response(
    router: Daemon, runtime: SippRuntime, webhooks: WebhookServer, tmp_path: Path
) -> None:
    webhooks.reply("/webhook", {"messageResponse": {"squadId": "squad-sales"}})

    result = place_call(router, ANSWERED, "+14155550101", tmp_path)

    assert result.final_status == 200
    (invite,) = runtime.wait_for_invites(1)
    assert invite.header("X-Cozmox-Squad-Id") == "squad-sales"
    assert invite.header("X-Cozmox-Assistant-Id") == ""
    ended = ended_call(router, call_id=invite.header("X-Cozmox-Call-Id"))
    assert ended["outcome"] == "squad"
    assert (
        router.metrics().value(
            "cozmox_router_calls_total",
            outcome="squad",
            ended_reason="customer-ended-call",
        )
        == 1
    )


# ----- replies that do not name an assistant -------------------------------------


def test_destination_reply_redirects_caller(
    router: Daemon, webhooks: WebhookServer, tmp_path: Path
) -> None:
    destination_uri = f"sip:agent@127.0.0.1:{free_port()}"
    webhooks.reply(
        "/webhook",
        {
            "destination": {
                "type": "sip",
                "sipUri": destination_uri,
                "transferPlan": {"sipVerb": "redirect"},
            }
        },
    )

    result = place_call(router, "uac-expect-302.xml", "+14155550101", tmp_path)

    assert result.final_status == 302
    assert destination_uri in (result.final_response.header("Contact") or "")
    ended = ended_call(router)
    assert ended["outcome"] == "transferred"
    assert ended["ended_reason"] == "assistant-request-returned-forwarding-phone-number"


@pytest.mark.parametrize(
    ("reply", "result_label"),
    [
        ({"status": 500, "json_body": {"message": "boom"}}, "http-error"),
        ({"raw_body": b'{"assistantId": "asst-'}, None),
        ({"raw_body": b"<html>not json</html>"}, None),
    ],
    ids=["status-500", "truncated-json", "html-body"],
)
def test_failed_assistant_request_gets_480(
    router: Daemon,
    webhooks: WebhookServer,
    tmp_path: Path,
    reply: dict[str, Any],
    result_label: str | None,
) -> None:
    webhooks.reply("/webhook", **reply)

    result = place_call(router, "uac-expect-480.xml", "+14155550101", tmp_path)

    assert result.final_status == 480
    assert reason_text(result) == 'SIP;cause=480;text="assistant-request-failed"'
    ended = ended_call(router)
    assert ended["outcome"] == "failed"
    assert ended["ended_reason"] == "assistant-request-failed"
    metrics = router.metrics()
    assert (
        metrics.value(
            "cozmox_router_calls_total",
            outcome="failed",
            ended_reason="assistant-request-failed",
        )
        == 1
    )
    if result_label is not None:
        assert (
            metrics.value(
                "cozmox_router_assistant_request_seconds_count", result=result_label
            )
            == 1
        )


def test_assistant_request_deadline_rejects(
    start_router: StartRouter,
    router_config: dict[str, Any],
    webhooks: WebhookServer,
    tmp_path: Path,
) -> None:
    router_config["router"]["assistantRequestDeadlineSeconds"] = 1
    router = start_router(router_config)
    server_delay_seconds = 4.0
    webhooks.reply(
        "/webhook", {"assistantId": "asst-late"}, delay_seconds=server_delay_seconds
    )

    started = time.monotonic()
    result = place_call(router, "uac-expect-480.xml", "+14155550101", tmp_path)
    elapsed = time.monotonic() - started

    assert result.final_status == 480
    assert reason_text(result) == 'SIP;cause=480;text="assistant-request-failed"'
    assert elapsed < server_delay_seconds - 1, f"final response after {elapsed:.1f} s"
    ended = ended_call(router)
    assert ended["ended_reason"] == "assistant-request-failed"
    assert (
        router.metrics().value(
            "cozmox_router_assistant_request_seconds_count", result="timeout"
        )
        == 1
    )


def test_no_assistant_no_fallback_gets_480(
    router: Daemon, webhooks: WebhookServer, tmp_path: Path
) -> None:
    webhooks.reply("/webhook", {})

    result = place_call(router, "uac-expect-480.xml", "+14155550101", tmp_path)

    assert result.final_status == 480
    assert (
        reason_text(result)
        == 'SIP;cause=480;text="assistant-request-returned-no-assistant"'
    )
    ended = ended_call(router)
    assert ended["outcome"] == "failed"
    assert ended["ended_reason"] == "assistant-request-returned-no-assistant"


def test_runtime_rejection_gets_480(
    start_router: StartRouter, router_config: dict[str, Any], tmp_path: Path
) -> None:
    rejecting_runtime = SippRuntime("uas-runtime-reject-486.xml", tmp_path)
    try:
        router_config["router"]["runtime"]["uri"] = rejecting_runtime.uri
        router = start_router(router_config)

        result = place_call(router, "uac-expect-480.xml", "+14155550100", tmp_path)

        assert result.final_status == 480
        assert (
            reason_text(result)
            == 'SIP;cause=480;text="call.start.error-runtime-rejected"'
        )
        (invite,) = rejecting_runtime.wait_for_invites(1)
        assert invite.header("X-Cozmox-Assistant-Id") == "asst-support"
        ended = ended_call(router)
        assert ended["ended_reason"] == "call.start.error-runtime-rejected"
    finally:
        rejecting_runtime.stop()


# ----- fallback destinations -----------------------------------------------------


def test_fallback_by_redirect_after_server_error(
    router: Daemon, webhooks: WebhookServer, tmp_path: Path
) -> None:
    webhooks.reply("/broken", status=500)
    fallback = phone_number(router.config, "pn-fallback")["fallbackDestination"]

    result = place_call(router, "uac-expect-302.xml", "+14155550102", tmp_path)

    assert result.final_status == 302
    assert fallback["sipUri"] in (result.final_response.header("Contact") or "")
    assert len(webhooks.messages("assistant-request", "/broken")) == 1
    ended = ended_call(router)
    assert ended["outcome"] == "transferred"
    assert ended["ended_reason"] == "assistant-request-failed"
    assert (
        router.metrics().value(
            "cozmox_router_calls_total",
            outcome="transferred",
            ended_reason="assistant-request-failed",
        )
        == 1
    )


def test_fallback_by_refer_after_server_error(
    start_router: StartRouter,
    router_config: dict[str, Any],
    webhooks: WebhookServer,
    tmp_path: Path,
) -> None:
    fallback = phone_number(router_config, "pn-fallback")["fallbackDestination"]
    fallback["transferPlan"]["sipVerb"] = "refer"
    router = start_router(router_config)
    webhooks.reply("/broken", status=500)

    result = place_call(router, "uac-refer-expect-202.xml", "+14155550102", tmp_path)

    assert result.final_status == 200
    (refer,) = result.requests("REFER")
    assert fallback["sipUri"] in (refer.header("Refer-To") or "")
    assert len(result.requests("BYE")) == 1
    ended = ended_call(router)
    assert ended["outcome"] == "transferred"
    assert ended["ended_reason"] == "assistant-request-failed"


# ----- calls rejected before routing ---------------------------------------------


def test_unknown_number_gets_404(
    router: Daemon, webhooks: WebhookServer, tmp_path: Path
) -> None:
    result = place_call(router, "uac-expect-404.xml", "+14155550199", tmp_path)

    assert result.final_status == 404
    ended = ended_call(router)
    assert ended["outcome"] == "rejected"
    assert ended["ended_reason"] == "call.start.error-get-phone-number"
    assert webhooks.messages("assistant-request") == []
    assert (
        router.metrics().value(
            "cozmox_router_calls_total",
            outcome="rejected",
            ended_reason="call.start.error-get-phone-number",
        )
        == 1
    )


def test_source_outside_gateways_gets_403(
    start_router: StartRouter,
    router_config: dict[str, Any],
    webhooks: WebhookServer,
    tmp_path: Path,
) -> None:
    # SIPp sends from 127.0.0.1, which 127.0.0.2/32 does not contain.
    router_config["credentials"][0]["gateways"] = [{"ip": "127.0.0.2", "netmask": 32}]
    router = start_router(router_config)

    result = place_call(router, "uac-expect-403.xml", "+14155550100", tmp_path)

    assert result.final_status == 403
    ended = ended_call(router)
    assert ended["outcome"] == "rejected"
    assert ended["ended_reason"] == "call.start.error-source-not-allowed"
    assert webhooks.requests() == []
    assert (
        router.metrics().value(
            "cozmox_router_calls_total",
            outcome="rejected",
            ended_reason="call.start.error-source-not-allowed",
        )
        == 1
    )


def test_blocked_number_gets_403(
    router: Daemon, webhooks: WebhookServer, tmp_path: Path
) -> None:
    result = place_call(router, "uac-expect-403.xml", "+14155550103", tmp_path)

    assert result.final_status == 403
    assert (
        reason_text(result)
        == 'SIP;cause=403;text="call.start.error-phone-number-blocked"'
    )
    ended = ended_call(router)
    assert ended["outcome"] == "rejected"
    assert ended["ended_reason"] == "call.start.error-phone-number-blocked"
    assert webhooks.messages("assistant-request") == []


# ----- limits --------------------------------------------------------------------


def test_busy_call_slots_get_503_from_router(
    router: Daemon, runtime: SippRuntime, tmp_path: Path
) -> None:
    status, readiness = router.get_json("/readyz")
    assert status == 200, readiness
    max_calls = readiness["sip"]["limits"]["maxCalls"]
    answered_calls: list[SippCall] = []
    try:
        # Bridged calls take two slots each; hold them until one is rejected.
        # At most max_calls attempts, since each answered call takes a slot.
        rejected_call = None
        for _ in range(max_calls):
            call = start_sipp(
                ANSWERED,
                router.sip_target,
                "+14155550100",
                ("-set", "hold", "8000"),
                timeout=30,
                log_dir=tmp_path,
            )
            if call.wait_for_response(200, timeout=10):
                answered_calls.append(call)
                continue
            rejected_call = call.finish()
            break

        assert answered_calls, "no call was answered before the slots ran out"
        assert rejected_call is not None, f"all {max_calls} calls were answered"
        assert rejected_call.final_status == 503, rejected_call.describe()
        assert rejected_call.final_response.header("Retry-After")
        used = router.metrics().value("cozmox_router_sip_call_slots", state="used")
        assert used >= 2 * len(answered_calls)

        # The next INVITE is rejected by the router too, never by pjsua's 486.
        again = place_call(router, "uac-expect-503.xml", "+14155550100", tmp_path)
        assert again.final_status == 503
        assert len(runtime.invites()) == len(answered_calls)
        ended = router.wait_for_event(
            "call.ended", ended_reason="call.start.error-concurrency-limit-reached"
        )
        assert ended["sip_status"] == 503
        assert (
            router.metrics().value(
                "cozmox_router_calls_total",
                outcome="rejected",
                ended_reason="call.start.error-concurrency-limit-reached",
            )
            == 2
        )

        for call in answered_calls:
            finished = call.finish()
            assert finished.exit_code == 0, finished.describe()
    finally:
        for call in answered_calls:
            call.stop()


# ----- the caller hangs up ------------------------------------------------------


def test_cancel_during_assistant_request(
    router: Daemon, webhooks: WebhookServer, runtime: SippRuntime, tmp_path: Path
) -> None:
    # The server answers long after the caller's CANCEL, one second in.
    webhooks.reply("/webhook", {"assistantId": "asst-late"}, delay_seconds=4.0)

    result = place_call(router, "uac-cancel-expect-487.xml", "+14155550101", tmp_path)

    assert result.final_status == 487
    ended = ended_call(router)
    assert ended["ended_reason"] == (
        "call.ringing.sip-inbound-caller-hungup-before-call-connect"
    )
    assert ended["outcome"] == "failed"
    time.sleep(4.0)
    assert runtime.invites() == []
