"""Plain data and errors shared by the SIP engine and the call path."""

from __future__ import annotations

from dataclasses import dataclass

import pjsua2 as pj

from router.errors import FinalResponse
from router.sip.messages import CallKey


class CallGone(Exception):
    """The call ended before the operation reached it."""


class SipStartError(Exception):
    """The SIP stack could not start, for example a port already in use."""


class NoCallSlot(Exception):
    """No call slot is free for a new outbound leg."""


class PlaybackFailed(Exception):
    """A WAV file could not be played to the call (no audio, bad file)."""


class DialFailed(Exception):
    """An outbound leg failed at once, before pjsua2 sent anything."""

    def __init__(self, status_code: int, reason: str) -> None:
        super().__init__(f"{status_code} {reason}")
        self.status_code = status_code
        self.reason = reason


@dataclass(frozen=True)
class ListenAddress:
    """One SIP transport to bind."""

    transport: str
    host: str
    port: int


@dataclass(frozen=True)
class EngineSettings:
    """Engine settings, taken from the router settings."""

    listen: tuple[ListenAddress, ...]
    public_host: str | None
    rtp_port_start: int
    rtp_port_count: int
    requested_max_calls: int
    udp_receive_buffer_bytes: int = 0
    user_agent: str = "cozmox-router"


@dataclass(frozen=True)
class InviteVerdict:
    """What the call path decided from an INVITE before pjsua took it."""

    media: bool
    final: FinalResponse | None = None
    call_id: str | None = None
    """The router's id for the call, when `final` carries it (a 302 whose
    Contact names it); the call's record takes this id."""
    ring_first: bool = False
    """True when the call passed steps 2 to 4, so 180 Ringing precedes
    `final` (the 302 of a static redirect)."""


@dataclass(frozen=True)
class LegEnded:
    """The end of a call leg: final status and who hung up first."""

    status_code: int
    reason: str
    hung_up_locally: bool
    was_answered: bool
    by_shutdown: bool = False
    cause: str | None = None
    """The reason the engine ended the leg itself, e.g. `offers.NO_SDP_ANSWER`."""


@dataclass(frozen=True)
class TransferStatus:
    """A NOTIFY sipfrag status (or the REFER's own answer) of a transfer."""

    status_code: int
    reason: str
    final: bool


@dataclass
class Leg:
    """A call in the owner thread's table. Only that thread touches it."""

    call: pj.Call
    key: CallKey
    inbound: bool
    peer: CallKey | None = None
    answered: bool = False
    hanging_up: bool = False
    media: bool = False
    player: pj.AudioMediaPlayer | None = None
    account: pj.Account | None = None
    """The account that pjsua put an inbound call on."""
    late_offer: bool = False
    """An inbound INVITE without SDP: the answer must come in the ACK."""
    end_cause: str | None = None
