"""Every Prometheus metric of the router, created on a registry passed in.

Labels are bounded: transports, outcomes, endedReason values, SIP status
codes, webhook types and results, and trunk ids from the configuration.
Phone numbers, Call-IDs and URLs are never labels, because each new value
creates a new time series.

The registry also carries the standard `process_*` metrics (CPU seconds,
resident memory, open file descriptors), without the router's prefix so
that ready-made dashboards and alerts find them.
"""

import contextlib
import time
from collections.abc import Iterable, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
)

from router.sip.stack_drops import DROP_REASONS

PREFIX = "cozmox_router_"

# The assistant-request deadline defaults to 7.5 s and is at most 300 s.
ASSISTANT_REQUEST_BUCKETS = (
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 20.0, 60.0,
)  # fmt: skip
# Call setup includes the assistant-request and the wait for the runtime's
# 200 OK.
CALL_SETUP_BUCKETS = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0,
)  # fmt: skip
CALL_DURATION_BUCKETS = (
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
    7200.0,
)  # fmt: skip

# Values of the `result` label of assistant_request_seconds.
ASSISTANT_REQUEST_RESULTS = (
    "ok",  # a 2xx whose reply routes the call (assistant, squad, workflow, transfer)
    "error-reply",  # a 2xx whose reply carries a speakable `error`
    "invalid-reply",  # a 2xx whose body the reply table rejects
    "http-error",  # a non-2xx status after the last attempt
    "transport-error",  # connection refused or reset, TLS failure
    "oversize",  # a response body over the size cap
    "timeout",  # the deadline passed
    "cancelled",  # the caller hung up while the request was in flight
    "fault",  # an unexpected error in the router, such as a missing credential
)

CALL_SLOT_STATES = ("used", "max")
RELOAD_RESULTS = ("applied", "rejected")
SIP_LIMITS = ("maxCalls", "maxAccounts", "maxPacketBytes")


class Metrics:
    """The router's metrics, all registered on one registry.

    Each test can pass a fresh `CollectorRegistry`, so tests do not share
    metric values.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        ProcessCollector(registry=registry)
        self._create_sip_metrics(registry)
        self._create_call_metrics(registry)
        self._create_webhook_metrics(registry)
        self._create_operation_metrics(registry)
        self._create_registration_metrics(registry)

    def _create_sip_metrics(self, registry: CollectorRegistry) -> None:
        self.sip_invites_received = Counter(
            PREFIX + "sip_invites_received_total",
            "INVITE transactions received, counted once per transaction.",
            ["transport"],
            registry=registry,
        )
        self.sip_invites_accepted = Counter(
            PREFIX + "sip_invites_accepted_total",
            "INVITEs that passed the limits, source, number and status checks "
            "and were sent 180 Ringing.",
            ["transport"],
            registry=registry,
        )
        self.sip_invites_rejected = Counter(
            PREFIX + "sip_invites_rejected_total",
            "INVITEs answered with a final error response before they rang: "
            "by the router's limit, source, number and status checks, as "
            "unreadable, or by pjsua itself; by SIP status code.",
            ["status"],
            registry=registry,
        )
        self.sip_messages_dropped = Counter(
            PREFIX + "sip_messages_dropped_total",
            "Received SIP messages that the SIP stack dropped unanswered, "
            "by reason (syntax-error, missing-header, too-large, unreadable).",
            ["reason"],
            registry=registry,
        )
        self.sip_call_slots = Gauge(
            PREFIX + "sip_call_slots",
            "pjsua call slots, one per SIP call leg: used now, and the maximum "
            "of the build.",
            ["state"],
            registry=registry,
        )
        self.sip_limits = Gauge(
            PREFIX + "sip_limits",
            "Limits of the installed pjsua2 build: calls, accounts, and "
            "packet size in bytes.",
            ["limit"],
            registry=registry,
        )
        self.registration_state = Gauge(
            PREFIX + "registration_state",
            "SIP registration of a trunk: 1 registered, 0 not registered.",
            ["trunk"],
            registry=registry,
        )
        self.gateway_up = Gauge(
            PREFIX + "gateway_up",
            "OPTIONS health of a gateway: 1 up, 0 down after 3 missed pings.",
            ["trunk", "gateway"],
            registry=registry,
        )
        for state in CALL_SLOT_STATES:
            self.sip_call_slots.labels(state=state)
        for reason in DROP_REASONS:
            self.sip_messages_dropped.labels(reason=reason)

    def _create_call_metrics(self, registry: CollectorRegistry) -> None:
        self.calls = Counter(
            PREFIX + "calls_total",
            "Calls ended, by outcome (assistant, squad, workflow, transferred, "
            "rejected, failed) and endedReason.",
            ["outcome", "ended_reason"],
            registry=registry,
        )
        self.active_calls = Gauge(
            PREFIX + "active_calls",
            "Calls in progress, from the first INVITE to the end of the call.",
            registry=registry,
        )
        self.max_concurrent_calls = Gauge(
            PREFIX + "max_concurrent_calls",
            "Calls the router takes at once (router.maxConcurrentCalls); "
            "new calls past it get 503.",
            registry=registry,
        )
        self.call_setup_seconds = Histogram(
            PREFIX + "call_setup_seconds",
            "Time in seconds from the INVITE to the call's handoff, transfer "
            "or final error response.",
            ["outcome"],
            buckets=CALL_SETUP_BUCKETS,
            registry=registry,
        )
        self.call_duration_seconds = Histogram(
            PREFIX + "call_duration_seconds",
            "Time in seconds from the answer to the end of an answered call.",
            buckets=CALL_DURATION_BUCKETS,
            registry=registry,
        )
        self.transfers = Counter(
            PREFIX + "transfers_total",
            "Transfer attempts to a destination, by SIP verb (refer, dial, "
            "redirect) and result (transferred, rejected, notify_failed, "
            "timed_out, bridged, failed, redirected).",
            ["verb", "result"],
            registry=registry,
        )

    def _create_webhook_metrics(self, registry: CollectorRegistry) -> None:
        self.assistant_request_seconds = Histogram(
            PREFIX + "assistant_request_seconds",
            "Time in seconds of the whole assistant-request exchange, retries "
            "included, by result.",
            ["result"],
            buckets=ASSISTANT_REQUEST_BUCKETS,
            registry=registry,
        )
        self.webhook_deliveries = Counter(
            PREFIX + "webhook_deliveries_total",
            "Webhook messages sent off the call path, by message type and result.",
            ["type", "result"],
            registry=registry,
        )
        self.webhook_queue_depth = Gauge(
            PREFIX + "webhook_queue_depth",
            "Webhook messages waiting in the delivery queue.",
            registry=registry,
        )
        self.webhook_queue_dropped = Counter(
            PREFIX + "webhook_queue_dropped_total",
            "Webhook messages dropped, oldest first, because the delivery "
            "queue was full.",
            ["type"],
            registry=registry,
        )
        for result in ASSISTANT_REQUEST_RESULTS:
            self.assistant_request_seconds.labels(result=result)

    def _create_operation_metrics(self, registry: CollectorRegistry) -> None:
        self.config_reloads = Counter(
            PREFIX + "config_reloads_total",
            "Configuration reloads by SIGHUP or POST /admin/reload, by result "
            "(applied, rejected).",
            ["result"],
            registry=registry,
        )
        self.config_last_reload_successful = Gauge(
            PREFIX + "config_last_reload_successful",
            "Whether the last configuration load was applied: 1 yes, 0 no.",
            registry=registry,
        )
        self.config_last_reload_success_seconds = Gauge(
            PREFIX + "config_last_reload_success_timestamp_seconds",
            "Unix time in seconds of the last configuration load that was "
            "applied, at start or by a reload.",
            registry=registry,
        )
        self.config_last_reload_successful.set(1)
        self.config_last_reload_success_seconds.set(time.time())
        for result in RELOAD_RESULTS:
            self.config_reloads.labels(result=result)

    def count_reload(self, applied: bool) -> None:
        """Count a reload and record whether the last one was applied."""
        self.config_reloads.labels(result="applied" if applied else "rejected").inc()
        self.config_last_reload_successful.set(1 if applied else 0)
        if applied:
            self.config_last_reload_success_seconds.set(time.time())

    def _create_registration_metrics(self, registry: CollectorRegistry) -> None:
        self.registration_expires_seconds = Gauge(
            PREFIX + "registration_expires_seconds",
            "Time in seconds until a trunk's registration binding expires, 0 "
            "without a binding.",
            ["trunk"],
            registry=registry,
        )
        self.registration_consecutive_failures = Gauge(
            PREFIX + "registration_consecutive_failures",
            "Count of failed registration attempts of a trunk since its last success.",
            ["trunk"],
            registry=registry,
        )
        self.registration_last_status_code = Gauge(
            PREFIX + "registration_last_status_code",
            "SIP status of a trunk's last finished REGISTER: 408 when the "
            "registrar never answered, 0 when nothing could be sent.",
            ["trunk"],
            registry=registry,
        )
        self.registration_retry_delay_seconds = Gauge(
            PREFIX + "registration_retry_delay_seconds",
            "Time in seconds that a trunk waits before its next registration "
            "attempt after a failure, 0 while registered.",
            ["trunk"],
            registry=registry,
        )
        self.registration_attempts = Counter(
            PREFIX + "registration_attempts_total",
            "Finished REGISTER transactions of a trunk, by result (registered, "
            "unregistered, auth-failed, forbidden, timeout, transport-error, "
            "server-error, rejected, local-error).",
            ["trunk", "result"],
            registry=registry,
        )
        self.gateway_options_pings = Counter(
            PREFIX + "gateway_options_pings_total",
            "OPTIONS pings to a gateway, by result (answered, missed).",
            ["trunk", "gateway", "result"],
            registry=registry,
        )

    def forget_registration(self, trunk: str, results: Iterable[str]) -> None:
        """Drop every registration series of a trunk that left the config."""
        for gauge in (
            self.registration_state,
            self.registration_expires_seconds,
            self.registration_consecutive_failures,
            self.registration_last_status_code,
            self.registration_retry_delay_seconds,
        ):
            with contextlib.suppress(KeyError):
                gauge.remove(trunk)
        for result in results:
            with contextlib.suppress(KeyError):
                self.registration_attempts.remove(trunk, result)

    def forget_gateway(self, trunk: str, gateway: str) -> None:
        """Drop the health series of a gateway that left the config."""
        with contextlib.suppress(KeyError):
            self.gateway_up.remove(trunk, gateway)
        for result in ("answered", "missed"):
            with contextlib.suppress(KeyError):
                self.gateway_options_pings.remove(trunk, gateway, result)

    def set_call_slots(self, used: int, maximum: int) -> None:
        """Set the used and maximum call slots of the `sip_call_slots` gauge."""
        self.sip_call_slots.labels(state="used").set(used)
        self.sip_call_slots.labels(state="max").set(maximum)

    def set_sip_limits(self, limits: Mapping[str, int]) -> None:
        """Set the `sip_limits` gauge from `{"maxCalls": 4, ...}`.

        Keys other than maxCalls, maxAccounts and maxPacketBytes are ignored,
        so the label stays bounded.
        """
        for name in SIP_LIMITS:
            if name in limits:
                self.sip_limits.labels(limit=name).set(limits[name])
