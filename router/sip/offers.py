"""Offer/answer checks on inbound calls, made on the pjsua2 owner thread.

An INVITE without SDP is a late offer: pjsua puts its own offer in the 200
OK, and RFC 3261 section 13.2.1 requires the caller's answer in the ACK.
pjsua confirms the call on an ACK without one and leaves it without media,
so the engine ends such a call itself with a BYE.
"""

from __future__ import annotations

from collections.abc import Callable

from router.sip.callbacks import active_audio, call_op
from router.sip.legs import Leg
from router.sip.messages import CallKey

# `LegEnded.cause` of a late-offer call whose ACK carried no SDP answer.
NO_SDP_ANSWER = "no-sdp-answer"
_REASON = ("Reason", 'SIP;cause=488;text="no SDP answer in the ACK"')


def confirm_late_offer(
    calls: dict[int, Leg], key: CallKey, confirm: Callable[[Leg], None]
) -> None:
    """Confirm a late-offer call that has audio; send BYE to one without.

    Runs after the ACK's callbacks. The leg is looked up again by `key`,
    because it may have ended in the meantime. A leg without audio is
    ended with a Reason header and `LegEnded.cause` NO_SDP_ANSWER.
    """
    leg = calls.get(key.slot)
    if leg is None or leg.key != key or leg.hanging_up:
        return
    if active_audio(leg.call) is not None:
        confirm(leg)
        return
    leg.hanging_up = True
    leg.end_cause = NO_SDP_ANSWER
    leg.call.hangup(call_op(0, None, [_REASON]))
