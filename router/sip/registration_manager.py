"""Keeps every registering trunk registered: the event-loop side.

`RegistrationManager` runs the policy of `router.sip.registration` for each
trunk with a sipRegisterPlan. It has the engine create, change, refresh and
delete the trunks' pjsua2 accounts, receives every finished REGISTER as
a `RegistrationReport`, and keeps the metrics and `/readyz` states.

The router refreshes each binding itself, at the time the policy derives
from the granted expiry. pjsua's own refresh timer, 5 s before the expiry,
stays as a backstop and never fires while the router's refresh succeeds.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from router.config import RegistrationSettings, SipTrunkCredential
from router.metrics import Metrics
from router.sip.registration import (
    AccountFailed,
    AttemptResult,
    NextAttempt,
    RegistrationReport,
    RegistrationState,
    RetryPolicy,
    TrunkRegistration,
    UnregisterResult,
)
from router.sip.registration_metrics import RegistrationMetrics, log_result
from router.sip.registration_spec import (
    RegistrationSpec,
    registrar_is_inbound_gateway,
    registration_spec,
)

log = structlog.get_logger(__name__)

# At shutdown, an un-REGISTER that meets a REGISTER in progress waits for
# that one's report and tries again, at most this often.
_UNREGISTER_TRIES = 3


class RegistrationEngine(Protocol):
    """The engine operations that the manager calls, as `SipEngine` has them."""

    async def add_trunk_account(self, spec: RegistrationSpec, serial: int) -> None:
        """Create the trunk's account, which registers at once."""
        ...

    async def modify_trunk_account(self, spec: RegistrationSpec, serial: int) -> None:
        """Change the trunk's account, which re-registers."""
        ...

    async def register_trunk(self, trunk_id: str) -> bool:
        """Send a REGISTER, or return False when one is in progress."""
        ...

    async def unregister_trunk(self, trunk_id: str) -> UnregisterResult:
        """Send an un-REGISTER."""
        ...

    async def remove_trunk_account(self, trunk_id: str) -> None:
        """Delete the trunk's account."""
        ...


@dataclass(frozen=True)
class ApplyResult:
    """The trunks that `RegistrationManager.apply()` added, removed or changed."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()


@dataclass
class _Trunk:
    spec: RegistrationSpec
    registration: TrunkRegistration
    log: structlog.typing.FilteringBoundLogger
    serial: int = 0
    has_account: bool = False
    in_flight: bool = False
    published_state: RegistrationState | None = None
    timer: asyncio.TimerHandle | None = None
    expiry_timer: asyncio.TimerHandle | None = None
    waiters: list[asyncio.Future[None]] = field(default_factory=list)

    def cancel_timers(self) -> None:
        for handle in (self.timer, self.expiry_timer):
            if handle is not None:
                handle.cancel()
        self.timer = self.expiry_timer = None


class RegistrationManager:
    """Registers the trunks with a sipRegisterPlan and keeps them registered.

    Runs on the event loop. Wire `on_report` to the engine's
    `on_registration` before the first `apply()`.
    """

    def __init__(
        self,
        engine: RegistrationEngine,
        metrics: Metrics,
        settings: RegistrationSettings,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._engine = engine
        self._metrics = RegistrationMetrics(metrics)
        self._settings = settings
        self._policy = RetryPolicy.from_settings(settings)
        self._clock = clock
        self._jitter = jitter
        self._trunks: dict[str, _Trunk] = {}
        self._serials = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()
        self._stopping = False

    def states(self) -> dict[str, str]:
        """Return each trunk's registration state, as `/readyz` shows it."""
        return {
            trunk_id: trunk.registration.state.value
            for trunk_id, trunk in self._trunks.items()
        }

    # ----- configuration -------------------------------------------------------

    async def apply(
        self,
        trunks: Iterable[SipTrunkCredential],
        settings: RegistrationSettings | None = None,
    ) -> ApplyResult:
        """Register the trunks with a sipRegisterPlan among `trunks`.

        Trunks that are new start registering, trunks that are gone are
        unregistered and their accounts deleted, and trunks whose
        registration settings changed re-register. Trunks whose settings
        are the same keep their registration untouched. `settings`, when
        given, replaces `router.registration`: a new `expiresSeconds`
        changes every trunk, new retry delays apply from the next failure.
        Returns once each account operation has been handed to pjsua,
        without waiting for the registrars.
        """
        async with self._lock:
            if self._stopping:
                log.warning("registration.apply_after_stop")
                return ApplyResult()
            if settings is not None:
                self._use_settings(settings)
            registering = [t for t in trunks if t.sip_register_plan is not None]
            wanted = {t.id: registration_spec(t, self._settings) for t in registering}
            for trunk in registering:
                _warn_if_registrar_not_inbound(trunk, wanted[trunk.id])
            removed = tuple(t for t in self._trunks if t not in wanted)
            for trunk_id in removed:
                await self._remove(trunk_id)

            added, changed, unchanged = [], [], []
            for trunk_id, spec in wanted.items():
                current = self._trunks.get(trunk_id)
                if current is None:
                    added.append(trunk_id)
                    await self._add(spec)
                elif current.spec != spec:
                    changed.append(trunk_id)
                    await self._change(current, spec)
                else:
                    unchanged.append(trunk_id)
            return ApplyResult(tuple(added), removed, tuple(changed), tuple(unchanged))

    def _use_settings(self, settings: RegistrationSettings) -> None:
        self._settings = settings
        self._policy = RetryPolicy.from_settings(settings)
        for trunk in self._trunks.values():
            trunk.registration.policy = self._policy

    async def _add(self, spec: RegistrationSpec) -> None:
        trunk = _Trunk(
            spec=spec,
            registration=TrunkRegistration(spec.trunk_id, self._policy, self._jitter),
            log=log.bind(trunk=spec.trunk_id),
        )
        self._trunks[spec.trunk_id] = trunk
        self._metrics.track(
            spec.trunk_id,
            lambda: trunk.registration.seconds_until_expiry(self._clock()),
        )
        trunk.log.info(
            "registration.added",
            aor=spec.aor,
            registrar=spec.registrar_uri,
            transport=spec.transport,
            expires_seconds=spec.expires_seconds,
        )
        self._publish(trunk)
        await self._create_account(trunk)

    async def _change(self, trunk: _Trunk, spec: RegistrationSpec) -> None:
        trunk.cancel_timers()
        trunk.spec = spec
        trunk.registration = TrunkRegistration(
            spec.trunk_id, self._policy, self._jitter
        )
        trunk.log.info(
            "registration.changed",
            aor=spec.aor,
            registrar=spec.registrar_uri,
            transport=spec.transport,
            expires_seconds=spec.expires_seconds,
        )
        self._publish(trunk)
        if not trunk.has_account:
            await self._create_account(trunk)
            return
        trunk.serial = next(self._serials)
        trunk.in_flight = True
        try:
            await self._engine.modify_trunk_account(spec, trunk.serial)
        except AccountFailed as error:
            self._local_error(trunk, error)

    async def _remove(self, trunk_id: str) -> None:
        trunk = self._trunks.pop(trunk_id)
        trunk.cancel_timers()
        self._release_waiters(trunk)
        if trunk.has_account:
            try:
                await self._engine.remove_trunk_account(trunk_id)
            except AccountFailed as error:
                trunk.log.error("registration.remove_failed", error=str(error))
        self._metrics.forget(trunk_id)
        trunk.log.info("registration.removed")

    # ----- attempts ------------------------------------------------------------

    async def _create_account(self, trunk: _Trunk) -> None:
        trunk.serial = next(self._serials)
        trunk.in_flight = True
        try:
            await self._engine.add_trunk_account(trunk.spec, trunk.serial)
        except AccountFailed as error:
            self._local_error(trunk, error)
            return
        trunk.has_account = True

    async def _attempt(self, trunk_id: str) -> None:
        trunk = self._trunks.get(trunk_id)
        if trunk is None or self._stopping:
            return
        if not trunk.has_account:
            await self._create_account(trunk)
            return
        trunk.registration.start_attempt()
        self._publish(trunk)
        try:
            sent = await self._engine.register_trunk(trunk_id)
        except AccountFailed as error:
            self._local_error(trunk, error)
            return
        if not sent:
            # pjsua's own refresh went out first, and its report comes next.
            trunk.log.debug("registration.already_in_progress")
        trunk.in_flight = True

    def _local_error(self, trunk: _Trunk, error: AccountFailed) -> None:
        trunk.in_flight = False
        following = trunk.registration.record_local_error()
        self._metrics.count_attempt(trunk.spec.trunk_id, AttemptResult.LOCAL_ERROR)
        trunk.log.error(
            "registration.attempt_failed",
            result=AttemptResult.LOCAL_ERROR.value,
            error=str(error),
            consecutive_failures=trunk.registration.consecutive_failures,
            retry_in_seconds=round(following.delay_seconds, 3),
        )
        self._publish(trunk, following)
        self._release_waiters(trunk)
        self._schedule(trunk, following)

    # ----- reports -------------------------------------------------------------

    def on_report(self, report: RegistrationReport) -> None:
        """Apply a finished REGISTER transaction. Runs on the event loop."""
        trunk = self._trunks.get(report.trunk_id)
        if trunk is None or report.serial != trunk.serial:
            return  # from an account that has since been changed or removed
        trunk.in_flight = False
        result, following = trunk.registration.record(report.outcome, self._clock())
        self._metrics.count_attempt(report.trunk_id, result)
        log_result(trunk.log, trunk.registration, result, report.outcome, following)
        self._publish(trunk, following)
        self._schedule_expiry(trunk)
        self._release_waiters(trunk)
        if following is not None and not self._stopping:
            self._schedule(trunk, following)

    def _schedule(self, trunk: _Trunk, following: NextAttempt) -> None:
        if trunk.timer is not None:
            trunk.timer.cancel()
        loop = asyncio.get_running_loop()
        trunk.timer = loop.call_later(
            following.delay_seconds, self._start_attempt, trunk.spec.trunk_id
        )

    def _start_attempt(self, trunk_id: str) -> None:
        task = asyncio.create_task(self._attempt(trunk_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _schedule_expiry(self, trunk: _Trunk) -> None:
        if trunk.expiry_timer is not None:
            trunk.expiry_timer.cancel()
            trunk.expiry_timer = None
        expires_at = trunk.registration.expires_at
        if expires_at is None:
            return
        delay = max(0.0, expires_at - self._clock())
        trunk.expiry_timer = asyncio.get_running_loop().call_later(
            delay, self._expire, trunk.spec.trunk_id
        )

    def _expire(self, trunk_id: str) -> None:
        trunk = self._trunks.get(trunk_id)
        if trunk is None:
            return
        trunk.expiry_timer = None
        was_registered = trunk.registration.state is RegistrationState.REGISTERED
        if trunk.registration.expire(self._clock()) and was_registered:
            # The refresh has not succeeded in time: the registrar has
            # dropped the binding, though pjsua may still be retrying.
            trunk.log.warning("registration.expired")
            self._publish(trunk)

    def _publish(self, trunk: _Trunk, following: NextAttempt | None = None) -> None:
        """Set the trunk's metrics, and log its state once when it changes."""
        registration = trunk.registration
        self._metrics.publish(trunk.spec.trunk_id, registration, following)
        if registration.state is not trunk.published_state:
            trunk.log.info(
                "registration.state_changed",
                state=registration.state.value,
                previous=trunk.published_state.value if trunk.published_state else None,
                status=registration.last_status_code,
            )
            trunk.published_state = registration.state

    # ----- shutdown ------------------------------------------------------------

    async def stop(self, timeout_seconds: float) -> None:
        """Unregister every trunk (Expires 0), waiting at most `timeout_seconds`.

        No attempt starts after this. A trunk whose un-REGISTER gets no
        response in time keeps its binding until the registrar expires it.
        """
        async with self._lock:
            self._stopping = True
            trunks = list(self._trunks.values())
            for trunk in trunks:
                trunk.cancel_timers()
            tasks = [asyncio.create_task(self._unregister(t)) for t in trunks]
            if not tasks:
                return
            done, pending = await asyncio.wait(tasks, timeout=timeout_seconds)
            for task in pending:
                task.cancel()
            if pending:
                log.warning(
                    "registration.unregister_timed_out",
                    timeout_seconds=timeout_seconds,
                    pending=len(pending),
                )
            for task in done:
                if task.exception() is not None:
                    log.error(
                        "registration.unregister_failed", error=str(task.exception())
                    )

    async def _unregister(self, trunk: _Trunk) -> None:
        if not trunk.has_account:
            return
        trunk_id = trunk.spec.trunk_id
        for _ in range(_UNREGISTER_TRIES):
            if trunk.in_flight:
                await self._next_report(trunk)
                continue
            try:
                result = await self._engine.unregister_trunk(trunk_id)
            except AccountFailed as error:
                trunk.log.error("registration.unregister_failed", error=str(error))
                return
            if result is UnregisterResult.NOT_REGISTERED:
                return
            trunk.in_flight = True
            await self._next_report(trunk)
            if result is UnregisterResult.SENT:
                return

    async def _next_report(self, trunk: _Trunk) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        trunk.waiters.append(waiter)
        await waiter

    def _release_waiters(self, trunk: _Trunk) -> None:
        waiters, trunk.waiters = trunk.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


def _warn_if_registrar_not_inbound(
    trunk: SipTrunkCredential, spec: RegistrationSpec
) -> None:
    if registrar_is_inbound_gateway(trunk, spec) is False:
        log.warning(
            "registration.registrar_not_inbound_gateway",
            trunk=trunk.id,
            registrar=spec.registrar_uri,
            detail="INVITEs from the registrar's address get 403 unless it is "
            "in an inbound gateway of the trunk",
        )
