"""Metrics and log events of the trunks' registrations.

Every series is labelled with the trunk id from the config, and a trunk
that leaves the config takes its series with it.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from router.metrics import Metrics
from router.sip.registration import (
    AttemptOutcome,
    AttemptResult,
    NextAttempt,
    RegistrationState,
    TrunkRegistration,
)


class RegistrationMetrics:
    """The registration series of `Metrics`, set per trunk."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def track(self, trunk_id: str, seconds_until_expiry: Callable[[], float]) -> None:
        """Start the series of a new trunk, whose expiry is read at each scrape."""
        self._metrics.registration_expires_seconds.labels(trunk=trunk_id).set_function(
            seconds_until_expiry
        )
        self._metrics.registration_retry_delay_seconds.labels(trunk=trunk_id).set(0)

    def count_attempt(self, trunk_id: str, result: AttemptResult) -> None:
        """Count one finished REGISTER transaction."""
        self._metrics.registration_attempts.labels(
            trunk=trunk_id, result=result.value
        ).inc()

    def publish(
        self,
        trunk_id: str,
        registration: TrunkRegistration,
        following: NextAttempt | None,
    ) -> None:
        """Set the gauges from the trunk's state and its next attempt."""
        registered = registration.state is RegistrationState.REGISTERED
        metrics = self._metrics
        metrics.registration_state.labels(trunk=trunk_id).set(int(registered))
        metrics.registration_consecutive_failures.labels(trunk=trunk_id).set(
            registration.consecutive_failures
        )
        metrics.registration_last_status_code.labels(trunk=trunk_id).set(
            registration.last_status_code or 0
        )
        if following is not None:
            retry = 0.0 if following.refresh else following.delay_seconds
            metrics.registration_retry_delay_seconds.labels(trunk=trunk_id).set(retry)

    def forget(self, trunk_id: str) -> None:
        """Drop every series of a trunk that left the config."""
        self._metrics.forget_registration(trunk_id, [r.value for r in AttemptResult])


def log_result(
    logger: structlog.typing.FilteringBoundLogger,
    registration: TrunkRegistration,
    result: AttemptResult,
    outcome: AttemptOutcome,
    following: NextAttempt | None,
) -> None:
    """Log a finished REGISTER transaction: refreshes at debug, failures at warning."""
    fields = {"result": result.value, "status": outcome.status_code}
    if result is AttemptResult.REGISTERED:
        logger.debug(
            "registration.refreshed",
            granted_seconds=outcome.granted_seconds,
            **fields,
        )
    elif result is AttemptResult.UNREGISTERED:
        logger.info("registration.unregistered", **fields)
    elif following is not None and following.delay_seconds == 0:
        logger.info("registration.challenge_retry", **fields)
    else:
        logger.warning(
            "registration.attempt_failed",
            reason=outcome.reason,
            response_received=outcome.response_received,
            retry_after_seconds=outcome.retry_after_seconds,
            consecutive_failures=registration.consecutive_failures,
            retry_in_seconds=(round(following.delay_seconds, 3) if following else None),
            **fields,
        )
