"""`/metrics` after a mix of real SIPp calls: each series has the right value."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import Daemon
from sipp_runner import SippRuntime, requires_sipp, run_sipp
from webhook_server import WebhookServer

pytestmark = [pytest.mark.integration, requires_sipp]


def call(router: Daemon, scenario: str, number: str, log_dir: Path) -> None:
    extra = ("-set", "hold", "1000") if "200" in scenario else ()
    result = run_sipp(
        scenario, router.sip_target, number, extra, timeout=20, log_dir=log_dir
    )
    assert result.exit_code == 0, result.describe()


def test_metrics_count_a_mix_of_calls(
    router: Daemon, runtime: SippRuntime, webhooks: WebhookServer, tmp_path: Path
) -> None:
    webhooks.reply("/webhook", {"assistantId": "asst-sales"})
    call(router, "uac-static-assistant-expect-200.xml", "+14155550100", tmp_path)
    call(router, "uac-static-assistant-expect-200.xml", "+14155550101", tmp_path)
    call(router, "uac-expect-403.xml", "+14155550103", tmp_path)
    call(router, "uac-expect-404.xml", "+14155550199", tmp_path)
    router.wait_for_event(
        "call.ended", ended_reason="call.start.error-get-phone-number"
    )

    metrics = router.metrics()

    def value(name: str, **labels: str) -> float:
        return metrics.value("cozmox_router_" + name, **labels)

    assert value("sip_invites_received_total", transport="udp") == 4
    # The blocked and the unknown number never ring.
    assert value("sip_invites_accepted_total", transport="udp") == 2
    assert value("sip_invites_rejected_total", status="403") == 1
    assert value("sip_invites_rejected_total", status="404") == 1
    assert (
        value("calls_total", outcome="assistant", ended_reason="customer-ended-call")
        == 2
    )
    assert value("calls_total", outcome="rejected") == 2
    assert value("call_setup_seconds_count", outcome="assistant") == 2
    assert value("call_setup_seconds_count", outcome="rejected") == 2
    assert value("call_duration_seconds_count") == 2
    # Each answered call was held for 1 s by SIPp.
    assert value("call_duration_seconds_sum") >= 2 * 0.9
    assert value("assistant_request_seconds_count", result="ok") == 1
    assert value("active_calls") == 0
    assert value("sip_call_slots", state="used") == 0
    max_calls = router.get_json("/readyz")[1]["sip"]["limits"]["maxCalls"]
    assert value("sip_call_slots", state="max") == max_calls
    assert value("config_last_reload_successful") == 1
    assert value("config_reloads_total") == 0
    # Exported with the kernel's default buffer too; four calls drop nothing.
    assert metrics.labels("cozmox_router_sip_udp_receive_drops_total") == [{}]
    assert value("sip_udp_receive_drops_total") == 0
    assert metrics.value("process_resident_memory_bytes") > 0
    assert metrics.value("process_cpu_seconds_total") > 0
