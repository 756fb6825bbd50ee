"""Find the highest clean call rate by stepping the rate up.

A step is clean when fewer than 0.1 % of its calls failed. The ladder
doubles the rate until a step fails, then bisects between the last clean
and the first failed rate a few times. Three things end the climb early
and make the top a lower bound only:
- `capped`: the last rate of the ladder was clean;
- `generator_bound`: SIPp used most of a core, so the load generator and
  not the system may have been the limit;
- `time_bound`: the benchmark's time budget ran out.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.sipp import StepResult

# SIPp runs on the same cores as the system under test; past this share of
# one core it may be SIPp that cannot keep up.
GENERATOR_BUSY_FRACTION = 0.9


@dataclass(frozen=True)
class LadderPlan:
    """The rates to try, in calls per second."""

    rates: tuple[float, ...]
    refine_steps: int = 2
    quantum: float = 1.0
    """Bisected rates are rounded down to a multiple of this."""
    step_down: int = 2
    """Halvings tried below the first rate when that one fails."""

    def quantize(self, rate: float) -> float:
        """Round `rate` down to a multiple of the quantum, at least one quantum."""
        multiples = max(1, math.floor(rate / self.quantum + 1e-9))
        return round(multiples * self.quantum, 6)


@dataclass
class LadderResult:
    """The steps run and the highest clean rate among them."""

    steps: list[StepResult] = field(default_factory=list)
    top: float | None = None
    capped: bool = False
    generator_bound: bool = False
    time_bound: bool = False

    @property
    def lower_bound_only(self) -> bool:
        """Return whether the true top may be higher than `top`."""
        return self.capped or self.generator_bound or self.time_bound


def climb(
    plan: LadderPlan,
    run_step: Callable[[float], StepResult],
    out_of_time: Callable[[], bool],
) -> LadderResult:
    """Step the rate up through `plan` and return the highest clean rate."""
    result = LadderResult()
    clean, failed = _double(plan, run_step, out_of_time, result)
    if clean is None and failed is not None:
        clean, failed = _halve(plan, failed, run_step, out_of_time, result)
    if clean is not None and failed is not None and not result.generator_bound:
        clean = _bisect(plan, clean, failed, run_step, out_of_time, result)
    result.top = clean
    result.capped = (
        failed is None and not result.generator_bound and (not result.time_bound)
    )
    return result


def _run(
    rate: float,
    run_step: Callable[[float], StepResult],
    out_of_time: Callable[[], bool],
    result: LadderResult,
) -> StepResult | None:
    if out_of_time():
        result.time_bound = True
        return None
    step = run_step(rate)
    result.steps.append(step)
    if step.sipp_busy_fraction >= GENERATOR_BUSY_FRACTION:
        result.generator_bound = True
    return step


def _double(plan, run_step, out_of_time, result) -> tuple[float | None, float | None]:
    clean = None
    for rate in plan.rates:
        step = _run(rate, run_step, out_of_time, result)
        if step is None:
            return clean, None
        if not step.clean:
            return clean, rate
        clean = rate
        if result.generator_bound:
            return clean, None
    return clean, None


def _halve(plan, failed, run_step, out_of_time, result) -> tuple[float | None, float]:
    rate = failed
    for _ in range(plan.step_down):
        rate = plan.quantize(rate / 2)
        if rate >= failed:
            break
        step = _run(rate, run_step, out_of_time, result)
        if step is None:
            break
        if step.clean:
            return rate, failed
        failed = rate
    return None, failed


def _bisect(plan, clean, failed, run_step, out_of_time, result) -> float:
    for _ in range(plan.refine_steps):
        middle = plan.quantize((clean + failed) / 2)
        if not clean < middle < failed:
            break
        step = _run(middle, run_step, out_of_time, result)
        if step is None:
            break
        if step.clean:
            clean = middle
        else:
            failed = middle
    return clean
