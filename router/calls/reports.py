"""Reporting a call: status webhooks, its summary log event and its metrics.

A call that passed the trunk check (and so reached the number lookup) is
reported: a `status-update` for each of its `ringing`, `in-progress`,
`forwarding` and `ended` states, then exactly one `end-of-call-report`.
Calls stopped earlier (an unknown source, the router's limits) are not.
Messages go to the delivery queue, which sends them off the call path, so
nothing here waits or lets a failure reach the call. Every call, reported
or not, ends with one `call.ended` log event and its metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import structlog

from router.calls.record import CallRecord
from router.config import Config
from router.metrics import Metrics
from router.webhooks.delivery import WebhookDelivery
from router.webhooks.messages import (
    REPORTED_STATES,
    InvalidInlineServer,
    end_of_call_report,
    inline_assistant_server,
    message_server,
    status_update,
)

log = structlog.get_logger("router.calls")


class CallReports:
    """The status updates, end-of-call report, log event and metrics of calls."""

    def __init__(
        self,
        delivery: WebhookDelivery,
        config_provider: Callable[[], Config],
        metrics: Metrics,
    ) -> None:
        self._delivery = delivery
        self._config_provider = config_provider
        self._metrics = metrics

    def on_state(self, call: CallRecord) -> None:
        """Queue a `status-update` when the call enters a reported state."""
        status = REPORTED_STATES.get(call.state)
        if status is not None and call.reached_number_lookup:
            self._send(call, lambda: status_update(call, status))

    def on_ended(self, call: CallRecord) -> None:
        """Log and count the ended call, and queue its `end-of-call-report`."""
        self._log_and_count(call)
        if call.reached_number_lookup:
            self._send(call, lambda: end_of_call_report(call))

    def _log_and_count(self, call: CallRecord) -> None:
        outcome = call.outcome or "failed"
        ended_reason = call.ended_reason or ""
        self._metrics.calls.labels(outcome=outcome, ended_reason=ended_reason).inc()
        self._metrics.call_setup_seconds.labels(outcome=outcome).observe(
            call.setup_seconds()
        )
        duration = None
        if call.answered_monotonic is not None:
            duration = time.monotonic() - call.answered_monotonic
            self._metrics.call_duration_seconds.observe(duration)
        event = call.log.warning if outcome in ("rejected", "failed") else call.log.info
        event(
            "call.ended",
            outcome=outcome,
            ended_reason=ended_reason,
            sip_status=call.sip_status,
            setup_ms=round(call.setup_seconds() * 1000, 1),
            duration_seconds=round(duration, 3) if duration is not None else None,
            destination=call.destination.get("type") if call.destination else None,
            transport=call.invite.transport,
            **_caller_fields(call),
        )

    def choose_assistant_server(self, call: CallRecord) -> None:
        """Send the call's later messages to its inline assistant's `server`.

        An invalid server is logged and ignored, so the messages go to the
        number's or the org's server.
        """
        try:
            call.assistant_server = inline_assistant_server(call.route)
        except InvalidInlineServer as error:
            call.log.warning("call.inline_server_invalid", detail=str(error))

    def _send(self, call: CallRecord, build: Callable[[], dict[str, Any]]) -> None:
        try:
            server = message_server(call, self._config_provider())
            if server is not None:
                self._delivery.send(call.id, build(), server)
        except Exception:  # noqa: BLE001 - a report must never fail the call
            call.log.exception("webhook.queue_failed")


def _caller_fields(call: CallRecord) -> dict[str, Any]:
    """Return the dialled and masked caller numbers once the trunk is known.

    A call from an unknown source logs nothing of itself but its source and
    Call-ID.
    """
    if not call.reached_number_lookup:
        return {}
    return {"dialled": call.dialled_number, "caller": call.masked_caller}
