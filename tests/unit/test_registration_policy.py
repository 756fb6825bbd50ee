"""The registration policy: outcomes, backoff, refresh timing, the specs."""

import pytest
from pydantic import SecretStr

from router.config import Config, RegistrationSettings, SipTrunkCredential
from router.sip.registration import (
    JITTER_FRACTION,
    RETRY_AFTER_MAX_SECONDS,
    AttemptOutcome,
    AttemptResult,
    RegistrationState,
    RetryPolicy,
    TrunkRegistration,
    classify,
    parse_retry_after,
    refresh_delay_seconds,
    retry_delay_seconds,
)
from router.sip.registration_spec import registrar_is_inbound_gateway, registration_spec

FAST = RetryPolicy(min_seconds=1, max_seconds=4)


def outcome(
    status: int,
    granted: int = 0,
    received: bool = True,
    retry_after: float | None = None,
) -> AttemptOutcome:
    return AttemptOutcome(status, "reason", granted, received, retry_after)


def no_jitter() -> float:
    return 0.0


def trunk_registration(policy: RetryPolicy = FAST) -> TrunkRegistration:
    return TrunkRegistration("trunk-a", policy, jitter=no_jitter)


# ----- classify -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [
        (outcome(200, granted=60), AttemptResult.REGISTERED),
        (outcome(202, granted=60), AttemptResult.REGISTERED),
        (outcome(200, granted=0), AttemptResult.UNREGISTERED),
        (outcome(408, received=False), AttemptResult.TIMEOUT),
        (outcome(503, received=False), AttemptResult.TRANSPORT_ERROR),
        (outcome(502, received=False), AttemptResult.TRANSPORT_ERROR),
        (outcome(401), AttemptResult.AUTH_FAILED),
        (outcome(407), AttemptResult.AUTH_FAILED),
        (outcome(403), AttemptResult.FORBIDDEN),
        (outcome(404), AttemptResult.REJECTED),
        (outcome(423), AttemptResult.REJECTED),
        (outcome(408), AttemptResult.REJECTED),
        (outcome(302), AttemptResult.REJECTED),
        (outcome(500), AttemptResult.SERVER_ERROR),
        (outcome(503), AttemptResult.SERVER_ERROR),
        (outcome(603), AttemptResult.SERVER_ERROR),
    ],
)
def test_classify_outcomes(attempt, expected):
    assert classify(attempt) is expected


# ----- delays --------------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap():
    policy = RetryPolicy(min_seconds=30, max_seconds=300)

    delays = [policy.backoff_seconds(failures, jitter=0) for failures in range(1, 8)]

    assert delays == [30, 60, 120, 240, 300, 300, 300]


def test_backoff_jitter_only_shortens():
    policy = RetryPolicy(min_seconds=30, max_seconds=300)

    shortest = policy.backoff_seconds(2, jitter=0.999999)

    assert shortest < 60
    assert shortest >= 60 * (1 - JITTER_FRACTION)


def test_backoff_survives_many_failures():
    policy = RetryPolicy(min_seconds=30, max_seconds=300)

    assert policy.backoff_seconds(10_000, jitter=0) == 300


def test_rejection_waits_at_least_the_cap():
    policy = RetryPolicy(min_seconds=30, max_seconds=300)

    assert policy.rejection_seconds(jitter=0) == 300
    assert policy.rejection_seconds(jitter=0.999999) < 300 * (1 + JITTER_FRACTION)


@pytest.mark.parametrize(
    ("result", "retry_after", "expected"),
    [
        (AttemptResult.SERVER_ERROR, None, 30),
        (AttemptResult.SERVER_ERROR, 120, 120),
        (AttemptResult.SERVER_ERROR, 5, 30),
        (AttemptResult.SERVER_ERROR, 10**9, RETRY_AFTER_MAX_SECONDS),
        (AttemptResult.TIMEOUT, None, 30),
        (AttemptResult.FORBIDDEN, None, 300),
        (AttemptResult.AUTH_FAILED, None, 300),
        (AttemptResult.FORBIDDEN, 600, 600),
    ],
)
def test_retry_delay_cases(result, retry_after, expected):
    policy = RetryPolicy(min_seconds=30, max_seconds=300)

    delay = retry_delay_seconds(result, 1, retry_after, policy, jitter=0)

    assert delay == expected


@pytest.mark.parametrize(
    ("granted", "expected"),
    [(3600, 3540), (300, 240), (120, 60), (60, 30), (10, 5), (1, 0.5)],
)
def test_refresh_delay_from_granted_expiry(granted, expected):
    assert refresh_delay_seconds(granted) == expected


# ----- the state machine ---------------------------------------------------------


def test_registration_starts_registering():
    registration = trunk_registration()

    assert registration.state is RegistrationState.REGISTERING
    assert registration.consecutive_failures == 0
    assert registration.seconds_until_expiry(now=0) == 0


def test_success_registers_and_schedules_refresh():
    registration = trunk_registration()

    result, following = registration.record(outcome(200, granted=10), now=100)

    assert result is AttemptResult.REGISTERED
    assert registration.state is RegistrationState.REGISTERED
    assert registration.expires_at == 110
    assert registration.seconds_until_expiry(now=104) == 6
    assert following is not None
    assert following.refresh
    assert following.delay_seconds == 5


def test_failures_back_off_then_recover():
    registration = trunk_registration()
    attempts = [
        outcome(408, received=False),
        outcome(503),
        outcome(503, received=False),
    ]

    delays = []
    for attempt in attempts:
        _, following = registration.record(attempt, now=0)
        delays.append(following.delay_seconds)
        assert not following.refresh
        assert registration.state is RegistrationState.FAILED

    assert delays == [1, 2, 4]
    assert registration.consecutive_failures == 3
    registration.start_attempt()
    assert registration.state is RegistrationState.REGISTERING
    registration.record(outcome(200, granted=10), now=0)
    assert registration.state is RegistrationState.REGISTERED
    assert registration.consecutive_failures == 0


def test_failure_honours_retry_after():
    registration = trunk_registration()

    _, following = registration.record(outcome(503, retry_after=7), now=0)

    assert following.delay_seconds == 7


def test_wrong_password_fails_at_the_cap():
    registration = trunk_registration()

    result, following = registration.record(outcome(401), now=0)

    assert result is AttemptResult.AUTH_FAILED
    assert registration.state is RegistrationState.FAILED
    assert registration.consecutive_failures == 1
    assert following.delay_seconds == FAST.max_seconds


def test_forbidden_is_not_retried_before_the_cap():
    registration = trunk_registration()

    result, following = registration.record(outcome(403), now=0)

    assert result is AttemptResult.FORBIDDEN
    assert following.delay_seconds >= FAST.max_seconds


def test_challenge_after_registration_is_retried_once_at_once():
    registration = trunk_registration()
    registration.record(outcome(200, granted=10), now=0)

    result, following = registration.record(outcome(401), now=5)

    assert result is AttemptResult.AUTH_FAILED
    assert following.delay_seconds == 0
    assert registration.state is RegistrationState.REGISTERING
    assert registration.consecutive_failures == 0


def test_second_rejection_after_registration_fails():
    registration = trunk_registration()
    registration.record(outcome(200, granted=10), now=0)
    registration.record(outcome(407), now=5)

    result, following = registration.record(outcome(407), now=5)

    assert result is AttemptResult.AUTH_FAILED
    assert registration.state is RegistrationState.FAILED
    assert registration.consecutive_failures == 1
    assert following.delay_seconds == FAST.max_seconds


def test_challenge_retry_rearms_after_success():
    registration = trunk_registration()
    registration.record(outcome(200, granted=10), now=0)
    registration.record(outcome(401), now=5)
    registration.record(outcome(200, granted=10), now=5)

    _, following = registration.record(outcome(401), now=10)

    assert following.delay_seconds == 0


def test_binding_expires_without_refresh():
    registration = trunk_registration()
    registration.record(outcome(200, granted=10), now=0)

    assert not registration.expire(now=9.9)
    assert registration.state is RegistrationState.REGISTERED
    assert registration.expire(now=10)
    assert registration.state is RegistrationState.FAILED
    assert registration.expires_at is None
    assert not registration.expire(now=20)


def test_failed_refresh_keeps_the_binding_time():
    registration = trunk_registration()
    registration.record(outcome(200, granted=10), now=0)

    registration.record(outcome(500), now=5)

    assert registration.state is RegistrationState.FAILED
    assert registration.seconds_until_expiry(now=5) == 5


def test_local_error_backs_off():
    registration = trunk_registration()

    following = registration.record_local_error()

    assert registration.state is RegistrationState.FAILED
    assert registration.last_status_code is None
    assert following.delay_seconds == 1


def test_unregistered_ends_the_binding():
    registration = trunk_registration()
    registration.record(outcome(200, granted=10), now=0)

    result, following = registration.record(outcome(200, granted=0), now=1)

    assert result is AttemptResult.UNREGISTERED
    assert following is None
    assert registration.state is RegistrationState.UNREGISTERED
    assert registration.seconds_until_expiry(now=1) == 0


# ----- specs ---------------------------------------------------------------------


def trunk(**overrides) -> SipTrunkCredential:
    data = {
        "id": "trunk-a",
        "provider": "byo-sip-trunk",
        "name": "Trunk A",
        "gateways": [
            {"ip": "127.0.0.1", "port": 5070, "outboundEnabled": False},
            {"ip": "127.0.0.1", "port": 5080},
        ],
        "outboundAuthenticationPlan": {
            "authUsername": "alice",
            "authPassword": "inline-password",
            "sipRegisterPlan": {},
        },
    }
    data.update(overrides)
    config = Config.model_validate({"credentials": [data]})
    return config.trunks()[0]


SETTINGS = RegistrationSettings(expiresSeconds=120)


def test_spec_registers_to_first_outbound_gateway():
    spec = registration_spec(trunk(), SETTINGS)

    assert spec.trunk_id == "trunk-a"
    assert spec.aor == "sip:alice@127.0.0.1"
    assert spec.registrar_uri == "sip:127.0.0.1:5080"
    assert spec.transport == "udp"
    assert spec.contact_user == "cozmox~trunk-a"
    assert spec.auth_username == "alice"
    assert spec.auth_password.get_secret_value() == "inline-password"
    assert spec.realm is None
    assert spec.expires_seconds == 120


def test_spec_uses_gateway_protocol():
    gateways = [{"ip": "127.0.0.1", "port": 5080, "outboundProtocol": "tcp"}]

    spec = registration_spec(trunk(gateways=gateways), SETTINGS)

    assert spec.registrar_uri == "sip:127.0.0.1:5080;transport=tcp"
    assert spec.transport == "tcp"


def test_spec_registers_to_domain():
    plan = {
        "authUsername": "alice",
        "authPassword": "inline-password",
        "sipRegisterPlan": {
            "domain": "localhost:5090",
            "username": "+14155550100",
            "realm": "lab.local",
        },
    }

    spec = registration_spec(trunk(outboundAuthenticationPlan=plan), SETTINGS)

    assert spec.aor == "sip:+14155550100@localhost"
    assert spec.registrar_uri == "sip:localhost:5090"
    assert spec.auth_username == "alice"
    assert spec.realm == "lab.local"


def test_spec_escapes_the_user():
    plan = {"authUsername": "a b@c", "sipRegisterPlan": {"domain": "localhost"}}

    spec = registration_spec(trunk(outboundAuthenticationPlan=plan), SETTINGS)

    assert spec.aor == "sip:a%20b%40c@localhost"
    assert spec.auth_password is None


def test_spec_hides_the_password():
    spec = registration_spec(trunk(), SETTINGS)

    assert "inline-password" not in repr(spec)
    assert "inline-password" not in str(spec)


def test_spec_changes_with_the_password():
    plan = {
        "authUsername": "alice",
        "authPassword": "another-password",
        "sipRegisterPlan": {},
    }

    before = registration_spec(trunk(), SETTINGS)
    same = registration_spec(trunk(), SETTINGS)
    after = registration_spec(trunk(outboundAuthenticationPlan=plan), SETTINGS)

    assert before == same
    assert before != after


def test_spec_rejects_trunk_without_plan():
    plain = trunk(outboundAuthenticationPlan=None)

    with pytest.raises(ValueError, match="no sipRegisterPlan"):
        registration_spec(plain, SETTINGS)


def test_spec_password_is_secret():
    spec = registration_spec(trunk(), SETTINGS)

    assert isinstance(spec.auth_password, SecretStr)


@pytest.mark.parametrize(
    ("gateways", "domain", "expected"),
    [
        ([{"ip": "127.0.0.1", "port": 5080}], None, True),
        ([{"ip": "127.0.0.1", "port": 5080, "inboundEnabled": False}], None, False),
        ([{"ip": "127.0.0.1", "netmask": 24}], "127.0.0.9:5080", True),
        ([{"ip": "127.0.0.1"}], "127.0.0.9", False),
        ([{"ip": "127.0.0.1"}], "localhost:5080", None),
    ],
)
def test_registrar_inbound_gateway_cases(gateways, domain, expected):
    plan = {"authUsername": "alice", "sipRegisterPlan": {"domain": domain}}
    registering = trunk(gateways=gateways, outboundAuthenticationPlan=plan)

    spec = registration_spec(registering, SETTINGS)

    assert registrar_is_inbound_gateway(registering, spec) is expected


# ----- responses -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("SIP/2.0 503 Busy\r\nRetry-After: 120\r\n\r\n", 120),
        ("SIP/2.0 503 Busy\r\nretry-after:7\r\n\r\n", 7),
        ("SIP/2.0 503 Busy\r\nRetry-After: 120 (maintenance);duration=60\r\n\r\n", 120),
        ("SIP/2.0 503 Busy\r\nRetry-After: soon\r\n\r\n", None),
        ("SIP/2.0 503 Busy\r\nServer: x\r\n\r\nRetry-After: 5\r\n", None),
        ("SIP/2.0 503 Busy\r\n\r\n", None),
        ("", None),
    ],
)
def test_parse_retry_after_cases(response, expected):
    assert parse_retry_after(response) == expected
