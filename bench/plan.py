"""The benchmark's paths, their SIPp loads and their rate ladders."""

from __future__ import annotations

from dataclasses import dataclass

from bench.ladder import LadderPlan
from bench.sipp import Load
from bench.systems import ASK_SERVER_NUMBER, STATIC_NUMBER, UNKNOWN_NUMBER

ROUTER, BARE, KAMAILIO = "router", "bare", "kamailio"
SYSTEM_TITLES = {ROUTER: "router", BARE: "bare pjsua2", KAMAILIO: "Kamailio"}

# The rate at which the CPU-per-call targets are set, when every system of
# a path sustains it; otherwise the highest ladder rate that all sustain.
TARGET_CPU_RATE = 200.0

# Rates for the paths that answer at once. Kamailio answered 12,800 calls
# per second cleanly on a 2-core machine, with SIPp on the same cores.
FAST_LADDER = (25.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1600.0, 3200.0, 6400.0, 12800.0)


@dataclass(frozen=True)
class BenchPath:
    """One call path: what SIPp dials, how systems answer, which rates."""

    key: str
    title: str
    load: Load
    reply: str
    """How a system answers the dialled number: `404`, `302` or `bridge`."""
    ladder: LadderPlan
    step_seconds: float
    min_calls: int
    systems: tuple[str, ...] = (ROUTER, BARE, KAMAILIO)
    needs_runtime: bool = False
    webhook_delay_seconds: float | None = None
    fresh_idle: bool = False
    """Measure idle CPU on this path's own process: where few calls are
    slow, idle CPU is most of a step's CPU and must match the process."""


REJECT = BenchPath(
    key="reject",
    title="reject (404)",
    load=Load("uac-expect-404.xml", UNKNOWN_NUMBER),
    reply="404",
    ladder=LadderPlan(FAST_LADDER, refine_steps=3),
    step_seconds=5,
    min_calls=100,
)
REDIRECT = BenchPath(
    key="redirect",
    title="redirect (302)",
    load=Load("uac-expect-302.xml", STATIC_NUMBER),
    reply="302",
    ladder=LadderPlan(FAST_LADDER, refine_steps=3),
    step_seconds=5,
    min_calls=100,
)
STATIC = BenchPath(
    key="static",
    title="static, bridged 1 s",
    load=Load("uac-static-assistant-expect-200.xml", STATIC_NUMBER, hold_ms=1000),
    reply="bridge",
    ladder=LadderPlan((0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0), quantum=0.25),
    step_seconds=10,
    min_calls=12,
    needs_runtime=True,
    fresh_idle=True,
)
WEBHOOK = BenchPath(
    key="webhook",
    title="webhook 100 ms, then 302",
    load=Load("uac-expect-302.xml", ASK_SERVER_NUMBER),
    reply="302",
    ladder=LadderPlan(
        (5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0), refine_steps=3
    ),
    step_seconds=5,
    min_calls=50,
    systems=(ROUTER,),
    webhook_delay_seconds=0.1,
)
FULL_PATHS = (REJECT, REDIRECT, STATIC, WEBHOOK)

# The smoke run: one rate, a few seconds per system, the two systems that
# need nothing beyond the project's own dependencies and SIPp.
SMOKE_RATE = 20.0
SMOKE_SECONDS_PER_SYSTEM = 5.0
SMOKE_SYSTEMS = (ROUTER, BARE)

# The concurrency run: calls held this long, placed at most this fast.
HOLD_SECONDS = 60
HOLD_RAMP_RATE = 10.0
