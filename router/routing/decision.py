"""The route decision for a found number: status check, static route, server."""

from dataclasses import dataclass
from typing import Any, Literal, get_args

from router.config import Config, PhoneNumber, Server
from router.errors import NumberActivating, NumberBlocked, RouterFault

RouteKind = Literal["assistant", "squad", "workflow"]

# The INVITE to the runtime names the route in one of these headers.
_HEADER_NAMES: dict[RouteKind, str] = {
    "assistant": "X-Cozmox-Assistant-Id",
    "squad": "X-Cozmox-Squad-Id",
    "workflow": "X-Cozmox-Workflow-Id",
}

# The header value for an inline object. The runtime then reads the object
# from the call record on the admin API.
INLINE_HEADER_VALUE = "inline"


@dataclass(frozen=True)
class Route:
    """The assistant, squad or workflow that takes a call.

    Exactly one of `id` and `inline` is set. `inline` is an object from the
    server's assistant-request reply, and `overrides` its `...Overrides`
    object of the same kind, both kept as the server sent them.
    """

    kind: RouteKind
    id: str | None = None
    inline: dict[str, Any] | None = None
    overrides: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.kind not in get_args(RouteKind):
            raise ValueError(
                f"invalid route kind {self.kind!r}: "
                "expected assistant, squad or workflow"
            )
        if (self.id is None) == (self.inline is None):
            raise ValueError("a route needs exactly one of id and inline")

    @property
    def header_name(self) -> str:
        """The INVITE header that names the route to the runtime."""
        return _HEADER_NAMES[self.kind]

    @property
    def header_value(self) -> str:
        """The route's id, or `inline` for an inline object."""
        return self.id if self.id is not None else INLINE_HEADER_VALUE


def check_status(number: PhoneNumber) -> None:
    """Raise NumberBlocked or NumberActivating unless the number is active."""
    if number.status == "blocked":
        raise NumberBlocked(f"number {number.id!r} is blocked")
    if number.status == "activating":
        raise NumberActivating(f"number {number.id!r} is activating")


def static_route(number: PhoneNumber) -> Route | None:
    """Return the route that the number's configuration sets, if any.

    Raises RouterFault when more than one is set. `load_config()` rejects
    such a number, so one can only come from a model built without the
    config's cross-checks.
    """
    routes = [
        Route(kind, id=route_id)
        for kind, route_id in (
            ("assistant", number.assistant_id),
            ("squad", number.squad_id),
            ("workflow", number.workflow_id),
        )
        if route_id is not None
    ]
    if len(routes) > 1:
        kinds = ", ".join(route.kind for route in routes)
        raise RouterFault(f"number {number.id!r} sets several routes: {kinds}")
    return routes[0] if routes else None


def webhook_server(number: PhoneNumber, config: Config) -> Server | None:
    """Return where the number's assistant-request goes: its own, else org's."""
    if number.server is not None:
        return number.server
    if config.org is None:
        return None
    return config.org.server
