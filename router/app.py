"""The daemon's lifecycle in one place: start-up, serving, drain, shutdown."""

from __future__ import annotations

import asyncio
import signal
from collections import OrderedDict
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from router.calls.path import CallPath, Routing
from router.calls.record import CallRecord
from router.config import Config, ConfigError, check_limits
from router.http.server import build_http_app
from router.metrics import Metrics
from router.routing.table import RoutingTable
from router.sip.engine import EngineSettings, ListenAddress, SipEngine
from router.sip.limits import SipLimits, probe_limits
from router.sip.options import GatewayMonitor
from router.sip.registration_manager import RegistrationManager
from router.webhooks.assistant_request import AssistantRequestClient

log = structlog.get_logger("router.app")

# Ended calls stay readable on the admin API for a while, so a runtime or
# an operator can still look a call up just after it ended.
RECENT_CALLS_KEPT = 1000

# At shutdown the un-REGISTERs get this long to be answered.
UNREGISTER_TIMEOUT_SECONDS = 3.0


def requested_max_calls(config: Config) -> int:
    """Return the call slots to ask pjsua for: two per call, plus a spare.

    A bridged call uses two slots. pjsua clamps the request to the build's
    `PJSUA_MAX_CALLS` without saying so, so the probe asks for the same.
    """
    return 2 * config.router.max_concurrent_calls + 1


class Router:
    """The running daemon: SIP engine, call path and HTTP server."""

    def __init__(self, config: Config, limits: SipLimits) -> None:
        self.config = config
        self.limits = limits
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self._routing = Routing(config, RoutingTable.from_config(config))
        self._recent: OrderedDict[str, CallRecord] = OrderedDict()
        self._stopping = asyncio.Event()
        self._ready = False
        self.engine: SipEngine | None = None
        self.calls: CallPath | None = None
        # A config reload passes the new trunks to `registrations.apply()`
        # and `gateways.apply()`.
        self.registrations: RegistrationManager | None = None
        self.gateways: GatewayMonitor | None = None
        self._session: aiohttp.ClientSession | None = None
        self._http: web.AppRunner | None = None

    # ----- HttpState -------------------------------------------------------------

    def is_ready(self) -> bool:
        """Return whether the config is loaded and every transport is bound."""
        return self._ready and not self._stopping.is_set()

    def readiness(self) -> dict[str, Any]:
        """Return the SIP limits, call slots and registration states."""
        used = self.engine.slots_used if self.engine else 0
        return {
            "ready": self.is_ready(),
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

    # ----- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Bind SIP and HTTP, then mark the router ready."""
        loop = asyncio.get_running_loop()
        self.metrics.set_sip_limits(self.limits.as_json())
        self.engine = SipEngine(_engine_settings(self.config), self.limits, loop)
        self._session = aiohttp.ClientSession()
        assistant_requests = AssistantRequestClient(
            self._session, lambda: self._routing.config, self.metrics
        )
        self.calls = CallPath(
            self.engine, lambda: self._routing, assistant_requests, self.metrics
        )
        self.calls.on_ended = self._remember
        self.engine.on_invite = self.calls.on_invite
        self.engine.on_unreadable_invite = self._count_unreadable
        self.engine.on_rejected_by_stack = self._count_stack_rejection
        self.registrations = RegistrationManager(
            self.engine, self.metrics, self.config.router.registration
        )
        self.engine.on_registration = self.registrations.on_report
        await loop.run_in_executor(None, self.engine.start)
        await self._start_http()
        self.metrics.set_call_slots(0, self.limits.max_calls)
        await self.registrations.apply(self.config.trunks())
        self.gateways = GatewayMonitor(
            self.metrics, _ping_hosts(self.config), self.config.router.sip.public_host
        )
        self.gateways.apply(self.config.trunks())
        self._ready = True
        log.info(
            "router.started",
            sip=[f"{a.transport}:{a.host}:{a.port}" for a in self.engine.bound],
            http=f"{self.config.router.http.host}:{self.config.router.http.port}",
            limits=self.limits.as_json(),
        )

    async def _start_http(self) -> None:
        settings = self.config.router.http
        self._http = web.AppRunner(build_http_app(self), access_log=None)
        await self._http.setup()
        site = web.TCPSite(self._http, settings.host, settings.port)
        await site.start()

    async def serve(self) -> None:
        """Serve until SIGTERM or SIGINT, then drain and stop."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stopping.set)
        await self._stopping.wait()
        await self.stop()

    async def stop(self) -> None:
        """Refuse new calls, let calls in progress end, then shut down."""
        self._stopping.set()
        drain_seconds = self.config.router.drain_seconds
        log.info(
            "router.draining", active_calls=self._active(), drain_seconds=drain_seconds
        )
        if self.calls is not None:
            self.calls.draining = True
            await self.calls.wait_idle(drain_seconds)
        if self.registrations is not None:
            await self.registrations.stop(UNREGISTER_TIMEOUT_SECONDS)
        if self.gateways is not None:
            await self.gateways.stop()
        if self.engine is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.engine.stop)
        if self._http is not None:
            await self._http.cleanup()
        if self._session is not None:
            await self._session.close()
        log.info("router.stopped")

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


def _engine_settings(config: Config) -> EngineSettings:
    sip = config.router.sip
    return EngineSettings(
        listen=tuple(ListenAddress(a.transport, a.host, a.port) for a in sip.listen),
        public_host=sip.public_host,
        rtp_port_start=sip.rtp_port_start,
        rtp_port_count=sip.rtp_port_count,
        requested_max_calls=requested_max_calls(config),
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


async def run(config: Config) -> None:
    """Run the daemon on a loaded config until it is told to stop."""
    limits = probe_and_check(config)
    router = Router(config, limits)
    try:
        await router.start()
    except BaseException:
        await router.stop()
        raise
    await router.serve()
