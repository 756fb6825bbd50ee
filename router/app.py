"""The daemon's lifecycle in one place: start-up, serving, drain, shutdown."""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from router.calls.path import CallPath, Routing
from router.calls.record import CallRecord
from router.calls.reports import CallReports
from router.config import Config, ConfigError, check_limits
from router.http.server import build_http_app
from router.logs import without_secrets
from router.metrics import Metrics
from router.reload import (
    ReloadListener,
    ReloadResult,
    keep_restart_only_settings,
    load_checked,
)
from router.routing.table import RoutingTable
from router.sip.engine import (
    EngineSettings,
    ListenAddress,
    SipEngine,
    SipStartError,
)
from router.sip.limits import SipLimits, probe_limits
from router.sip.options import GatewayMonitor
from router.sip.registration_manager import RegistrationManager
from router.sip.udp_buffer import UdpDropCollector
from router.speech import Speech
from router.webhooks.assistant_request import AssistantRequestClient
from router.webhooks.delivery import WebhookDelivery

log = structlog.get_logger("router.app")

# Ended calls stay readable on the admin API for a while, so a runtime or
# an operator can still look a call up just after it ended.
RECENT_CALLS_KEPT = 1000
# After the drain time, how long the calls that the router ended may take
# to send their final response or their BYE before the SIP stack stops.
SHUTDOWN_GRACE_SECONDS = 3.0

# Seconds that shutdown waits for the call paths of the calls that stopping
# the engine hung up. Their last step is a few callbacks on the event loop.
CALLS_END_AFTER_HANGUP_SECONDS = 1.0

# At shutdown the un-REGISTERs get this long to be answered.
UNREGISTER_TIMEOUT_SECONDS = 3.0


def requested_max_calls(config: Config) -> int:
    """Return the call slots to ask pjsua for: two per call, plus a spare.

    A bridged call uses two slots. pjsua clamps the request to the build's
    `PJSUA_MAX_CALLS` without saying so, so the probe asks for the same.
    """
    return 2 * config.router.max_concurrent_calls + 1


class Router:
    """The running daemon: SIP engine, call path and HTTP server.

    Other parts hook into the lifecycle through two lists. Each of
    `reload_listeners` is called with the old and the new config after a
    reload was applied, so registrations can follow the new trunks. Each of
    `stop_listeners` is awaited once the calls have drained and before the
    SIP stack stops, so registrations can be removed.
    """

    def __init__(
        self,
        config: Config,
        limits: SipLimits,
        config_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.config_path = config_path
        self.limits = limits
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self._routing = Routing(config, RoutingTable.from_config(config))
        self.metrics.max_concurrent_calls.set(config.router.max_concurrent_calls)
        self.reload_listeners: list[ReloadListener] = []
        self.stop_listeners: list[Callable[[], Awaitable[None]]] = []
        self._reload_lock = asyncio.Lock()
        self._recent: OrderedDict[str, CallRecord] = OrderedDict()
        self._stopping = asyncio.Event()
        self._drain_cut_short = asyncio.Event()
        self._stopped = False
        self._tasks: set[asyncio.Task] = set()
        self._ready = False
        self.engine: SipEngine | None = None
        self.calls: CallPath | None = None
        # A config reload passes the new trunks to `registrations.apply()`
        # and `gateways.apply()`.
        self.registrations: RegistrationManager | None = None
        self.gateways: GatewayMonitor | None = None
        self._session: aiohttp.ClientSession | None = None
        self._webhooks: WebhookDelivery | None = None
        self._http: web.AppRunner | None = None

    @property
    def config(self) -> Config:
        """The configuration in force for new calls."""
        return self._routing.config

    # ----- HttpState ------------------------------------------------------------------

    def is_ready(self) -> bool:
        """Return whether the config is loaded and every transport is bound."""
        return self._ready and not self._stopping.is_set()

    def readiness(self) -> dict[str, Any]:
        """Return the SIP limits, call slots and registration states."""
        used = self.engine.slots_used if self.engine else 0
        return {
            "ready": self.is_ready(),
            "draining": self._stopping.is_set(),
            "sip": {
                "limits": self.limits.as_json(),
                "limitsProbed": self.limits.probed,
                "slots": {"used": used, "max": self.limits.max_calls},
            },
            "registrations": self.registrations.states() if self.registrations else {},
            "gateways": self.gateways.states() if self.gateways else {},
        }

    def admin_token(self) -> str | None:
        """Return the admin API's bearer token, or None when unset."""
        token = self.config.router.http.admin_token
        return token.get_secret_value() if token else None

    def call_record(self, call_id: str) -> dict[str, Any] | None:
        """Return a call's record, in progress or recently ended."""
        call = self.calls.calls.get(call_id) if self.calls else None
        call = call or self._recent.get(call_id)
        return call.as_json() if call else None

    def call_records(self) -> list[dict[str, Any]]:
        """Return the records of every call in progress."""
        return (
            [call.as_json() for call in self.calls.calls.values()] if self.calls else []
        )

    def phone_numbers(self) -> list[dict[str, Any]]:
        """Return every phone number of the config in force, without secrets."""
        return [without_secrets(number) for number in self.config.phone_numbers]

    def phone_number(self, number_id: str) -> dict[str, Any] | None:
        """Return one phone number without secrets, or None when unknown."""
        number = self.config.phone_number(number_id)
        return without_secrets(number) if number else None

    def credentials(self) -> list[dict[str, Any]]:
        """Return every credential without its passwords, tokens and keys."""
        return [without_secrets(credential) for credential in self.config.credentials]

    def credential(self, credential_id: str) -> dict[str, Any] | None:
        """Return one credential without secrets, or None when unknown."""
        for credential in self.config.credentials:
            if credential.id == credential_id:
                return without_secrets(credential)
        return None

    async def reload_config(self) -> dict[str, Any]:
        """Reload the config file and return the result for the admin API."""
        result = await self.reload()
        return result.as_json()

    # ----- reload ---------------------------------------------------------------------

    async def reload(self) -> ReloadResult:
        """Read the config file again and use it for new calls.

        Calls in progress keep the config they started with. An invalid
        file is rejected with every error logged, and the old config stays.
        """
        async with self._reload_lock:
            if self.config_path is None:
                return self._reject_reload(["the router was started without a file"])
            try:
                new = await asyncio.to_thread(
                    load_checked, self.config_path, self.limits.max_accounts
                )
            except ConfigError as error:
                return self._reject_reload(error.errors)
            return await self._apply_reload(new)

    def _reject_reload(self, errors: list[str]) -> ReloadResult:
        self.metrics.count_reload(applied=False)
        log.error(
            "config.reload_rejected",
            path=str(self.config_path),
            error_count=len(errors),
            errors=errors,
        )
        return ReloadResult(applied=False, errors=errors)

    async def _apply_reload(self, new: Config) -> ReloadResult:
        old = self.config
        new, restart_required = keep_restart_only_settings(old, new)
        self._routing = Routing(new, RoutingTable.from_config(new))
        self.metrics.count_reload(applied=True)
        self.metrics.max_concurrent_calls.set(new.router.max_concurrent_calls)
        if restart_required:
            log.warning("config.restart_required", settings=restart_required)
        log.info(
            "config.reloaded",
            path=str(self.config_path),
            phone_numbers=len(new.phone_numbers),
            credentials=len(new.credentials),
        )
        for listener in list(self.reload_listeners):
            await _call_listener(listener, old, new)
        return ReloadResult(applied=True, restart_required=restart_required)

    # ----- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Bind SIP and HTTP, then mark the router ready."""
        loop = asyncio.get_running_loop()
        self.metrics.set_sip_limits(self.limits.as_json())
        self.engine = SipEngine(_engine_settings(self.config), self.limits, loop)
        self._session = aiohttp.ClientSession()
        assistant_requests = AssistantRequestClient(
            self._session, lambda: self._routing.config, self.metrics
        )
        self._webhooks = WebhookDelivery(
            self._session,
            lambda: self._routing.config,
            self.metrics,
            self.config.router.webhook_delivery,
        )
        reports = CallReports(
            self._webhooks, lambda: self._routing.config, self.metrics
        )
        speech = await loop.run_in_executor(
            None, Speech.start, self.config.router.speech
        )
        self.calls = CallPath(
            self.engine,
            lambda: self._routing,
            assistant_requests,
            self.metrics,
            speech,
            reports,
        )
        self.calls.on_ended = self._remember
        self.engine.on_invite = self.calls.on_invite
        self.engine.classifier = self.calls.classify
        # Read at each scrape: legs end on the owner thread, after their call
        # path may already have finished.
        engine = self.engine
        self.metrics.sip_call_slots.labels(state="used").set_function(
            lambda: engine.slots_used
        )
        self.engine.on_unreadable_invite = self._count_unreadable
        self.engine.on_rejected_by_stack = self._count_stack_rejection
        self.engine.on_dropped_by_stack = self._count_stack_drop
        self.registrations = RegistrationManager(
            self.engine, self.metrics, self.config.router.registration
        )
        self.engine.on_registration = self.registrations.on_report
        try:
            await loop.run_in_executor(None, self.engine.start)
        except SipStartError as error:
            raise StartupError(str(error)) from None
        self._watch_udp_receive_buffer()
        await self._start_http()
        self.metrics.set_call_slots(0, self.limits.max_calls)
        await self.registrations.apply(self.config.trunks())
        self.gateways = GatewayMonitor(
            self.metrics, _ping_hosts(self.config), self.config.router.sip.public_host
        )
        self.gateways.apply(self.config.trunks())
        self.reload_listeners.append(self._apply_trunk_changes)
        self._ready = True
        log.info(
            "router.started",
            sip=[f"{a.transport}:{a.host}:{a.port}" for a in self.engine.bound],
            http=f"{self.config.router.http.host}:{self.config.router.http.port}",
            limits=self.limits.as_json(),
        )

    def _watch_udp_receive_buffer(self) -> None:
        """Log the UDP SIP socket's receive buffer and export its drop count."""
        buffer = self.engine.udp_receive_buffer
        if buffer is None:
            return
        self.registry.register(UdpDropCollector(buffer.inode))
        if buffer.capped:
            log.warning(
                "sip.udp_receive_buffer_capped",
                requested_bytes=buffer.requested,
                granted_bytes=buffer.granted,
                hint="raise net.core.rmem_max so that INVITE bursts are not dropped",
            )
        else:
            log.info("sip.udp_receive_buffer", granted_bytes=buffer.granted)

    async def _start_http(self) -> None:
        settings = self.config.router.http
        self._http = web.AppRunner(build_http_app(self), access_log=None)
        await self._http.setup()
        site = web.TCPSite(self._http, settings.host, settings.port)
        try:
            await site.start()
        except OSError as error:
            raise StartupError(
                f"cannot listen for HTTP on {settings.host}:{settings.port}: "
                f"{error.strerror}; check that no other process uses that port "
                "(router.http)"
            ) from None

    async def serve(self) -> None:
        """Serve until SIGTERM or SIGINT, then drain and stop; reload on SIGHUP."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_stop_signal, signum)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)
        await self._stopping.wait()
        await self.stop()

    def _on_stop_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self._stopping.is_set():
            # A second signal ends the drain at once, as operators expect
            # from a second Ctrl-C.
            log.warning("router.drain_cut_short", signal=name)
            self._drain_cut_short.set()
            return
        log.info("router.stop_requested", signal=name)
        self._stopping.set()

    def _on_reload_signal(self) -> None:
        log.info("config.reload_requested", signal="SIGHUP")
        task = asyncio.create_task(self.reload())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        """Refuse new calls, let calls in progress end, then shut down.

        Calls still up after `drainSeconds` are ended: 503 with
        Retry-After before an answer, BYE after one.
        """
        self._stopping.set()
        if self._stopped:
            return
        self._stopped = True
        await self._drain()
        for listener in list(self.stop_listeners):
            await _call_listener(listener)
        if self.registrations is not None:
            await self.registrations.stop(UNREGISTER_TIMEOUT_SECONDS)
        if self.gateways is not None:
            await self.gateways.stop()
        if self.engine is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.engine.stop)
        await self._flush_webhooks()
        if self._http is not None:
            await self._http.cleanup()
        if self._session is not None:
            await self._session.close()
        log.info("router.stopped")

    async def _drain(self) -> None:
        if self.calls is None:
            return
        drain_seconds = self.config.router.drain_seconds
        self.calls.draining = True
        log.info(
            "router.draining", active_calls=self._active(), drain_seconds=drain_seconds
        )
        if await self._wait_for_calls(drain_seconds):
            return
        ended = await self.calls.shut_down_calls()
        log.warning("router.drain_timed_out", calls_ended=ended)
        # The ended calls need a moment to log their end and count it.
        await self.calls.wait_idle(SHUTDOWN_GRACE_SECONDS)

    async def _wait_for_calls(self, timeout_seconds: float) -> bool:
        """Wait until no call is left, the drain time ends or it is cut short."""
        assert self.calls is not None
        idle = asyncio.create_task(self.calls.wait_idle(timeout_seconds))
        cut_short = asyncio.create_task(self._drain_cut_short.wait())
        await asyncio.wait({idle, cut_short}, return_when=asyncio.FIRST_COMPLETED)
        cut_short.cancel()
        idle.cancel()
        return idle.done() and not idle.cancelled() and idle.result()

    async def _flush_webhooks(self) -> None:
        """Let the reports of the calls just ended go out, for a bounded time."""
        if self.calls is not None:
            # Stopping the engine hung up any call left, so let their paths end.
            await self.calls.wait_idle(CALLS_END_AFTER_HANGUP_SECONDS)
        if self._webhooks is not None:
            flush_seconds = self.config.router.webhook_delivery.flush_seconds
            await self._webhooks.flush(flush_seconds)

    async def _apply_trunk_changes(self, old: Config, new: Config) -> None:
        """Re-register the trunks and re-ping the gateways a reload changed."""
        if self.registrations is not None:
            await self.registrations.apply(new.trunks(), new.router.registration)
        if self.gateways is not None:
            self.gateways.apply(new.trunks())

    def _active(self) -> int:
        return self.calls.active_calls if self.calls else 0

    def _remember(self, call: CallRecord) -> None:
        self._recent[call.id] = call
        while len(self._recent) > RECENT_CALLS_KEPT:
            self._recent.popitem(last=False)

    def _count_unreadable(self, detail: str) -> None:
        self.metrics.sip_invites_received.labels(transport="unknown").inc()
        self.metrics.sip_invites_rejected.labels(status="400").inc()
        log.warning("sip.invite_unreadable", detail=detail)

    def _count_stack_rejection(self, status: int) -> None:
        self.metrics.sip_invites_received.labels(transport="unknown").inc()
        self.metrics.sip_invites_rejected.labels(status=str(status)).inc()
        log.warning("sip.invite_rejected_by_stack", status=status)

    def _count_stack_drop(self, reason: str) -> None:
        # StackLogWriter logs the line itself, rate-limited.
        self.metrics.sip_messages_dropped.labels(reason=reason).inc()


class StartupError(Exception):
    """The daemon could not start: a port in use, a stack that failed."""


def _engine_settings(config: Config) -> EngineSettings:
    sip = config.router.sip
    return EngineSettings(
        listen=tuple(ListenAddress(a.transport, a.host, a.port) for a in sip.listen),
        public_host=sip.public_host,
        rtp_port_start=sip.rtp_port_start,
        rtp_port_count=sip.rtp_port_count,
        requested_max_calls=requested_max_calls(config),
        udp_receive_buffer_bytes=sip.udp_receive_buffer_bytes,
    )


def _ping_hosts(config: Config) -> dict[str, str | None]:
    """Return the address that OPTIONS pings go out from, per transport."""
    hosts: dict[str, str | None] = {}
    for address in config.router.sip.listen:
        hosts[address.transport] = None if address.host == "0.0.0.0" else address.host
    return hosts


def probe_and_check(config: Config) -> SipLimits:
    """Probe the SIP build's limits and check the config against them."""
    limits = probe_limits(requested_max_calls(config))
    errors = check_limits(config, limits.max_accounts)
    if errors:
        raise ConfigError(errors)
    return limits


async def run(config: Config, config_path: str | os.PathLike[str]) -> None:
    """Run the daemon on a config loaded from `config_path` until stopped.

    SIGHUP and `POST /admin/reload` read `config_path` again.
    """
    limits = probe_and_check(config)
    router = Router(config, limits, config_path)
    try:
        await router.start()
    except BaseException:
        await router.stop()
        raise
    await router.serve()


async def _call_listener(listener: Callable[..., Any], *arguments: Any) -> None:
    """Call a reload or stop listener; its failure is logged, never raised."""
    try:
        result = listener(*arguments)
        if inspect.isawaitable(result):
            await result
    except Exception:  # noqa: BLE001 - one listener must not stop the others
        log.exception("router.listener_failed", listener=repr(listener))
