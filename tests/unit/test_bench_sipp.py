"""Reading SIPp's output files in the benchmark's load steps."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.sipp import (
    failure_reasons,
    percentile,
    rate_arguments,
    setup_latencies_ms,
    stat_counter,
)

# Lines of a `-trace_shortmsg` file: date, time, epoch seconds, S(ent) or
# R(eceived), Call-ID, CSeq, first line. Call 1 gets 404 after 2.5 ms;
# call 2's INVITE is sent twice and answered 302 after 4 ms.
SHORT_TRACE = "\n".join(
    "\t".join(fields)
    for fields in [
        ("2026-12-04", "18:00:18.680000", "100.000000", "S", "1-1@h", "CSeq:1 INVITE",
         "INVITE sip:1@h SIP/2.0"),
        ("2026-12-04", "18:00:18.681000", "100.001000", "R", "1-1@h", "CSeq:1 INVITE",
         "SIP/2.0 100 Trying"),
        ("2026-12-04", "18:00:18.682500", "100.002500", "R", "1-1@h", "CSeq:1 INVITE",
         "SIP/2.0 404 Not Found"),
        ("2026-12-04", "18:00:18.682600", "100.002600", "S", "1-1@h", "CSeq:1 ACK",
         "ACK sip:1@h SIP/2.0"),
        ("2026-12-04", "18:00:19.000000", "101.000000", "S", "2-1@h", "CSeq:1 INVITE",
         "INVITE sip:1@h SIP/2.0"),
        ("2026-12-04", "18:00:19.000100", "101.000100", "S", "2-1@h", "CSeq:1 INVITE",
         "INVITE sip:1@h SIP/2.0"),
        ("2026-12-04", "18:00:19.004000", "101.004000", "R", "2-1@h", "CSeq:1 INVITE",
         "SIP/2.0 302 Moved Temporarily"),
        ("2026-12-04", "18:00:19.005000", "101.005000", "R", "2-1@h", "CSeq:1 INVITE",
         "SIP/2.0 302 Moved Temporarily"),
    ]
)  # fmt: skip

ERROR_FILE = (
    "The following events occurred:\n"
    "2026-12-04\t17:59:53.945780\t1796407193.945780: Aborting call on unexpected "
    "message for Call-Id '179-1@h': while expecting '100' (index 1), received "
    "'SIP/2.0 486 Busy Here\nVia: SIP/2.0/UDP 127.0.0.1\n\n'"
    "2026-12-04\t17:59:53.946000\t1796407193.946000: Aborting call on unexpected "
    "message for Call-Id '180-1@h': while expecting '404' (index 3), received "
    "'SIP/2.0 503 Service Unavailable\n\n'"
    "2026-12-04\t17:59:54.000000\t1796407194.000000: Call-Id: 181-1@h, receive "
    "timeout on message uac expect 404:1 without label to jump to (ontimeout "
    "attribute): aborting call"
    "2026-12-04\t17:59:54.100000\t1796407194.100000: Aborting call on unexpected "
    "message for Call-Id '182-1@h': while expecting '404' (index 3), received "
    "'SIP/2.0 503 Service Unavailable\n\n'"
    "2026-12-04\t17:59:54.200000\t1796407194.200000: Dead call 183-1@h "
    "(successful), received 'SIP/2.0 404 Not Found\n\n'"
)


def test_setup_latency_from_first_invite_to_first_final(tmp_path: Path) -> None:
    trace = tmp_path / "messages.tsv"
    trace.write_text(SHORT_TRACE + "\n")

    latencies = setup_latencies_ms(trace)

    assert latencies == pytest.approx([2.5, 4.0])


def test_failure_reasons_counted_by_status(tmp_path: Path) -> None:
    errors = tmp_path / "errors.log"
    errors.write_text(ERROR_FILE)

    reasons = failure_reasons(errors)

    assert reasons == {"unexpected 486": 1, "unexpected 503": 2, "no response": 1}


def test_failure_reasons_empty_without_file(tmp_path: Path) -> None:
    assert failure_reasons(tmp_path / "missing.log") == {}


def test_stat_counter_from_last_stat_line(tmp_path: Path) -> None:
    stat = tmp_path / "stat.csv"
    stat.write_text(
        "StartTime;SuccessfulCall(P);SuccessfulCall(C);DeadCallMsgs(C);\n"
        "t0;10;10;0;\n"
        "t1;5;298;7;\n"
    )

    assert stat_counter(stat, "SuccessfulCall(C)") == 298
    assert stat_counter(stat, "DeadCallMsgs(C)") == 7


def test_stat_counter_none_before_sipp_wrote_any(tmp_path: Path) -> None:
    assert stat_counter(tmp_path / "stat.csv", "SuccessfulCall(C)") is None


@pytest.mark.parametrize(
    ("rate", "arguments"),
    [
        (50.0, ["-r", "50", "-rp", "1000"]),
        (0.75, ["-r", "3", "-rp", "4000"]),
        (0.5, ["-r", "1", "-rp", "2000"]),
        (12800.0, ["-r", "12800", "-rp", "1000"]),
    ],
)
def test_rate_arguments_use_whole_calls(rate: float, arguments: list[str]) -> None:
    assert rate_arguments(rate) == arguments


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]

    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.5) is None
