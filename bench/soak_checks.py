"""The soak's pure parts: its call rates, its checks and its Markdown report.

Nothing here starts a process, so the unit tests run every check on made-up
numbers, and a soak's JSON can be rendered again without running anything.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from statistics import mean
from typing import Any

from router.logs import redact_secrets, redact_text

Results = dict[str, Any]

# The soak runs at this fraction of the router's top rate for its mix.
LOAD_FRACTION = 0.8
# RSS may grow by less than this fraction from after the warm-up to the end.
MAX_RSS_GROWTH = 0.10
# The RSS after the warm-up and at the end are each the mean of the samples
# over this many seconds, so that one sample taken during a burst of calls
# does not decide the check.
RSS_WINDOW_SECONDS = 10.0
LOG_LEVELS_CHECKED = ("warning", "error", "critical")
# The log scan keeps the text of the first events of each unexpected name,
# so that a failed log check can be diagnosed from the report alone.
SAMPLES_PER_EVENT = 5
# Kept events and lines that are not JSON are cut to this many characters.
SAMPLE_MAX_CHARACTERS = 500

# Log events at warning level or above that the soak's load causes on a
# healthy router, with the reason. A `call.ended` event is named with its
# endedReason. Any other event at those levels fails the log check.
EXPECTED_LOG_EVENTS: dict[str, str] = {
    "call.ended call.start.error-get-phone-number": "the 404 route's unknown number",
    "call.ended call.start.error-concurrency-limit-reached": "a 503 when no call "
    "slot was free, for the INVITE or for the outbound leg a known number reserves",
    "call.ended call.ringing.sip-inbound-caller-hungup-before-call-connect": "the "
    "cancel route's CANCEL, answered 487",
    "sip.invite_rejected_by_stack": "pjsua's own 486 to an INVITE that found "
    "every call slot taken, before the router saw it",
}


@dataclass(frozen=True)
class RouteShare:
    """One route of the mix: its share of the calls and the bench path it matches."""

    key: str
    call_share: float
    bench_path: str
    """The benchmark path whose top rate on the router bounds this route."""
    slots: int = 1
    """Call slots one call takes during its setup in the soak."""
    bench_slots: int = 1
    """Call slots one call held on its bench path."""


# ----- rates ------------------------------------------------------------------------


def newest_bench_results(directory: Path) -> Path | None:
    """Return the newest full benchmark results file in `directory`, or None.

    Files are named `<date>.json`, so the newest sorts last. Soak results
    (`soak-<date>.json`) and smoke runs hold no top rates and are skipped.
    """
    for path in sorted(directory.glob("*.json"), reverse=True):
        if path.name.startswith("soak-"):
            continue
        try:
            results = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(results, dict) and not results.get("smoke"):
            return path
    return None


def router_tops(bench_results: Results) -> dict[str, float]:
    """Return the router's top clean rate per bench path, where it found one."""
    tops = {}
    for key, path in (bench_results.get("paths") or {}).items():
        router = (path.get("systems") or {}).get("router") or {}
        rate = (router.get("top") or {}).get("rate")
        if isinstance(rate, int | float) and rate > 0:
            tops[key] = float(rate)
    return tops


def route_top(top: float, route: RouteShare, max_calls: int) -> float:
    """Scale a bench path's top rate to the call slots the route's calls hold.

    The router keeps one of `max_calls` slots free, so (max_calls - 1) //
    slots calls of a route fit at once. A redirect measured on the bench
    held one slot, but in the soak's `bridge` mode a known number also
    reserves a slot for the outbound leg, so with 4 slots one such call fits
    where three did.
    """
    usable = max_calls - 1
    return top * (usable // route.slots) / (usable // route.bench_slots)


def mix_top_rate(
    tops: Mapping[str, float], routes: Iterable[RouteShare], max_calls: int
) -> float | None:
    """Estimate the router's top rate for the mix from its top rate per path.

    A call of a route costs 1 / top of the router's capacity, so the mix's
    top is 1 / sum(share / top), the weighted harmonic mean. None when a
    route's path has no top. NOTE: this is an estimate. The bench ran each
    path alone, with SIPp spacing calls evenly, while the soak's routes come
    from separate callers whose calls collide, so some get 503 at this rate.
    """
    if max_calls < 2:
        return None
    cost = 0.0
    for route in routes:
        top = tops.get(route.bench_path)
        if top is None:
            return None
        scaled = route_top(top, route, max_calls)
        if scaled <= 0:
            return None
        cost += route.call_share / scaled
    return 1 / cost if cost else None


def route_rates(total_rate: float, routes: Iterable[RouteShare]) -> dict[str, float]:
    """Split `total_rate` calls per second over the routes by their call shares."""
    routes = list(routes)
    shares = sum(route.call_share for route in routes)
    return {route.key: total_rate * route.call_share / shares for route in routes}


# ----- checks ------------------------------------------------------------------------


def check_final_responses(routes: Mapping[str, Results]) -> Results:
    """Check that SIPp counted every placed call as successful or failed.

    Each route's JSON carries SIPp's `placed`, `successful` and `failed`
    counts and `failureReasons`. A call that failed by a receive timeout
    ("no response") or was aborted got no final response. A call that got
    an unexpected final response, such as a 503 from a full router, did.
    """
    placed = sum(route["placed"] for route in routes.values())
    successful = sum(route["successful"] for route in routes.values())
    failed = sum(route["failed"] for route in routes.values())
    reasons: Counter[str] = Counter()
    for route in routes.values():
        reasons.update(route.get("failureReasons") or {})
    unanswered = reasons["no response"] + reasons["aborted"]
    left_open = placed - successful - failed
    return {
        "check": "every call got a final response",
        "measured": f"{placed} placed, {successful} successful, {failed} failed "
        f"({_reasons_text(reasons)}), {unanswered} without a final response, "
        f"{left_open} left open",
        "passed": placed > 0 and left_open == 0 and unanswered == 0,
    }


def check_end_of_call_records(
    received: int,
    accepted: int,
    reports: int,
    report_messages: int,
    ended_events: int,
) -> Results:
    """Check one end-of-call record per call the router accepted.

    `received` counts `call.received` log events, one per INVITE that reached
    the router's call path, each of which must end with one `call.ended`
    event (`ended_events`). `accepted` counts `call.trunk_matched` events:
    the calls that passed the admission check, each of which must send one
    end-of-call-report. A call the router turned away at the INVITE, full,
    gets a 503 and a `call.ended` event but no report. `reports` counts the
    distinct calls that sent a report to the webhook server, and
    `report_messages` the reports themselves.
    """
    return {
        "check": "one end-of-call record per accepted call",
        "measured": f"{accepted} accepted of {received} received; "
        f"{reports} calls reported ({report_messages} end-of-call-report "
        f"messages); {ended_events} call.ended log events",
        "passed": accepted > 0
        and reports == accepted
        and report_messages == accepted
        and ended_events == received,
    }


def check_router_up(exit_status: int | None) -> Results:
    """Check that the router ran until the soak stopped it."""
    return {
        "check": "the router ran the whole soak",
        "measured": "yes"
        if exit_status is None
        else f"exited with status {exit_status}",
        "passed": exit_status is None,
    }


def rss_growth(
    samples: list[tuple[float, int]], warm_up_seconds: float, end_seconds: float
) -> Results | None:
    """Return the RSS after the warm-up, at the end, and the growth between.

    `samples` are (seconds since the load started, RSS bytes). The RSS after
    the warm-up is the mean over the first `RSS_WINDOW_SECONDS` after it, and
    the RSS at the end the mean over the last `RSS_WINDOW_SECONDS` before
    `end_seconds`. None when either window has no sample.
    """
    after_end = warm_up_seconds + RSS_WINDOW_SECONDS
    end_start = end_seconds - RSS_WINDOW_SECONDS
    after = [rss for t, rss in samples if warm_up_seconds <= t < after_end]
    end = [rss for t, rss in samples if end_start <= t <= end_seconds]
    if not after or not end:
        return None
    start_bytes, end_bytes = mean(after), mean(end)
    return {
        "afterWarmUpMb": _mb(start_bytes),
        "endMb": _mb(end_bytes),
        "peakMb": _mb(max(rss for _, rss in samples)),
        "growth": round(end_bytes / start_bytes - 1, 4),
        "samples": len(samples),
    }


def check_rss_growth(growth: Results | None) -> Results:
    """Check that RSS grew by less than `MAX_RSS_GROWTH` after the warm-up."""
    if growth is None:
        return {
            "check": f"RSS grew < {100 * MAX_RSS_GROWTH:g} % after the warm-up",
            "measured": "not measured: too few RSS samples",
            "passed": False,
        }
    return {
        "check": f"RSS grew < {100 * MAX_RSS_GROWTH:g} % after the warm-up",
        "measured": f"{growth['afterWarmUpMb']:g} MB after the warm-up, "
        f"{growth['endMb']:g} MB at the end ({100 * growth['growth']:+.1f} %), "
        f"peak {growth['peakMb']:g} MB",
        "passed": growth["growth"] < MAX_RSS_GROWTH,
    }


def scan_log(lines: Iterable[str]) -> Results:
    """Count a JSON log's events at warning level and above, and its non-JSON lines.

    Returns `events` ({level: {event: count}}, a `call.ended` event named
    with its endedReason), the counts of the `call.received`,
    `call.trunk_matched` and `call.ended` events, `unparsed`: lines that
    are not a JSON object with an `event`, such as a traceback, and
    `samples`: {event: [JSON text]}, the first `SAMPLES_PER_EVENT` events
    of each unexpected name at those levels. Kept text is redacted as the
    router redacts its log, then cut to `SAMPLE_MAX_CHARACTERS`.
    """
    events: dict[str, Counter[str]] = {level: Counter() for level in LOG_LEVELS_CHECKED}
    received = accepted = ended = 0
    unparsed: list[str] = []
    samples: dict[str, list[str]] = {}
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            event = str(record["event"])
        except (ValueError, KeyError, TypeError):
            unparsed.append(redact_text(line.rstrip())[:SAMPLE_MAX_CHARACTERS])
            continue
        level = str(record.get("level", "")).lower()
        if event == "call.received":
            received += 1
        elif event == "call.trunk_matched":
            accepted += 1
        elif event == "call.ended":
            ended += 1
            event = f"{event} {record.get('ended_reason') or 'without endedReason'}"
        if level in events:
            events[level][event] += 1
            _keep_sample(samples, event, record)
    return {
        "events": {level: dict(counts) for level, counts in events.items()},
        "received": received,
        "accepted": accepted,
        "ended": ended,
        "unparsed": unparsed,
        "samples": samples,
    }


def _keep_sample(samples: dict[str, list[str]], event: str, record: Any) -> None:
    if event in EXPECTED_LOG_EVENTS:
        return
    event_samples = samples.setdefault(event, [])
    if len(event_samples) >= SAMPLES_PER_EVENT:
        return
    redacted = redact_secrets(None, "", dict(record))
    text = json.dumps(redacted, default=str)
    event_samples.append(text[:SAMPLE_MAX_CHARACTERS])


def check_log_events(scan: Results) -> Results:
    """Check the log for events at warning level and above that are not expected."""
    unexpected: Counter[str] = Counter()
    expected: Counter[str] = Counter()
    for counts in scan["events"].values():
        for event, count in counts.items():
            target = expected if event in EXPECTED_LOG_EVENTS else unexpected
            target[event] += count
    unparsed = len(scan["unparsed"])
    measured = (
        f"unexpected: {_reasons_text(unexpected)}; expected: {_reasons_text(expected)}"
    )
    if unparsed:
        measured += f"; {unparsed} lines that are not JSON events"
    return {
        "check": "no error or warning events in the log but the expected ones",
        "measured": measured,
        "passed": not unexpected and not unparsed,
    }


def _reasons_text(counts: Mapping[str, int]) -> str:
    if not counts:
        return "none"
    return ", ".join(f"{count} {name}" for name, count in sorted(counts.items()))


def _mb(size: float) -> float:
    return round(size / 1024 / 1024, 1)


# ----- report ------------------------------------------------------------------------


def passed(results: Results) -> bool:
    """Return whether every check of a soak passed."""
    return bool(results["checks"]) and all(
        check["passed"] for check in results["checks"]
    )


def render(results: Results) -> str:
    """Return the soak's Markdown report."""
    lines = [
        *_header_lines(results),
        *_check_lines(results["checks"]),
        *_route_lines(results["routes"]),
        *_log_lines(results["log"]),
    ]
    webhooks = results.get("webhooks") or {}
    lines += [
        "## Webhooks received",
        "",
        f"By type: {_reasons_text(webhooks.get('byType') or {})}.",
        "",
        "## Machine",
        "",
        _machine_text(results["machine"]),
        "",
    ]
    return "\n".join(lines)


def _header_lines(results: Results) -> list[str]:
    verdict = "passed" if passed(results) else "FAILED"
    return [
        f"# Soak, {results['date']}: {verdict}",
        "",
        f"`{results['command']}`, started {results['started']}, "
        f"{results['minutes']:g} minutes of load, {results['warmUpSeconds']:g} s "
        "of it warm-up.",
        "",
        f"**Rate.** {results['rate']['total']:g} calls/s in all. "
        f"{results['rate']['source']}",
        "",
        f"**Build limits.** {_limits_text(results.get('limits'))}",
        "",
    ]


def _check_lines(checks: list[Results]) -> list[str]:
    lines = ["## Checks", "", "| check | measured | result |", "|---|---|---|"]
    for check in checks:
        mark = "pass" if check["passed"] else "FAIL"
        lines.append(f"| {check['check']} | {check['measured']} | {mark} |")
    return [*lines, ""]


def _route_lines(routes: Results) -> list[str]:
    lines = [
        "## Routes",
        "",
        "| route | calls/s | placed | successful | failed | failures |",
        "|---|---|---|---|---|---|",
    ]
    for route in routes.values():
        lines.append(
            f"| {route['title']} | {route['rate']:g} | {route['placed']} | "
            f"{route['successful']} | {route['failed']} | "
            f"{_reasons_text(route.get('failureReasons') or {})} |"
        )
    return [*lines, ""]


def _log_lines(log: Results) -> list[str]:
    lines = ["## Log events at warning level and above", ""]
    for level, counts in log["events"].items():
        lines.append(f"- {level}: {_reasons_text(counts)}")
    lines += ["", "Expected events:", ""]
    for event, reason in log["expected"].items():
        lines.append(f"- `{event}`: {reason}")
    # Soaks recorded before samples were kept have none.
    samples = log.get("samples") or {}
    if samples:
        lines += ["", f"Unexpected events, the first {SAMPLES_PER_EVENT} of each:"]
    for event, texts in sorted(samples.items()):
        lines += ["", f"`{event}`:", "", "```", *texts, "```"]
    if log["unparsed"]:
        lines += ["", "Lines that are not JSON events (first 5):", "", "```"]
        lines += log["unparsed"][:5]
        lines.append("```")
    return [*lines, ""]


def _machine_text(machine: Results) -> str:
    text = f"{machine.get('cpu')}, {machine.get('cores')} cores"
    for key in ("python", "pjsua2", "sipp"):
        if machine.get(key):
            text += f"; {key} {machine[key]}"
    before, after = machine.get("loadAverageBefore"), machine.get("loadAverageAfter")
    if before and after:
        text += f"; load average {before[0]:g} before, {after[0]:g} after"
    return text + "."


def _limits_text(limits: Results | None) -> str:
    if not limits:
        return "not read"
    return (
        f"{limits.get('maxCalls')} call slots, {limits.get('maxSockets')} sockets; "
        f"bridged calls at once: at most {limits.get('bridgedCallsAtOnce')}"
    )
