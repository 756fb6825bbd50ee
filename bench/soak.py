"""Run the router for minutes under a mix of routes, then check it (`make soak`).

    python -m bench.soak                 # 10 minutes at 80 % of the mix's top rate
    python -m bench.soak --minutes 2     # a short run
    python -m bench.soak --rate 10       # 10 calls/s in all, without bench results

One router in `bridge` mode takes five routes at once, each from its own
SIPp caller: a static assistant bridged to a SIPp runtime for 1 s, a 302
from a ringing hook, a 404 for an unknown number, an assistant-request
whose reply is a `redirect` destination (302), and callers who CANCEL
during that assistant-request. The rate is 80 % of the mix's top, estimated
from the router's top per path in the newest `bench/results/<date>.json`.
The report goes to stdout and `bench/results/soak-<date>.md`, with every
number in `soak-<date>.json`; the exit status is 1 when a check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench import machine, soak_checks
from bench.output import command_line, say, write_results
from bench.procs import LOOPBACK, rss_bytes
from bench.run import RESULTS_DIR
from bench.sipp import Load, SippCaller, StepResult, require_sipp, stat_counter
from bench.soak_checks import LOAD_FRACTION, RouteShare
from bench.systems import (
    ASK_SERVER_NUMBER,
    STATIC_NUMBER,
    UNKNOWN_NUMBER,
    RouterSystem,
    Setup,
    SippRuntime,
    WebhookServer,
)

REDIRECT_NUMBER = "14155550102"
BRIDGED_HOLD_MS = 1000
# The webhook server responds after this long, as on the bench's webhook path.
WEBHOOK_DELAY_SECONDS = 0.1
# Callers on the cancel route send CANCEL this long after the 180, while
# the router still waits for the webhook server's reply.
CANCEL_AFTER_MS = 50
RSS_SAMPLE_SECONDS = 2.0
# The warm-up is this share of the run, at most `MAX_WARM_UP_SECONDS`.
WARM_UP_SHARE = 0.25
MAX_WARM_UP_SECONDS = 60.0
# SoakRuntime serves calls for at most 65 minutes.
MAX_MINUTES = 60.0
# After the load, how long to wait for the router's calls to end and its
# webhook queue to empty before stopping it.
QUIET_TIMEOUT_SECONDS = 30.0


class Route:
    """One route of the mix: its SIPp load, its share of calls and its bench path."""

    def __init__(
        self, share: RouteShare, title: str, load: Load, bridged: bool = False
    ) -> None:
        self.share = share
        self.title = title
        self.load = load
        self.bridged = bridged

    @property
    def key(self) -> str:
        return self.share.key


# Shares of the calls, and the call slots each call takes during its setup.
# In `bridge` mode every call to a known number reserves a second slot for
# the outbound leg it may dial, so with the wheel's 4 slots only one such
# call runs at a time. Bridged calls are few, because each holds both
# slots for its whole length.
ROUTES = (
    Route(
        RouteShare("bridged", 0.02, "static", slots=2, bench_slots=2),
        "static assistant, bridged 1 s",
        Load("uac-static-assistant-expect-200.xml", STATIC_NUMBER, BRIDGED_HOLD_MS),
        bridged=True,
    ),
    Route(
        RouteShare("redirect", 0.30, "redirect", slots=2),
        "302 from a ringing hook",
        Load("uac-expect-302.xml", REDIRECT_NUMBER),
    ),
    Route(
        RouteShare("reject", 0.30, "reject"),
        "404, unknown number",
        Load("uac-expect-404.xml", UNKNOWN_NUMBER),
    ),
    Route(
        RouteShare("webhook", 0.25, "webhook", slots=2),
        "assistant-request, then 302",
        Load("uac-expect-302.xml", ASK_SERVER_NUMBER),
    ),
    Route(
        RouteShare("cancel", 0.13, "webhook", slots=2),
        "CANCEL during the assistant-request",
        Load(
            "uac-cancel-after-hold-expect-487.xml", ASK_SERVER_NUMBER, CANCEL_AFTER_MS
        ),
    ),
)


class SoakRouter(RouterSystem):
    """The router in `bridge` mode with a number for each route of the mix."""

    def config(self) -> dict[str, Any]:
        config = super().config()
        # The end-of-call check counts `call.received` and
        # `call.trunk_matched`, which the router logs at debug level.
        config["router"]["logLevel"] = "debug"
        redirect_to_runtime = {
            "type": "sip",
            "sipUri": self.setup.runtime_uri,
            "transferPlan": {"sipVerb": "redirect"},
        }
        config["phoneNumbers"].append(
            {
                "id": "pn-redirect",
                "provider": "byo-phone-number",
                "credentialId": "trunk-bench",
                "number": f"+{REDIRECT_NUMBER}",
                "assistantId": "asst-bench",
                "hooks": [
                    {
                        "on": "call.ringing",
                        "do": [
                            {"type": "transfer", "destination": redirect_to_runtime}
                        ],
                    }
                ],
            }
        )
        return config


class SoakRuntime(SippRuntime):
    """The SIPp runtime, alive long enough for any soak of up to 60 minutes."""

    MAX_SECONDS = 3900


class RssSampler:
    """Samples a process's RSS from /proc every few seconds, in a thread."""

    def __init__(self, pid: int, interval_seconds: float) -> None:
        self.pid = pid
        self.interval = interval_seconds
        self.samples: list[tuple[float, int]] = []
        self.started = time.monotonic()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            rss = rss_bytes(self.pid)
            if rss:
                self.samples.append((time.monotonic() - self.started, rss))
            if self._stopping.wait(self.interval):
                return

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()


def choose_rate(
    rate: float | None, results_dir: Path
) -> tuple[float, str, dict[str, Any]]:
    """Return the total calls/s, where it came from, and the bench tops used."""
    if rate is not None:
        return rate, f"Set by --rate {rate:g}.", {}
    path = soak_checks.newest_bench_results(results_dir)
    if path is None:
        raise SystemExit(
            f"no benchmark results in {results_dir}: run `make bench` first, "
            "or give the total rate with --rate CALLS_PER_SECOND"
        )
    bench_results = json.loads(path.read_text())
    tops = soak_checks.router_tops(bench_results)
    max_calls = int((bench_results.get("limits") or {}).get("maxCalls") or 0)
    top = soak_checks.mix_top_rate(tops, (r.share for r in ROUTES), max_calls)
    if top is None:
        needed = sorted({route.share.bench_path for route in ROUTES})
        raise SystemExit(
            f"{path} has no router top rate for every one of the paths {needed}, "
            "or no call slot limit: run `make bench` again, or give the total "
            "rate with --rate CALLS_PER_SECOND"
        )
    total = round(LOAD_FRACTION * top, 2)
    source = (
        f"{100 * LOAD_FRACTION:g} % of {top:.1f} calls/s, the mix's top estimated "
        f"from the router's top per path in `{path.name}` "
        f"({', '.join(f'{key} {value:g}' for key, value in sorted(tops.items()))}) "
        f"and its {max_calls} call slots."
    )
    return total, source, tops


def run_soak(
    total_rate: float, minutes: float, workdir: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the mix for `minutes`; return what was measured and the build limits."""
    seconds = 60 * minutes
    runtime = SoakRuntime(workdir / "runtime")
    destination = {
        "destination": {
            "type": "sip",
            "sipUri": runtime.uri,
            "transferPlan": {"sipVerb": "redirect"},
        }
    }
    webhooks = WebhookServer(workdir / "webhooks", WEBHOOK_DELAY_SECONDS, destination)
    router = SoakRouter(Setup("bridge", runtime.uri, webhooks.url), workdir / "router")
    try:
        router.start()
        limits = router.limits()
        bridged_at_once = max(0, (int(limits.get("maxCalls", 0)) - 1) // 2)
        limits["bridgedCallsAtOnce"] = bridged_at_once
        say(f"router up, build limits {limits}")
        rates = soak_checks.route_rates(total_rate, (r.share for r in ROUTES))
        sampler = RssSampler(router.pid, RSS_SAMPLE_SECONDS)
        routes = _run_callers(router, rates, seconds, bridged_at_once, workdir)
        load_seconds = time.monotonic() - sampler.started
        sampler.stop()
        exit_status = None if router.alive() else router.process.returncode
        if exit_status is None:
            _wait_until_idle(router, QUIET_TIMEOUT_SECONDS)
        router.stop()  # flushes the webhooks still queued, within 5 s
        counts = webhooks.counts()
        log_lines = router.log_path.read_text(errors="replace").splitlines()
    finally:
        router.stop()
        webhooks.stop()
        runtime.stop()
    measured = {
        "routes": routes,
        "rssSamples": sampler.samples,
        "loadSeconds": load_seconds,
        "webhooks": counts,
        "logScan": soak_checks.scan_log(log_lines),
        "routerExitStatus": exit_status,
    }
    return measured, limits


def _wait_until_idle(router: RouterSystem, timeout_seconds: float) -> None:
    """Wait until the router has no active call and no webhook waiting.

    Stopping it earlier would leave reports to its shutdown flush, which
    gives up after 5 s, and the check would count reports lost at shutdown.
    """
    names = ("active_calls", "webhook_queue_depth")
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        values = _metric_values(router, names)
        if len(values) == len(names) and not any(values.values()):
            return
        time.sleep(0.5)
    say(f"the router was still busy {timeout_seconds:g} s after the load")


def _metric_values(router: RouterSystem, names: tuple[str, ...]) -> dict[str, float]:
    """Read unlabelled gauges from the router's /metrics; {} when it fails."""
    url = f"http://{LOOPBACK}:{router.http_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return {}
    values = {}
    for line in text.splitlines():
        for name in names:
            if line.startswith(f"cozmox_router_{name} "):
                values[name] = float(line.split()[1])
    return values


def _run_callers(
    router: RouterSystem,
    rates: dict[str, float],
    seconds: float,
    bridged_at_once: int,
    workdir: Path,
) -> dict[str, dict[str, Any]]:
    """Start one SIPp caller per route, wait for all, and return their counts."""
    callers = {}
    try:
        for route in ROUTES:
            rate = rates[route.key]
            if rate <= 0 or (route.bridged and bridged_at_once == 0):
                continue
            calls = max(1, round(rate * seconds))
            callers[route.key] = SippCaller(
                route.load,
                router.sip_target,
                rate,
                calls,
                directory=workdir / "callers" / route.key,
                max_open_calls=bridged_at_once if route.bridged else None,
            )
            say(f"{route.key}: {calls} calls at {rate:.3g}/s")
        routes = {}
        for route in ROUTES:
            caller = callers.get(route.key)
            if caller is not None:
                result = caller.finish(router.alive)
                routes[route.key] = _route_json(route, caller, result)
                say(f"{route.key}: {routes[route.key]}")
        return routes
    finally:
        for caller in callers.values():
            caller.stop()


def _route_json(route: Route, caller: SippCaller, result: StepResult) -> dict[str, Any]:
    placed = stat_counter(caller.files.stat, "OutgoingCall(C)") or 0
    failed = stat_counter(caller.files.stat, "FailedCall(C)") or 0
    return {
        "title": route.title,
        "rate": round(result.rate, 3),
        "offered": result.offered,
        "placed": placed,
        "successful": result.successful,
        "failed": failed,
        "failureReasons": result.failure_reasons,
        "lateResponses": result.late_responses,
        "routerExited": result.crashed,
    }


def evaluate(
    measured: dict[str, Any], warm_up_seconds: float
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Run every check on what the soak measured."""
    scan = measured["logScan"]
    webhooks = measured["webhooks"]
    growth = soak_checks.rss_growth(
        [tuple(sample) for sample in measured["rssSamples"]],
        warm_up_seconds,
        measured["loadSeconds"],
    )
    checks = [
        soak_checks.check_router_up(measured["routerExitStatus"]),
        soak_checks.check_final_responses(measured["routes"]),
        soak_checks.check_end_of_call_records(
            received=scan["received"],
            accepted=scan["accepted"],
            reports=webhooks.get("reportedCalls", 0),
            report_messages=webhooks.get("byType", {}).get("end-of-call-report", 0),
            ended_events=scan["ended"],
        ),
        soak_checks.check_rss_growth(growth),
        soak_checks.check_log_events(scan),
    ]
    return checks, growth


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    arguments = parser.parse_args(argv)
    if arguments.render is not None:
        return render_again(arguments.render)
    if not 0 < arguments.minutes <= MAX_MINUTES:
        parser.error(f"--minutes must be above 0 and at most {MAX_MINUTES:g}")
    if arguments.rate is not None and arguments.rate <= 0:
        parser.error("--rate must be above 0 calls per second")
    require_sipp()
    total, source, tops = choose_rate(arguments.rate, arguments.results_dir)
    warm_up = min(MAX_WARM_UP_SECONDS, WARM_UP_SHARE * 60 * arguments.minutes)
    workdir = Path(tempfile.mkdtemp(prefix="cozmox-soak-"))
    say(f"soak: {total:g} calls/s for {arguments.minutes:g} min; files in {workdir}")
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    load_before = os.getloadavg()
    measured, limits = run_soak(total, arguments.minutes, workdir)
    checks, growth = evaluate(measured, warm_up)

    results = {
        "date": time.strftime("%Y-%m-%d"),
        "started": started,
        "command": command_line("bench.soak", "soak", argv),
        "minutes": arguments.minutes,
        "warmUpSeconds": warm_up,
        "rate": {"total": total, "source": source, "benchTops": tops},
        "limits": limits,
        **_measured_json(measured),
        "checks": checks,
        "rss": growth,
        "machine": machine.describe(load_before, os.getloadavg()),
    }
    results["passed"] = soak_checks.passed(results)
    text = soak_checks.render(results)
    write_results(arguments.results_dir, f"soak-{results['date']}", results, text)
    print(text)
    if not arguments.keep_files:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if results["passed"] else 1


def _measured_json(measured: dict[str, Any]) -> dict[str, Any]:
    scan = measured["logScan"]
    return {
        "routes": measured["routes"],
        "rssSamples": [[round(t, 1), rss] for t, rss in measured["rssSamples"]],
        "webhooks": measured["webhooks"],
        "log": {
            "events": scan["events"],
            "received": scan["received"],
            "accepted": scan["accepted"],
            "ended": scan["ended"],
            "unparsed": scan["unparsed"][:20],
            "samples": scan["samples"],
            "expected": soak_checks.EXPECTED_LOG_EVENTS,
        },
    }


def render_again(json_path: Path) -> int:
    """Write the Markdown of an earlier soak again from its JSON, and print it."""
    results = json.loads(json_path.read_text())
    text = soak_checks.render(results)
    json_path.with_suffix(".md").write_text(text)
    print(text)
    return 0 if soak_checks.passed(results) else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description="Run the router under a mix of routes for minutes, then check "
        "final responses, end-of-call records, RSS growth and log events.",
    )
    parser.add_argument(
        "--minutes",
        type=float,
        default=10.0,
        help="minutes of load, the warm-up included (default: 10, at most "
        f"{MAX_MINUTES:g})",
    )
    parser.add_argument(
        "--rate",
        type=float,
        help="total calls per second over every route (default: "
        f"{100 * LOAD_FRACTION:g} %% of the mix's top from the newest bench results)",
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=RESULTS_DIR,
        help="folder of the bench results, and for soak-<date>.md and .json "
        "(default: bench/results)",
    )
    parser.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="run nothing: write the Markdown of an earlier soak-<date>.json again",
    )
    parser.add_argument(
        "--keep-files",
        action="store_true",
        help="keep the SIPp files and the router's log in the working folder",
    )
    return parser


if __name__ == "__main__":
    sys.exit(main())
