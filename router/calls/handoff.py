"""Connecting a call: hand-off to the runtime and transfers to destinations.

Three SIP verbs move a call on, for the runtime (`router.runtime.mode`) and
for transfer destinations (`transferPlan.sipVerb`) alike:
- `bridge` / `dial`: a new INVITE to the target; the caller is answered when
  the target answers, media is relayed, and both legs end together;
- `refer`: answer, then a blind transfer with REFER; a REFER that the
  trunk rejects, fails in a NOTIFY or leaves unanswered falls back to
  `dial`;
- `redirect`: 302 with the target as Contact, before answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from router.calls.record import CallRecord, CallState
from router.calls.refer import ReferResult, wait_for_refer_result
from router.config import (
    Config,
    NumberDestination,
    PhoneNumber,
    SipDestination,
    SipTrunkCredential,
)
from router.errors import (
    AckTimedOut,
    FinalResponse,
    NoSdpAnswer,
    RuntimeRejected,
    RuntimeUnreachable,
    TransferFailed,
)
from router.metrics import Metrics
from router.routing import ended_reasons
from router.routing.decision import Route
from router.sip.engine import CallGone, DialFailed, LegEnded, NoCallSlot, SipEngine
from router.sip.offers import NO_SDP_ANSWER

# How long the runtime or a dialled destination may take to answer. The
# caller has heard 180 Ringing, so the carrier's Timer C (3 minutes,
# RFC 3261 section 16.6) is far away.
ANSWER_TIMEOUT_SECONDS = 15.0

# endedReason of a call that left the router by REFER or 302 to the runtime:
# from then on the runtime, not the router, sees how the call ends.
HANDED_OFF = "call.handoff.transferred-to-runtime"


class Connector:
    """Moves a call to the runtime or a destination by one SIP verb."""

    def __init__(self, engine: SipEngine, metrics: Metrics) -> None:
        self._engine = engine
        self._metrics = metrics

    async def hand_off(self, call: CallRecord, runtime: Any, route: Route) -> str:
        """Hand the call to the runtime; return the call's endedReason."""
        number_id = call.number.id if call.number else ""
        headers = _runtime_headers(call.id, number_id, route)
        if runtime.mode == "redirect":
            await self._redirect(call, _uri_with_headers(runtime.uri, headers))
            return HANDED_OFF
        if runtime.mode == "refer":
            refer_to = _uri_with_headers(runtime.uri, headers)
            if await self._refer(call, refer_to, []) is ReferResult.TRANSFERRED:
                return HANDED_OFF
        ended = await self._bridge(call, runtime.uri, headers)
        if ended.by_shutdown:
            return ended_reasons.ROUTER_SHUT_DOWN
        if ended.hung_up_locally:
            return ended_reasons.ASSISTANT_ENDED_CALL
        return ended_reasons.CUSTOMER_ENDED_CALL

    async def transfer(self, call: CallRecord, destination: Any) -> None:
        """Transfer the call to a fallback or server-given destination.

        Raises TransferFailed, carrying the call's own endedReason, when
        the destination cannot be reached by any verb.
        """
        target, headers = destination_target(destination, call.trunk)
        verb = destination.transfer_plan.sip_verb
        try:
            if verb == "redirect" and not call.answered:
                await self._redirect(call, target)
                self._count_transfer("redirect", "redirected")
                return
            if verb in ("refer", "redirect"):
                result = await self._refer(call, f"<{target}>", headers)
                self._count_transfer("refer", result.value)
                if result is ReferResult.TRANSFERRED:
                    return
            await self._bridge(call, target, headers, count_as_transfer=True)
        except (RuntimeRejected, RuntimeUnreachable) as error:
            self._count_transfer("dial", "failed")
            call.log.warning("call.transfer_dial_failed", detail=error.detail)
            failure = TransferFailed(f"transfer by {verb} failed: {error.detail}")
            failure.ended_reason = call.ended_reason or failure.ended_reason
            raise failure from error

    async def _redirect(self, call: CallRecord, contact: str) -> None:
        call.mark_decided()
        call.sip_status = 302
        if call.invite.pre_rejected == 302:
            # The engine sent this 302 when the INVITE came in.
            return
        await self._engine.redirect(call.invite.key, contact)

    async def _refer(
        self, call: CallRecord, refer_to: str, headers: list[tuple[str, str]]
    ) -> ReferResult:
        """Answer and REFER; hang up once the trunk reports the transfer done."""
        key = call.invite.key
        await self.answer(call)
        statuses = await self._engine.refer(key, refer_to, headers)
        result = await wait_for_refer_result(call, statuses)
        if result is ReferResult.TRANSFERRED:
            with contextlib.suppress(CallGone):
                await self._engine.hangup(key)
        return result

    async def _bridge(
        self,
        call: CallRecord,
        target: str,
        headers: list[tuple[str, str]],
        count_as_transfer: bool = False,
    ) -> LegEnded:
        """Dial `target`, answer the caller when it answers, wait for the end."""
        leg = await self._dial(call, target, headers)
        if count_as_transfer:
            self._count_transfer("dial", "bridged")
        await self.answer(call)
        call.set_state(CallState.IN_PROGRESS)
        call.log.debug("call.bridged", leg_slot=leg.slot)
        return await self._engine.ended(call.invite.key)

    async def _dial(
        self, call: CallRecord, target: str, headers: list[tuple[str, str]]
    ) -> Any:
        try:
            leg = await self._engine.dial(
                target, headers, peer=call.invite.key, reserved=call.leg_reserved
            )
        except NoCallSlot as error:
            raise RuntimeRejected(503, str(error)) from error
        except DialFailed as error:
            raise RuntimeRejected(error.status_code, str(error)) from error
        finally:
            # From here on the leg, if any, counts in the engine's used slots.
            release_leg(self._engine, call)
        try:
            async with asyncio.timeout(ANSWER_TIMEOUT_SECONDS):
                await self._engine.wait_answered(leg)
        except CallGone:
            ended = self._engine.ended(leg).result()
            raise RuntimeRejected(ended.status_code) from None
        except TimeoutError:
            await self._hang_up_leg(leg)
            raise RuntimeUnreachable(
                f"no answer in {ANSWER_TIMEOUT_SECONDS:g} s"
            ) from None
        except asyncio.CancelledError:
            await self._hang_up_leg(leg)
            raise
        return leg

    def _count_transfer(self, verb: str, result: str) -> None:
        self._metrics.transfers.labels(verb=verb, result=result).inc()

    async def _hang_up_leg(self, leg: Any) -> None:
        with contextlib.suppress(CallGone):
            await asyncio.shield(self._engine.hangup(leg))

    async def answer(self, call: CallRecord) -> None:
        """Answer the caller with 200 OK, once; wait for the ACK."""
        if call.answered:
            return
        call.answered = True
        call.mark_decided()
        call.sip_status = 200
        try:
            await self._engine.answer(call.invite.key)
        except CallGone:
            error = _unconfirmed_answer(self._engine.ended(call.invite.key))
            if error is None:
                raise
            raise error from None
        call.answered_monotonic = time.monotonic()
        call.answered_at = datetime.now(UTC)


def _unconfirmed_answer(ended: Any) -> AckTimedOut | NoSdpAnswer | None:
    """Return why a 200 OK that no ACK confirmed ended the call, if known.

    The caller cannot end the call between the 200 and its ACK, so a leg
    that ends there without the router hanging up timed out waiting for the
    ACK (pjsua retransmits the 200 for 64*T1 and then sends BYE).
    """
    if not ended.done():
        return None
    result: LegEnded = ended.result()
    if result.cause == NO_SDP_ANSWER:
        return NoSdpAnswer("the ACK of a late offer carried no SDP answer")
    if not (result.hung_up_locally or result.by_shutdown):
        return AckTimedOut(f"no ACK; the leg ended with {result.status_code}")
    return None


def release_leg(engine: SipEngine, call: CallRecord) -> None:
    """Give back the call's reserved leg slot, if it still has one."""
    if call.leg_reserved:
        call.leg_reserved = False
        engine.release_leg()


def may_dial(config: Config, number: PhoneNumber) -> bool:
    """Return whether the call may place an outbound leg (bridge or dial).

    Only a runtime in `redirect` mode, with a fallback and hook destinations
    that all redirect without a message, is sure to need none. A message is
    spoken after an answer, and a REFER that fails then falls back to dial.
    A transfer destination that a server sends may still dial; the engine
    refuses the leg if no slot is free.
    """
    if config.router.runtime.mode != "redirect":
        return True
    destinations = [number.fallback_destination]
    for hook in number.hooks:
        actions = hook.do if isinstance(hook.do, list) else [hook.do]
        destinations += [getattr(action, "destination", None) for action in actions]
    return any(
        destination.transfer_plan.sip_verb != "redirect" or destination.message
        for destination in destinations
        if destination is not None
    )


def redirect_response(
    runtime_uri: str, call_id: str, number_id: str, route: Route
) -> FinalResponse:
    """Build the 302 that hands a call on a static route to the runtime."""
    headers = _runtime_headers(call_id, number_id, route)
    contact = _uri_with_headers(runtime_uri, headers)
    return FinalResponse(302, "Moved Temporarily", [("Contact", f"<{contact}>")])


def _runtime_headers(
    call_id: str, number_id: str, route: Route
) -> list[tuple[str, str]]:
    return [
        ("X-Cozmox-Call-Id", call_id),
        ("X-Cozmox-Phone-Number-Id", number_id),
        (route.header_name, route.header_value),
    ]


def _uri_with_headers(uri: str, headers: list[tuple[str, str]]) -> str:
    """Append headers to a SIP URI (RFC 3261 section 19.1.1): `?a=1&b=2`."""
    joined = "&".join(f"{name}={quote(value, safe='')}" for name, value in headers)
    separator = "&" if "?" in uri else "?"
    return f"{uri}{separator}{joined}" if joined else uri


def destination_target(
    destination: Any, trunk: SipTrunkCredential | None
) -> tuple[str, list[tuple[str, str]]]:
    """Return the SIP URI and extra headers that reach `destination`."""
    if isinstance(destination, SipDestination):
        headers = list((destination.sip_headers or {}).items())
        return destination.sip_uri, headers
    if isinstance(destination, NumberDestination):
        return _number_target(destination, trunk)
    raise TypeError(f"unknown destination type {type(destination).__name__}")


def _number_target(
    destination: NumberDestination, trunk: SipTrunkCredential | None
) -> tuple[str, list[tuple[str, str]]]:
    if trunk is None:
        raise TransferFailed("a number destination needs the call's trunk")
    gateways = [g for g in trunk.gateways if g.outbound_enabled]
    if not gateways:
        raise TransferFailed(f"trunk {trunk.id!r} has no outbound gateway")
    gateway = gateways[0]
    digits = destination.number.lstrip("+")
    if trunk.outbound_leading_plus_enabled:
        digits = "+" + digits
    user = (trunk.tech_prefix or "") + digits
    # NOTE: `extension` and `callerId` are not applied yet: the outbound
    # leg uses the router's own From, and no DTMF is sent after answer.
    parameters = ";transport=tcp" if gateway.outbound_protocol == "tcp" else ""
    uri = f"sip:{user}@{gateway.ip}:{gateway.port}{parameters}"
    headers = []
    if trunk.sip_diversion_header:
        headers.append(("Diversion", trunk.sip_diversion_header))
    return uri, headers
