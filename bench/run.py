"""Run the benchmark: every path on every system in turn, then the report.

    python -m bench            # the full run (`make bench`), about 15 minutes
    python -m bench --smoke    # one rate for a few seconds, router and bare

Each system runs alone, as a fresh process per path, with its own SIPp
caller and, where the path needs them, its own SIPp runtime and webhook
server. Progress goes to stderr; the report goes to stdout and to
`bench/results/<date>.md`, with every number in `<date>.json` beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench import machine, report
from bench.ladder import LadderResult, climb
from bench.output import command_line, say, write_results
from bench.plan import (
    BARE,
    FULL_PATHS,
    HOLD_RAMP_RATE,
    HOLD_SECONDS,
    KAMAILIO,
    REJECT,
    ROUTER,
    SMOKE_RATE,
    SMOKE_SECONDS_PER_SYSTEM,
    SMOKE_SYSTEMS,
    STATIC,
    BenchPath,
)
from bench.procs import LOOPBACK, free_port, rss_bytes
from bench.sipp import Load, SippCaller, StepResult, require_sipp, run_step
from bench.systems import (
    REPO_ROOT,
    BareSystem,
    KamailioSystem,
    RouterSystem,
    Setup,
    SippRuntime,
    System,
    WebhookServer,
)

RESULTS_DIR = REPO_ROOT / "bench" / "results"
CONCURRENCY = "concurrency"
PARTS = (*(path.key for path in FULL_PATHS), CONCURRENCY)
# The whole run stops climbing once this is spent, so that `make bench`
# ends within 20 minutes on a busy machine.
DEFAULT_BUDGET_MINUTES = 15.5
# Pause before each step: pjlib keeps a closed socket's ioqueue slot for
# 500 ms (PJ_IOQUEUE_KEY_FREE_DELAY), and transactions of the last step end.
SETTLE_SECONDS = 1.0
IDLE_SECONDS = 6.0


class Budget:
    """The wall-clock time the run may still take."""

    def __init__(self, minutes: float) -> None:
        self.started = time.monotonic()
        self.deadline = self.started + 60 * minutes

    def out_of_time(self) -> bool:
        return time.monotonic() > self.deadline

    def elapsed_seconds(self) -> float:
        return time.monotonic() - self.started


class Bench:
    """Runs paths on systems and collects what they measured, as JSON."""

    def __init__(self, workdir: Path, budget: Budget) -> None:
        self.workdir = workdir
        self.budget = budget
        self.kamailio_workers = os.cpu_count() or 1
        self.limits: dict[str, Any] | None = None
        self._idle: dict[str, float] = {}

    # ----- paths ----------------------------------------------------------------

    def run_path(self, path: BenchPath, systems: tuple[str, ...]) -> dict[str, Any]:
        """Measure `path` on each system in turn."""
        measured = {}
        for name in systems:
            if name in path.systems:
                measured[name] = self.run_system(path, name)
        return {"title": path.title, "systems": measured}

    def run_system(self, path: BenchPath, name: str) -> dict[str, Any]:
        """Start one system for `path`, climb the rate ladder, then stop it."""
        say(f"== {path.title} on {name}")
        with self._helpers(path) as setup:
            system = self._make_system(name, setup, path.key)
            system.start()
            try:
                return self._measure(system, path)
            finally:
                system.stop()

    def run_smoke(self, path: BenchPath, name: str, rate: float) -> dict[str, Any]:
        """Run one traced step at `rate` on one system."""
        say(f"== smoke: {path.title} on {name} at {rate:g} calls/s")
        with self._helpers(path) as setup:
            system = self._make_system(name, setup, path.key)
            system.start()
            try:
                if isinstance(system, RouterSystem):
                    self.limits = system.limits()
                crashes: list[dict[str, Any]] = []
                step = self._step(system, path, rate, crashes, "smoke", trace=True)
            finally:
                system.stop()
        ladder = LadderResult(steps=[step], top=rate if step.clean else None)
        return _system_json(system, ladder, step, None, crashes, [("smoke", step)])

    def run_probe(
        self, path: BenchPath, name: str, rate: float, calls: int | None
    ) -> dict[str, Any]:
        """Measure one system's idle CPU, then run one traced step at `rate`."""
        say(f"== probe: {path.title} on {name} at {rate:g} calls/s")
        if calls is not None:
            path = replace(path, step_seconds=calls / rate, min_calls=calls)
        with self._helpers(path) as setup:
            system = self._make_system(name, setup, path.key)
            system.start()
            say(f"   pid {system.pid}")
            try:
                idle = self._idle_fraction(system, fresh=True)
                step = self._step(system, path, rate, [], "probe", trace=True)
            finally:
                system.stop()
        idle_ms = 1000 * idle * step.wall_seconds / max(1, step.offered)
        net = step.cpu_ms_per_call - idle_ms
        latency = step.as_json()["latencyMs"] or {}
        say(
            f"   net CPU {net:.3f} ms/call, setup p50 {latency.get('p50')} ms, "
            f"p99 {latency.get('p99')} ms"
        )
        return {
            "idleCpuFraction": round(idle, 4),
            "netCpuMsPerCall": round(net, 3),
            **step.as_json(),
        }

    def _measure(self, system: System, path: BenchPath) -> dict[str, Any]:
        idle = self._idle_fraction(system, fresh=path.fresh_idle)
        if isinstance(system, RouterSystem) and self.limits is None:
            self.limits = system.limits()
            say(f"   SIP build limits: {self.limits}")
        crashes: list[dict[str, Any]] = []
        ladder = climb(
            path.ladder,
            lambda rate: self._step(system, path, rate, crashes, "ladder"),
            self.budget.out_of_time,
        )
        latency = None
        if ladder.top is not None and not self.budget.out_of_time():
            half = round(ladder.top / 2, 3)
            latency = self._step(system, path, half, crashes, "latency", trace=True)
        steps = [("ladder", step) for step in ladder.steps]
        if latency is not None:
            steps.append(("latency", latency))
        return _system_json(system, ladder, latency, idle, crashes, steps)

    def _step(
        self,
        system: System,
        path: BenchPath,
        rate: float,
        crashes: list[dict[str, Any]],
        purpose: str,
        *,
        trace: bool = False,
        seconds: float | None = None,
    ) -> StepResult:
        if not system.alive():
            system.restart()
        time.sleep(SETTLE_SECONDS)
        calls = max(path.min_calls, round(rate * (seconds or path.step_seconds)))
        directory = self.workdir / path.key / _slug(system.name) / f"{purpose}-{rate:g}"
        system.begin_step()
        result = run_step(
            path.load,
            system.sip_target,
            rate,
            calls,
            directory=directory,
            system_alive=system.alive,
            cpu_of_system=system.cpu_seconds,
            trace_latency=trace,
        )
        result.peak_memory_bytes = system.end_step()
        if not system.alive():
            result.crashed = True
            crashes.append({"rate": rate, "cause": system.crash_line()})
        say(f"   {purpose:8} {_describe(result)}")
        return result

    def _idle_fraction(self, system: System, *, fresh: bool = False) -> float:
        """Return the system's CPU share while it waits for calls.

        It is measured on a system's first start and reused, unless `fresh`
        asks for a measurement on this start. The nanosecond counters are
        used here: /proc/<pid>/stat's 10 ms ticks over this window would be
        off by up to 0.3 % of a core, as much as a bridged call costs at
        half a call per second.
        """
        if fresh or system.name not in self._idle:
            time.sleep(SETTLE_SECONDS)
            before = system.runtime_seconds()
            time.sleep(IDLE_SECONDS)
            spent = system.runtime_seconds() - before
            self._idle[system.name] = spent / IDLE_SECONDS
            say(f"   idle CPU {100 * self._idle[system.name]:.1f} % of one core")
        return self._idle[system.name]

    # ----- concurrency ----------------------------------------------------------

    def run_concurrency(self, reject_rate: float | None) -> dict[str, Any]:
        """Hold as many bridged calls as the build allows, then load it more.

        While the calls are held, the router's RSS is read and a reject step
        runs at `reject_rate` (the router's top on the reject path), to show
        whether held calls cost the router calls per second.
        """
        say("== concurrency: bridged calls held on the router")
        directory = self.workdir / "concurrency"
        runtime = SippRuntime(directory)
        system = RouterSystem(Setup("bridge", runtime.uri), directory)
        try:
            system.start()
            return self._hold_and_load(system, reject_rate, directory)
        finally:
            system.stop()
            runtime.stop()

    def _hold_and_load(
        self, system: RouterSystem, reject_rate: float | None, directory: Path
    ) -> dict[str, Any]:
        limits = system.limits()
        # One slot stays free and a bridged call takes two.
        target = max(0, (int(limits.get("maxCalls", 0)) - 1) // 2)
        if target == 0:
            return {"limits": limits, "target": 0}

        # One call first, so that what pjsua allocates once, on first use,
        # is not counted as the cost of a held call.
        warm_up = replace(STATIC, min_calls=1)
        self._step(system, warm_up, 1.0, [], "warm-up", seconds=1)
        time.sleep(SETTLE_SECONDS)
        rss_before = rss_bytes(system.pid)

        rate = min(float(target), HOLD_RAMP_RATE)
        load = Load(STATIC.load.scenario, STATIC.load.service, HOLD_SECONDS * 1000)
        holder = SippCaller(
            load, system.sip_target, rate, target, directory=directory / "hold"
        )
        try:
            held = _wait_for_held(system, target, timeout=target / rate + 10)
            rss_during = rss_bytes(system.pid)
            say(f"   {held} of {target} bridged calls held")
            under_hold = None
            if reject_rate is not None and held:
                crashes: list[dict[str, Any]] = []
                under_hold = self._step(system, REJECT, reject_rate, crashes, "hold")
            held_result = holder.finish(system.alive)
        finally:
            holder.stop()

        return {
            "limits": limits,
            "target": target,
            "held": held,
            "completed": held_result.successful,
            "rssBeforeMb": _mb(rss_before),
            "rssDuringMb": _mb(rss_during),
            "rssPerCallKb": round((rss_during - rss_before) / 1024 / held, 1)
            if held
            else None,
            "holdSeconds": HOLD_SECONDS,
            "rejectUnderHold": under_hold.as_json() if under_hold else None,
        }

    # ----- helpers ----------------------------------------------------------------

    @contextlib.contextmanager
    def _helpers(self, path: BenchPath) -> Iterator[Setup]:
        """Start the runtime and webhook server `path` needs; stop them after."""
        directory = self.workdir / path.key
        runtime = SippRuntime(directory) if path.needs_runtime else None
        webhooks = None
        try:
            if path.webhook_delay_seconds is not None:
                webhooks = WebhookServer(directory, path.webhook_delay_seconds)
            # A path without a runtime still names one: the 302's Contact.
            runtime_uri = runtime.uri if runtime else _unused_runtime_uri()
            yield Setup(path.reply, runtime_uri, webhooks.url if webhooks else None)
        finally:
            if webhooks is not None:
                webhooks.stop()
            if runtime is not None:
                runtime.stop()

    def _make_system(self, name: str, setup: Setup, path_key: str) -> System:
        directory = self.workdir / path_key / _slug(name)
        if name == ROUTER:
            return RouterSystem(setup, directory)
        if name == BARE:
            return BareSystem(setup, directory)
        if name == KAMAILIO:
            return KamailioSystem(setup, directory, self.kamailio_workers)
        raise ValueError(f"unknown system {name!r}")


def _unused_runtime_uri() -> str:
    return f"sip:runtime@{LOOPBACK}:{free_port()}"


def _wait_for_held(system: RouterSystem, target: int, timeout: float) -> int:
    """Wait until `target` bridged calls use two slots each; return how many do."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if system.slots_used() >= 2 * target:
            break
        time.sleep(0.2)
    time.sleep(SETTLE_SECONDS)
    return system.slots_used() // 2


def _system_json(
    system: System,
    ladder: LadderResult,
    latency: StepResult | None,
    idle: float | None,
    crashes: list[dict[str, Any]],
    steps: list[tuple[str, StepResult]],
) -> dict[str, Any]:
    """Return what one system measured on one path, as JSON."""
    return {
        "top": {
            "rate": ladder.top,
            "capped": ladder.capped,
            "generatorBound": ladder.generator_bound,
            "timeBound": ladder.time_bound,
        },
        "latency": {"rate": latency.rate, **(latency.as_json()["latencyMs"] or {})}
        if latency
        else None,
        "idleCpuFraction": round(idle, 4) if idle is not None else None,
        # The peak while the system kept up. Overloaded past its top, the bare
        # responder once grew to 1.7 GB of RSS.
        "peakMemoryMb": _mb(
            max((s.peak_memory_bytes for _, s in steps if s.clean), default=0)
        ),
        "peakMemoryAllStepsMb": _mb(system.peak_memory_bytes),
        "memoryKind": system.memory_kind,
        "starts": system.starts,
        "crashes": crashes,
        "steps": [{"purpose": purpose, **step.as_json()} for purpose, step in steps],
    }


def _mb(size: int) -> float:
    return round(size / 1024 / 1024, 1)


def _slug(name: str) -> str:
    return name.replace(" ", "-")


def _describe(step: StepResult) -> str:
    text = (
        f"{step.rate:g}/s: {step.successful}/{step.offered} ok, "
        f"CPU {step.cpu_ms_per_call:.2f} ms/call, "
        f"SIPp {100 * step.sipp_busy_fraction:.0f} % busy"
    )
    if step.failure_reasons:
        text += f", failures {step.failure_reasons}"
    if step.crashed:
        text += ", CRASHED"
    return text


# ----- the command --------------------------------------------------------------


def run_full(
    bench: Bench, systems: tuple[str, ...], parts: tuple[str, ...]
) -> dict[str, Any]:
    """Run the chosen paths, then the concurrency run."""
    paths = {}
    for path in FULL_PATHS:
        if path.key in parts:
            paths[path.key] = bench.run_path(path, systems)
    concurrency = None
    if CONCURRENCY in parts and ROUTER in systems:
        reject = paths.get("reject", {"systems": {}})["systems"].get(ROUTER)
        concurrency = bench.run_concurrency(reject["top"]["rate"] if reject else None)
    return {"paths": paths, "concurrency": concurrency}


def run_smoke(
    bench: Bench, systems: tuple[str, ...], parts: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Run the reject path at one rate on each system."""
    path = _smoke_path()
    measured = {name: bench.run_smoke(path, name, SMOKE_RATE) for name in systems}
    return {"paths": {path.key: {"title": path.title, "systems": measured}}}


def _smoke_path() -> BenchPath:
    return replace(REJECT, step_seconds=SMOKE_SECONDS_PER_SYSTEM, min_calls=1)


def main(argv: list[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    if arguments.render is not None:
        return render_again(arguments.render)
    require_sipp()
    if arguments.rate is not None:
        return run_probe(arguments)
    systems = tuple(arguments.systems or (SMOKE_SYSTEMS if arguments.smoke else ()))
    systems = systems or (ROUTER, BARE, KAMAILIO)
    budget = Budget(arguments.budget_minutes)
    workdir = Path(tempfile.mkdtemp(prefix="cozmox-bench-"))
    say(f"working files in {workdir}")
    bench = Bench(workdir, budget)
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    load_before = os.getloadavg()
    run = run_smoke if arguments.smoke else run_full
    results = run(bench, systems, tuple(arguments.parts))
    results.update(
        date=time.strftime("%Y-%m-%d"),
        started=started,
        durationSeconds=round(budget.elapsed_seconds()),
        command=command_line("bench", "bench", argv),
        smoke=arguments.smoke,
        limits=bench.limits,
        machine=machine.describe(load_before, os.getloadavg()),
    )
    report.finalize(results)
    text = report.render(results)
    write_results(arguments.results_dir, results["date"], results, text)
    print(text)
    if not arguments.keep_files:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def run_probe(arguments: argparse.Namespace) -> int:
    """Run one step at `--rate` per chosen path and system; print it as JSON.

    Nothing is written to the results folder: a probe is for comparing a
    change before and after, not a benchmark record.
    """
    systems = tuple(arguments.systems or (ROUTER,))
    paths = [path for path in FULL_PATHS if path.key in arguments.parts]
    workdir = Path(tempfile.mkdtemp(prefix="cozmox-bench-"))
    say(f"working files in {workdir}")
    bench = Bench(workdir, Budget(arguments.budget_minutes))
    results = {
        path.key: {
            name: bench.run_probe(path, name, arguments.rate, arguments.calls)
            for name in systems
            if name in path.systems
        }
        for path in paths
    }
    print(json.dumps(results, indent=1))
    if not arguments.keep_files:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def render_again(json_path: Path) -> int:
    """Write the Markdown of an earlier run again from its JSON, and print it."""
    results = json.loads(json_path.read_text())
    report.finalize(results)
    text = report.render(results)
    json_path.with_suffix(".md").write_text(text)
    print(text)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the router against Kamailio and a bare pjsua2 "
        "responder under the same SIPp load on 127.0.0.1.",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=f"one reject step at {SMOKE_RATE:g} calls/s for "
        f"{SMOKE_SECONDS_PER_SYSTEM:g} s per system, router and bare only",
    )
    parser.add_argument(
        "--systems",
        nargs="+",
        choices=[ROUTER, BARE, KAMAILIO],
        metavar="SYSTEM",
        help=f"systems to run, of {ROUTER}, {BARE} and {KAMAILIO} "
        "(default: all three; the smoke runs the first two)",
    )
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=PARTS,
        default=PARTS,
        metavar="PART",
        help=f"what to run, of {', '.join(PARTS)} (default: all)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        help="probe: one traced step at this many calls/s on each chosen path "
        "(--parts) and system (--systems, default router); prints JSON and "
        "writes no results file",
    )
    parser.add_argument(
        "--calls",
        type=int,
        help="probe: calls in the step (default: the path's step length at --rate)",
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=RESULTS_DIR,
        help="folder for <date>.md and <date>.json (default: bench/results)",
    )
    parser.add_argument(
        "--budget-minutes",
        type=float,
        default=DEFAULT_BUDGET_MINUTES,
        help="stop climbing rate ladders after this many minutes",
    )
    parser.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="run nothing: write the Markdown of an earlier run's <date>.json again",
    )
    parser.add_argument(
        "--keep-files",
        action="store_true",
        help="keep the SIPp traces and system logs in the working folder",
    )
    return parser
