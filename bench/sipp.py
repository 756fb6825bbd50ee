"""One load step: SIPp 3.6.1 places a bounded number of calls at one rate.

Every run is bounded twice: `-m` caps the calls and `-timeout` the
seconds. A step counts SIPp's successful calls from its `-trace_stat` file,
so every offered call that did not succeed is a failure: an unexpected
response, a receive timeout, or a call SIPp never placed.

Setup latency comes from SIPp's `-trace_shortmsg` file, which stamps every
message in microseconds: the first INVITE sent to the first final response
received, per Call-ID. SIPp's own response-time statistics (`-trace_rtt`)
come in 4 ms ticks on these machines (every sample was 0, 4 or 8 ms), too
coarse for a target of a few milliseconds.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from bench.procs import LOOPBACK, cpu_seconds, free_port, stop_process

SCENARIOS = Path(__file__).resolve().parents[1] / "sipp-scenarios"
CALLER_NUMBER = "14155559876"

# A call that gets no response for this long fails, rather than waiting
# for SIPp's INVITE retransmissions to run out (about 32 s).
RECEIVE_TIMEOUT_MS = 5000
# How often a running step checks that the system under test is alive.
WATCH_INTERVAL_SECONDS = 0.2
# Extra seconds a step may run past its last call before SIPp gives up.
STEP_GRACE_SECONDS = 15.0

_STATUS_IN_ERROR = re.compile(r"received 'SIP/2\.0 (\d{3})")


@dataclass(frozen=True)
class Load:
    """A scenario of `sipp-scenarios/` and the number SIPp dials with it."""

    scenario: str
    service: str
    hold_ms: int = 0
    """Milliseconds the answered scenario holds each call before its BYE."""


@dataclass
class StepResult:
    """The measurements of one step at one rate."""

    rate: float
    offered: int
    successful: int
    wall_seconds: float
    system_cpu_seconds: float
    sipp_cpu_seconds: float
    crashed: bool = False
    failure_reasons: dict[str, int] = field(default_factory=dict)
    late_responses: int = 0
    """Responses that arrived after their call had ended: retransmissions
    from a system that saw the ACK late. They fail no call."""
    peak_memory_bytes: int = 0
    """The system's largest memory sampled during the step."""
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return self.offered - self.successful

    @property
    def failed_fraction(self) -> float:
        return self.failed / self.offered if self.offered else 1.0

    @property
    def clean(self) -> bool:
        """Return whether fewer than 0.1 % of the offered calls failed."""
        return not self.crashed and self.failed_fraction < 0.001

    @property
    def sipp_busy_fraction(self) -> float:
        """Return SIPp's CPU time over the step's wall time (1.0 = one core)."""
        return self.sipp_cpu_seconds / self.wall_seconds if self.wall_seconds else 0.0

    @property
    def cpu_ms_per_call(self) -> float:
        """Return the system's CPU milliseconds per offered call."""
        return 1000 * self.system_cpu_seconds / self.offered if self.offered else 0.0

    def as_json(self) -> dict:
        return {
            "rate": self.rate,
            "offered": self.offered,
            "successful": self.successful,
            "failed": self.failed,
            "crashed": self.crashed,
            "failureReasons": self.failure_reasons,
            "lateResponses": self.late_responses,
            "peakMemoryMb": round(self.peak_memory_bytes / 1024 / 1024, 1),
            "wallSeconds": round(self.wall_seconds, 2),
            "systemCpuSeconds": round(self.system_cpu_seconds, 3),
            "sippCpuSeconds": round(self.sipp_cpu_seconds, 3),
            "latencyMs": latency_summary(self.latencies_ms),
        }


def require_sipp() -> str:
    """Return the path of `sipp`, or raise when it is not installed."""
    path = shutil.which("sipp")
    if path is None:
        raise RuntimeError(
            "sipp not found on PATH: install the Debian package sip-tester "
            "(`make bench` does)"
        )
    return path


def rate_arguments(rate: float) -> list[str]:
    """Return `-r`/`-rp` for `rate` calls per second; SIPp takes whole calls.

    0.75 calls per second becomes 3 calls per 4000 ms.
    """
    fraction = Fraction(rate).limit_denominator(100)
    return [
        "-r", str(fraction.numerator),
        "-rp", str(1000 * fraction.denominator),
    ]  # fmt: skip


class SippCaller:
    """A SIPp caller running in the background: started, then finished."""

    def __init__(
        self,
        load: Load,
        target: str,
        rate: float,
        calls: int,
        *,
        directory: Path,
        trace_latency: bool = False,
        max_open_calls: int | None = None,
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.rate = rate
        self.calls = calls
        self.trace_latency = trace_latency
        self.files = _StepFiles(directory)
        self.command = _command(
            load, target, rate, calls, self.files, trace_latency, max_open_calls
        )
        self.started = time.monotonic()
        with self.files.screen.open("wb") as screen:
            self.process = subprocess.Popen(
                self.command,
                cwd=directory,
                stdin=subprocess.DEVNULL,
                stdout=screen,
                stderr=subprocess.STDOUT,
            )

    def finish(
        self,
        system_alive: Callable[[], bool],
        system_cpu_seconds: float = 0.0,
    ) -> StepResult:
        """Wait for SIPp to exit and read what it measured.

        SIPp is stopped early if the system under test exits.
        `system_cpu_seconds` is the system's CPU time spent meanwhile, which
        the caller measures.
        """
        sipp_cpu, crashed = _watch(self.process, system_alive)
        successful = stat_counter(self.files.stat, "SuccessfulCall(C)")
        if successful is None and not crashed:
            raise RuntimeError(
                f"SIPp wrote no statistics (exit {self.process.returncode}): "
                f"{' '.join(self.command)}\n{_read(self.files.screen)[-2000:]}"
            )
        return StepResult(
            rate=self.rate,
            offered=self.calls,
            successful=successful or 0,
            wall_seconds=time.monotonic() - self.started,
            system_cpu_seconds=system_cpu_seconds,
            sipp_cpu_seconds=sipp_cpu,
            crashed=crashed,
            failure_reasons=failure_reasons(self.files.errors),
            late_responses=stat_counter(self.files.stat, "DeadCallMsgs(C)") or 0,
            latencies_ms=(
                setup_latencies_ms(self.files.short) if self.trace_latency else []
            ),
        )

    def stop(self) -> None:
        stop_process(self.process)


def run_step(
    load: Load,
    target: str,
    rate: float,
    calls: int,
    *,
    directory: Path,
    system_alive: Callable[[], bool],
    cpu_of_system: Callable[[], float],
    trace_latency: bool = False,
) -> StepResult:
    """Place `calls` calls at `rate` per second to `target` and measure them.

    The step stops early, killing SIPp, if the system under test exits.
    """
    cpu_before = cpu_of_system()
    caller = SippCaller(
        load, target, rate, calls, directory=directory, trace_latency=trace_latency
    )
    result = caller.finish(system_alive)
    result.system_cpu_seconds = max(0.0, cpu_of_system() - cpu_before)
    return result


@dataclass(frozen=True)
class _StepFiles:
    directory: Path

    @property
    def stat(self) -> Path:
        return self.directory / "stat.csv"

    @property
    def errors(self) -> Path:
        return self.directory / "errors.log"

    @property
    def short(self) -> Path:
        return self.directory / "messages.tsv"

    @property
    def screen(self) -> Path:
        return self.directory / "screen.txt"


def _command(
    load: Load,
    target: str,
    rate: float,
    calls: int,
    files: _StepFiles,
    trace_latency: bool,
    max_open_calls: int | None = None,
) -> list[str]:
    hold_seconds = load.hold_ms / 1000
    seconds = calls / rate + hold_seconds
    # -l caps the calls SIPp keeps open. Past the cap SIPp slows down on its
    # own and would hide an overloaded system, so by default the cap is set
    # out of reach. `max_open_calls` sets it, for a load that must stay
    # within the system's concurrent calls.
    open_calls = int(rate * (hold_seconds + RECEIVE_TIMEOUT_MS / 1000)) + 50
    if max_open_calls is not None:
        open_calls = max_open_calls
    command = [
        require_sipp(),
        "-sf", str(SCENARIOS / load.scenario),
        target,
        "-s", load.service,
        "-key", "caller", CALLER_NUMBER,
        # SIPp binds its control and media sockets to every interface unless
        # these options name an address.
        "-i", LOOPBACK, "-p", str(free_port()),
        "-mi", LOOPBACK, "-mp", str(free_port(block=4)),
        "-ci", LOOPBACK, "-cp", str(free_port()),
        "-nostdin",
        "-m", str(calls),
        *rate_arguments(rate),
        "-l", str(open_calls),
        "-timeout", f"{seconds + STEP_GRACE_SECONDS:.0f}",
        "-timeout_error",
        "-recv_timeout", str(RECEIVE_TIMEOUT_MS),
        "-trace_stat", "-stf", str(files.stat), "-fd", "1",
        "-trace_err", "-error_file", str(files.errors),
    ]  # fmt: skip
    if load.hold_ms:
        command += ["-set", "hold", str(load.hold_ms)]
    if trace_latency:
        command += ["-trace_shortmsg", "-shortmessage_file", str(files.short)]
    return command


def _watch(
    process: subprocess.Popen, system_alive: Callable[[], bool]
) -> tuple[float, bool]:
    """Wait for SIPp; return its CPU seconds and whether the system died."""
    sipp_cpu = 0.0
    while process.poll() is None:
        # The last reading before SIPp exits misses at most one interval.
        sipp_cpu = max(sipp_cpu, cpu_seconds(process.pid))
        if not system_alive():
            stop_process(process)
            return sipp_cpu, True
        time.sleep(WATCH_INTERVAL_SECONDS)
    return sipp_cpu, False


def stat_counter(stat_file: Path, name: str) -> int | None:
    """Return counter `name` from the last line of SIPp's statistics.

    `SuccessfulCall(C)` counts the calls that ended as the scenario
    expects, `DeadCallMsgs(C)` the messages for calls that had ended.
    """
    lines = _read(stat_file).splitlines()
    if len(lines) < 2:
        return None
    names = lines[0].rstrip(";").split(";")
    values = lines[-1].rstrip(";").split(";")
    return int(values[names.index(name)])


def failure_reasons(error_file: Path) -> dict[str, int]:
    """Count failed calls by cause: the unexpected status, or a timeout."""
    reasons: Counter[str] = Counter()
    # SIPp writes one event per failed call, not always on its own line.
    for event in re.split(r"(?=\d{4}-\d\d-\d\d\t)", _read(error_file)):
        if "Dead call" in event:
            continue  # a late response to a call that ended; see StepResult
        status = _STATUS_IN_ERROR.search(event)
        if status:
            reasons[f"unexpected {status.group(1)}"] += 1
        elif "receive timeout" in event:
            reasons["no response"] += 1
        elif "aborting call" in event.lower():
            reasons["aborted"] += 1
    return dict(reasons)


def setup_latencies_ms(short_file: Path) -> list[float]:
    """Return, per call, ms from its first INVITE to its first final response."""
    sent: dict[str, float] = {}
    latencies: list[float] = []
    answered: set[str] = set()
    for line in _read(short_file).splitlines():
        fields = line.split("\t")
        if len(fields) < 7 or fields[5] != "CSeq:1 INVITE":
            continue
        stamp, direction, call_id, first_line = (
            float(fields[2]), fields[3], fields[4], fields[6]
        )  # fmt: skip
        if direction == "S" and first_line.startswith("INVITE"):
            sent.setdefault(call_id, stamp)
        elif direction == "R" and _is_final(first_line) and call_id in sent:
            first_final = call_id not in answered
            answered.add(call_id)
            if first_final:
                latencies.append(1000 * (stamp - sent[call_id]))
    return latencies


def _is_final(first_line: str) -> bool:
    parts = first_line.split()
    return len(parts) > 1 and parts[0] == "SIP/2.0" and int(parts[1]) >= 200


def percentile(values: list[float], fraction: float) -> float | None:
    """Return the nearest-rank percentile of `values`, None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def latency_summary(latencies_ms: list[float]) -> dict[str, float] | None:
    """Return p50 and p99 in ms, rounded to 0.01 ms, or None."""
    if not latencies_ms:
        return None
    return {
        "p50": round(percentile(latencies_ms, 0.50), 2),
        "p99": round(percentile(latencies_ms, 0.99), 2),
        "samples": len(latencies_ms),
    }


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
