"""SIP transactions and offer/answer against the real daemon, with SIPp peers.

Covers a CANCEL that crosses the 200, retransmitted INVITEs, a BYE for an
unknown dialog, a caller that never ACKs, late offers, an offer with no
common codec and INVITEs larger than the build's UDP packet buffer.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from call_helpers import ANSWERED, ended_call, place_call
from harness import Daemon
from sip_sender import Request, UdpDialog, send_udp
from sipp_runner import SippResult, SippRuntime, requires_sipp, run_sipp
from webhook_server import WebhookServer

pytestmark = [pytest.mark.integration, requires_sipp]

STATIC = "+14155550100"
ASK = "+14155550101"
REPORT = "end-of-call-report"


def metric(router: Daemon, name: str, **labels: str) -> float:
    return router.metrics().value("cozmox_router_" + name, **labels)


def wait_for_idle(router: Daemon, timeout: float = 5.0) -> None:
    """Wait until no call is active and no call slot is used."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        metrics = router.metrics()
        active = metrics.value("cozmox_router_active_calls")
        used = metrics.value("cozmox_router_sip_call_slots", state="used")
        if active == 0 and used == 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"router not idle after {timeout} s: {active=} {used=}")


def assert_next_call_routes(router: Daemon, runtime: SippRuntime, tmp_path: Path):
    before = len(runtime.invites())
    result = place_call(router, ANSWERED, STATIC, tmp_path)
    assert result.final_status == 200, result.describe()
    runtime.wait_for_invites(before + 1)


def test_cancel_crossing_200_leaks_nothing(
    router: Daemon, runtime: SippRuntime, webhooks: WebhookServer, tmp_path: Path
) -> None:
    result = place_call(router, "uac-cancel-after-200.xml", STATIC, tmp_path)

    assert result.final_status == 200
    # RFC 3261 section 9.2: 200 when the INVITE transaction still exists
    # (the CANCEL then has no effect), 481 when it is gone.
    (cancel_response,) = result.responses("CANCEL")
    assert cancel_response.status in (200, 481), result.describe()
    (bye_response,) = result.responses("BYE")
    assert bye_response.status == 200
    # The call ran as an answered call that the caller ended.
    ended = ended_call(router)
    assert ended["ended_reason"] == "customer-ended-call"
    assert len(runtime.invites()) == 1
    wait_for_idle(router)
    assert_next_call_routes(router, runtime, tmp_path)


def test_retransmitted_invite_starts_one_call(
    router: Daemon, runtime: SippRuntime, webhooks: WebhookServer
) -> None:
    # The server answers after the last retransmission, so every copy of
    # the INVITE reaches the router while the first is still ringing.
    webhooks.reply("/webhook", {"assistantId": "asst-slow"}, delay_seconds=1.5)

    with UdpDialog(router.sip_port, ASK) as dialog:
        # RFC 3261 section 17.1.1.2: the same bytes again, 500 ms apart.
        for _ in range(3):
            dialog.send(dialog.invite)
            time.sleep(0.5)
        answer = dialog.wait_for_final(timeout=10.0)
        assert answer.status == 200, answer.text
        dialog.send(dialog.in_dialog("ACK", 1, answer))
        dialog.send(dialog.in_dialog("BYE", 2, answer))
        bye_response = dialog.wait_for_final(timeout=5.0, method="BYE")
        assert bye_response.status == 200, bye_response.text

    ended_call(router)
    webhooks.wait_for_messages(REPORT)
    time.sleep(1.0)
    assert len(router.events("call.ended")) == 1
    assert (
        len(webhooks.requests("/webhook"))
        - len(webhooks.messages("status-update"))
        - len(webhooks.messages(REPORT))
        == 1
    ), "one assistant-request"
    assert len(webhooks.messages(REPORT)) == 1
    assert len(runtime.invites()) == 1
    assert metric(router, "sip_invites_received_total", transport="udp") == 1
    wait_for_idle(router)


def test_bye_for_unknown_dialog_gets_481(router: Daemon, tmp_path: Path) -> None:
    result = place_call(router, "uac-bye-unknown-expect-481.xml", STATIC, tmp_path)

    (response,) = result.responses("BYE")
    assert response.status == 481
    assert router.events("call.ended") == []
    assert metric(router, "sip_invites_received_total", transport="udp") == 0


def test_caller_without_ack_is_cleaned_up(
    router: Daemon, runtime: SippRuntime, webhooks: WebhookServer, tmp_path: Path
) -> None:
    # pjsua2 exposes no SIP timers (T1, Timer H), so this waits the default
    # 64*T1 = 32 s for the 200's retransmissions to time out.
    started = time.monotonic()
    result = run_sipp(
        "uac-no-ack-expect-bye.xml",
        router.sip_target,
        STATIC,
        timeout=50,
        log_dir=tmp_path,
    )
    waited = time.monotonic() - started

    assert result.exit_code == 0, result.describe()
    assert 30 <= waited <= 45, f"BYE after {waited:.1f} s"
    assert result.requests("BYE"), result.describe()
    ended = ended_call(router)
    assert ended["ended_reason"] == "call.in-progress.error-sip-ack-timeout"
    # The runtime leg was hung up: it received the router's BYE.
    runtime_messages = runtime.message_file.read_text(errors="replace")
    assert "BYE sip:" in runtime_messages
    webhooks.wait_for_messages(REPORT)
    (report,) = webhooks.messages(REPORT)
    assert report.message["endedReason"] == "call.in-progress.error-sip-ack-timeout"
    wait_for_idle(router)
    assert_next_call_routes(router, runtime, tmp_path)


def test_late_offer_is_routed(
    router: Daemon, runtime: SippRuntime, tmp_path: Path
) -> None:
    result = place_call(
        router,
        "uac-late-offer-expect-200.xml",
        STATIC,
        tmp_path,
        ("-set", "hold", "500"),
    )

    final = result.final_response
    assert final is not None and final.status == 200
    assert "m=audio" in final.body
    assert final.header("Content-Type") == "application/sdp"
    (invite,) = runtime.wait_for_invites(1)
    assert invite.header("X-Cozmox-Assistant-Id") == "asst-support"
    ended = ended_call(router)
    assert ended["ended_reason"] == "customer-ended-call"
    wait_for_idle(router)


def test_late_offer_without_answer_ends_with_bye(
    router: Daemon, runtime: SippRuntime, tmp_path: Path
) -> None:
    result = place_call(
        router, "uac-late-offer-no-answer-expect-bye.xml", STATIC, tmp_path
    )

    assert result.final_status == 200
    assert result.requests("BYE"), result.describe()
    ended_call(router)
    wait_for_idle(router)
    assert_next_call_routes(router, runtime, tmp_path)


def test_no_common_codec_gets_488(
    router: Daemon, runtime: SippRuntime, tmp_path: Path
) -> None:
    result = place_call(router, "uac-no-common-codec-expect-488.xml", STATIC, tmp_path)

    assert result.final_status == 488
    # pjsua rejects the offer itself, before the call path sees the INVITE.
    router.wait_for_event("sip.invite_rejected_by_stack", status=488)
    assert metric(router, "sip_invites_rejected_total", status="488") == 1
    assert runtime.invites() == []
    wait_for_idle(router)


def large_invite_args(xvalue_chars: int, sdp_pad_chars: int) -> tuple[str, ...]:
    return (
        "-key", "xvalue", "v" * xvalue_chars,
        "-key", "sdp_pad", "p" * sdp_pad_chars,
    )  # fmt: skip


def invite_bytes(result: SippResult) -> int:
    """Return the size of the INVITE that SIPp sent, rebuilt from its trace."""
    (invite,) = [m for m in result.messages if m.method == "INVITE"]
    head = sum(len(name) + len(value) + 4 for name, value in invite.headers)
    return len(invite.start_line) + 2 + head + 2 + len(invite.body.encode())


def test_large_invite_within_buffer_is_routed(
    router: Daemon, runtime: SippRuntime, webhooks: WebhookServer, tmp_path: Path
) -> None:
    webhooks.reply("/webhook", {"assistantId": "asst-large"})

    result = place_call(
        router, "uac-large-invite.xml", ASK, tmp_path, large_invite_args(40, 1400)
    )

    assert 3300 <= invite_bytes(result) <= 3800
    assert result.final_status == 200, result.describe()
    (request,) = webhooks.messages("assistant-request")
    headers = request.message["call"]["sipHeaders"]
    expected = {f"X-Test-{n:02d}": "v" * 40 for n in range(1, 31)}
    assert headers == expected
    runtime.wait_for_invites(1)


@pytest.mark.parametrize(
    ("xvalue_chars", "sdp_pad_chars"),
    [(40, 2900), (100, 200), (140, 100)],
    ids=["cut-in-sdp-padding", "cut-in-sdp-start", "cut-in-headers"],
)
def test_large_invite_over_buffer_gets_513(
    router: Daemon,
    runtime: SippRuntime,
    webhooks: WebhookServer,
    tmp_path: Path,
    xvalue_chars: int,
    sdp_pad_chars: int,
) -> None:
    webhooks.reply("/webhook", {"assistantId": "asst-large"})

    result = place_call(
        router,
        "uac-large-invite.xml",
        ASK,
        tmp_path,
        large_invite_args(xvalue_chars, sdp_pad_chars),
    )

    assert invite_bytes(result) > 4000
    assert result.final_status == 513, result.describe()
    assert webhooks.messages("assistant-request") == []
    assert runtime.invites() == []
    ended = ended_call(router)
    assert ended["sip_status"] == 513
    assert ended["ended_reason"] == "call.start.error-message-too-large"
    wait_for_idle(router)


@pytest.mark.parametrize(
    "extra_headers",
    [
        ("X-Pad: " + "p" * 5000,),
        tuple(f"X-Test-{n:02}: " + "v" * 80 for n in range(60)),
    ],
    ids=["long-header", "many-headers"],
)
def test_cut_invite_without_ack_keeps_daemon_up(
    router: Daemon, runtime: SippRuntime, tmp_path: Path, extra_headers: tuple[str, ...]
) -> None:
    # The 513 is resent until Timer H, because no ACK ever comes; each
    # resend must leave the daemon running.
    invite = Request(
        router.sip_port, number="+14155550199", extra_headers=extra_headers
    )

    (exchange,) = send_udp([invite.build], router.sip_port, wait_seconds=3.0)

    assert 513 in exchange.statuses
    assert exchange.statuses.count(513) >= 2, "the 513 was not resent"
    assert router.process.poll() is None, router.stderr_text()[-3000:]
    assert_next_call_routes(router, runtime, tmp_path)
