"""The benchmark's rate ladder, driven by a fake load step."""

from __future__ import annotations

from bench.ladder import LadderPlan, climb
from bench.sipp import StepResult


def step(rate: float, clean: bool, sipp_busy: float = 0.05) -> StepResult:
    offered = 1000
    return StepResult(
        rate=rate,
        offered=offered,
        successful=offered if clean else offered - 10,
        wall_seconds=10.0,
        system_cpu_seconds=1.0,
        sipp_cpu_seconds=10.0 * sipp_busy,
    )


def clean_up_to(limit: float, **kwargs):
    rates: list[float] = []

    def run(rate: float) -> StepResult:
        rates.append(rate)
        return step(rate, rate <= limit, **kwargs)

    return run, rates


def never_out_of_time() -> bool:
    return False


def test_ladder_doubles_then_bisects_to_the_top() -> None:
    run, rates = clean_up_to(58)
    plan = LadderPlan((25, 50, 100, 200), refine_steps=3)

    result = climb(plan, run, never_out_of_time)

    assert rates == [25, 50, 100, 75, 62, 56]
    assert result.top == 56
    assert not result.lower_bound_only


def test_ladder_capped_when_every_rate_is_clean() -> None:
    run, rates = clean_up_to(1000)

    result = climb(LadderPlan((25, 50)), run, never_out_of_time)

    assert rates == [25, 50]
    assert result.top == 50
    assert result.capped


def test_ladder_halves_when_the_first_rate_fails() -> None:
    run, rates = clean_up_to(10)

    result = climb(LadderPlan((25, 50), refine_steps=2), run, never_out_of_time)

    assert rates == [25, 12, 6, 9, 10]
    assert result.top == 10


def test_ladder_has_no_top_when_nothing_is_clean() -> None:
    run, rates = clean_up_to(0)

    result = climb(LadderPlan((4, 8), step_down=2), run, never_out_of_time)

    assert rates == [4, 2, 1]
    assert result.top is None


def test_ladder_stops_when_sipp_is_saturated() -> None:
    run, rates = clean_up_to(1000, sipp_busy=0.95)

    result = climb(LadderPlan((25, 50, 100)), run, never_out_of_time)

    assert rates == [25]
    assert result.top == 25
    assert result.generator_bound
    assert not result.capped


def test_ladder_stops_when_the_time_budget_is_spent() -> None:
    run, rates = clean_up_to(1000)
    checks = iter([False, False, True])

    result = climb(LadderPlan((25, 50, 100)), run, lambda: next(checks))

    assert rates == [25, 50]
    assert result.top == 50
    assert result.time_bound
    assert not result.capped


def test_quantize_rounds_down_to_the_quantum() -> None:
    plan = LadderPlan((0.5, 1.0), quantum=0.25)

    assert plan.quantize(0.875) == 0.75
    assert plan.quantize(0.1) == 0.25
    assert plan.quantize(1.0) == 1.0
