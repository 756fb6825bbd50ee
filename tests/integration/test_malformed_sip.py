"""Malformed and hostile SIP from raw sockets: the daemon answers or drops.

Each test sends one batch, checks the response each request got and the
counters, then checks that the daemon still runs and routes a normal call.
docs/hostile-input.md lists the same cases with the responses seen.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from call_helpers import ANSWERED, place_call
from harness import Daemon
from sip_sender import Request, send_tcp, send_udp
from sipp_runner import SippRuntime, requires_sipp
from webhook_server import WebhookServer

pytestmark = [pytest.mark.integration, requires_sipp]

BLOCKED = "+14155550103"
STATIC = "+14155550100"
# Routed by an assistant-request to the webhook server.
ASK = "+14155550101"


def assert_still_serving(router: Daemon, tmp_path: Path) -> None:
    assert router.process.poll() is None, router.stderr_text()[-3000:]
    result = place_call(router, ANSWERED, STATIC, tmp_path)
    assert result.final_status == 200


def dropped(router: Daemon, reason: str) -> float:
    return router.metrics().value(
        "cozmox_router_sip_messages_dropped_total", reason=reason
    )


def test_unparseable_requests_dropped_and_counted(
    router: Daemon, runtime: SippRuntime, tmp_path: Path
) -> None:
    port = router.sip_port
    whole = Request(port).build(5060)
    cut = whole[: whole.index(b"From: <sip:") + 12]
    cases = {
        # Cut inside the From header, with no blank line after the headers.
        "truncated": ("syntax-error", lambda _port: cut),
        "content-length-junk": (
            "syntax-error",
            Request(port, content_length="abc").build,
        ),
        "content-length-negative": (
            "syntax-error",
            Request(port, content_length="-5").build,
        ),
        "from-not-utf8": (
            "syntax-error",
            Request(port, replace=((b"+14155559876", b"\xff\xfe"),)).build,
        ),
        "request-uri-not-utf8": (
            "syntax-error",
            Request(
                port, replace=((b"INVITE sip:+1415", b"INVITE sip:+1415\xff"),)
            ).build,
        ),
        "missing-call-id": ("missing-header", Request(port, drop=("Call-ID",)).build),
        "missing-from": ("missing-header", Request(port, drop=("From",)).build),
        "missing-to": ("missing-header", Request(port, drop=("To",)).build),
        "missing-via": ("missing-header", Request(port, drop=("Via",)).build),
        "missing-cseq": ("missing-header", Request(port, drop=("CSeq",)).build),
    }

    exchanges = send_udp([build for _, build in cases.values()], port)

    for name, exchange in zip(cases, exchanges, strict=True):
        assert exchange.statuses == [], f"{name} got {exchange.statuses}"
    expected = {"syntax-error": 5, "missing-header": 5}
    for reason, count in expected.items():
        assert dropped(router, reason) == count, reason
    metrics = router.metrics()
    assert metrics.value("cozmox_router_sip_invites_received_total") == 0
    assert_still_serving(router, tmp_path)


def test_content_length_mismatch(
    router: Daemon, runtime: SippRuntime, tmp_path: Path
) -> None:
    port = router.sip_port
    cases = [
        # RFC 3261 section 18.3: a body shorter than Content-Length is an
        # error. The router answers 513 and never routes it, even to a
        # static assistant.
        (Request(port, number=STATIC, content_length="500").build, 513),
        (Request(port, number=STATIC, content_length="9" * 30).build, 513),
        # Bytes past Content-Length are dropped: the INVITE is routed.
        (Request(port, content_length="10").build, 403),
        # Leading zeros are valid.
        (Request(port, content_length="000" + str(len(Request(port).body))).build, 403),
        # A custom header that is not UTF-8 does not stop routing.
        (
            Request(
                port,
                extra_headers=("X-Junk: a\xffb",),
                replace=((b"a\xc3\xbfb", b"a\xffb"),),
            ).build,
            403,
        ),
    ]

    exchanges = send_udp([build for build, _ in cases], port, interval_seconds=0.1)

    for (_, expected), exchange in zip(cases, exchanges, strict=True):
        assert exchange.final == expected, exchange.statuses
    assert runtime.invites() == []
    metrics = router.metrics()
    assert (
        metrics.value(
            "cozmox_router_calls_total",
            ended_reason="call.start.error-message-too-large",
        )
        == 2
    )
    assert metrics.value("cozmox_router_sip_invites_received_total") == 5
    assert_still_serving(router, tmp_path)


def test_methods_outside_a_call(
    router: Daemon, runtime: SippRuntime, tmp_path: Path
) -> None:
    port = router.sip_port
    cases = [
        ("OPTIONS", [200]),
        # pjsua's own instant-message module accepts MESSAGE.
        ("MESSAGE", [200]),
        # RFC 3261 section 9.2: a CANCEL that matches no transaction.
        ("CANCEL", [481]),
        # pjsip 2.15.1 drops requests that no module handles, unanswered:
        # unknown methods (RFC 3261 asks for 501 or 405) and a BYE outside
        # a dialog (RFC 3261 asks for 481).
        ("FOO", []),
        ("INFO", []),
        ("BYE", []),
    ]
    builders = [Request(port, method=method, body="").build for method, _ in cases]

    exchanges = send_udp(builders, port)

    for (method, expected), exchange in zip(cases, exchanges, strict=True):
        assert sorted(set(exchange.statuses)) == expected, method
    assert router.metrics().value("cozmox_router_sip_invites_received_total") == 0
    assert_still_serving(router, tmp_path)


def test_tcp_header_of_64k_dropped(
    router: Daemon, runtime: SippRuntime, tmp_path: Path
) -> None:
    big = Request(
        router.sip_port, transport="TCP", extra_headers=("X-Big: " + "a" * 65536,)
    )

    exchange = send_tcp(big.build, router.sip_port, wait_seconds=2.0)

    assert exchange.statuses == []
    # pjsip logs one overflow for each 4000-byte packet buffer it fills.
    assert dropped(router, "too-large") >= 1
    assert router.metrics().value("cozmox_router_sip_invites_received_total") == 0
    assert_still_serving(router, tmp_path)


def test_flood_from_unknown_source_rejected(
    router: Daemon, runtime: SippRuntime, tmp_path: Path
) -> None:
    flood = 60
    invite = Request(router.sip_port, number=STATIC, source="127.0.0.2")

    exchanges = send_udp(
        [invite.build] * flood,
        router.sip_port,
        source="127.0.0.2",
        wait_seconds=2.0,
        interval_seconds=0.002,
    )

    # Each INVITE holds a call slot until its 403 is sent. One that finds
    # only the spare slot free gets the router's 503, and one that finds
    # none gets pjsua's own 486.
    finals = [exchange.final for exchange in exchanges]
    print({status: finals.count(status) for status in set(finals)})
    assert set(finals) <= {403, 486, 503}, finals
    assert finals.count(403) >= flood / 2, finals
    metrics = router.metrics()
    by_reason = {
        403: "call.start.error-source-not-allowed",
        503: "call.start.error-concurrency-limit-reached",
    }
    for status, reason in by_reason.items():
        counted = metrics.value(
            "cozmox_router_calls_total", outcome="rejected", ended_reason=reason
        )
        assert counted == finals.count(status), status
        rejected = metrics.value(
            "cozmox_router_sip_invites_rejected_total", status=str(status)
        )
        assert rejected == finals.count(status), status
    assert metrics.value(
        "cozmox_router_sip_invites_rejected_total", status="486"
    ) == finals.count(486)
    assert metrics.value("cozmox_router_sip_invites_received_total") == flood
    assert runtime.invites() == []
    assert_still_serving(router, tmp_path)


def max_forwards(value: str) -> tuple[tuple[bytes, bytes], ...]:
    return ((b"Max-Forwards: 70", f"Max-Forwards: {value}".encode()),)


def test_max_forwards_zero_gets_483(
    router: Daemon, runtime: SippRuntime, webhooks: WebhookServer, tmp_path: Path
) -> None:
    port = router.sip_port
    cases = [
        # RFC 3261 section 16.3: a request with Max-Forwards 0 is never
        # forwarded, neither to the runtime nor by the assistant-request.
        (Request(port, number=STATIC, replace=max_forwards("0")).build, 483),
        (Request(port, number=ASK, replace=max_forwards("0")).build, 483),
        (Request(port, number=STATIC, replace=max_forwards("00")).build, 483),
        # Max-Forwards 1 still passes step 1: the blocked number's 403 shows
        # that the INVITE reached step 4.
        (Request(port, number=BLOCKED, replace=max_forwards("1")).build, 403),
    ]

    exchanges = send_udp([build for build, _ in cases], port, interval_seconds=0.1)

    for (_, expected), exchange in zip(cases, exchanges, strict=True):
        assert exchange.final == expected, exchange.statuses
        # The 483 goes out without a 180 Ringing first.
        assert 180 not in exchange.statuses, exchange.statuses
    assert runtime.invites() == []
    assert webhooks.messages("assistant-request") == []
    # Only the blocked number's call, which reached step 3, is reported.
    reported = {m.message["call"]["phoneNumberId"] for m in webhooks.messages()}
    assert reported <= {"pn-blocked"}
    metrics = router.metrics()
    counted = metrics.value(
        "cozmox_router_calls_total",
        outcome="rejected",
        ended_reason="call.start.error-too-many-hops",
    )
    assert counted == 3
    rejected = metrics.value("cozmox_router_sip_invites_rejected_total", status="483")
    assert rejected == 3
    assert metrics.value("cozmox_router_sip_invites_received_total") == 4
    assert_still_serving(router, tmp_path)


def test_sips_uri_without_tls_gets_pjsua_480(
    router: Daemon, runtime: SippRuntime, webhooks: WebhookServer, tmp_path: Path
) -> None:
    port = router.sip_port
    static = f"sips:{STATIC}@127.0.0.1:{port}"
    ask = f"sips:{ASK}@127.0.0.1:{port}"

    exchanges = send_udp(
        [Request(port, request_uri=uri).build for uri in (static, ask)], port
    )
    over_tcp = send_tcp(Request(port, transport="TCP", request_uri=static).build, port)

    # NOTE: RFC 3261 section 8.2.2.1 calls for 416 Unsupported URI Scheme.
    # pjsua 2.15.1 sends 480 itself after onSelectAccount and never calls
    # onIncomingCall, so the router cannot choose the status.
    for exchange in [*exchanges, over_tcp]:
        assert exchange.statuses == [480]
    assert runtime.invites() == []
    assert webhooks.requests() == []
    metrics = router.metrics()
    rejected = metrics.value("cozmox_router_sip_invites_rejected_total", status="480")
    assert rejected == 3
    # Counted once each, by pjsua's onRejectedIncomingCall.
    assert metrics.value("cozmox_router_sip_invites_received_total") == 3
    assert_still_serving(router, tmp_path)


def test_cseq_method_mismatch_gets_pjsua_500(
    router: Daemon, runtime: SippRuntime, webhooks: WebhookServer, tmp_path: Path
) -> None:
    port = router.sip_port
    cseq_bye = ((b"CSeq: 1 INVITE", b"CSeq: 1 BYE"),)
    builders = [
        Request(port, number=number, replace=cseq_bye).build for number in (STATIC, ASK)
    ]

    exchanges = send_udp(builders, port)

    # NOTE: the expected response is 400 Bad Request, because RFC 3261
    # section 8.1.1.5 requires the CSeq method to match the request's.
    # pjsip 2.15.1 fails to create the INVITE transaction, and pjsua sends
    # 500 itself before onIncomingCall, so the router cannot choose it.
    for exchange in exchanges:
        assert exchange.statuses == [500]
    assert runtime.invites() == []
    assert webhooks.requests() == []
    metrics = router.metrics()
    rejected = metrics.value("cozmox_router_sip_invites_rejected_total", status="500")
    assert rejected == 2
    # Counted once each, by pjsua's onRejectedIncomingCall.
    assert metrics.value("cozmox_router_sip_invites_received_total") == 2
    assert_still_serving(router, tmp_path)


def test_late_offer_reject_keeps_daemon_up(
    router: Daemon, runtime: SippRuntime, tmp_path: Path
) -> None:
    port = router.sip_port
    no_sdp = {"body": "", "drop": ("Content-Type",)}
    cases = [
        # Rejected inside onIncomingCall: 403 blocked, 404 unknown number,
        # 403 from an address that no trunk lists, 483 Max-Forwards 0.
        (Request(port, number=BLOCKED, **no_sdp).build, "127.0.0.1", 403),
        (Request(port, number="+19999999999", **no_sdp).build, "127.0.0.1", 404),
        (Request(port, source="127.0.0.2", **no_sdp).build, "127.0.0.2", 403),
        (Request(port, replace=max_forwards("0"), **no_sdp).build, "127.0.0.1", 483),
    ]

    for build, source, expected in cases:
        [exchange] = send_udp([build], port, source=source)
        assert exchange.final == expected, exchange.statuses
        assert router.process.poll() is None, router.stderr_text()[-2000:]

    assert_still_serving(router, tmp_path)


def test_tcp_only_router_answers_udp_contact(
    start_router: Callable[..., Daemon],
    router_config: dict[str, Any],
    runtime: SippRuntime,
) -> None:
    # The callers' Contact names no transport, so it means UDP, which a
    # TCP-only router does not listen on. pjsua sent 500 to these.
    port = router_config["router"]["sip"]["listen"][0]["port"]
    router_config["router"]["sip"]["listen"] = [
        {"transport": "tcp", "host": "127.0.0.1", "port": port}
    ]
    router_config["router"]["runtime"]["mode"] = "redirect"
    router = start_router(router_config)
    cases = [(BLOCKED, 403), ("+19999999999", 404), (STATIC, 302)]

    for number, expected in cases:
        request = Request(port, number=number, transport="TCP")
        exchange = send_tcp(request.build, port, wait_seconds=2.0)
        assert exchange.final == expected, exchange.statuses

    metrics = router.metrics()
    assert metrics.value("cozmox_router_sip_invites_rejected_total", status="500") == 0
    assert router.process.poll() is None, router.stderr_text()[-3000:]
