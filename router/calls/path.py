"""The inbound call path: one named step per function, read top to bottom.

`CallPath.handle()` runs the steps for one INVITE:

1. receive: count it, check the limits, the message size and
   Max-Forwards;
2. identify the trunk by the source address;
3. find the dialled number among the trunks' numbers;
4. check the number's status;
5. ring;
6. run the first ringing hook that matches the caller, if any;
7. take the static route, or
8. ask the operator's server with an assistant-request;
9. on a failure of 7 or 8: the first ending hook that lists the failure,
   else the fallback destination, else reject;
10. end: one summary log event, the call's metrics and its end-of-call
    report.

Every state change of the call also queues a status-update webhook (see
`router.calls.reports`). The pure decisions come from `router.routing` and
`router.calls.hooks`; SIP actions go to the engine, which owns pjsua2.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from router.calls.actions import ENDING_HOOK, RINGING_HOOK, CallActions
from router.calls.handoff import Connector, may_dial, redirect_response, release_leg
from router.calls.hooks import ending_action, ringing_action
from router.calls.record import CallRecord, CallState
from router.calls.reports import CallReports
from router.config import Config, PhoneNumber
from router.errors import (
    CallFailed,
    CallRejected,
    ConcurrencyLimitReached,
    Draining,
    MessageTooLarge,
    NoRouteOrServer,
    RouterError,
    RouterFault,
    ShutDown,
    TooManyHops,
    final_response,
    reason_header,
)
from router.logs import mask_number
from router.metrics import Metrics
from router.routing import ended_reasons
from router.routing.decision import Route, check_status, static_route, webhook_server
from router.routing.numbers import dialled_user, uri_host
from router.routing.replies import DestinationReply, ErrorReply, Reply, RouteReply
from router.routing.table import RoutingTable
from router.sip.engine import CallGone, InviteVerdict, SipEngine
from router.sip.messages import (
    InboundInvite,
    SipRequest,
    address_uri,
    display_name,
)
from router.speech import Speech
from router.webhooks.assistant_request import (
    AssistantRequestClient,
    AssistantRequestInput,
)

log = structlog.get_logger("router.calls")


@dataclass(frozen=True)
class Routing:
    """The configuration in force and the tables built from it."""

    config: Config
    table: RoutingTable


class CallPath:
    """Runs the call path for every INVITE that the engine receives."""

    def __init__(
        self,
        engine: SipEngine,
        routing: Callable[[], Routing],
        assistant_requests: AssistantRequestClient,
        metrics: Metrics,
        speech: Speech,
        reports: CallReports,
    ) -> None:
        self._engine = engine
        self._routing = routing
        self._assistant_requests = assistant_requests
        self._metrics = metrics
        self._connector = Connector(engine, metrics)
        self._actions = CallActions(engine, self._connector, speech)
        self._reports = reports
        self._tasks: set[asyncio.Task] = set()
        self.calls: dict[str, CallRecord] = {}
        self.draining = False
        # Calls that the router ended at shutdown, mapped to whether each was
        # answered then. Their steps may still finish before `_end`, which
        # then applies the shutdown verdict.
        self._shut_down: dict[str, bool] = {}
        self.on_ended: Callable[[CallRecord], None] = lambda call: None

    @property
    def active_calls(self) -> int:
        """Return the number of calls between INVITE and their end."""
        return len(self._tasks)

    def on_invite(self, invite: InboundInvite) -> None:
        """Start the call path for `invite`; called on the event loop."""
        task = asyncio.create_task(self.handle(invite))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait_idle(self, timeout_seconds: float) -> bool:
        """Wait until every call in progress has ended, at most a while.

        Returns whether no call is left.
        """
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_seconds)
        return not self._tasks

    async def shut_down_calls(self) -> int:
        """End every call in progress: 503 before an answer, BYE after one.

        Returns the number of calls ended. Their `call.ended` events carry
        `call.in-progress.error-router-shut-down`.
        """
        calls = list(self.calls.values())
        for call in calls:
            self._shut_down[call.id] = call.answered
        await asyncio.gather(
            *(self._hang_up_at_shutdown(call) for call in calls),
            return_exceptions=True,
        )
        return len(calls)

    async def _hang_up_at_shutdown(self, call: CallRecord) -> None:
        error = ShutDown("the drain time ran out")
        if not call.answered:
            await self._fail_well(call, error)
            return
        with contextlib.suppress(CallGone):
            await self._engine.hangup(call.invite.key, 0, [reason_header(error)])

    def classify(self, request: SipRequest, source_ip: str) -> InviteVerdict:
        """Decide what an INVITE needs before pjsua creates its media.

        Runs on the pjsua2 owner thread and only reads. A verdict of steps
        1 to 4 is sent at once, and so are the 180 and 302 of a static
        route in `redirect` mode (`_static_redirect`). A call that can only be
        redirected needs no RTP sockets. `handle()` later runs the same
        steps for the logs, metrics and webhooks and reaches the same
        verdict.
        """
        if self.draining:
            return InviteVerdict(media=False)
        if request.truncated:
            # Step 1 comes first: the 513 that handle() logs is also sent.
            too_large = MessageTooLarge("body shorter than its Content-Length")
            return InviteVerdict(media=False, final=final_response(too_large))
        if request.max_forwards() == 0:
            too_many_hops = TooManyHops("Max-Forwards is 0")
            return InviteVerdict(media=False, final=final_response(too_many_hops))
        routing = self._routing()
        try:
            trunks = routing.table.match_trunks(
                source_ip, uri_host(request.request_uri)
            )
            number = routing.table.find_number(
                trunks,
                dialled_user(request.request_uri),
                dialled_user(request.header("to") or ""),
            )
            check_status(number)
        except CallRejected as verdict:
            return InviteVerdict(media=False, final=final_response(verdict))
        redirect = self._static_redirect(routing.config, number)
        if redirect is not None:
            return redirect
        return InviteVerdict(media=_may_dial(routing.config, number))

    def _static_redirect(
        self, config: Config, number: PhoneNumber
    ) -> InviteVerdict | None:
        """Return the 302 verdict of a call that can only be redirected.

        That is a static route with `router.runtime.mode: redirect`, no hook
        and nothing that step 1 would reject. Any other call is left to
        `handle()`.
        """
        if config.router.runtime.mode != "redirect" or number.hooks:
            return None
        route = static_route(number)
        if route is None:
            return None
        # Step 1's limit, which `_check_admission` checks again. A cut INVITE
        # never gets here, because `classify` rejects it with 513 first.
        if len(self._tasks) >= config.router.max_concurrent_calls:
            return None
        call_id = str(uuid.uuid4())
        response = redirect_response(
            config.router.runtime.uri, call_id, number.id, route
        )
        return InviteVerdict(
            media=False, final=response, call_id=call_id, ring_first=True
        )

    # ----- the path -------------------------------------------------------------

    async def handle(self, invite: InboundInvite) -> None:
        """Run every step for one INVITE and always end the call."""
        routing = self._routing()
        call = self._receive(invite, routing.config)
        self._metrics.active_calls.inc()
        try:
            if invite.pre_rejected:
                # The engine sent the final response already, so no CANCEL
                # can race the steps, which only log, count and report.
                await self._run_steps(call, routing)
            else:
                await self._route_until_caller_leaves(call, routing)
        except RouterError as error:
            await self._fail_well(call, error)
        except Exception as error:  # noqa: BLE001 - a bug must not drop the call
            call.log.exception("call.router_fault")
            await self._fail_well(call, RouterFault(type(error).__name__))
        finally:
            self._metrics.active_calls.dec()
            self._end(call)

    async def _route_until_caller_leaves(
        self, call: CallRecord, routing: Routing
    ) -> None:
        """Run steps 1 to 9; a caller who hangs up first cancels them."""
        steps = asyncio.create_task(self._run_steps(call, routing))
        caller_left = self._engine.ended(call.invite.key)
        await asyncio.wait({steps, caller_left}, return_when=asyncio.FIRST_COMPLETED)
        # A final response of our own also ends the leg, maybe before the
        # step that sent it resumes; only the caller's CANCEL or BYE counts.
        caller_hung_up = caller_left.done() and not caller_left.result().hung_up_locally
        # A call rejected at shutdown stops its steps too, so it neither
        # dials the runtime nor waits for the server's reply.
        shut_down = call.id in self._shut_down
        if not steps.done() and not call.answered and (caller_hung_up or shut_down):
            steps.cancel()
            if caller_hung_up:
                call.ended_reason = ended_reasons.CALLER_HUNG_UP_BEFORE_CONNECT
                call.outcome = "failed"
                call.sip_status = 487
                call.log.info("call.caller_hung_up", state=call.state.value)
            await asyncio.gather(steps, return_exceptions=True)
            return
        await steps

    async def _run_steps(self, call: CallRecord, routing: Routing) -> None:
        self._check_admission(call)
        self._identify_trunk(call, routing)
        number = self._find_number(call, routing)
        self._check_status(call, number)
        if call.invite.pre_rejected == 302:
            await self._record_static_redirect(call, routing.config, number)
            return
        if call.invite.pre_rejected:
            # The engine rejected it from a config that a reload replaced.
            raise RouterFault("rejected before a config reload, routable after")
        self._reserve_leg(call, routing.config, number)
        await self._ring(call)
        if await self._run_ringing_hook(call, number):
            return
        try:
            await self._route(call, routing.config, number)
        except CallFailed as failure:
            await self._fall_back(call, number, failure)

    async def _record_static_redirect(
        self, call: CallRecord, config: Config, number: PhoneNumber
    ) -> None:
        """Record steps 5 and 7 of a call that the engine redirected at once.

        The 180 and the 302 are out already, so only the states, webhooks
        and metrics follow.
        """
        route = static_route(number)
        if route is None or config.router.runtime.mode != "redirect" or number.hooks:
            raise RouterFault("redirected before a config reload, routed after it")
        self._metrics.sip_invites_accepted.labels(transport=call.invite.transport).inc()
        call.set_state(CallState.RINGING)
        await self._hand_off(call, config, route)

    def _receive(self, invite: InboundInvite, config: Config) -> CallRecord:
        """Step 1: count the INVITE and open the call's record."""
        self._metrics.sip_invites_received.labels(transport=invite.transport).inc()
        self._metrics.set_call_slots(
            self._engine.slots_used, self._engine.limits.max_calls
        )
        bound = log.bind(
            sip_call_id=invite.call_id,
            src=f"{invite.source_ip}:{invite.source_port}",
        )
        call = CallRecord(invite=invite, log=bound, on_state=self._reports.on_state)
        if invite.router_call_id is not None:
            call.id = invite.router_call_id
        call.bind(call_id=call.id)
        call.caller_uri = address_uri(invite.from_header)
        call.caller_name = display_name(invite.from_header)
        call.caller_number = dialled_user(invite.from_header)
        call.dialled_number = dialled_user(invite.request_uri)
        self.calls[call.id] = call
        # Until the trunk is known the sender may be anyone, so nothing of
        # the call but its source and Call-ID is logged.
        call.log.debug("call.received", transport=invite.transport)
        return call

    def _check_admission(self, call: CallRecord) -> None:
        """Step 1: refuse what the router cannot take (503, 513 or 483)."""
        if self.draining:
            raise Draining()
        if call.invite.pre_rejected == ConcurrencyLimitReached.sip_status:
            raise ConcurrencyLimitReached("the INVITE took the last call slot")
        if call.invite.truncated:
            raise MessageTooLarge(
                f"body of {call.invite.body_bytes} bytes, "
                f"Content-Length {call.invite.content_length}"
            )
        if call.invite.max_forwards == 0:
            raise TooManyHops("Max-Forwards is 0")
        config = self._routing().config
        if self.active_calls > config.router.max_concurrent_calls:
            raise ConcurrencyLimitReached(
                f"maxConcurrentCalls {config.router.max_concurrent_calls} reached"
            )

    def _reserve_leg(
        self, call: CallRecord, config: Config, number: PhoneNumber
    ) -> None:
        """Step 4: keep a slot for the outbound leg the call may need.

        Only calls that passed steps 2 to 4 reserve one, so a full router
        still answers unknown sources and numbers with their own verdicts.
        """
        if not may_dial(config, number):
            return
        if not call.invite.has_media:
            raise ConcurrencyLimitReached("no socket was free for the call's media")
        if not self._engine.reserve_leg():
            raise ConcurrencyLimitReached(
                f"no call slot for an outbound leg: {self._engine.slots_used} "
                f"of {self._engine.limits.max_calls} in use"
            )
        call.leg_reserved = True

    def _identify_trunk(self, call: CallRecord, routing: Routing) -> None:
        """Step 2: the source address must belong to an inbound gateway."""
        host = uri_host(call.invite.request_uri)
        call.trunks = routing.table.match_trunks(call.invite.source_ip, host)
        call.masked_caller = mask_number(
            call.caller_number or "", routing.config.router.mask_caller_numbers
        )
        call.log.debug(
            "call.trunk_matched",
            trunks=[t.id for t in call.trunks],
            dialled=call.dialled_number,
            caller=call.masked_caller,
        )

    def _find_number(self, call: CallRecord, routing: Routing) -> PhoneNumber:
        """Step 3: the Request-URI user, else the To user, among the trunks."""
        ruri_user = dialled_user(call.invite.request_uri)
        to_user = dialled_user(call.invite.to_header)
        number = routing.table.find_number(call.trunks, ruri_user, to_user)
        call.number = number
        call.trunk = routing.config.trunk(number.credential_id)
        call.bind(number_id=number.id, trunk=number.credential_id)
        call.log.debug("call.number_found")
        return number

    def _check_status(self, call: CallRecord, number: PhoneNumber) -> None:
        """Step 4: blocked numbers get 403, activating ones 480."""
        check_status(number)

    async def _ring(self, call: CallRecord) -> None:
        """Step 5: send 180 Ringing and the `ringing` status-update."""
        transport = call.invite.transport
        self._metrics.sip_invites_accepted.labels(transport=transport).inc()
        await self._engine.ring(call.invite.key)
        call.set_state(CallState.RINGING)

    async def _run_ringing_hook(self, call: CallRecord, number: PhoneNumber) -> bool:
        """Step 6: run the first ringing hook that matches; return if one did."""
        action = ringing_action(number, call.caller_number)
        if action is None:
            return False
        call.log.info("call.ringing_hook", action=action.type)
        await self._actions.run_hook(call, number, action, RINGING_HOOK, "rejected")
        return True

    async def _route(
        self, call: CallRecord, config: Config, number: PhoneNumber
    ) -> None:
        """Steps 7 and 8: the static route, else ask the server."""
        route = static_route(number)
        if route is None:
            reply = await self._ask_server(call, config, number)
            if isinstance(reply, DestinationReply):
                await self._actions.transfer(
                    call, reply.destination, reply.ended_reason
                )
                return
            if isinstance(reply, ErrorReply):
                await self._say_error(call, number, reply)
                return
            route = reply.route
        await self._hand_off(call, config, route)

    async def _ask_server(
        self, call: CallRecord, config: Config, number: PhoneNumber
    ) -> Reply:
        """Step 8: POST the assistant-request to the number's or org's server."""
        server = webhook_server(number, config)
        if server is None:
            raise NoRouteOrServer("no assistant, squad, workflow or server set")
        call.set_state(CallState.ROUTING)
        request = AssistantRequestInput(
            call_id=call.id,
            sip_call_id=call.invite.call_id,
            phone_number=number,
            created_at=call.created_at,
            caller_number=call.caller_number,
            caller_name=call.caller_name,
            caller_sip_uri=call.caller_uri,
            sip_headers=call.invite.x_headers,
        )
        reply = await self._assistant_requests.request(request, server, config)
        call.log.debug("call.assistant_request_replied", reply=_reply_kind(reply))
        return reply

    async def _hand_off(self, call: CallRecord, config: Config, route: Route) -> None:
        """Step 7: connect the caller to the runtime by `router.runtime.mode`."""
        call.route = route
        self._reports.choose_assistant_server(call)
        call.outcome = route.kind
        call.bind(route=route.kind)
        call.set_state(CallState.CONNECTING, route_id=route.header_value)
        ended_reason = await self._connector.hand_off(
            call, config.router.runtime, route
        )
        call.ended_reason = ended_reason

    async def _say_error(
        self, call: CallRecord, number: PhoneNumber, reply: ErrorReply
    ) -> None:
        """Step 8: speak the server's `error` text, then hang up.

        An ending hook that lists `assistant-request-returned-error` runs
        instead. The fallback destination does not, because the text is the
        server's own answer, not a failure.
        """
        if await self._run_ending_hook(call, number, reply.ended_reason):
            return
        await self._actions.say(call, reply.text, reply.ended_reason, "failed")

    # ----- step 9: fail well -----------------------------------------------------

    async def _fall_back(
        self, call: CallRecord, number: PhoneNumber, failure: CallFailed
    ) -> None:
        """Step 9: an ending hook, else the fallback, else the failure goes up.

        A call sent to the fallback destination keeps the failure's
        endedReason.
        """
        destination = number.fallback_destination
        call.log.warning(
            "call.route_failed",
            ended_reason=failure.ended_reason,
            detail=failure.detail,
            fallback=destination is not None,
        )
        if call.answered and not self._can_transfer(call):
            raise failure
        if await self._run_ending_hook(call, number, failure.ended_reason):
            return
        if destination is None:
            raise failure
        await self._actions.transfer(call, destination, failure.ended_reason)

    async def _run_ending_hook(
        self, call: CallRecord, number: PhoneNumber, ended_reason: str
    ) -> bool:
        """Step 9: run the first ending hook that lists `ended_reason`."""
        action = ending_action(number, ended_reason)
        if action is None:
            return False
        call.log.info("call.ending_hook", action=action.type, failure=ended_reason)
        await self._actions.run_hook(call, number, action, ENDING_HOOK, "failed")
        return True

    def _can_transfer(self, call: CallRecord) -> bool:
        return not self._engine.ended(call.invite.key).done()

    async def _fail_well(self, call: CallRecord, error: RouterError) -> None:
        """Reject before an answer, or send BYE with a Reason after one."""
        call.mark_decided()
        call.outcome = error.outcome
        call.ended_reason = error.ended_reason
        call.sip_status = error.sip_status
        if call.state is CallState.RECEIVED:
            # Steps 1 to 4 failed, so the INVITE is rejected before it rang.
            status = str(error.sip_status)
            self._metrics.sip_invites_rejected.labels(status=status).inc()
        key = call.invite.key
        if call.invite.pre_rejected:
            return
        try:
            if call.answered:
                await self._engine.hangup(key, 0, [reason_header(error)])
            else:
                response = final_response(error)
                await self._engine.reject(
                    key, response.status, response.reason_phrase, response.headers
                )
        except CallGone:
            call.log.info("call.gone_before_reject", status=error.sip_status)

    # ----- step 10: end ------------------------------------------------------------

    def _end(self, call: CallRecord) -> None:
        """Step 10: the summary event, metrics and reports of the ended call."""
        release_leg(self._engine, call)
        self._apply_shutdown_verdict(call)
        call.outcome = call.outcome or "failed"
        call.ended_reason = call.ended_reason or ended_reasons.ROUTER_FAULT
        call.ended_at = datetime.now(UTC)
        call.set_state(CallState.ENDED)
        self.calls.pop(call.id, None)
        self._metrics.set_call_slots(
            self._engine.slots_used, self._engine.limits.max_calls
        )
        self._reports.on_ended(call)
        self.on_ended(call)

    def _apply_shutdown_verdict(self, call: CallRecord) -> None:
        answered = self._shut_down.pop(call.id, None)
        if answered is None:
            return
        call.ended_reason = ShutDown.ended_reason
        if not answered:
            call.outcome = ShutDown.outcome
            call.sip_status = ShutDown.sip_status


def _reply_kind(reply: Reply) -> str:
    if isinstance(reply, RouteReply):
        return reply.route.kind
    if isinstance(reply, DestinationReply):
        return "destination"
    return "error"


def _may_dial(config: Config, number: PhoneNumber) -> bool:
    """Return whether the call may place an outbound leg (bridge or dial).

    Only a runtime in `redirect` mode with no fallback, or a fallback that
    redirects, is sure to need none. A transfer destination that a server
    sends may still dial; the engine refuses the leg if no slot is free.
    """
    if config.router.runtime.mode != "redirect" or number.hooks:
        # A hook may speak to the caller, which needs media too.
        return True
    fallback = number.fallback_destination
    return fallback is not None and fallback.transfer_plan.sip_verb != "redirect"
