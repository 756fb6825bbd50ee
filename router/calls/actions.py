"""Hook actions and spoken prompts: `say`, `transfer` and their variants.

`say` answers, speaks the text and hangs up. When the text cannot be
spoken (no espeak-ng, a failed rendering or playback) it is sent instead in
the Reason header of a 480 before an answer, or of the BYE after one.
`transfer` speaks the destination's `message` first, when the call can be
answered for it, then moves the call by the destination's SIP verb.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from router.calls.handoff import Connector
from router.calls.record import CallRecord, CallState
from router.config import Action, Destination, PhoneNumber, SayAction
from router.errors import Outcome, RouterFault, quoted_string_content
from router.routing import ended_reasons
from router.sip.engine import CallGone, PlaybackFailed, SipEngine
from router.speech import Speech

# Characters of a text kept in a Reason header: the router's own SIP
# messages stay small, well below a UDP datagram.
REASON_TEXT_MAX_CHARS = 200


@dataclass(frozen=True)
class HookReasons:
    """The endedReason values of the calls that one kind of hook ends."""

    say: str
    transfer: str


RINGING_HOOK = HookReasons(
    ended_reasons.RINGING_HOOK_EXECUTED_SAY,
    ended_reasons.RINGING_HOOK_EXECUTED_TRANSFER,
)
ENDING_HOOK = HookReasons(
    ended_reasons.ENDING_HOOK_EXECUTED_SAY,
    ended_reasons.ENDING_HOOK_EXECUTED_TRANSFER,
)


class CallActions:
    """The actions of hooks, and the prompts spoken to callers."""

    def __init__(self, engine: SipEngine, connector: Connector, speech: Speech):
        self._engine = engine
        self._connector = connector
        self._speech = speech

    async def run_hook(
        self,
        call: CallRecord,
        number: PhoneNumber,
        action: Action,
        reasons: HookReasons,
        outcome: Outcome,
    ) -> None:
        """Run a hook's `say` or `transfer` action.

        A transfer without a destination goes to the number's
        `fallbackDestination`; the config loader requires one of them.
        """
        if isinstance(action, SayAction):
            await self.say(call, action.exact, reasons.say, outcome)
            return
        destination = action.destination or number.fallback_destination
        if destination is None:
            raise RouterFault("transfer action without a destination or fallback")
        await self.transfer(call, destination, reasons.transfer)

    async def say(
        self, call: CallRecord, text: str, ended_reason: str, outcome: Outcome
    ) -> None:
        """Speak `text` to the caller, then hang up."""
        call.outcome = outcome
        call.ended_reason = ended_reason
        if await self.speak(call, text, in_progress=True):
            reason = reason_header(200, ended_reason)
            with contextlib.suppress(CallGone):
                await self._engine.hangup(call.invite.key, 0, [reason])
            return
        await self._end_with_text(call, text)

    async def transfer(
        self, call: CallRecord, destination: Destination, ended_reason: str
    ) -> None:
        """Send the call to `destination`; the call ends with `ended_reason`."""
        call.outcome = "transferred"
        call.ended_reason = ended_reason
        call.destination = destination.model_dump(by_alias=True, exclude_none=True)
        verb = destination.transfer_plan.sip_verb
        call.set_state(CallState.FORWARDING, verb=verb)
        if destination.message:
            await self._speak_message(call, destination.message, verb)
            if self._engine.ended(call.invite.key).done():
                call.log.info("call.caller_left_during_message")
                return
        await self._connector.transfer(call, destination)

    async def speak(self, call: CallRecord, text: str, *, in_progress: bool) -> bool:
        """Answer the caller and play `text`; return whether it was spoken.

        With `in_progress` the call moves to the in-progress state once
        answered. Returns early when the caller hangs up while it plays.
        """
        prompt = await self._speech.render(text)
        if prompt is None:
            return False
        try:
            await self._connector.answer(call)
            if in_progress:
                call.set_state(CallState.IN_PROGRESS)
            await self._engine.play(call.invite.key, str(prompt))
        except PlaybackFailed as error:
            call.log.error("call.playback_failed", error=str(error))
            return False
        except CallGone:
            # The caller hung up: there is nothing left to say or send.
            call.log.info("call.caller_left_during_prompt")
            return True
        call.log.info("call.spoken", characters=len(text))
        return True

    async def _speak_message(self, call: CallRecord, message: str, verb: str) -> None:
        # A 302 goes out before any answer, and audio needs an answered
        # call, so a redirect cannot carry a spoken message.
        if verb == "redirect" and not call.answered:
            call.log.info("call.message_not_spoken", verb=verb)
            return
        if not await self.speak(call, message, in_progress=False):
            call.log.info("call.message_not_spoken", speech=self._speech.available)

    async def _end_with_text(self, call: CallRecord, text: str) -> None:
        """Hang up with `text` in the Reason header: 480, or BYE if answered."""
        reason = reason_header(480, text)
        key = call.invite.key
        call.mark_decided()
        try:
            if call.answered:
                await self._engine.hangup(key, 0, [reason])
            else:
                call.sip_status = 480
                await self._engine.reject(key, 480, None, [reason])
        except CallGone:
            call.log.info("call.gone_before_reject", status=480)


def reason_header(cause: int, text: str) -> tuple[str, str]:
    """Build `Reason: SIP;cause=<cause>;text="<text>"` (RFC 3326).

    The text is cut to REASON_TEXT_MAX_CHARS characters, then escaped as
    `quoted_string_content()` does.
    """
    quoted = quoted_string_content(text[:REASON_TEXT_MAX_CHARS])
    return ("Reason", f'SIP;cause={cause};text="{quoted}"')
