"""The server messages that report a call, and the server they go to.

Each builder is a plain function of a call record and returns the
`{"message": {...}}` body. `status-update` reports the call's status
(`ringing`, `in-progress`, `forwarding`, `ended`) and `end-of-call-report`
sums the call up once it has ended. Neither contains a secret.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import pydantic

from router.calls.record import CallRecord, CallState
from router.config import Config, Server
from router.logs import without_secrets
from router.routing.decision import Route
from router.webhooks.assistant_request import phone_number_without_secrets

STATUS_UPDATE = "status-update"
END_OF_CALL_REPORT = "end-of-call-report"

# The call states that a status-update reports, by their `status` value.
REPORTED_STATES = {
    CallState.RINGING: "ringing",
    CallState.IN_PROGRESS: "in-progress",
    CallState.FORWARDING: "forwarding",
    CallState.ENDED: "ended",
}


def status_update(
    call: CallRecord, status: str, now: Callable[[], float] = time.time
) -> dict[str, Any]:
    """Build a `status-update` with `status`.

    An `ended` update carries the call's `endedReason`, and a `forwarding`
    update carries the transfer `destination`.
    """
    message: dict[str, Any] = {
        "type": STATUS_UPDATE,
        "timestamp": int(now() * 1000),
        "status": status,
    }
    if status == "ended":
        message["endedReason"] = call.ended_reason
    if status == "forwarding" and call.destination is not None:
        message["destination"] = without_secrets(call.destination)
    message.update(_call_context(call, status))
    return {"message": message}


def end_of_call_report(
    call: CallRecord, now: Callable[[], float] = time.time
) -> dict[str, Any]:
    """Build the `end-of-call-report` of a call that has ended.

    `startedAt` is when the INVITE arrived, `answeredAt` when the caller was
    answered (null if never), and `durationSeconds` the time from
    `startedAt` to `endedAt`.
    """
    ended_at = call.ended_at or datetime.now(UTC)
    message: dict[str, Any] = {
        "type": END_OF_CALL_REPORT,
        "timestamp": int(now() * 1000),
        "endedReason": call.ended_reason,
        "startedAt": iso_utc(call.created_at),
        "answeredAt": iso_utc(call.answered_at) if call.answered_at else None,
        "endedAt": iso_utc(ended_at),
        "durationSeconds": round((ended_at - call.created_at).total_seconds(), 3),
    }
    message.update(_call_context(call, "ended"))
    if call.destination is not None:
        message["destination"] = without_secrets(call.destination)
    return {"message": message}


def _call_context(call: CallRecord, status: str) -> dict[str, Any]:
    """Return the `call`, `phoneNumber` and `customer` objects of a message."""
    return {
        "call": call_object(call, status),
        "phoneNumber": (
            phone_number_without_secrets(call.number) if call.number else None
        ),
        "customer": {
            "number": call.caller_number,
            "name": call.caller_name,
            "sipUri": call.caller_uri,
        },
    }


def call_object(call: CallRecord, status: str) -> dict[str, Any]:
    """Return the `call` object of a message, as the assistant-request has it.

    A route by id adds `assistantId`, `squadId` or `workflowId`. An inline
    object is left out, because the runtime reads it from the admin API.
    """
    body: dict[str, Any] = {
        "id": call.id,
        "type": "inboundPhoneCall",
        "phoneCallTransport": "sip",
        "phoneNumberId": call.number.id if call.number else None,
        "createdAt": iso_utc(call.created_at),
        "status": status,
        "phoneCallProviderId": call.invite.call_id,
        "sipHeaders": dict(call.invite.x_headers),
    }
    if call.route is not None and call.route.id is not None:
        body[f"{call.route.kind}Id"] = call.route.id
    if status == "ended":
        body["endedReason"] = call.ended_reason
    return body


def iso_utc(moment: datetime) -> str:
    """Format `moment` as ISO 8601 in UTC with milliseconds and a `Z`."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    text = moment.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def message_server(call: CallRecord, config: Config) -> Server | None:
    """Return where the call's messages go, by precedence.

    The chosen inline assistant's own `server` comes first, then the
    number's `server`, then `org.server`. None means no server is set.
    """
    if call.assistant_server is not None:
        return call.assistant_server
    if call.number is not None and call.number.server is not None:
        return call.number.server
    return config.org.server if config.org else None


class InvalidInlineServer(ValueError):
    """An inline assistant's `server` that the router cannot use."""


def inline_assistant_server(route: Route | None) -> Server | None:
    """Parse the `server` of an inline assistant from the server's reply.

    Returns None when the route has no inline assistant or it has no
    server. Raises InvalidInlineServer for a server that fails the config
    model. The `secret` must be a plain string, because `{env: NAME}` or
    `{file: PATH}` from a reply would send the router's own environment
    or files to a URL that the reply chose.
    """
    if route is None or route.kind != "assistant" or route.inline is None:
        return None
    server = route.inline.get("server")
    if server is None:
        return None
    if not isinstance(server, Mapping):
        raise InvalidInlineServer("server is not a JSON object")
    secret = server.get("secret")
    if secret is not None and not isinstance(secret, str):
        raise InvalidInlineServer("server.secret is not a string")
    try:
        return Server.model_validate(dict(server))
    except pydantic.ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}"
            for problem in error.errors(include_input=False)
        )
        raise InvalidInlineServer(f"invalid server: {problems}") from None
