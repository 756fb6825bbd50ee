"""Reload on SIGHUP and drain on SIGTERM or SIGINT, with a real call up.

A bridged call takes two of the PyPI wheel's four call slots and the router
keeps the last one free, so the calls placed while another one is up are
rejected before they need a slot of their own.
"""

from __future__ import annotations

import copy
import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from harness import Daemon, phone_number
from sipp_runner import SippCall, SippRuntime, requires_sipp, run_sipp, start_sipp
from webhook_server import WebhookServer

pytestmark = [pytest.mark.integration, requires_sipp]

ANSWERED = "uac-static-assistant-expect-200.xml"
STATIC_NUMBER = "+14155550100"
ASK_NUMBER = "+14155550101"

StartRouter = Callable[[dict[str, Any]], Daemon]


def hold_call(router: Daemon, hold_ms: int, log_dir: Path) -> SippCall:
    """Start an answered call to the static number and wait for its 200."""
    call = start_sipp(
        ANSWERED,
        router.sip_target,
        STATIC_NUMBER,
        ("-set", "hold", str(hold_ms)),
        timeout=30,
        log_dir=log_dir,
    )
    assert call.wait_for_response(200, timeout=10), call.finish().describe()
    return call


def call_once(router: Daemon, scenario: str, number: str, log_dir: Path) -> Any:
    result = run_sipp(scenario, router.sip_target, number, timeout=20, log_dir=log_dir)
    assert result.exit_code == 0, result.describe()
    return result


def write_config(router: Daemon, config: dict[str, Any]) -> None:
    router.config_path.write_text(json.dumps(config, indent=2))


def wait_for_exit(router: Daemon, timeout: float) -> int:
    try:
        return router.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"daemon still running {timeout:g} s after the signal; stderr:\n"
            f"{router.stderr_text()[-3000:]}"
        ) from None


# ----- reload ----------------------------------------------------------------------


def test_reload_applies_to_new_calls_only(
    router: Daemon, runtime: SippRuntime, tmp_path: Path
) -> None:
    held_call = hold_call(router, 4000, tmp_path)
    (first_invite,) = runtime.wait_for_invites(1)
    new_config = copy.deepcopy(router.config)
    phone_number(new_config, "pn-static")["assistantId"] = "asst-reloaded"
    phone_number(new_config, "pn-ask")["status"] = "blocked"
    write_config(router, new_config)

    router.process.send_signal(signal.SIGHUP)
    router.wait_for_event("config.reloaded")

    # The old file routes pn-ask by assistant-request, and the new one blocks it.
    blocked = call_once(router, "uac-expect-403.xml", ASK_NUMBER, tmp_path)
    assert blocked.final_status == 403
    finished = held_call.finish()
    assert finished.exit_code == 0, finished.describe()
    held_call_id = first_invite.header("X-Cozmox-Call-Id")
    held_end = router.wait_for_event("call.ended", call_id=held_call_id)
    assert held_end["outcome"] == "assistant"
    assert held_end["ended_reason"] == "customer-ended-call"
    status, record = router.call_record(held_call_id)
    assert status == 200, record
    assert record["route"]["id"] == "asst-support"

    again = call_once(router, ANSWERED, STATIC_NUMBER, tmp_path)
    assert again.final_status == 200
    invites = runtime.wait_for_invites(2)
    assert invites[1].header("X-Cozmox-Assistant-Id") == "asst-reloaded"
    metrics = router.metrics()
    assert metrics.value("cozmox_router_config_reloads_total", result="applied") == 1
    assert metrics.value("cozmox_router_config_last_reload_successful") == 1


def test_invalid_reload_keeps_old_config(
    router: Daemon, runtime: SippRuntime, tmp_path: Path
) -> None:
    held_call = hold_call(router, 2000, tmp_path)
    broken = copy.deepcopy(router.config)
    broken["router"]["unknownSetting"] = True
    phone_number(broken, "pn-static")["number"] = "not a number"
    write_config(router, broken)

    router.process.send_signal(signal.SIGHUP)
    rejected = router.wait_for_event("config.reload_rejected")

    assert rejected["error_count"] == 2
    assert any("router.unknownSetting" in error for error in rejected["errors"])
    assert any("phoneNumbers[0].number" in error for error in rejected["errors"])
    finished = held_call.finish()
    assert finished.exit_code == 0, finished.describe()
    blocked = call_once(router, "uac-expect-403.xml", "+14155550103", tmp_path)
    assert blocked.final_status == 403
    again = call_once(router, ANSWERED, STATIC_NUMBER, tmp_path)
    assert again.final_status == 200
    invites = runtime.wait_for_invites(2)
    assert invites[1].header("X-Cozmox-Assistant-Id") == "asst-support"
    metrics = router.metrics()
    assert metrics.value("cozmox_router_config_reloads_total", result="rejected") == 1
    assert metrics.value("cozmox_router_config_last_reload_successful") == 0


# ----- drain -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name
)
def test_stop_signal_drains_call_in_progress(
    start_router: StartRouter,
    router_config: dict[str, Any],
    runtime: SippRuntime,
    tmp_path: Path,
    signum: signal.Signals,
) -> None:
    router_config["router"]["drainSeconds"] = 20
    router = start_router(router_config)
    held_call = hold_call(router, 3000, tmp_path)

    signalled = time.monotonic()
    router.process.send_signal(signum)
    router.wait_for_event("router.draining")

    status, readiness = router.get_json("/readyz")
    assert status == 503
    assert readiness["draining"] is True
    refused = call_once(router, "uac-expect-503.xml", STATIC_NUMBER, tmp_path)
    assert refused.final_status == 503
    assert refused.final_response.header("Retry-After")
    finished = held_call.finish()
    assert finished.exit_code == 0, finished.describe()
    assert wait_for_exit(router, timeout=10) == 0
    elapsed = time.monotonic() - signalled
    assert elapsed < 15, f"stopped {elapsed:.1f} s after the signal"
    ended = router.events("call.ended", ended_reason="call.start.error-router-draining")
    assert len(ended) == 1
    assert len(runtime.invites()) == 1


def test_drain_time_ends_remaining_calls(
    start_router: StartRouter,
    router_config: dict[str, Any],
    runtime: SippRuntime,
    tmp_path: Path,
) -> None:
    router_config["router"]["drainSeconds"] = 1
    router = start_router(router_config)
    call = start_sipp(
        "uac-answered-expect-bye.xml",
        router.sip_target,
        STATIC_NUMBER,
        timeout=20,
        log_dir=tmp_path,
    )
    assert call.wait_for_response(200, timeout=10), call.finish().describe()

    router.process.send_signal(signal.SIGTERM)

    result = call.finish()
    assert result.exit_code == 0, result.describe()
    (bye,) = result.requests("BYE")
    assert bye.header("Reason") == (
        'SIP;cause=503;text="call.in-progress.error-router-shut-down"'
    )
    assert wait_for_exit(router, timeout=10) == 0
    ended = router.wait_for_event("call.ended")
    assert ended["outcome"] == "assistant"
    assert ended["ended_reason"] == "call.in-progress.error-router-shut-down"
    assert router.events("router.drain_timed_out")


def test_drain_time_rejects_call_still_routing(
    start_router: StartRouter,
    router_config: dict[str, Any],
    webhooks: WebhookServer,
    tmp_path: Path,
) -> None:
    router_config["router"]["drainSeconds"] = 1
    router = start_router(router_config)
    # The server takes longer than the drain time to reply.
    webhooks.reply("/webhook", {"assistantId": "asst-late"}, delay_seconds=4)
    call = start_sipp(
        "uac-expect-503.xml",
        router.sip_target,
        ASK_NUMBER,
        timeout=20,
        log_dir=tmp_path,
    )
    webhooks.wait_for_requests("/webhook", 1)

    router.process.send_signal(signal.SIGTERM)

    result = call.finish()
    assert result.exit_code == 0, result.describe()
    assert result.final_response.header("Retry-After") == "30"
    assert result.final_response.header("Reason") == (
        'SIP;cause=503;text="call.in-progress.error-router-shut-down"'
    )
    assert wait_for_exit(router, timeout=15) == 0
    ended = router.wait_for_event("call.ended")
    assert ended["outcome"] == "rejected"
    assert ended["ended_reason"] == "call.in-progress.error-router-shut-down"
    assert ended["sip_status"] == 503
    assert router.events("assistant_request.cancelled")
    assert router.events("call.router_fault") == []


def test_second_signal_cuts_drain_short(
    start_router: StartRouter,
    router_config: dict[str, Any],
    runtime: SippRuntime,
    tmp_path: Path,
) -> None:
    router_config["router"]["drainSeconds"] = 60
    router = start_router(router_config)
    call = start_sipp(
        "uac-answered-expect-bye.xml",
        router.sip_target,
        STATIC_NUMBER,
        timeout=20,
        log_dir=tmp_path,
    )
    assert call.wait_for_response(200, timeout=10), call.finish().describe()
    router.process.send_signal(signal.SIGINT)
    router.wait_for_event("router.draining")

    router.process.send_signal(signal.SIGINT)

    result = call.finish()
    assert result.exit_code == 0, result.describe()
    assert wait_for_exit(router, timeout=10) == 0
    assert router.events("router.drain_cut_short")
    ended = router.wait_for_event("call.ended")
    assert ended["ended_reason"] == "call.in-progress.error-router-shut-down"
