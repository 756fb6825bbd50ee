"""The exceptions that end a call, each carrying its own SIP verdict.

`RouterError` is the root. Each subclass states the final response status, the
`endedReason`, the metrics outcome, the Retry-After delay, whether the router
itself failed and whether placing the call again later can help.
`final_response()` turns any of them into the status line and headers.

`CallRejected` covers the verdicts reached before any route is tried: the
router's limits, the source address, the dialled number and its status.
`CallFailed` covers failures once the number has passed: no route, a failed
assistant-request, a failed hand-off or transfer, and the router's own faults.
The call path may still rescue a `CallFailed` with a `call.ending` hook or the
number's fallback destination.
"""

from dataclasses import dataclass, field
from typing import Literal

from router.routing import ended_reasons

# The `outcome` label of `cozmox_router_calls_total`.
Outcome = Literal["assistant", "squad", "workflow", "transferred", "rejected", "failed"]

# Client and global failures that a later attempt may not meet again:
# Request Timeout, Temporarily Unavailable, Busy Here and Busy Everywhere.
# Every 5xx server error counts as transient too.
_TRANSIENT_STATUSES = frozenset({408, 480, 486, 600})


class RouterError(Exception):
    """Root of every verdict that ends a call without handing it off.

    The class attributes state the verdict. A bare `RouterError` is a fault
    of the router: 500 with `call.start.error-router-fault`.

    `detail` is for logs and the admin API only and never reaches the caller.
    It must not contain a secret or a full caller number.
    """

    sip_status: int = 500
    reason_phrase: str = "Server Internal Error"
    ended_reason: str = ended_reasons.ROUTER_FAULT
    outcome: Outcome = "failed"
    retry_after_seconds: int | None = None
    fault: bool = True
    retryable: bool = False
    # False for verdicts sent before the trunk is identified. The source may
    # be anyone then, so the response carries no Reason header and says no
    # more than its status code.
    reveals_reason: bool = True

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.ended_reason)
        self.detail = detail


class CallRejected(RouterError):
    """A verdict reached before any route is tried; metrics count it rejected."""

    outcome: Outcome = "rejected"
    fault = False


class CallFailed(RouterError):
    """A failure after the number and its status passed; counted as failed."""

    sip_status = 480
    reason_phrase = "Temporarily Unavailable"
    outcome: Outcome = "failed"
    fault = False


class ConcurrencyLimitReached(CallRejected):
    """The router already carries its maximum number of calls."""

    sip_status = 503
    reason_phrase = "Service Unavailable"
    ended_reason = ended_reasons.CONCURRENCY_LIMIT
    retry_after_seconds = 5
    retryable = True
    reveals_reason = False


class Draining(CallRejected):
    """The router is shutting down and takes no new calls."""

    sip_status = 503
    reason_phrase = "Service Unavailable"
    ended_reason = ended_reasons.DRAINING
    retry_after_seconds = 30
    retryable = True
    reveals_reason = False


class ShutDown(CallRejected):
    """The drain time ran out while the call was still in progress.

    Before an answer the caller gets 503 with Retry-After, so the carrier
    can try another router. After one, it gets a BYE with this Reason.
    """

    sip_status = 503
    reason_phrase = "Service Unavailable"
    ended_reason = ended_reasons.ROUTER_SHUT_DOWN
    retry_after_seconds = 30
    retryable = True


class MessageTooLarge(CallRejected):
    """The INVITE body is shorter than its Content-Length.

    The SIP stack's packet buffer cut the datagram, so the INVITE is never
    routed on what survived.
    """

    sip_status = 513
    reason_phrase = "Message Too Large"
    ended_reason = ended_reasons.MESSAGE_TOO_LARGE
    reveals_reason = False


class TooManyHops(CallRejected):
    """The INVITE arrived with `Max-Forwards: 0`.

    RFC 3261 section 16.3 forbids forwarding such a request, and every
    route passes the call on (bridge, REFER or 302), so it is rejected
    before any route is chosen.
    """

    sip_status = 483
    reason_phrase = "Too Many Hops"
    ended_reason = ended_reasons.TOO_MANY_HOPS
    reveals_reason = False


class SourceNotAllowed(CallRejected):
    """The source address matches no inbound gateway of the selected trunks."""

    sip_status = 403
    reason_phrase = "Forbidden"
    ended_reason = ended_reasons.SOURCE_NOT_ALLOWED
    reveals_reason = False


class NumberNotFound(CallRejected):
    """No number of the matched trunks matches the dialled number."""

    sip_status = 404
    reason_phrase = "Not Found"
    ended_reason = ended_reasons.GET_PHONE_NUMBER


class NumberBlocked(CallRejected):
    """The dialled number has `status: blocked`."""

    sip_status = 403
    reason_phrase = "Forbidden"
    ended_reason = ended_reasons.PHONE_NUMBER_BLOCKED


class NumberActivating(CallRejected):
    """The dialled number has `status: activating` and takes no calls yet."""

    sip_status = 480
    reason_phrase = "Temporarily Unavailable"
    ended_reason = ended_reasons.PHONE_NUMBER_ACTIVATING
    retry_after_seconds = 300
    retryable = True


class NoRouteOrServer(CallFailed):
    """The number has no static route and no server to ask for one."""

    ended_reason = ended_reasons.NEITHER_ASSISTANT_NOR_SERVER


class AssistantRequestFailed(CallFailed):
    """The assistant-request produced no usable route.

    `ended_reason` is set per instance to the row of the reply table that
    applied. Only `assistant-request-failed` (a transport error, a timeout, a
    non-2xx status or a body that is not a JSON object) counts as retryable,
    because the other rows are the server's own reply.
    """

    def __init__(self, ended_reason: str, detail: str = "") -> None:
        if ended_reason not in ended_reasons.ASSISTANT_REQUEST_REASONS:
            raise ValueError(
                f"invalid assistant-request endedReason {ended_reason!r}: "
                "expected one of the assistant-request-* reasons"
            )
        self.ended_reason = ended_reason
        self.retryable = ended_reason == ended_reasons.ASSISTANT_REQUEST_FAILED
        super().__init__(detail)


class RuntimeRejected(CallFailed):
    """The assistant runtime rejected the hand-off with a final non-2xx status.

    The caller gets 480 whatever the runtime sent. `runtime_status` keeps the
    runtime's status for logs.
    """

    ended_reason = ended_reasons.RUNTIME_REJECTED

    def __init__(self, status: int, detail: str = "") -> None:
        self.runtime_status = status
        self.retryable = status in _TRANSIENT_STATUSES or 500 <= status <= 599
        super().__init__(detail or f"runtime answered {status}")


class RuntimeUnreachable(CallFailed):
    """The assistant runtime sent no final response to the hand-off in time."""

    ended_reason = ended_reasons.RUNTIME_UNREACHABLE
    retryable = True


class TransferFailed(CallFailed):
    """A transfer to a destination failed (REFER, dial or redirect)."""

    ended_reason = ended_reasons.TRANSFER_FAILED
    retryable = True


class AckTimedOut(CallFailed):
    """The caller never sent the ACK for the 200 OK, so pjsua ended the call."""

    sip_status = 408
    reason_phrase = "Request Timeout"
    ended_reason = ended_reasons.ACK_TIMEOUT


class NoSdpAnswer(CallFailed):
    """A late offer's ACK carried no SDP answer, so the router sent BYE."""

    sip_status = 488
    reason_phrase = "Not Acceptable Here"
    ended_reason = ended_reasons.NO_SDP_ANSWER


class RouterFault(CallFailed):
    """The router itself failed: a bug or a broken dependency.

    The caller gets 500 instead of 480, so the carrier can tell the router's
    faults from the assistant side's.
    """

    sip_status = 500
    reason_phrase = "Server Internal Error"
    ended_reason = ended_reasons.ROUTER_FAULT
    fault = True


@dataclass(frozen=True)
class FinalResponse:
    """A final SIP response to an INVITE: status line and extra headers."""

    status: int
    reason_phrase: str
    headers: list[tuple[str, str]] = field(default_factory=list)


def final_response(error: RouterError) -> FinalResponse:
    """Build the final response that rejects the INVITE with `error`."""
    headers: list[tuple[str, str]] = []
    if error.reveals_reason:
        headers.append(reason_header(error))
    if error.retry_after_seconds is not None:
        headers.append(("Retry-After", str(error.retry_after_seconds)))

    return FinalResponse(error.sip_status, error.reason_phrase, headers)


def reason_header(error: RouterError) -> tuple[str, str]:
    """Build the RFC 3326 Reason header for a final response or a BYE.

    The cause is the SIP status and the text is the `endedReason`.
    """
    text = quoted_string_content(error.ended_reason)
    return ("Reason", f'SIP;cause={error.sip_status};text="{text}"')


def quoted_string_content(text: str) -> str:
    r"""Escape `text` for use between the quotes of a SIP quoted-string.

    RFC 3261 section 25.1: inside a quoted-string, `"` and `\` are escaped
    with a backslash. CR and LF cannot be escaped at all, so they and the
    other control characters are dropped rather than risk ending the header.
    Lone surrogates, which a JSON string may carry, are dropped too, because
    they cannot be encoded as UTF-8 for the wire.
    """
    kept = "".join(
        char
        for char in text
        if (char == "\t" or char >= " ") and not "\ud800" <= char <= "\udfff"
    )
    kept = kept.replace("\x7f", "")
    return kept.replace("\\", "\\\\").replace('"', '\\"')
