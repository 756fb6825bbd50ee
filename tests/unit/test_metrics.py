import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from router.metrics import ASSISTANT_REQUEST_RESULTS, Metrics

# Name, type and labels of every metric the router exposes. Prometheus text
# drops the `_total` suffix from counter family names.
EXPECTED = {
    "cozmox_router_sip_invites_received": ("counter", {"transport"}),
    "cozmox_router_sip_invites_accepted": ("counter", {"transport"}),
    "cozmox_router_sip_invites_rejected": ("counter", {"status"}),
    "cozmox_router_sip_messages_dropped": ("counter", {"reason"}),
    "cozmox_router_calls": ("counter", {"outcome", "ended_reason"}),
    "cozmox_router_active_calls": ("gauge", set()),
    "cozmox_router_max_concurrent_calls": ("gauge", set()),
    "cozmox_router_call_setup_seconds": ("histogram", {"outcome"}),
    "cozmox_router_call_duration_seconds": ("histogram", set()),
    "cozmox_router_transfers": ("counter", {"verb", "result"}),
    "cozmox_router_assistant_request_seconds": ("histogram", {"result"}),
    "cozmox_router_webhook_deliveries": ("counter", {"type", "result"}),
    "cozmox_router_webhook_queue_depth": ("gauge", set()),
    "cozmox_router_webhook_queue_dropped": ("counter", {"type"}),
    "cozmox_router_registration_state": ("gauge", {"trunk"}),
    "cozmox_router_gateway_up": ("gauge", {"trunk", "gateway"}),
    "cozmox_router_sip_call_slots": ("gauge", {"state"}),
    "cozmox_router_sip_limits": ("gauge", {"limit"}),
    "cozmox_router_config_reloads": ("counter", {"result"}),
    "cozmox_router_config_last_reload_successful": ("gauge", set()),
    "cozmox_router_config_last_reload_success_timestamp_seconds": ("gauge", set()),
    "cozmox_router_registration_expires_seconds": ("gauge", {"trunk"}),
    "cozmox_router_registration_consecutive_failures": ("gauge", {"trunk"}),
    "cozmox_router_registration_last_status_code": ("gauge", {"trunk"}),
    "cozmox_router_registration_retry_delay_seconds": ("gauge", {"trunk"}),
    "cozmox_router_registration_attempts": ("counter", {"trunk", "result"}),
    "cozmox_router_gateway_options_pings": (
        "counter",
        {"trunk", "gateway", "result"},
    ),
}

# prometheus_client's ProcessCollector, on Linux.
PROCESS_METRICS = {
    "process_cpu_seconds",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_start_time_seconds",
    "process_open_fds",
    "process_max_fds",
}

# Words that a help text uses to name the unit of its value: seconds or
# bytes, the thing a counter or gauge counts, or the meaning of 1 and 0.
UNIT_WORDS = (
    "seconds",
    "bytes",
    "calls",
    "slots",
    "invite",
    "messages",
    "reloads",
    "1 ",
    "attempts",
    "transactions",
    "pings",
    "sip status",
)

BUCKET_LABELS = {"le"}


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


def exercise(metrics: Metrics) -> None:
    metrics.sip_invites_received.labels(transport="udp").inc()
    metrics.sip_invites_accepted.labels(transport="udp").inc()
    metrics.sip_invites_rejected.labels(status="403").inc()
    metrics.calls.labels(outcome="assistant", ended_reason="customer-ended-call").inc()
    metrics.active_calls.inc()
    metrics.call_setup_seconds.labels(outcome="assistant").observe(0.4)
    metrics.call_duration_seconds.observe(42)
    metrics.transfers.labels(verb="refer", result="rejected").inc()
    metrics.assistant_request_seconds.labels(result="ok").observe(0.1)
    metrics.webhook_deliveries.labels(type="status-update", result="delivered").inc()
    metrics.webhook_queue_depth.set(3)
    metrics.webhook_queue_dropped.labels(type="status-update").inc()
    metrics.registration_state.labels(trunk="trunk-a").set(1)
    metrics.gateway_up.labels(trunk="trunk-a", gateway="127.0.0.1:5060").set(1)
    metrics.set_call_slots(used=1, maximum=4)
    metrics.set_sip_limits({"maxCalls": 4, "maxAccounts": 8, "maxPacketBytes": 4000})
    metrics.config_reloads.labels(result="applied").inc()
    metrics.registration_expires_seconds.labels(trunk="trunk-a").set(30)
    metrics.registration_consecutive_failures.labels(trunk="trunk-a").set(0)
    metrics.registration_last_status_code.labels(trunk="trunk-a").set(200)
    metrics.registration_retry_delay_seconds.labels(trunk="trunk-a").set(0)
    metrics.registration_attempts.labels(trunk="trunk-a", result="registered").inc()
    metrics.gateway_options_pings.labels(
        trunk="trunk-a", gateway="127.0.0.1:5060", result="answered"
    ).inc()


def families(metrics: Metrics) -> dict:
    text = generate_latest(metrics.registry).decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_metrics_exposes_every_name_type_and_label(metrics):
    exercise(metrics)
    exposed = families(metrics)

    for name, (kind, labels) in EXPECTED.items():
        assert name in exposed, name
        assert exposed[name].type == kind, name
        for sample in exposed[name].samples:
            assert set(sample.labels) - BUCKET_LABELS == labels, sample


def test_metrics_creates_nothing_unexpected(metrics):
    # prometheus_client adds a `_created` gauge to counters and histograms.
    names = {name for name in families(metrics) if not name.endswith("_created")}

    assert names - PROCESS_METRICS == set(EXPECTED)


def test_metrics_include_process_metrics(metrics):
    names = set(families(metrics))

    assert {"process_cpu_seconds", "process_resident_memory_bytes"} <= names


def test_metrics_help_texts_name_units():
    exposed = families(Metrics(CollectorRegistry()))

    for name, family in exposed.items():
        if name.endswith("_seconds"):
            assert "seconds" in family.documentation, name
        if name.startswith("cozmox_router_"):
            help_text = family.documentation.lower()
            assert any(word in help_text for word in UNIT_WORDS), name


def test_metrics_count_reload_results(metrics):
    registry = metrics.registry

    metrics.count_reload(applied=False)

    rejected = registry.get_sample_value(
        "cozmox_router_config_reloads_total", {"result": "rejected"}
    )
    assert rejected == 1
    assert registry.get_sample_value("cozmox_router_config_last_reload_successful") == 0

    metrics.count_reload(applied=True)

    applied = registry.get_sample_value(
        "cozmox_router_config_reloads_total", {"result": "applied"}
    )
    assert applied == 1
    assert registry.get_sample_value("cozmox_router_config_last_reload_successful") == 1


def test_metrics_fresh_registries_do_not_clash():
    first = Metrics(CollectorRegistry())
    second = Metrics(CollectorRegistry())

    first.active_calls.inc()

    assert first.registry.get_sample_value("cozmox_router_active_calls") == 1
    assert second.registry.get_sample_value("cozmox_router_active_calls") == 0


def test_metrics_preset_assistant_request_results(metrics):
    for result in ASSISTANT_REQUEST_RESULTS:
        count = metrics.registry.get_sample_value(
            "cozmox_router_assistant_request_seconds_count", {"result": result}
        )
        assert count == 0, result


def test_metrics_call_slots_gauge(metrics):
    metrics.set_call_slots(used=3, maximum=4)
    registry = metrics.registry

    used = registry.get_sample_value("cozmox_router_sip_call_slots", {"state": "used"})
    maximum = registry.get_sample_value(
        "cozmox_router_sip_call_slots", {"state": "max"}
    )
    assert used == 3
    assert maximum == 4


def test_metrics_sip_limits_ignore_unknown_keys(metrics):
    metrics.set_sip_limits({"maxCalls": 4, "somethingElse": 7})
    exposed = families(metrics)

    limits = {
        s.labels["limit"]: s.value for s in exposed["cozmox_router_sip_limits"].samples
    }
    assert limits == {"maxCalls": 4}


def test_metrics_forget_registration(metrics):
    exercise(metrics)

    metrics.forget_registration("trunk-a", ["registered", "timeout"])

    registry = metrics.registry
    labels = {"trunk": "trunk-a"}
    for name in (
        "cozmox_router_registration_state",
        "cozmox_router_registration_expires_seconds",
        "cozmox_router_registration_consecutive_failures",
        "cozmox_router_registration_last_status_code",
        "cozmox_router_registration_retry_delay_seconds",
    ):
        assert registry.get_sample_value(name, labels) is None, name
    attempts = registry.get_sample_value(
        "cozmox_router_registration_attempts_total",
        {"trunk": "trunk-a", "result": "registered"},
    )
    assert attempts is None


def test_metrics_forget_gateway(metrics):
    exercise(metrics)

    metrics.forget_gateway("trunk-a", "127.0.0.1:5060")

    registry = metrics.registry
    labels = {"trunk": "trunk-a", "gateway": "127.0.0.1:5060"}
    assert registry.get_sample_value("cozmox_router_gateway_up", labels) is None
    pings = registry.get_sample_value(
        "cozmox_router_gateway_options_pings_total", {**labels, "result": "answered"}
    )
    assert pings is None
