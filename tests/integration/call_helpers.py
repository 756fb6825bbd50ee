"""Placing one SIPp call to the daemon and reading what it ended with."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from harness import Daemon
from sipp_runner import CALLER_NUMBER, SippResult, run_sipp

# Locally the spoken-prompt tests are skipped without espeak-ng. Under CI,
# where `make test` installs it, a missing espeak-ng fails them instead.
requires_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None and not os.environ.get("CI"),
    reason="espeak-ng not found on PATH: install the Debian package espeak-ng "
    "(`make test` does) to run the spoken-prompt tests",
)

ANSWERED = "uac-static-assistant-expect-200.xml"
HOLD_MS = "300"

StartRouter = Callable[..., Daemon]


def place_call(
    router: Daemon,
    scenario: str,
    number: str,
    log_dir: Path,
    extra_args: tuple[str, ...] = (),
    caller: str = CALLER_NUMBER,
) -> SippResult:
    """Place one SIPp call of `scenario` to `number` and require it to pass."""
    if scenario == ANSWERED:
        extra_args = ("-set", "hold", HOLD_MS, *extra_args)
    result = run_sipp(
        scenario,
        router.sip_target,
        number,
        extra_args,
        timeout=20,
        log_dir=log_dir,
        caller=caller,
    )
    assert result.exit_code == 0, result.describe()
    return result


def reason_text(result: SippResult) -> str | None:
    """Return the Reason header of the final response."""
    final = result.final_response
    assert final is not None, result.describe()
    return final.header("Reason")


def ended_call(router: Daemon, **fields: Any) -> dict[str, Any]:
    """Return the `call.ended` event of the test's one call."""
    return router.wait_for_event("call.ended", **fields)
