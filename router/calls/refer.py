"""The outcome of a blind transfer by REFER (RFC 3515), from its statuses.

pjsua2 reports the REFER's own final response and then each NOTIFY's
sipfrag as one status stream. A 202 Accepted arrives as status 100 with
reason "Accepted" (measured with pjsua2-python 2.15.1.post1), so any status
below 200 means the trunk took the REFER and a later failure came in a
NOTIFY.
"""

from __future__ import annotations

import asyncio
import enum

from router.calls.record import CallRecord
from router.sip.legs import TransferStatus

# How long a REFER may take to reach a final NOTIFY.
REFER_TIMEOUT_SECONDS = 10.0


class ReferResult(enum.Enum):
    """The end of a REFER. Each value is a `result` label of the metric."""

    TRANSFERRED = "transferred"
    REJECTED = "rejected"
    NOTIFY_FAILED = "notify_failed"
    TIMED_OUT = "timed_out"


async def wait_for_refer_result(
    call: CallRecord, statuses: asyncio.Queue[TransferStatus]
) -> ReferResult:
    """Wait for the REFER's final status and log the result once.

    A final response of 300 or more to the REFER is `REJECTED`, a NOTIFY
    whose sipfrag is 300 or more (or a final NOTIFY that is not 2xx) is
    `NOTIFY_FAILED`, and no final status within REFER_TIMEOUT_SECONDS is
    `TIMED_OUT`.
    """
    accepted = False
    try:
        async with asyncio.timeout(REFER_TIMEOUT_SECONDS):
            while True:
                status = await statuses.get()
                if status.status_code < 200:
                    accepted = True
                if status.status_code >= 300 or status.final:
                    break
    except TimeoutError:
        # NOTE: the REFER's subscription is left to run out, so a trunk that
        # still carries out the transfer would take the caller off the
        # bridge. No test covers that case.
        call.log.warning(
            "call.refer_timed_out",
            accepted=accepted,
            timeout_seconds=REFER_TIMEOUT_SECONDS,
        )
        return ReferResult.TIMED_OUT

    if 200 <= status.status_code < 300:
        call.log.debug("call.referred", status=status.status_code)
        return ReferResult.TRANSFERRED
    result = ReferResult.NOTIFY_FAILED if accepted else ReferResult.REJECTED
    call.log.warning(
        "call.refer_failed",
        status=status.status_code,
        reason=status.reason,
        result=result.value,
    )
    return result
