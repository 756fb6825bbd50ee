"""The pjsua2 engine: one owner thread, a call table, an operation queue.

pjsua2 with this wheel is safe only when one thread makes every pjsua2 call
and receives every callback: a second thread touching a `Call` crashes with
a use-after-free under load, and an unregistered thread aborts the process.
So one thread creates the library with `threadCnt = 0`, loops
`libHandleEvents`, and runs operations that asyncio puts on a queue.
Callbacks copy what they need, post it to the event loop and return; they
never wait for asyncio.

`Call` objects live only in `_calls`, keyed by pjsua call id, and are
dropped on DISCONNECTED. A `Call` destroyed late hangs up whichever new call
took its slot, so asyncio holds `CallKey(slot, serial)` and every operation
looks the call up again by that key.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import queue
import threading
from collections.abc import Callable
from typing import Any

import pjsua2 as pj
import structlog

from router.errors import (
    ConcurrencyLimitReached,
    FinalResponse,
    MessageTooLarge,
    final_response,
)
from router.sip.accounts import TrunkAccounts
from router.sip.callbacks import (
    RouterAccount,
    RouterCall,
    RouterEndpoint,
    StackLogWriter,
    TrunkAccount,
    active_audio,
    call_op,
    describe_error,
    stdout_silenced,
)
from router.sip.cut_invites import accept_cut_offer, is_cut
from router.sip.legs import (
    CallGone,
    DialFailed,
    EngineSettings,
    InviteVerdict,
    Leg,
    LegEnded,
    ListenAddress,
    NoCallSlot,
    PlaybackFailed,
    SipStartError,
    TransferStatus,
)
from router.sip.limits import SipLimits
from router.sip.messages import (
    CallKey,
    InboundInvite,
    MalformedRequest,
    SipRequest,
    parse_request,
    split_host_port,
)
from router.sip.offers import confirm_late_offer
from router.sip.registration import (
    RegistrationReport,
    UnregisterResult,
)
from router.sip.registration_spec import RegistrationSpec
from router.sip.sockets import SocketBudget
from router.sip.udp_buffer import ReceiveBuffer, set_receive_buffer

log = structlog.get_logger(__name__)

# How long one libHandleEvents() may wait for a packet or timer, which is
# also how long an operation queued by asyncio may wait to run: pjsua2 can
# only wait on its own sockets, so nothing else wakes it. See
# `SipEngine._event_wait_ms`. An INVITE wakes the thread at once whatever
# the wait.
_SETUP_EVENT_WAIT_MS = 1
_EVENT_WAIT_MS = 2
_IDLE_EVENT_WAIT_MS = 10
# Audio left in the conference bridge and the RTP stream when the WAV file
# ends (a few 20 ms frames), so the hang-up does not cut the last word.
_PLAYBACK_TAIL_SECONDS = 0.3

# A reserved leg's slot can be held for a moment by an INVITE that pjsua
# took before the router rejected it, so its dial is retried this long.
_RESERVED_DIAL_WAIT_SECONDS = 0.5
_RESERVED_DIAL_RETRY_SECONDS = 0.02


class SipEngine:
    """Owns pjsua2 on its own thread and exposes call operations to asyncio."""

    def __init__(
        self,
        settings: EngineSettings,
        limits: SipLimits,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.settings = settings
        self.limits = limits
        self._loop = loop
        self._ops: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        # Set once the owner thread has stopped taking operations; guarded by
        # the lock so that no operation is queued after the last one ran.
        self._closed = False
        self._ops_lock = threading.Lock()
        self._calls: dict[int, Leg] = {}
        self._serials = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._running = False
        self._endpoint: RouterEndpoint | None = None
        self._account: RouterAccount | None = None
        self.bound: list[ListenAddress] = []
        self.udp_receive_buffer: ReceiveBuffer | None = None
        # Loop side: awaitables per call key, resolved by posted events.
        self._ended: dict[CallKey, asyncio.Future[LegEnded]] = {}
        self._answered: dict[CallKey, asyncio.Future[None]] = {}
        self._transfers: dict[CallKey, asyncio.Queue[TransferStatus]] = {}
        self.on_invite: Callable[[InboundInvite], None] = lambda invite: None
        # Decides on the owner thread, before pjsua creates the call's media
        # transport: a verdict to send at once, or whether the call may need
        # real RTP (a bridge) or can do with the loop media transport.
        self.classifier: Callable[[SipRequest, str], InviteVerdict] = (
            lambda request, source_ip: InviteVerdict(media=True)
        )
        self._verdict: tuple[str, InviteVerdict] | None = None
        self.sockets = SocketBudget(limits.max_sockets)
        self._quiet_account: RouterAccount | None = None
        self.on_unreadable_invite: Callable[[str], None] = lambda detail: None
        self.on_rejected_by_stack: Callable[[int], None] = lambda status: None
        self.on_dropped_by_stack: Callable[[str], None] = lambda reason: None
        self.on_registration: Callable[[RegistrationReport], None] = lambda report: None
        self._trunk_accounts = TrunkAccounts(
            limits.max_accounts,
            lambda trunk_id: TrunkAccount(self, trunk_id),
            self._configure_media,
            self._calls_on,
            lambda report: self._post(self._deliver_registration, report),
        )
        self._trunk_accounts.public_host = settings.public_host
        self.slots_used = 0
        self.legs_reserved = 0
        self._shutting_down = False
        self._dialing: pj.Call | None = None
        self._dial_failure: tuple[int, str] | None = None

    # ----- lifecycle -------------------------------------------------------

    def start(self, timeout_seconds: float = 10.0) -> None:
        """Start the owner thread and wait until every transport is bound."""
        self._running = True
        self._thread = threading.Thread(
            target=self._run, name="pjsua-owner", daemon=True
        )
        self._thread.start()
        if not self._started.wait(timeout_seconds):
            raise RuntimeError("the SIP stack did not start in time")
        if self._start_error is not None:
            raise self._start_error

    def stop(self, timeout_seconds: float = 10.0) -> None:
        """Hang up every call, destroy the library and join the thread."""
        if self._thread is None:
            return
        self._running = False
        self._thread.join(timeout_seconds)
        self._thread = None

    def _run(self) -> None:
        try:
            self._create_library()
        except (pj.Error, SipStartError) as error:
            # The library and every pjsua2 object must die on this thread:
            # destroyed anywhere else, they abort the process.
            self._start_error = SipStartError(describe_error(error))
            self._destroy_library()
            self._started.set()
            return
        self._started.set()
        try:
            while self._running:
                self._endpoint.libHandleEvents(self._event_wait_ms())
                self._run_queued_operations()
        finally:
            self._destroy_library()
            # Operations still queued now find no call and fail with
            # CallGone, so no task waits for them past shutdown.
            with self._ops_lock:
                self._closed = True
            self._calls.clear()
            self._account = None
            self._run_queued_operations()

    def _event_wait_ms(self) -> int:
        """Return how long the next libHandleEvents() may wait.

        A call before its answer waits for operations (180, 302, dial,
        200), so they should run soon. Answered calls need few, and their
        RTP wakes the thread anyway. With no call at all, the thread wakes
        least often, so an idle router spends little CPU.
        """
        if not self._calls:
            return _IDLE_EVENT_WAIT_MS
        if any(not leg.answered for leg in self._calls.values()):
            return _SETUP_EVENT_WAIT_MS
        return _EVENT_WAIT_MS

    def _create_library(self) -> None:
        endpoint = RouterEndpoint(self)
        self._endpoint = endpoint
        # pjlib prints a few lines to stdout in libCreate(), before any log
        # setting applies; libInit() then routes its log to StackLogWriter.
        with stdout_silenced():
            endpoint.libCreate()
        config = pj.EpConfig()
        config.uaConfig.threadCnt = 0
        config.uaConfig.mainThreadOnly = False
        config.uaConfig.maxCalls = self.settings.requested_max_calls
        config.uaConfig.userAgent = self.settings.user_agent
        self._log_writer = StackLogWriter(
            lambda reason: self._post(self.on_dropped_by_stack, reason)
        )
        config.logConfig.writer = self._log_writer
        # Level 2 is the highest that includes pjsip's "Dropping ... packet"
        # lines, which the writer counts; level 4 would log every packet.
        config.logConfig.level = 2
        config.logConfig.consoleLevel = 2
        config.logConfig.decor = 0
        # Media runs on this thread's ioqueue too: no media worker thread.
        config.medConfig.threadCnt = 0
        config.medConfig.hasIoqueue = False
        config.medConfig.noVad = True
        # Without a sound device the conference bridge leaks ports after a
        # few hundred answered calls unless the null clock runs for good.
        config.medConfig.sndAutoCloseTime = -1
        config.medConfig.maxMediaPorts = max(
            254, 2 * self.settings.requested_max_calls + 4
        )
        endpoint.libInit(config)
        endpoint.audDevManager().setNullDev()
        self._bind_transports(endpoint)
        endpoint.libStart()
        self._account = self._create_account(loop_media=False)
        self._quiet_account = self._create_account(loop_media=True)

    def _bind_transports(self, endpoint: pj.Endpoint) -> None:
        kinds = {"udp": pj.PJSIP_TRANSPORT_UDP, "tcp": pj.PJSIP_TRANSPORT_TCP}
        for address in self.settings.listen:
            config = pj.TransportConfig()
            config.port = address.port
            config.boundAddress = "" if address.host == "0.0.0.0" else address.host
            if self.settings.public_host:
                config.publicAddress = self.settings.public_host
            try:
                transport_id = endpoint.transportCreate(
                    kinds[address.transport], config
                )
            except pj.Error as error:
                raise SipStartError(
                    f"cannot listen for SIP on {address.transport} "
                    f"{address.host}:{address.port}: {error.reason}; check that "
                    "no other process uses that port (router.sip.listen)"
                ) from None
            info = endpoint.transportGetInfo(transport_id)
            self._trunk_accounts.transport_ids[address.transport] = transport_id
            self._trunk_accounts.transport_names[address.transport] = info.localName
            _, port = split_host_port(info.localName)
            self.bound.append(ListenAddress(address.transport, address.host, port))
            if address.transport == "udp":
                self.udp_receive_buffer = set_receive_buffer(
                    address.host, port, self.settings.udp_receive_buffer_bytes
                )

    def _create_account(self, loop_media: bool) -> RouterAccount:
        """Create the router's local account, with or without RTP sockets.

        Calls that are rejected or redirected never carry audio, so they
        take the account whose loop media transport opens no socket.
        """
        first = self.bound[0]
        host = self.settings.public_host or first.host
        if host == "0.0.0.0":
            host = "127.0.0.1"
        config = pj.AccountConfig()
        config.idUri = f"sip:router@{host}:{first.port}"
        if len(self.bound) == 1 and first.transport == "tcp":
            # pjsua builds a dialog's Contact for the transport that the
            # caller's Contact names, UDP when it names none, and sends
            # 500 when no such transport is bound. A TCP-only router
            # therefore states its Contact.
            name = self._trunk_accounts.transport_names["tcp"]
            config.sipConfig.contactForced = f"<sip:router@{name};transport=tcp>"
        config.mediaConfig.useLoopMedTp = loop_media
        self._configure_media(config)
        account = RouterAccount(self)
        account.create(config, not loop_media)
        return account

    def _configure_media(self, config: pj.AccountConfig) -> None:
        first = self.bound[0]
        media = config.mediaConfig.transportConfig
        media.port = self.settings.rtp_port_start
        media.portRange = self.settings.rtp_port_count
        if first.host != "0.0.0.0":
            media.boundAddress = first.host
        if self.settings.public_host:
            media.publicAddress = self.settings.public_host

    def _destroy_library(self) -> None:
        endpoint = self._endpoint
        if endpoint is None:
            return
        self._shutting_down = True
        for leg in self._calls.values():
            leg.hanging_up = True
        try:
            endpoint.hangupAllCalls()
            # Let the BYEs and CANCELs go out and the legs disconnect.
            for _ in range(50):
                if not self._calls:
                    break
                endpoint.libHandleEvents(10)
        except pj.Error as error:
            log.error("sip.hangup_all_failed", error=error.info())
        self._calls.clear()
        self._trunk_accounts.shutdown_all()
        self._account = None
        self._quiet_account = None
        try:
            endpoint.libDestroy()
        except pj.Error as error:
            log.error("sip.shutdown_failed", error=error.info())
        self._endpoint = None

    def _run_queued_operations(self) -> None:
        while True:
            try:
                operation = self._ops.get_nowait()
            except queue.Empty:
                return
            operation()

    # ----- asyncio side: submitting operations ------------------------------

    def _submit(self, function: Callable[..., Any], *args: Any) -> asyncio.Future:
        future: asyncio.Future = self._loop.create_future()

        def operation() -> None:
            try:
                result = function(*args)
            except BaseException as error:  # handed to the awaiting task
                self._post(_set_exception, future, error)
            else:
                self._post(_set_result, future, result)

        with self._ops_lock:
            if not self._closed:
                self._ops.put(operation)
                return future
        future.set_exception(CallGone("the SIP stack has stopped"))
        return future

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        # A closed event loop raises RuntimeError: the daemon is stopping.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(callback, *args)

    def reserve_leg(self) -> bool:
        """Reserve a call slot for an outbound leg that a call may place.

        A bridged call takes two slots, and one slot always stays free so
        that a new INVITE gets the router's 503 rather than pjsua's own 486
        Busy Here. Called on the event loop; `release_leg()` gives it back.
        """
        needed = self.slots_used + self.legs_reserved + 1
        if needed > self.limits.max_calls - 1:
            return False
        self.legs_reserved += 1
        return True

    def release_leg(self) -> None:
        """Give back a slot taken by `reserve_leg()`."""
        self.legs_reserved = max(0, self.legs_reserved - 1)

    def ended(self, key: CallKey) -> asyncio.Future[LegEnded]:
        """Return the future that resolves when the leg `key` ends."""
        return self._ended.setdefault(key, self._loop.create_future())

    async def ring(self, key: CallKey) -> None:
        """Send 180 Ringing."""
        await self._submit(self._answer_op, key, 180, None, [])

    async def reject(
        self,
        key: CallKey,
        status: int,
        reason: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        """Send a final non-2xx response (also used for 3xx redirects)."""
        await self._submit(self._hangup_op, key, status, reason, headers or [])

    async def redirect(self, key: CallKey, contact: str) -> None:
        """Answer 302 Moved Temporarily with `contact` as the only Contact."""
        await self.reject(key, 302, None, [("Contact", f"<{contact}>")])

    async def answer(self, key: CallKey) -> None:
        """Answer 200 OK and wait until the caller's ACK confirms it."""
        answered = self._answered.setdefault(key, self._loop.create_future())
        await self._submit(self._answer_op, key, 200, None, [])
        await _first_of(answered, self.ended(key))

    async def hangup(
        self,
        key: CallKey,
        status: int = 0,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        """End a leg: BYE when answered, CANCEL or a final response before."""
        await self._submit(self._hangup_op, key, status, None, headers or [])

    async def refer(
        self, key: CallKey, target: str, headers: list[tuple[str, str]]
    ) -> asyncio.Queue[TransferStatus]:
        """Send REFER to the answered leg; statuses arrive on the queue."""
        statuses: asyncio.Queue[TransferStatus] = asyncio.Queue()
        self._transfers[key] = statuses
        await self._submit(self._refer_op, key, target, headers)
        return statuses

    async def dial(
        self,
        target: str,
        headers: list[tuple[str, str]],
        peer: CallKey | None,
        reserved: bool = False,
    ) -> CallKey:
        """Start an outbound leg to `target`, linked to `peer` for media.

        `reserved` says the caller holds a slot from `reserve_leg()`. Raises
        NoCallSlot when no slot is free, for a reserved leg only after
        retrying for `_RESERVED_DIAL_WAIT_SECONDS`.
        """
        deadline = self._loop.time() + _RESERVED_DIAL_WAIT_SECONDS
        while True:
            try:
                return await self._submit(
                    self._dial_op, target, headers, peer, reserved
                )
            except NoCallSlot:
                if not reserved or self._loop.time() >= deadline:
                    raise
            await asyncio.sleep(_RESERVED_DIAL_RETRY_SECONDS)

    async def play(self, key: CallKey, wav_path: str) -> None:
        """Answer if needed, play a WAV file to the caller, return at its end.

        The player lives in the owner thread's call table and is destroyed
        there, when playback ends or the call does. Returns early when the
        call ends first. Raises PlaybackFailed when the file or the call's
        audio cannot be used, and CallGone when the call has ended.
        """
        answered = self._answered.get(key)
        if answered is None or not answered.done():
            await self.answer(key)
        duration_seconds = await self._submit(self._play_op, key, wav_path)
        try:
            await asyncio.wait(
                {self.ended(key)}, timeout=duration_seconds + _PLAYBACK_TAIL_SECONDS
            )
        finally:
            # Queued at once, so the player is destroyed even if this task
            # is cancelled while it waits for the result.
            stopped = self._submit(self._stop_playing_op, key)
            with contextlib.suppress(CallGone):
                await stopped

    async def wait_answered(self, key: CallKey) -> None:
        """Wait until the outbound leg `key` is answered (CONFIRMED)."""
        answered = self._answered.setdefault(key, self._loop.create_future())
        await _first_of(answered, self.ended(key))

    # ----- asyncio side: trunk registrations ---------------------------------

    async def add_trunk_account(self, spec: RegistrationSpec, serial: int) -> None:
        """Create a trunk's account, which registers at once.

        Its reports carry `serial`. Raises NoAccountSlot when the build has
        no account left, and AccountFailed when pjsua refuses the account or
        the router has no transport for the registrar.
        """
        await self._submit(self._trunk_accounts.add, spec, serial)

    async def modify_trunk_account(self, spec: RegistrationSpec, serial: int) -> None:
        """Re-register a trunk with changed settings, reporting with `serial`."""
        await self._submit(self._trunk_accounts.modify, spec, serial)

    async def register_trunk(self, trunk_id: str) -> bool:
        """Send a REGISTER; False when one is in progress already."""
        return await self._submit(self._trunk_accounts.register, trunk_id)

    async def unregister_trunk(self, trunk_id: str) -> UnregisterResult:
        """Send an un-REGISTER for a trunk's binding."""
        return await self._submit(self._trunk_accounts.unregister, trunk_id)

    async def remove_trunk_account(self, trunk_id: str) -> None:
        """Delete a trunk's account once no call uses it."""
        await self._submit(self._trunk_accounts.remove, trunk_id)

    # ----- owner thread: operations -----------------------------------------

    def _leg(self, key: CallKey) -> Leg:
        leg = self._calls.get(key.slot)
        if leg is None or leg.key != key or leg.hanging_up:
            raise CallGone(f"call {key.slot}/{key.serial} has ended")
        return leg

    def _answer_op(
        self, key: CallKey, status: int, reason: str | None, headers: list
    ) -> None:
        leg = self._leg(key)
        leg.call.answer(call_op(status, reason, headers))

    def _hangup_op(
        self, key: CallKey, status: int, reason: str | None, headers: list
    ) -> None:
        leg = self._leg(key)
        leg.hanging_up = True
        try:
            leg.call.hangup(call_op(status, reason, headers))
        except pj.Error:
            leg.hanging_up = False
            raise

    def _play_op(self, key: CallKey, wav_path: str) -> float:
        """Connect a new WAV player to the call; return the file's seconds."""
        leg = self._leg(key)
        player = pj.AudioMediaPlayer()
        try:
            player.createPlayer(wav_path, pj.PJMEDIA_FILE_NO_LOOP)
            player.startTransmit(leg.call.getAudioMedia(-1))
            samples = player.getInfo().sizeSamples
            clock_rate = player.getPortInfo().format.clockRate
        except pj.Error as error:
            # `player` is dropped here, on this thread, which destroys it.
            raise PlaybackFailed(error.info()) from None
        leg.player = player
        return samples / clock_rate

    def _stop_playing_op(self, key: CallKey) -> None:
        leg = self._calls.get(key.slot)
        if leg is not None and leg.key == key:
            leg.player = None

    def _refer_op(self, key: CallKey, target: str, headers: list) -> None:
        leg = self._leg(key)
        leg.call.xfer(target, call_op(0, None, headers))

    def _dial_op(
        self, target: str, headers: list, peer: CallKey | None, reserved: bool
    ) -> CallKey:
        if self._account is None:
            raise CallGone("the SIP stack has stopped")
        # Keep one slot free so that a new INVITE gets the router's 503, not
        # pjsua's own 486 Busy Here. A reserved leg was counted against that
        # rule already; an INVITE about to be rejected may hold its slot.
        spare = 0 if reserved else 1
        if len(self._calls) + 1 > self.limits.max_calls - spare:
            raise NoCallSlot("no call slot is free for an outbound leg")
        if not self.sockets.can_open(1):
            raise NoCallSlot("no socket is free for an outbound leg's media")
        call = RouterCall(self, self._account, pj.PJSUA_INVALID_ID)
        parameters = call_op(0, None, headers)
        parameters.opt.audioCount = 1
        parameters.opt.videoCount = 0
        self._dialing, self._dial_failure = call, None
        try:
            call.makeCall(target, parameters)
        except pj.Error as error:
            raise DialFailed(500, error.reason) from None
        finally:
            self._dialing = None
        if self._dial_failure is not None:
            status, reason = self._dial_failure
            raise DialFailed(status, reason)
        key = CallKey(call.getId(), next(self._serials))
        self._calls[key.slot] = Leg(call, key, inbound=False, peer=peer, media=True)
        self.sockets.opened()
        if peer is not None and peer.slot in self._calls:
            self._calls[peer.slot].peer = key
        self.slots_used = len(self._calls)
        return key

    # ----- owner thread: callbacks ------------------------------------------

    def _on_incoming_call(
        self, account: pj.Account, prm: pj.OnIncomingCallParam
    ) -> None:
        # pjsua answers 500 unless a Call object exists when this returns.
        call = RouterCall(self, account, prm.callId)
        key = CallKey(prm.callId, next(self._serials))
        media = account is self._account
        verdict = self._take_verdict(prm.rdata.wholeMsg)
        # Only a trunk's own account needs to know of its calls.
        own = account is self._account or account is self._quiet_account
        self._calls[key.slot] = Leg(
            call, key, inbound=True, media=media, account=None if own else account
        )
        self.slots_used = len(self._calls)
        if media:
            self.sockets.opened()
        try:
            invite = _read_invite(
                key, prm.rdata.wholeMsg, prm.rdata.srcAddress, self.limits
            )
        except (MalformedRequest, UnicodeError) as error:
            self._post(self.on_unreadable_invite, str(error))
            self._ops.put(lambda: self._hangup_quietly(key, 400))
            return
        invite = dataclasses.replace(invite, has_media=media)
        self._calls[key.slot].late_offer = invite.body_bytes == 0
        response = verdict.final if verdict else None
        ring_first = verdict is not None and verdict.ring_first
        if self.slots_used >= self.limits.max_calls:
            # This INVITE took the last, spare slot.
            response = final_response(ConcurrencyLimitReached())
            ring_first = False
        if response is None:
            self._post(self.on_invite, invite)
            return
        invite = dataclasses.replace(
            invite,
            pre_rejected=response.status,
            router_call_id=verdict.call_id if verdict else None,
        )
        self._post(self.on_invite, invite)
        # Respond inside this callback, as the bare pjsua2 responder does, so
        # the call frees its slot before the next INVITE of a burst is read.
        # A queued response waited until libHandleEvents() returned, and the
        # INVITEs read in the same poll met the router's 503 or pjsua's 486.
        # The leg's DISCONNECTED state arrives inside this call and removes
        # it from the table; `call` keeps the Call alive until this returns.
        # The call path still logs, counts and reports the call.
        # pjsua defers a response given inside this callback until it
        # returns. Its deferred hangup() drops the extra headers (Contact,
        # Reason, Retry-After), while a deferred answer() keeps them.
        if invite.cut or invite.body_bytes == 0:
            # NOTE: answering inside this callback a cut INVITE (which carries
            # the stand-in offer of `accept_cut_offer()`) or an INVITE without
            # SDP made pjsua free a cloned rdata twice, and pjproject 2.15.1
            # aborts on the assert in pjsip_rx_data_free_cloned(). Their
            # responses are sent from the queue instead.
            self._ops.put(lambda: self._respond_later(key, response, ring_first))
            return
        leg = self._calls[key.slot]
        leg.hanging_up = True
        try:
            if ring_first:
                # Every routed call rings first, a static redirect included.
                # pjsua queues both responses and sends them in order.
                call.answer(call_op(180, None, []))
            call.answer(call_op(response.status, None, response.headers))
        except pj.Error:
            leg.hanging_up = False
            self._ops.put(
                lambda: self._hangup_quietly(key, response.status, response.headers)
            )

    def _on_select_account(self, prm: pj.OnSelectAccountParam) -> None:
        """Pick the account, so the media transport, of a new request."""
        if self._quiet_account is None or self._account is None:
            return
        media = False
        try:
            request = parse_request(prm.rdata.wholeMsg)
        except (MalformedRequest, UnicodeError):
            request = None
        if request is not None and request.method == "INVITE":
            source_ip, _ = split_host_port(prm.rdata.srcAddress)
            media = len(self._calls) + 1 < self.limits.max_calls and (
                self.sockets.can_open(2)
            )
            verdict = self.classifier(request, source_ip)
            if is_cut(request, self.limits.max_packet_bytes):
                # Before pjsua parses the cut SDP and answers 400 itself.
                verdict = InviteVerdict(False, final_response(MessageTooLarge()))
                accept_cut_offer(prm.rdata.pjRxData)
            media = media and verdict.media and verdict.final is None
            self._verdict = (request.header("call-id") or "", verdict)
        chosen = self._account if media else self._quiet_account
        prm.accountIndex = chosen.getId()

    def _take_verdict(self, raw: str) -> InviteVerdict | None:
        """Return the verdict `_on_select_account` took for this INVITE."""
        verdict, self._verdict = self._verdict, None
        if verdict is None:
            return None
        call_id, found = verdict
        return found if f"{call_id}" in raw else None

    def _respond_later(
        self, key: CallKey, response: FinalResponse, ring_first: bool
    ) -> None:
        """Send an INVITE's immediate response from the operation queue."""
        if ring_first:
            with contextlib.suppress(CallGone, pj.Error):
                self._answer_op(key, 180, None, [])
        self._hangup_quietly(key, response.status, response.headers)

    def _hangup_quietly(
        self, key: CallKey, status: int, headers: list | None = None
    ) -> None:
        with contextlib.suppress(CallGone, pj.Error):
            self._hangup_op(key, status, None, headers or [])

    def _on_call_state(self, call: RouterCall) -> None:
        slot = call.getId()
        leg = self._calls.get(slot)
        info = call.getInfo()
        if call is self._dialing and info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            # The leg failed inside makeCall(), before it entered the table.
            self._dial_failure = (info.lastStatusCode, info.lastReason)
            return
        if leg is None or leg.call is not call:
            return
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED:
            if leg.late_offer:
                # pjsua starts the media of the ACK's answer after this
                # callback returns, so the check runs as the next operation.
                key = leg.key
                self._ops.put(
                    lambda: confirm_late_offer(self._calls, key, self._confirm)
                )
                return
            self._confirm(leg)
        elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self._end_leg(leg, info)

    def _confirm(self, leg: Leg) -> None:
        leg.answered = True
        self._post(self._resolve_answered, leg.key)

    def _end_leg(self, leg: Leg, info: pj.CallInfo) -> None:
        leg.player = None
        del self._calls[leg.key.slot]
        self.slots_used = len(self._calls)
        if leg.media:
            self.sockets.closed()
        if leg.account is not None:
            # pjsua still uses the account while this callback runs.
            account = leg.account
            self._ops.put(lambda: self._trunk_accounts.call_ended(account))
        ended = LegEnded(
            status_code=info.lastStatusCode,
            reason=info.lastReason,
            hung_up_locally=leg.hanging_up,
            was_answered=leg.answered,
            by_shutdown=self._shutting_down,
            cause=leg.end_cause,
        )
        self._post(self._resolve_ended, leg.key, ended)
        # A bridged pair ends together: the first BYE hangs up the other leg.
        # An outbound leg that ends before it was answered leaves the caller
        # alone, so the call path can still fall back or reject it.
        if not (leg.inbound or leg.answered):
            return
        peer = self._calls.get(leg.peer.slot) if leg.peer else None
        if peer is not None and peer.key == leg.peer and not peer.hanging_up:
            peer.hanging_up = True
            try:
                peer.call.hangup(call_op(0, None, []))
            except pj.Error as error:
                log.warning("sip.peer_hangup_failed", error=error.info())

    def _on_media_state(self, call: RouterCall) -> None:
        leg = self._calls.get(call.getId())
        if leg is None or leg.peer is None:
            return
        peer = self._calls.get(leg.peer.slot)
        if peer is None or peer.key != leg.peer:
            return
        ours = active_audio(call)
        theirs = active_audio(peer.call)
        if ours is None or theirs is None:
            return  # the other leg's media is not up yet: its callback connects
        ours.startTransmit(theirs)
        theirs.startTransmit(ours)

    def _on_transfer_status(
        self, call: RouterCall, prm: pj.OnCallTransferStatusParam
    ) -> None:
        leg = self._calls.get(call.getId())
        if leg is None:
            return
        status = TransferStatus(prm.statusCode, prm.reason, prm.finalNotify)
        self._post(self._resolve_transfer, leg.key, status)

    def _on_rejected_by_pjsua(self, status: int) -> None:
        self._post(self.on_rejected_by_stack, status)

    def _calls_on(self, account: pj.Account) -> int:
        return sum(1 for leg in self._calls.values() if leg.account is account)

    # ----- loop side: resolving awaitables ------------------------------------

    def _resolve_answered(self, key: CallKey) -> None:
        _set_result(self._answered.setdefault(key, self._loop.create_future()), None)

    def _resolve_ended(self, key: CallKey, ended: LegEnded) -> None:
        _set_result(self.ended(key), ended)
        self._answered.pop(key, None)
        self._transfers.pop(key, None)
        # Keep the ended future a moment for late awaiters, then drop it.
        self._loop.call_later(60, self._ended.pop, key, None)

    def _deliver_registration(self, report: RegistrationReport) -> None:
        self.on_registration(report)

    def _resolve_transfer(self, key: CallKey, status: TransferStatus) -> None:
        statuses = self._transfers.get(key)
        if statuses is not None:
            statuses.put_nowait(status)


def _read_invite(
    key: CallKey, raw: str, source: str, limits: SipLimits
) -> InboundInvite:
    request = parse_request(raw)
    host, port = split_host_port(source)
    content_length = request.content_length()
    return InboundInvite(
        key=key,
        call_id=request.header("call-id") or "",
        source_ip=host,
        source_port=port,
        transport=request.transport(),
        request_uri=request.request_uri,
        from_header=request.header("from") or "",
        to_header=request.header("to") or "",
        x_headers=request.x_headers(),
        content_length=content_length,
        body_bytes=len(request.body),
        message_bytes=request.size_bytes,
        cut=is_cut(request, limits.max_packet_bytes),
        max_forwards=request.max_forwards(),
    )


async def _first_of(answered: asyncio.Future, ended: asyncio.Future) -> None:
    """Wait for `answered`; raise CallGone if the leg ends first."""
    if not answered.done() and not ended.done():
        await asyncio.wait({answered, ended}, return_when=asyncio.FIRST_COMPLETED)
    if answered.done():
        return
    raise CallGone("the call ended before it was answered")


def _set_result(future: asyncio.Future, result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _set_exception(future: asyncio.Future, error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
