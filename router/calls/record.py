"""The record of one inbound call and its single state setter."""

from __future__ import annotations

import enum
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from router.config import PhoneNumber, Server, SipTrunkCredential
from router.routing.decision import Route
from router.sip.messages import InboundInvite


class CallState(enum.Enum):
    """Where a call is in the call path."""

    RECEIVED = "received"
    RINGING = "ringing"
    ROUTING = "routing"
    CONNECTING = "connecting"
    IN_PROGRESS = "in-progress"
    FORWARDING = "forwarding"
    ENDED = "ended"


@dataclass
class CallRecord:
    """What the router knows of one call, from INVITE to its end.

    `log` is a structlog logger bound to the call's ids. Every state change
    goes through `set_state()`, which logs it once and then calls
    `on_state`, so status webhooks follow the same transitions.
    """

    invite: InboundInvite
    log: Any
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    started_monotonic: float = field(default_factory=time.monotonic)
    state: CallState = CallState.RECEIVED
    trunks: list[SipTrunkCredential] = field(default_factory=list)
    trunk: SipTrunkCredential | None = None
    number: PhoneNumber | None = None
    route: Route | None = None
    assistant_server: Server | None = None
    """The `server` of an inline assistant, where its messages go."""
    destination: dict[str, Any] | None = None
    answered: bool = False
    leg_reserved: bool = False
    answered_monotonic: float | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    decided_monotonic: float | None = None
    outcome: str | None = None
    ended_reason: str | None = None
    sip_status: int | None = None
    caller_number: str | None = None
    dialled_number: str | None = None
    caller_name: str | None = None
    caller_uri: str | None = None
    masked_caller: str | None = None
    """The caller number as logs show it, set once the trunk is known."""
    on_state: Callable[[CallRecord], None] = field(
        default=lambda call: None, repr=False, compare=False
    )

    def set_state(self, state: CallState, **fields: Any) -> None:
        """Move the call to `state` and log the transition once, at debug."""
        if state is self.state:
            return
        previous, self.state = self.state, state
        self.log.debug(
            "call.state", state=state.value, previous=previous.value, **fields
        )
        self.on_state(self)

    @property
    def reached_number_lookup(self) -> bool:
        """Whether the call passed the trunk check, so webhooks report it."""
        return bool(self.trunks)

    def bind(self, **ids: Any) -> None:
        """Bind more ids to every later log event of this call."""
        self.log = self.log.bind(**ids)

    def mark_decided(self) -> None:
        """Record the moment of the final routing decision, once."""
        if self.decided_monotonic is None:
            self.decided_monotonic = time.monotonic()

    def setup_seconds(self) -> float:
        """Return the seconds from INVITE to the final decision."""
        end = self.decided_monotonic or time.monotonic()
        return end - self.started_monotonic

    def as_json(self) -> dict[str, Any]:
        """Return the record as the admin API shows it: no secrets."""
        route = None
        if self.route is not None:
            route = {
                "kind": self.route.kind,
                "id": self.route.id,
                "inline": self.route.inline,
                "overrides": self.route.overrides,
            }
        return {
            "id": self.id,
            "status": self.state.value,
            "createdAt": self.created_at.isoformat().replace("+00:00", "Z"),
            "phoneCallProviderId": self.invite.call_id,
            "phoneNumberId": self.number.id if self.number else None,
            "dialledNumber": self.dialled_number,
            "credentialId": self.trunk.id if self.trunk else None,
            "customer": {
                "number": self.caller_number,
                "name": self.caller_name,
                "sipUri": self.caller_uri,
            },
            "sipHeaders": dict(self.invite.x_headers),
            "route": route,
            "destination": self.destination,
            "endedReason": self.ended_reason,
        }
