"""The registration policy of the trunks, as pure code with no pjsua2.

pjsua2 sends the REGISTERs (`router.sip.accounts`) with the settings of
`router.sip.registration_spec`. This module decides what a finished attempt
means and when the next one starts. `router.sip.registration_manager`
applies the decisions.

What pjsua does by itself, measured with pjsua2-python 2.15.1 against the
SIPp 3.6.1 registrars in `sipp-scenarios/uas-register-*.xml`:

- It resends a REGISTER with credentials once per 401 or 407 challenge, on
  refreshes too, and never sends Authorization before a challenge. It
  reports a 401 or 407 only when the registrar rejects those credentials: at
  once for a second challenge with the same nonce, and after up to three new
  nonces without `stale` otherwise.
- It answers 423 Interval Too Brief by resending with Expires set to
  Min-Expires, and keeps that value for the refreshes of the same
  registration. A 423 without Min-Expires is retried once with Expires 3601,
  and a second one is reported. NOTE: the 423 never reaches the router, so
  after a failure the next registration asks for `expiresSeconds` again and
  meets one more 423.
- It keeps one Call-ID with an increasing CSeq across refreshes, and takes a
  new Call-ID for the first REGISTER after a failure.
- It reports a registrar that never answers as 408 after Timer F (32 s), and
  a refused TCP connection as 503 at once, both without a response.
- It retries by itself only after 408, 480, 5xx and 6xx, on a fixed interval.
  The router turns that off and retries by this policy instead.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, StrEnum

from router.config import RegistrationSettings

# Retry delays lose up to this fraction (backoff) or gain up to it (after a
# rejection), so that trunks that failed together do not retry together.
JITTER_FRACTION = 0.2

# A registrar's Retry-After is honoured up to an hour, so that a broken
# value cannot stop registration for days.
RETRY_AFTER_MAX_SECONDS = 3600.0

# A binding is refreshed this long before it expires, or at half its
# lifetime when that comes first. The margin leaves room for the UDP
# retransmissions of a lost refresh, which pjsip spreads over 32 s.
REFRESH_MARGIN_SECONDS = 60.0


class RegistrationState(StrEnum):
    """The state of one trunk's registration, as `/readyz` shows it."""

    REGISTERING = "registering"
    REGISTERED = "registered"
    FAILED = "failed"
    UNREGISTERED = "unregistered"  # only after the un-REGISTER at shutdown


class AttemptResult(StrEnum):
    """The end of one REGISTER transaction, used as the `result` metric label."""

    REGISTERED = "registered"
    UNREGISTERED = "unregistered"
    AUTH_FAILED = "auth-failed"  # 401 or 407 after pjsua sent credentials
    FORBIDDEN = "forbidden"  # 403
    TIMEOUT = "timeout"  # no response before Timer F
    TRANSPORT_ERROR = "transport-error"  # no response: refused, unreachable
    SERVER_ERROR = "server-error"  # a 5xx or 6xx response
    REJECTED = "rejected"  # any other final response, 423 and 404 included
    LOCAL_ERROR = "local-error"  # nothing sent: bad URI, no transport or account


# Results that retrying soon cannot change: the registrar refused these
# credentials, so the retry waits the maximum delay.
_REJECTIONS = frozenset({AttemptResult.AUTH_FAILED, AttemptResult.FORBIDDEN})


@dataclass(frozen=True)
class AttemptOutcome:
    """The end of one REGISTER transaction, copied from pjsua's report."""

    status_code: int
    reason: str
    granted_seconds: int
    """Expiry granted: the Contact's `expires`, else the Expires header."""
    response_received: bool
    retry_after_seconds: float | None = None


@dataclass(frozen=True)
class RegistrationReport:
    """A finished REGISTER transaction of a trunk, posted to the event loop.

    `serial` names the account configuration that sent it, so a report from
    before a change or a re-creation is recognised and dropped.
    """

    trunk_id: str
    serial: int
    outcome: AttemptOutcome


class UnregisterResult(Enum):
    """The outcome of an un-REGISTER request to pjsua."""

    SENT = "sent"
    BUSY = "busy"  # a REGISTER is in progress, and its report comes first
    NOT_REGISTERED = "not-registered"


class AccountFailed(Exception):
    """pjsua refused an account operation, so no REGISTER went out."""


class NoAccountSlot(AccountFailed):
    """Every account of the SIP build is in use."""


@dataclass(frozen=True)
class NextAttempt:
    """When the next REGISTER goes out, and whether it refreshes a binding."""

    delay_seconds: float
    refresh: bool


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff, from `router.registration`."""

    min_seconds: float
    max_seconds: float

    @classmethod
    def from_settings(cls, settings: RegistrationSettings) -> RetryPolicy:
        """Take the delays from `router.registration`."""
        return cls(settings.retry_min_seconds, settings.retry_max_seconds)

    def backoff_seconds(self, failures: int, jitter: float) -> float:
        """Return the delay after `failures` failures in a row (1 or more).

        The delay doubles from `min_seconds` up to `max_seconds`, then loses
        up to JITTER_FRACTION of itself. `jitter` is a number in [0, 1).
        """
        exponent = min(max(failures, 1) - 1, 32)
        base = min(self.max_seconds, self.min_seconds * 2**exponent)
        return base * (1 - JITTER_FRACTION * jitter)

    def rejection_seconds(self, jitter: float) -> float:
        """Return the delay after a rejection: `max_seconds`, never less."""
        return self.max_seconds * (1 + JITTER_FRACTION * jitter)


def classify(outcome: AttemptOutcome) -> AttemptResult:
    """Return what a finished REGISTER transaction means."""
    code = outcome.status_code
    if 200 <= code < 300:
        if outcome.granted_seconds > 0:
            return AttemptResult.REGISTERED
        return AttemptResult.UNREGISTERED
    if not outcome.response_received:
        if code == 408:
            return AttemptResult.TIMEOUT
        return AttemptResult.TRANSPORT_ERROR
    if code in (401, 407):
        return AttemptResult.AUTH_FAILED
    if code == 403:
        return AttemptResult.FORBIDDEN
    if code >= 500:
        return AttemptResult.SERVER_ERROR
    return AttemptResult.REJECTED


def refresh_delay_seconds(granted_seconds: float) -> float:
    """Return when to refresh a binding granted for `granted_seconds`."""
    return max(granted_seconds / 2, granted_seconds - REFRESH_MARGIN_SECONDS)


def retry_delay_seconds(
    result: AttemptResult,
    failures: int,
    retry_after_seconds: float | None,
    policy: RetryPolicy,
    jitter: float,
) -> float:
    """Return the wait before retrying after a failed attempt.

    A rejection of the credentials (401, 403, 407) waits the maximum delay.
    Other failures back off exponentially. A Retry-After from the registrar
    is never undercut, up to RETRY_AFTER_MAX_SECONDS.
    """
    if result in _REJECTIONS:
        delay = policy.rejection_seconds(jitter)
    else:
        delay = policy.backoff_seconds(failures, jitter)
    if retry_after_seconds is not None:
        delay = max(delay, min(retry_after_seconds, RETRY_AFTER_MAX_SECONDS))
    return delay


class TrunkRegistration:
    """One trunk's registration: its state and what happens next.

    Pure state with no timers or I/O. The caller reports each finished
    attempt with `record()` and runs the `NextAttempt` it returns, and
    calls `expire()` when the granted expiry passes.
    """

    def __init__(
        self,
        trunk_id: str,
        policy: RetryPolicy,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.trunk_id = trunk_id
        self.policy = policy
        self.state = RegistrationState.REGISTERING
        self.consecutive_failures = 0
        self.last_status_code: int | None = None
        self.expires_at: float | None = None
        self._jitter = jitter
        self._challenge_retried = False

    def start_attempt(self) -> None:
        """Note that a REGISTER went out to recover from a failure."""
        if self.state is RegistrationState.FAILED:
            self.state = RegistrationState.REGISTERING

    def record(
        self, outcome: AttemptOutcome, now: float
    ) -> tuple[AttemptResult, NextAttempt | None]:
        """Apply a finished attempt, and return its result and the next one.

        `now` is on the same monotonic clock as `expires_at`. No next
        attempt follows an un-registration.
        """
        result = classify(outcome)
        self.last_status_code = outcome.status_code
        if result is AttemptResult.REGISTERED:
            return result, self._registered(outcome.granted_seconds, now)
        if result is AttemptResult.UNREGISTERED:
            self.state = RegistrationState.UNREGISTERED
            self.expires_at = None
            return result, None
        if self._is_fresh_challenge(result):
            # A registrar that changed its nonce can reject pjsua's credentials
            # at a refresh. One new REGISTER at once meets a fresh challenge.
            self._challenge_retried = True
            self.state = RegistrationState.REGISTERING
            return result, NextAttempt(0.0, refresh=False)
        return result, self._failed(result, outcome.retry_after_seconds)

    def record_local_error(self) -> NextAttempt:
        """Apply an attempt that failed before anything was sent."""
        self.last_status_code = None
        return self._failed(AttemptResult.LOCAL_ERROR, None)

    def expire(self, now: float) -> bool:
        """Drop a binding whose expiry has passed, and return whether one was."""
        if self.expires_at is None or now < self.expires_at:
            return False
        self.expires_at = None
        if self.state is RegistrationState.REGISTERED:
            self.state = RegistrationState.FAILED
        return True

    def seconds_until_expiry(self, now: float) -> float:
        """Return how long the binding lasts, 0 when there is none."""
        if self.expires_at is None:
            return 0.0
        return max(0.0, self.expires_at - now)

    def _registered(self, granted_seconds: int, now: float) -> NextAttempt:
        self.state = RegistrationState.REGISTERED
        self.consecutive_failures = 0
        self._challenge_retried = False
        self.expires_at = now + granted_seconds
        return NextAttempt(refresh_delay_seconds(granted_seconds), refresh=True)

    def _is_fresh_challenge(self, result: AttemptResult) -> bool:
        return (
            result is AttemptResult.AUTH_FAILED
            and self.state is RegistrationState.REGISTERED
            and not self._challenge_retried
        )

    def _failed(
        self, result: AttemptResult, retry_after_seconds: float | None
    ) -> NextAttempt:
        self.state = RegistrationState.FAILED
        self.consecutive_failures += 1
        delay = retry_delay_seconds(
            result,
            self.consecutive_failures,
            retry_after_seconds,
            self.policy,
            self._jitter(),
        )
        return NextAttempt(delay, refresh=False)


def parse_retry_after(response: str) -> float | None:
    """Return the seconds of a response's Retry-After header, or None.

    RFC 3261 section 20.33: the value may carry a comment and parameters
    after the number (`120 (maintenance);duration=60`).
    """
    for line in response.splitlines()[1:]:
        if not line.strip():
            break
        name, separator, value = line.partition(":")
        if not separator or name.strip().lower() != "retry-after":
            continue
        digits = value.strip().split(" ", 1)[0].split(";", 1)[0].split("(", 1)[0]
        return float(digits) if digits.isdigit() else None
    return None
