"""Pure routing decisions: trunk match, number lookup, route, reply parsing.

Nothing here performs I/O or uses SIP objects. The public names are loaded
on first use, not at import time: `router.errors` imports
`router.routing.ended_reasons`, and eager imports here would import
`router.errors` back while it is still half initialised.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from router.routing.decision import (
        Route,
        check_status,
        static_route,
        webhook_server,
    )
    from router.routing.numbers import dialled_user, normalize_number, number_key
    from router.routing.replies import (
        DestinationReply,
        ErrorReply,
        Reply,
        RouteReply,
        parse_assistant_request_body,
        parse_assistant_request_reply,
    )
    from router.routing.table import RoutingTable

_EXPORTS = {
    "normalize_number": "router.routing.numbers",
    "number_key": "router.routing.numbers",
    "dialled_user": "router.routing.numbers",
    "RoutingTable": "router.routing.table",
    "Route": "router.routing.decision",
    "check_status": "router.routing.decision",
    "static_route": "router.routing.decision",
    "webhook_server": "router.routing.decision",
    "Reply": "router.routing.replies",
    "ErrorReply": "router.routing.replies",
    "DestinationReply": "router.routing.replies",
    "RouteReply": "router.routing.replies",
    "parse_assistant_request_reply": "router.routing.replies",
    "parse_assistant_request_body": "router.routing.replies",
}

__all__ = [
    "DestinationReply",
    "ErrorReply",
    "Reply",
    "Route",
    "RouteReply",
    "RoutingTable",
    "check_status",
    "dialled_user",
    "normalize_number",
    "number_key",
    "parse_assistant_request_body",
    "parse_assistant_request_reply",
    "static_route",
    "webhook_server",
]


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(module_name), name)
