"""The registration manager against a fake engine: apply, reports, stop."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from router.config import Config, RegistrationSettings
from router.metrics import Metrics
from router.sip.registration import (
    AttemptOutcome,
    NoAccountSlot,
    RegistrationReport,
    UnregisterResult,
)
from router.sip.registration_manager import RegistrationManager
from router.sip.registration_spec import RegistrationSpec

# Short delays so that every timer of these tests fires within a second.
SETTINGS = RegistrationSettings(
    expiresSeconds=60, retryMinSeconds=0.05, retryMaxSeconds=0.2
)
PREFIX = "cozmox_router_"


class FakeEngine:
    """Records every operation; reports are fed by the test."""

    def __init__(self) -> None:
        self.operations: list[tuple[str, str]] = []
        self.serials: dict[str, int] = {}
        self.specs: dict[str, RegistrationSpec] = {}
        self.failing_adds: set[str] = set()
        self.register_results: list[bool] = []
        self.unregister_results: list[UnregisterResult] = []

    def count(self, operation: str, trunk_id: str) -> int:
        return self.operations.count((operation, trunk_id))

    async def add_trunk_account(self, spec: RegistrationSpec, serial: int) -> None:
        self.operations.append(("add", spec.trunk_id))
        if spec.trunk_id in self.failing_adds:
            raise NoAccountSlot("all 8 SIP accounts are in use")
        self.serials[spec.trunk_id] = serial
        self.specs[spec.trunk_id] = spec

    async def modify_trunk_account(self, spec: RegistrationSpec, serial: int) -> None:
        self.operations.append(("modify", spec.trunk_id))
        self.serials[spec.trunk_id] = serial
        self.specs[spec.trunk_id] = spec

    async def register_trunk(self, trunk_id: str) -> bool:
        self.operations.append(("register", trunk_id))
        return self.register_results.pop(0) if self.register_results else True

    async def unregister_trunk(self, trunk_id: str) -> UnregisterResult:
        self.operations.append(("unregister", trunk_id))
        if self.unregister_results:
            return self.unregister_results.pop(0)
        return UnregisterResult.SENT

    async def remove_trunk_account(self, trunk_id: str) -> None:
        self.operations.append(("remove", trunk_id))


def trunk_data(trunk_id: str, password: str = "inline-password") -> dict:
    return {
        "provider": "byo-sip-trunk",
        "id": trunk_id,
        "name": trunk_id,
        "gateways": [{"ip": "127.0.0.1", "port": 5080}],
        "outboundAuthenticationPlan": {
            "authUsername": "alice",
            "authPassword": password,
            "sipRegisterPlan": {},
        },
    }


def trunks(*data: dict):
    plain = {
        "provider": "byo-sip-trunk",
        "id": "plain",
        "name": "plain",
        "gateways": [{"ip": "127.0.0.1"}],
    }
    return Config.model_validate({"credentials": [*data, plain]}).trunks()


class Harness:
    def __init__(self) -> None:
        self.engine = FakeEngine()
        self.registry = CollectorRegistry()
        self.manager = RegistrationManager(
            self.engine, Metrics(self.registry), SETTINGS, jitter=lambda: 0.0
        )

    def report(self, trunk_id: str, status: int, granted: int = 0, **fields) -> None:
        outcome = AttemptOutcome(
            status_code=status,
            reason="reason",
            granted_seconds=granted,
            response_received=fields.get("received", True),
            retry_after_seconds=fields.get("retry_after"),
        )
        serial = fields.get("serial", self.engine.serials[trunk_id])
        self.manager.on_report(RegistrationReport(trunk_id, serial, outcome))

    def metric(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(PREFIX + name, labels)


async def wait_until(condition, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


@pytest.fixture
def harness() -> Harness:
    return Harness()


async def test_apply_adds_registering_trunks(harness):
    result = await harness.manager.apply(trunks(trunk_data("reg-a")))

    assert result.added == ("reg-a",)
    assert harness.engine.operations == [("add", "reg-a")]
    assert harness.manager.states() == {"reg-a": "registering"}
    assert harness.metric("registration_state", trunk="reg-a") == 0
    assert harness.metric("registration_retry_delay_seconds", trunk="reg-a") == 0
    spec = harness.engine.specs["reg-a"]
    assert spec.contact_user == "cozmox~reg-a"
    assert spec.expires_seconds == 60


async def test_success_registers_and_refreshes(harness):
    await harness.manager.apply(trunks(trunk_data("reg-a")))

    harness.report("reg-a", 200, granted=1)

    assert harness.manager.states() == {"reg-a": "registered"}
    assert harness.metric("registration_state", trunk="reg-a") == 1
    assert harness.metric("registration_last_status_code", trunk="reg-a") == 200
    expires = harness.metric("registration_expires_seconds", trunk="reg-a")
    assert 0 < expires <= 1
    attempts = harness.metric(
        "registration_attempts_total", trunk="reg-a", result="registered"
    )
    assert attempts == 1
    # Refreshed at half the granted second.
    await wait_until(lambda: harness.engine.count("register", "reg-a") == 1)


async def test_failures_back_off_in_metrics(harness):
    await harness.manager.apply(trunks(trunk_data("reg-a")))

    harness.report("reg-a", 408, received=False)

    assert harness.manager.states() == {"reg-a": "failed"}
    assert harness.metric("registration_consecutive_failures", trunk="reg-a") == 1
    assert harness.metric("registration_retry_delay_seconds", trunk="reg-a") == 0.05
    assert harness.metric("registration_last_status_code", trunk="reg-a") == 408
    timeouts = harness.metric(
        "registration_attempts_total", trunk="reg-a", result="timeout"
    )
    assert timeouts == 1
    await wait_until(lambda: harness.engine.count("register", "reg-a") == 1)
    assert harness.manager.states() == {"reg-a": "registering"}

    harness.report("reg-a", 503)

    assert harness.metric("registration_consecutive_failures", trunk="reg-a") == 2
    assert harness.metric("registration_retry_delay_seconds", trunk="reg-a") == 0.1
    await wait_until(lambda: harness.engine.count("register", "reg-a") == 2)

    harness.report("reg-a", 200, granted=60)

    assert harness.manager.states() == {"reg-a": "registered"}
    assert harness.metric("registration_consecutive_failures", trunk="reg-a") == 0
    assert harness.metric("registration_retry_delay_seconds", trunk="reg-a") == 0


async def test_stale_report_is_ignored(harness):
    await harness.manager.apply(trunks(trunk_data("reg-a")))
    serial = harness.engine.serials["reg-a"]

    harness.report("reg-a", 200, granted=60, serial=serial + 100)

    assert harness.manager.states() == {"reg-a": "registering"}


async def test_report_for_unknown_trunk_is_ignored(harness):
    await harness.manager.apply(trunks(trunk_data("reg-a")))

    harness.manager.on_report(
        RegistrationReport("other", 1, AttemptOutcome(200, "OK", 60, True))
    )

    assert harness.manager.states() == {"reg-a": "registering"}


async def test_apply_leaves_unchanged_trunks_alone(harness):
    await harness.manager.apply(trunks(trunk_data("reg-a")))
    harness.report("reg-a", 200, granted=60)
    operations = list(harness.engine.operations)

    result = await harness.manager.apply(trunks(trunk_data("reg-a")))

    assert result.unchanged == ("reg-a",)
    assert result.added == ()
    assert result.changed == ()
    assert result.removed == ()
    assert harness.engine.operations == operations
    assert harness.manager.states() == {"reg-a": "registered"}


async def test_apply_reregisters_changed_trunk(harness):
    await harness.manager.apply(trunks(trunk_data("reg-a"), trunk_data("reg-b")))
    harness.report("reg-a", 200, granted=60)
    harness.report("reg-b", 200, granted=60)
    old_serial = harness.engine.serials["reg-a"]

    result = await harness.manager.apply(
        trunks(trunk_data("reg-a", password="new-password"), trunk_data("reg-b"))
    )

    assert result.changed == ("reg-a",)
    assert result.unchanged == ("reg-b",)
    assert harness.engine.count("modify", "reg-a") == 1
    assert harness.engine.count("modify", "reg-b") == 0
    assert harness.manager.states() == {"reg-a": "registering", "reg-b": "registered"}
    new_password = harness.engine.specs["reg-a"].auth_password
    assert new_password.get_secret_value() == "new-password"
    harness.report("reg-a", 500, serial=old_serial)
    assert harness.manager.states()["reg-a"] == "registering"


async def test_apply_removes_gone_trunk(harness):
    await harness.manager.apply(trunks(trunk_data("reg-a"), trunk_data("reg-b")))
    harness.report("reg-a", 200, granted=60)

    result = await harness.manager.apply(trunks(trunk_data("reg-b")))

    assert result.removed == ("reg-a",)
    assert harness.engine.count("remove", "reg-a") == 1
    assert harness.manager.states() == {"reg-b": "registering"}
    assert harness.metric("registration_state", trunk="reg-a") is None
    attempts = harness.metric(
        "registration_attempts_total", trunk="reg-a", result="registered"
    )
    assert attempts is None


async def test_apply_new_expiry_changes_every_trunk(harness):
    await harness.manager.apply(trunks(trunk_data("reg-a"), trunk_data("reg-b")))
    settings = RegistrationSettings(
        expiresSeconds=120, retryMinSeconds=0.05, retryMaxSeconds=0.2
    )

    result = await harness.manager.apply(
        trunks(trunk_data("reg-a"), trunk_data("reg-b")), settings
    )

    assert result.changed == ("reg-a", "reg-b")
    assert harness.engine.specs["reg-a"].expires_seconds == 120


async def test_apply_new_retry_delays_reregister_nothing(harness):
    await harness.manager.apply(trunks(trunk_data("reg-a")))
    settings = RegistrationSettings(
        expiresSeconds=60, retryMinSeconds=0.02, retryMaxSeconds=0.2
    )

    result = await harness.manager.apply(trunks(trunk_data("reg-a")), settings)
    harness.report("reg-a", 503)

    assert result.unchanged == ("reg-a",)
    assert harness.metric("registration_retry_delay_seconds", trunk="reg-a") == 0.02


async def test_account_failure_retries_creation(harness):
    harness.engine.failing_adds.add("reg-a")

    await harness.manager.apply(trunks(trunk_data("reg-a")))

    assert harness.manager.states() == {"reg-a": "failed"}
    local = harness.metric(
        "registration_attempts_total", trunk="reg-a", result="local-error"
    )
    assert local == 1
    assert harness.metric("registration_last_status_code", trunk="reg-a") == 0
    harness.engine.failing_adds.clear()
    await wait_until(lambda: harness.engine.count("add", "reg-a") == 2)
    harness.report("reg-a", 200, granted=60)
    assert harness.manager.states() == {"reg-a": "registered"}


async def test_challenge_after_registration_retried_at_once(harness):
    await harness.manager.apply(trunks(trunk_data("reg-a")))
    harness.report("reg-a", 200, granted=60)

    harness.report("reg-a", 401)

    await wait_until(lambda: harness.engine.count("register", "reg-a") == 1)
    assert harness.metric("registration_consecutive_failures", trunk="reg-a") == 0


async def test_binding_expires_without_refresh(harness):
    await harness.manager.apply(trunks(trunk_data("reg-a")))

    harness.report("reg-a", 200, granted=1)

    await wait_until(lambda: harness.manager.states()["reg-a"] == "failed")
    assert harness.metric("registration_state", trunk="reg-a") == 0
    assert harness.metric("registration_expires_seconds", trunk="reg-a") == 0


async def test_stop_unregisters_and_waits(harness):
    await harness.manager.apply(trunks(trunk_data("reg-a")))
    harness.report("reg-a", 200, granted=60)

    stopping = asyncio.create_task(harness.manager.stop(timeout_seconds=2))
    await wait_until(lambda: harness.engine.count("unregister", "reg-a") == 1)
    assert not stopping.done()
    harness.report("reg-a", 200, granted=0)
    await stopping

    assert harness.manager.states() == {"reg-a": "unregistered"}
    assert harness.metric("registration_state", trunk="reg-a") == 0


async def test_stop_waits_for_attempt_in_progress(harness):
    await harness.manager.apply(trunks(trunk_data("reg-a")))

    stopping = asyncio.create_task(harness.manager.stop(timeout_seconds=2))
    await asyncio.sleep(0.05)
    assert harness.engine.count("unregister", "reg-a") == 0
    harness.report("reg-a", 200, granted=60)
    await wait_until(lambda: harness.engine.count("unregister", "reg-a") == 1)
    harness.report("reg-a", 200, granted=0)
    await stopping

    assert harness.manager.states() == {"reg-a": "unregistered"}


async def test_stop_retries_unregister_after_busy(harness):
    await harness.manager.apply(trunks(trunk_data("reg-a")))
    harness.report("reg-a", 200, granted=60)
    harness.engine.unregister_results = [UnregisterResult.BUSY]

    stopping = asyncio.create_task(harness.manager.stop(timeout_seconds=2))
    await wait_until(lambda: harness.engine.count("unregister", "reg-a") == 1)
    harness.report("reg-a", 200, granted=60)
    await wait_until(lambda: harness.engine.count("unregister", "reg-a") == 2)
    harness.report("reg-a", 200, granted=0)
    await stopping

    assert harness.manager.states() == {"reg-a": "unregistered"}


async def test_stop_gives_up_after_timeout(harness):
    await harness.manager.apply(trunks(trunk_data("reg-a")))
    harness.report("reg-a", 200, granted=60)

    async with asyncio.timeout(1):
        await harness.manager.stop(timeout_seconds=0.1)

    assert harness.engine.count("unregister", "reg-a") == 1


async def test_stop_skips_unregistered_trunk(harness):
    await harness.manager.apply(trunks(trunk_data("reg-a")))
    harness.report("reg-a", 403)
    harness.engine.unregister_results = [UnregisterResult.NOT_REGISTERED]

    async with asyncio.timeout(1):
        await harness.manager.stop(timeout_seconds=2)

    assert harness.manager.states() == {"reg-a": "failed"}


async def test_no_attempt_after_stop(harness):
    await harness.manager.apply(trunks(trunk_data("reg-a")))
    harness.report("reg-a", 503)
    harness.engine.unregister_results = [UnregisterResult.NOT_REGISTERED]

    await harness.manager.stop(timeout_seconds=1)
    await asyncio.sleep(0.1)

    assert harness.engine.count("register", "reg-a") == 0


async def test_apply_after_stop_does_nothing(harness):
    await harness.manager.stop(timeout_seconds=1)

    result = await harness.manager.apply(trunks(trunk_data("reg-a")))

    assert result.added == ()
    assert harness.engine.operations == []
