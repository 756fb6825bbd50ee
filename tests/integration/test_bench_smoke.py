"""The benchmark's smoke run: router and bare pjsua2, one rate, a few seconds.

It runs `python -m bench --smoke` as `make bench` would run the full
benchmark, so a broken harness shows here and not only in a 15-minute run.
Kamailio is not needed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from harness import REPO_ROOT
from sipp_runner import requires_sipp

pytestmark = [pytest.mark.integration, pytest.mark.smoke, requires_sipp]

SMOKE_TIMEOUT_SECONDS = 100


def test_bench_smoke_answers_every_call(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--results-dir", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT_SECONDS,
        check=False,
    )

    assert run.returncode == 0, run.stderr[-3000:]
    [results_file] = tmp_path.glob("*.json")
    results = json.loads(results_file.read_text())
    systems = results["paths"]["reject"]["systems"]
    assert sorted(systems) == ["bare", "router"]
    for name, system in systems.items():
        [step] = system["steps"]
        assert step["offered"] >= 50, name
        assert step["failed"] == 0, f"{name}: {step} \n{run.stderr[-3000:]}"
        assert step["systemCpuSeconds"] > 0, name
        assert system["latency"]["p99"] > 0, name
        assert system["peakMemoryMb"] > 0, name
    assert results["limits"]["maxCalls"] >= 4
    report = (tmp_path / f"{results['date']}.md").read_text()
    assert "| reject (404) | router | 20 |" in report
    assert "| reject (404) | bare pjsua2 | 20 |" in report
    assert report in run.stdout
