"""Ratios, target checks and the Markdown of the benchmark's report."""

from __future__ import annotations

from typing import Any

import pytest

from bench.report import (
    common_cpu_rate,
    cpu_per_call,
    finalize,
    render,
    webhook_bound,
)


def step(
    rate: float,
    *,
    failed: int = 0,
    cpu: float = 1.0,
    purpose: str = "ladder",
    crashed: bool = False,
) -> dict[str, Any]:
    return {
        "purpose": purpose,
        "rate": rate,
        "offered": 1000,
        "successful": 1000 - failed,
        "failed": failed,
        "crashed": crashed,
        "failureReasons": {"unexpected 503": failed} if failed else {},
        "wallSeconds": 10.0,
        "systemCpuSeconds": cpu,
        "sippCpuSeconds": 0.5,
        "latencyMs": None,
    }


def system(
    top: float | None,
    steps: list[dict[str, Any]],
    *,
    idle: float = 0.0,
    p99: float = 1.0,
    memory: float = 50.0,
) -> dict[str, Any]:
    return {
        "top": {"rate": top, "capped": False, "generatorBound": False,
                "timeBound": False},
        "latency": {"rate": (top or 0) / 2, "p50": p99 / 2, "p99": p99,
                    "samples": 100},
        "idleCpuFraction": idle,
        "peakMemoryMb": memory,
        "memoryKind": "RSS",
        "starts": 1,
        "crashes": [],
        "steps": steps,
    }  # fmt: skip


def results() -> dict[str, Any]:
    reject = {
        "title": "reject (404)",
        "systems": {
            "router": system(50, [step(25, cpu=0.5), step(50, cpu=1.0),
                                  step(100, crashed=True, failed=900)],
                             idle=0.02, p99=4.0, memory=70.0),
            "bare": system(50, [step(25, cpu=0.2), step(50, cpu=0.4)],
                           p99=1.0, memory=30.0),
            "kamailio": system(3200, [step(r, cpu=r / 1000) for r in
                                      (25, 50, 100, 200, 400)], memory=10.0),
        },
    }  # fmt: skip
    webhook = {
        "title": "webhook 100 ms, then 302",
        "systems": {"router": system(28, [step(20), step(28)], p99=110.0)},
    }
    return {
        "date": "2026-12-04",
        "started": "2026-12-04 18:00:00 UTC",
        "durationSeconds": 900,
        "command": "python -m bench",
        "smoke": False,
        "limits": {"maxCalls": 4, "maxAccounts": 8, "maxPacketBytes": 4000,
                   "probed": True},
        "machine": {"cpu": "Test CPU", "cores": 2, "kernel": "6.1",
                    "python": "3.11.7", "pjsua2": "2.15.1.post1",
                    "sipp": "SIPp v3.6.1", "kamailio": "kamailio 5.6.3",
                    "loadAverageBefore": [0.5, 0.5, 0.5],
                    "loadAverageAfter": [1.0, 1.0, 1.0]},
        "paths": {"reject": reject, "webhook": webhook},
        "concurrency": {"limits": {"maxCalls": 4}, "target": 1, "held": 1,
                        "completed": 1, "rssBeforeMb": 60.0, "rssDuringMb": 60.5,
                        "rssPerCallKb": 512.0, "holdSeconds": 60,
                        "rejectUnderHold": step(50, failed=3)},
    }  # fmt: skip


def test_common_cpu_rate_highest_shared_clean() -> None:
    path = results()["paths"]["reject"]

    assert common_cpu_rate(path) == 50


def test_common_cpu_rate_ignores_system_without_clean_step() -> None:
    path = results()["paths"]["reject"]
    path["systems"]["bare"]["steps"] = [step(25, failed=10)]

    assert common_cpu_rate(path) == 50


def test_common_cpu_rate_capped_at_target_rate() -> None:
    path = {"systems": {"kamailio": system(400, [step(200), step(400)])}}

    assert common_cpu_rate(path) == 200


def test_cpu_per_call_subtracts_idle_cpu() -> None:
    router = results()["paths"]["reject"]["systems"]["router"]

    cpu = cpu_per_call(router, 50)

    assert cpu == {
        "rate": 50,
        "grossMs": 1.0,
        "netMs": pytest.approx(0.8),
        "peakMemoryMb": None,
    }


def test_cpu_per_call_none_when_unclean() -> None:
    router = results()["paths"]["reject"]["systems"]["router"]

    assert cpu_per_call(router, 100) is None
    assert cpu_per_call(router, None) is None


def test_webhook_bound_is_usable_slots_times_ten() -> None:
    assert webhook_bound(results()) == 30.0


def test_finalize_computes_ratios_and_targets() -> None:
    measured = results()

    finalize(measured)

    ratios = measured["ratios"]["reject"]
    assert ratios["router / bare pjsua2"]["cpuPerCall"] == pytest.approx(2.0)
    assert ratios["router / Kamailio"]["topCps"] == pytest.approx(50 / 3200)
    targets = {check["target"]: check["met"] for check in measured["targets"]}
    assert targets["reject: CPU per call <= 5x Kamailio's"] is False
    assert targets["reject: top clean CPS >= 90 % of bare pjsua2's"] is True
    assert targets["reject: router's setup p99 < 5 ms at half its top CPS"] is True
    assert targets["< 1 MB RSS per held bridged call"] is True
    assert targets["no CPS loss while the build's limit of calls is held"] is False
    # Set for builds with raised limits only; this one has the wheel's 4.
    raised = (
        "reject: top clean CPS >= 12 % of Kamailio's, on a build with raised limits"
    )
    assert targets[raised] is None


def test_render_lists_systems_targets_and_steps() -> None:
    measured = results()
    finalize(measured)

    text = render(measured)

    assert "| reject (404) | router | 50 | 2.00 / 4.00 (25) | 0.800 (50) |" in text
    assert "| reject (404) | Kamailio | 3200 |" in text
    assert "| webhook 100 ms, then 302 | router | 28 |" in text
    assert "## Targets" in text
    assert "| reject (404) | router | ladder | 100 | 1000 | 900 | crashed;" in text
