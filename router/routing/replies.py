"""The reply table of the assistant-request webhook.

A 2xx reply maps to one outcome: text to speak, a transfer destination or a
route. Every other row of the table raises AssistantRequestFailed with the
row's `endedReason`. Transport errors, timeouts and non-2xx statuses belong
to the webhook client and never reach this module.
"""

import json
import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import TypeAdapter, ValidationError

from router.config import Destination
from router.errors import AssistantRequestFailed
from router.routing import ended_reasons
from router.routing.decision import Route, RouteKind

_DESTINATION = TypeAdapter(Destination)

_ROUTE_KINDS: tuple[RouteKind, ...] = ("assistant", "squad", "workflow")

MAX_ID_LENGTH = 256
_ID_PATTERN = re.compile(rf"[\x21-\x7e]{{1,{MAX_ID_LENGTH}}}")
# Deep enough for any real inline assistant; deeper bodies are refused so
# that later code walking them cannot hit the interpreter's recursion limit.
MAX_REPLY_DEPTH = 64


@dataclass(frozen=True)
class ErrorReply:
    """The server's text for the caller, spoken before the call hangs up."""

    text: str
    ended_reason: ClassVar[str] = ended_reasons.ASSISTANT_REQUEST_RETURNED_ERROR


@dataclass(frozen=True)
class DestinationReply:
    """A destination that the call is transferred to at once."""

    destination: Destination
    ended_reason: ClassVar[str] = (
        ended_reasons.ASSISTANT_REQUEST_RETURNED_FORWARDING_PHONE_NUMBER
    )


@dataclass(frozen=True)
class RouteReply:
    """A route that the call is handed off to."""

    route: Route


Reply = ErrorReply | DestinationReply | RouteReply


def parse_assistant_request_body(raw: bytes) -> Reply:
    """Decode a 2xx reply body as JSON and apply the reply table to it.

    JSON in UTF-8, UTF-16 or UTF-32 is accepted. A body that is not JSON is
    the `assistant-request-failed` row.
    """
    try:
        body = json.loads(
            raw, parse_constant=_reject_constant, parse_float=_finite_float
        )
        too_deep = _too_deep(body)
    except RecursionError:
        # The decoder raises it for nesting deeper than the interpreter's
        # stack, before `_too_deep` could run.
        raise AssistantRequestFailed(
            ended_reasons.ASSISTANT_REQUEST_FAILED,
            f"reply body is nested deeper than {MAX_REPLY_DEPTH} levels",
        ) from None
    except ValueError as error:
        # Invalid JSON, invalid UTF-8 or a non-finite number. The messages
        # name a position or a byte, never the body's text.
        raise AssistantRequestFailed(
            ended_reasons.ASSISTANT_REQUEST_FAILED,
            f"reply body is not valid JSON: {str(error)[:200]}",
        ) from None
    if too_deep:
        raise AssistantRequestFailed(
            ended_reasons.ASSISTANT_REQUEST_FAILED,
            f"reply body is nested deeper than {MAX_REPLY_DEPTH} levels",
        )
    return parse_assistant_request_reply(body)


def parse_assistant_request_reply(body: object) -> Reply:
    """Apply the reply table to a decoded 2xx reply body.

    The rows apply in order: a body that is not an object, `error`,
    `destination`, then the route fields. The fields are read from
    `messageResponse` when that is an object, else from the top level. A
    field whose value is null counts as absent.

    Raises AssistantRequestFailed with the `endedReason` of the row that
    applied when the reply gives no usable outcome.
    """
    if not isinstance(body, dict):
        raise AssistantRequestFailed(
            ended_reasons.ASSISTANT_REQUEST_FAILED,
            f"reply body is a JSON {_json_type(body)}, expected an object",
        )

    fields = body.get("messageResponse")
    if not isinstance(fields, dict):
        fields = body

    if fields.get("error") is not None:
        return _error_reply(fields["error"])
    if fields.get("destination") is not None:
        return _destination_reply(fields["destination"])
    return RouteReply(_route(fields))


def _error_reply(error: object) -> ErrorReply:
    # Whitespace alone cannot be spoken either, so it is unspeakable too.
    if not isinstance(error, str) or not error.strip():
        raise AssistantRequestFailed(
            ended_reasons.ASSISTANT_REQUEST_RETURNED_UNSPEAKABLE_ERROR,
            f"error is a JSON {_json_type(error)} without speakable text",
        )
    return ErrorReply(error)


def _destination_reply(destination: object) -> DestinationReply:
    # The table has no row for an invalid destination. The closest is
    # invalid-assistant: the server named a target that cannot be used,
    # like an inline assistant that is not an object.
    try:
        parsed = _DESTINATION.validate_python(destination)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}"
            for problem in error.errors(include_input=False)
        )
        raise AssistantRequestFailed(
            ended_reasons.ASSISTANT_REQUEST_RETURNED_INVALID_ASSISTANT,
            f"invalid destination: {problems}",
        ) from None
    return DestinationReply(parsed)


def _route(fields: dict[str, Any]) -> Route:
    kinds = [kind for kind in _ROUTE_KINDS if _names_kind(fields, kind)]
    if not kinds:
        raise AssistantRequestFailed(
            ended_reasons.ASSISTANT_REQUEST_RETURNED_NO_ASSISTANT,
            "reply has no error, destination, assistant, squad or workflow",
        )
    if len(kinds) > 1:
        raise AssistantRequestFailed(
            ended_reasons.ASSISTANT_REQUEST_RETURNED_INVALID_ASSISTANT,
            f"reply names several kinds of route: {', '.join(kinds)}",
        )
    return _route_of_kind(fields, kinds[0])


def _names_kind(fields: dict[str, Any], kind: RouteKind) -> bool:
    return fields.get(f"{kind}Id") is not None or fields.get(kind) is not None


def _route_of_kind(fields: dict[str, Any], kind: RouteKind) -> Route:
    route_id = fields.get(f"{kind}Id")
    inline = fields.get(kind)
    overrides = fields.get(f"{kind}Overrides")

    # An id next to an inline object of the same kind is ambiguous, and an
    # ambiguous route is never resolved by guessing.
    if route_id is not None and inline is not None:
        raise _invalid(f"reply sets both {kind}Id and {kind}")
    if route_id is not None and (not isinstance(route_id, str) or not route_id):
        raise _invalid(f"{kind}Id is a JSON {_json_type(route_id)}, not an id")
    # The id goes into a SIP header of the INVITE to the runtime: a CR or LF
    # would add headers of the server's choosing.
    if route_id is not None and not _ID_PATTERN.fullmatch(route_id):
        raise _invalid(
            f"{kind}Id of {len(route_id)} characters is not an id: at most "
            f"{MAX_ID_LENGTH} printable characters without spaces"
        )
    if inline is not None and not isinstance(inline, dict):
        raise _invalid(f"{kind} is a JSON {_json_type(inline)}, not an object")
    if overrides is not None and not isinstance(overrides, dict):
        raise _invalid(
            f"{kind}Overrides is a JSON {_json_type(overrides)}, not an object"
        )

    return Route(kind, id=route_id, inline=inline, overrides=overrides)


def _reject_constant(name: str) -> None:
    # NaN and Infinity are not JSON, and the call record that the runtime
    # reads back must stay valid JSON.
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError("a number too large for a double")
    return value


def _too_deep(value: object, depth: int = 0) -> bool:
    if depth > MAX_REPLY_DEPTH:
        return True
    if isinstance(value, dict):
        return any(_too_deep(item, depth + 1) for item in value.values())
    if isinstance(value, list):
        return any(_too_deep(item, depth + 1) for item in value)
    return False


def _invalid(detail: str) -> AssistantRequestFailed:
    return AssistantRequestFailed(
        ended_reasons.ASSISTANT_REQUEST_RETURNED_INVALID_ASSISTANT, detail
    )


def _json_type(value: object) -> str:
    # Names the JSON type in the error detail without echoing the value,
    # which may hold the caller's data.
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "empty string" if not value.strip() else "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
