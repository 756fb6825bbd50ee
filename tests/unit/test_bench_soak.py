"""The soak's rates, checks and report, on made-up numbers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.soak import _measured_json
from bench.soak_checks import (
    MAX_RSS_GROWTH,
    SAMPLE_MAX_CHARACTERS,
    SAMPLES_PER_EVENT,
    RouteShare,
    check_end_of_call_records,
    check_final_responses,
    check_log_events,
    check_router_up,
    check_rss_growth,
    mix_top_rate,
    newest_bench_results,
    passed,
    render,
    route_rates,
    router_tops,
    rss_growth,
    scan_log,
)
from bench.webhook_server import MessageCounts
from router.logs import REDACTED

MB = 1024 * 1024


def bench_results(tops: dict[str, float | None], *, smoke: bool = False) -> dict:
    return {
        "smoke": smoke,
        "limits": {"maxCalls": 4},
        "paths": {
            key: {"systems": {"router": {"top": {"rate": rate}}}}
            for key, rate in tops.items()
        },
    }


def route(placed: int, successful: int, failed: int, **reasons: int) -> dict:
    return {
        "title": "route",
        "rate": 1.0,
        "placed": placed,
        "successful": successful,
        "failed": failed,
        "failureReasons": {key.replace("_", " "): n for key, n in reasons.items()},
    }


def log_line(event: str, level: str = "info", **fields: Any) -> str:
    return json.dumps({"event": event, "level": level, **fields})


# ----- rates ------------------------------------------------------------------------


def test_newest_results_skip_soak_and_smoke(tmp_path: Path) -> None:
    (tmp_path / "2026-01-01.json").write_text(json.dumps(bench_results({})))
    (tmp_path / "2026-02-01.json").write_text(json.dumps(bench_results({}, smoke=True)))
    (tmp_path / "soak-2026-03-01.json").write_text("{}")

    assert newest_bench_results(tmp_path) == tmp_path / "2026-01-01.json"


def test_newest_results_none_without_files(tmp_path: Path) -> None:
    assert newest_bench_results(tmp_path) is None


def test_router_tops_skip_missing_rates() -> None:
    tops = router_tops(bench_results({"reject": 187.0, "static": None}))

    assert tops == {"reject": 187.0}


def test_mix_top_is_weighted_harmonic_mean() -> None:
    routes = [RouteShare("a", 0.5, "reject"), RouteShare("b", 0.5, "webhook")]

    top = mix_top_rate({"reject": 100.0, "webhook": 10.0}, routes, max_calls=4)

    # 1 / (0.5 / 100 + 0.5 / 10)
    assert top == pytest.approx(18.1818, rel=1e-4)


def test_mix_top_scales_for_reserved_legs() -> None:
    one_slot = [RouteShare("a", 1.0, "redirect")]
    two_slots = [RouteShare("a", 1.0, "redirect", slots=2)]
    both_two = [RouteShare("a", 1.0, "static", slots=2, bench_slots=2)]
    tops = {"redirect": 300.0, "static": 0.75}

    assert mix_top_rate(tops, one_slot, max_calls=4) == pytest.approx(300.0)
    # Three calls fit at once with one slot each, one with two.
    assert mix_top_rate(tops, two_slots, max_calls=4) == pytest.approx(100.0)
    assert mix_top_rate(tops, both_two, max_calls=4) == pytest.approx(0.75)
    # With 65 slots, 64 one-slot calls fit and 32 two-slot calls.
    assert mix_top_rate(tops, two_slots, max_calls=65) == pytest.approx(150.0)


def test_mix_top_none_when_path_missing() -> None:
    routes = [RouteShare("a", 0.5, "reject"), RouteShare("b", 0.5, "static")]

    assert mix_top_rate({"reject": 100.0}, routes, max_calls=4) is None


def test_mix_top_none_without_slot_limit() -> None:
    routes = [RouteShare("a", 1.0, "reject")]

    assert mix_top_rate({"reject": 100.0}, routes, max_calls=0) is None


def test_route_rates_split_by_share() -> None:
    routes = [RouteShare("a", 0.75, "reject"), RouteShare("b", 0.25, "reject")]

    assert route_rates(8.0, routes) == {"a": 6.0, "b": 2.0}


# ----- checks ------------------------------------------------------------------------


def test_final_responses_pass_with_rejections() -> None:
    routes = {
        "redirect": route(100, 70, 30, unexpected_503=30),
        "reject": route(50, 50, 0),
    }

    check = check_final_responses(routes)

    assert check["passed"] is True
    assert "150 placed" in check["measured"]


def test_final_responses_fail_on_timeout() -> None:
    routes = {"webhook": route(100, 99, 1, no_response=1)}

    check = check_final_responses(routes)

    assert check["passed"] is False
    assert "1 without a final response" in check["measured"]


def test_final_responses_fail_on_open_calls() -> None:
    routes = {"bridged": route(10, 8, 1, unexpected_480=1)}

    check = check_final_responses(routes)

    assert check["passed"] is False
    assert "1 left open" in check["measured"]


def test_final_responses_fail_without_calls() -> None:
    assert check_final_responses({"reject": route(0, 0, 0)})["passed"] is False


def test_end_of_call_records_pass_when_all_match() -> None:
    check = check_end_of_call_records(
        received=110, accepted=100, reports=100, report_messages=100, ended_events=110
    )

    assert check["passed"] is True


@pytest.mark.parametrize(
    ("reports", "report_messages", "ended_events"),
    [
        (99, 99, 110),  # a report missing
        (100, 101, 110),  # a call reported twice
        (100, 100, 109),  # a call without its call.ended event
    ],
)
def test_end_of_call_records_fail_on_mismatch(
    reports: int, report_messages: int, ended_events: int
) -> None:
    check = check_end_of_call_records(
        received=110,
        accepted=100,
        reports=reports,
        report_messages=report_messages,
        ended_events=ended_events,
    )

    assert check["passed"] is False


def test_router_up_check() -> None:
    assert check_router_up(None)["passed"] is True
    down = check_router_up(-6)
    assert down["passed"] is False
    assert "-6" in down["measured"]


def test_rss_growth_from_window_means() -> None:
    # 100 MB through the warm-up window (10 s to 20 s), 105 MB at the end.
    samples = [(float(t), 100 * MB) for t in range(0, 40, 2)]
    samples += [(float(t), 105 * MB) for t in range(40, 62, 2)]

    growth = rss_growth(samples, warm_up_seconds=10.0, end_seconds=60.0)

    assert growth is not None
    assert growth["afterWarmUpMb"] == 100.0
    assert growth["endMb"] == 105.0
    assert growth["growth"] == pytest.approx(0.05)
    assert check_rss_growth(growth)["passed"] is True


def test_rss_growth_fails_past_limit() -> None:
    grown = 100 * (1 + MAX_RSS_GROWTH) + 1
    samples = [(0.0, 100 * MB), (12.0, 100 * MB), (55.0, int(grown * MB))]

    growth = rss_growth(samples, warm_up_seconds=10.0, end_seconds=60.0)

    assert check_rss_growth(growth)["passed"] is False


def test_rss_growth_none_without_samples() -> None:
    assert rss_growth([(1.0, MB)], warm_up_seconds=10.0, end_seconds=60.0) is None
    assert check_rss_growth(None)["passed"] is False


def test_scan_log_counts_events() -> None:
    lines = [
        log_line("call.received"),
        log_line("call.trunk_matched"),
        log_line(
            "call.ended",
            "warning",
            ended_reason="call.start.error-get-phone-number",
        ),
        log_line("call.received"),
        log_line(
            "call.ended",
            "warning",
            ended_reason="call.start.error-concurrency-limit-reached",
        ),
        log_line("sip.callback_failed", "error"),
        "",
        "Traceback (most recent call last):",
    ]

    scan = scan_log(lines)

    assert scan["received"] == 2
    assert scan["accepted"] == 1
    assert scan["ended"] == 2
    assert scan["events"]["warning"] == {
        "call.ended call.start.error-get-phone-number": 1,
        "call.ended call.start.error-concurrency-limit-reached": 1,
    }
    assert scan["events"]["error"] == {"sip.callback_failed": 1}
    assert scan["unparsed"] == ["Traceback (most recent call last):"]


def test_log_check_passes_expected_events() -> None:
    scan = scan_log(
        [
            log_line(
                "call.ended",
                "warning",
                ended_reason="call.ringing.sip-inbound-caller-hungup-before-call-connect",
            ),
            log_line("sip.invite_rejected_by_stack", "warning", status=486),
        ]
    )

    assert check_log_events(scan)["passed"] is True


def test_log_check_fails_unexpected_event() -> None:
    scan = scan_log(
        [
            log_line("call.route_failed", "warning"),
            log_line(
                "call.ended",
                "warning",
                ended_reason="call.start.error-runtime-rejected",
            ),
        ]
    )

    check = check_log_events(scan)

    assert check["passed"] is False
    assert "1 call.route_failed" in check["measured"]
    assert "call.start.error-runtime-rejected" in check["measured"]


def test_scan_log_keeps_unexpected_samples() -> None:
    lines = [
        log_line(
            "call.route_failed",
            "warning",
            attempt=attempt,
            detail="POST http://127.0.0.1:9000/hook?token=soak-token-1 failed",
            password="soak-password-1",
        )
        for attempt in range(SAMPLES_PER_EVENT + 2)
    ]
    lines += [
        log_line("sip.invite_rejected_by_stack", "warning", status=486),
        log_line("call.state", "debug", state="ringing"),
        log_line("webhook.failed", "warning", detail="server answered HTTP 500"),
    ]

    samples = scan_log(lines)["samples"]

    assert sorted(samples) == ["call.route_failed", "webhook.failed"]
    route_failed = [json.loads(text) for text in samples["call.route_failed"]]
    attempts = [event["attempt"] for event in route_failed]
    assert attempts == list(range(SAMPLES_PER_EVENT))
    detail = route_failed[0]["detail"]
    assert detail == f"POST http://127.0.0.1:9000/hook?token={REDACTED} failed"
    assert route_failed[0]["password"] == REDACTED
    assert "soak-token-1" not in json.dumps(samples)
    assert "soak-password-1" not in json.dumps(samples)
    assert json.loads(samples["webhook.failed"][0])["detail"] == (
        "server answered HTTP 500"
    )


def test_scan_log_samples_named_by_ended_reason() -> None:
    scan = scan_log(
        [
            log_line(
                "call.ended",
                "warning",
                ended_reason="call.start.error-runtime-rejected",
            ),
            log_line(
                "call.ended",
                "warning",
                ended_reason="call.start.error-get-phone-number",
            ),
        ]
    )

    assert list(scan["samples"]) == ["call.ended call.start.error-runtime-rejected"]


def test_scan_log_cuts_long_samples() -> None:
    scan = scan_log(
        [
            log_line("sip.stack_log", "warning", text="x" * 2000),
            "y" * 2000,
        ]
    )

    [sample] = scan["samples"]["sip.stack_log"]
    assert len(sample) == SAMPLE_MAX_CHARACTERS
    assert sample.startswith('{"event": "sip.stack_log"')
    assert scan["unparsed"] == ["y" * SAMPLE_MAX_CHARACTERS]


def test_scan_log_redacts_unparsed_lines() -> None:
    scan = scan_log(["ValueError: bad URL sip:agent@127.0.0.1;token=soak-token-2"])

    assert scan["unparsed"] == [
        f"ValueError: bad URL sip:agent@127.0.0.1;token={REDACTED}"
    ]


def test_soak_json_keeps_samples() -> None:
    scan = scan_log([log_line("call.route_failed", "warning")])
    measured = {
        "routes": {},
        "rssSamples": [],
        "webhooks": {},
        "logScan": scan,
    }

    log = _measured_json(measured)["log"]

    assert log["samples"] == scan["samples"]
    assert list(log["samples"]) == ["call.route_failed"]


def test_log_check_fails_on_lines_not_json() -> None:
    check = check_log_events(scan_log(["Assertion failed: free_list"]))

    assert check["passed"] is False


def test_webhook_counts_reported_calls() -> None:
    counts = MessageCounts()
    for call_id in ("c1", "c2", "c1"):
        report = {"message": {"type": "end-of-call-report", "call": {"id": call_id}}}
        counts.add(json.dumps(report).encode())
    counts.add(json.dumps({"message": {"type": "status-update"}}).encode())
    counts.add(b"not json")

    assert counts.as_json() == {
        "byType": {"end-of-call-report": 3, "status-update": 1, "unreadable": 1},
        "reportedCalls": 2,
    }


# ----- report ------------------------------------------------------------------------


def soak_results(checks: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "date": "2026-12-04",
        "command": "python -m bench.soak --minutes 2",
        "started": "2026-12-04 20:00:00 UTC",
        "minutes": 2.0,
        "warmUpSeconds": 30.0,
        "rate": {"total": 10.33, "source": "Set by --rate 10.33."},
        "limits": {"maxCalls": 4, "maxSockets": 64, "bridgedCallsAtOnce": 1},
        "routes": {"reject": route(10, 10, 0)},
        "log": {
            "events": {"warning": {"call.route_failed": 1}},
            "unparsed": [],
            "expected": {"sip.invite_rejected_by_stack": "pjsua's own 486"},
        },
        "webhooks": {"byType": {"end-of-call-report": 10}},
        "checks": checks,
        "machine": {"cpu": "test", "cores": 2},
    }


def test_passed_needs_every_check() -> None:
    good = {"check": "a", "measured": "x", "passed": True}
    bad = {"check": "b", "measured": "y", "passed": False}

    assert passed(soak_results([good])) is True
    assert passed(soak_results([good, bad])) is False
    assert passed(soak_results([])) is False


def test_render_lists_checks_and_verdict() -> None:
    checks = [
        {"check": "the router ran the whole soak", "measured": "yes", "passed": True},
        {"check": "RSS grew < 10 %", "measured": "+12.0 %", "passed": False},
    ]

    text = render(soak_results(checks))

    assert text.startswith("# Soak, 2026-12-04: FAILED")
    assert "| the router ran the whole soak | yes | pass |" in text
    assert "| RSS grew < 10 % | +12.0 % | FAIL |" in text
    assert "| route | 1 | 10 | 10 | 0 | none |" in text
    assert "`sip.invite_rejected_by_stack`: pjsua's own 486" in text
    assert "1 call.route_failed" in text


def test_render_shows_unexpected_samples() -> None:
    results = soak_results([{"check": "log", "measured": "x", "passed": False}])
    sample = log_line("call.route_failed", "warning", detail="no reply")
    results["log"]["samples"] = {"call.route_failed": [sample]}

    text = render(results)

    assert f"Unexpected events, the first {SAMPLES_PER_EVENT} of each:" in text
    assert f"`call.route_failed`:\n\n```\n{sample}\n```" in text


def test_render_without_samples_omits_section() -> None:
    text = render(soak_results([{"check": "log", "measured": "x", "passed": True}]))

    assert "Unexpected events" not in text
