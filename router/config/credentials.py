"""Credentials: the operator's SIP trunks and the keys that sign webhooks."""

import ipaddress
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator

from router.config.base import ConfigModel, is_host_name
from router.config.secrets import Secret

NAME_MAX_CHARS = 40
OUTBOUND_TEXT_MAX_CHARS = 10000


class Gateway(ConfigModel):
    """One address of a trunk: where its INVITEs come from and calls go to."""

    # Declared before `ip`, whose validator reads it.
    inbound_enabled: bool = True
    ip: str
    """An IPv4 address, or a host name when inbound_enabled is false."""
    port: int = Field(5060, ge=1, le=65535)
    netmask: int = Field(32, ge=24, le=32)
    """Prefix length of the network that inbound sources are matched against."""
    outbound_enabled: bool = True
    outbound_protocol: Literal["udp", "tcp", "tls", "tls/srtp"] = "udp"
    options_ping_enabled: bool = False

    @field_validator("ip")
    @classmethod
    def _check_ip(cls, ip: str, info: ValidationInfo) -> str:
        if _is_ipv4(ip):
            return ip
        if not is_host_name(ip):
            raise ValueError(
                f"invalid gateway address {ip!r}: expected IPv4 or a host name"
            )

        # A host name cannot be compared with the source address of an INVITE.
        # When inboundEnabled is itself invalid it is reported on its own.
        if info.data.get("inbound_enabled", False):
            raise ValueError(
                f"gateway address {ip!r} is a host name, but an inbound gateway"
                " needs an IPv4 address to match INVITE sources against;"
                " use an address or set inboundEnabled: false"
            )
        return ip


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


class SipRegisterPlan(ConfigModel):
    """Registration of the router to the trunk; absent means no registration."""

    domain: str | None = None
    """Registrar domain; the first outbound gateway when absent."""
    username: str | None = None
    """User part of the address of record; authUsername when absent."""
    realm: str | None = None


class OutboundAuthenticationPlan(ConfigModel):
    """Digest credentials that the router sends when the trunk challenges it."""

    auth_username: str | None = None
    auth_password: Secret | None = None
    sip_register_plan: SipRegisterPlan | None = None


class SipTrunkCredential(ConfigModel):
    """The operator's own trunk or carrier."""

    provider: Literal["byo-sip-trunk"]
    id: str = Field(min_length=1)
    name: str = Field(min_length=1, max_length=NAME_MAX_CHARS)
    gateways: list[Gateway] = Field(min_length=1)
    outbound_authentication_plan: OutboundAuthenticationPlan | None = None
    outbound_leading_plus_enabled: bool = False
    """Prefix '+' to the number of an outbound call."""
    tech_prefix: str | None = Field(None, max_length=OUTBOUND_TEXT_MAX_CHARS)
    sip_diversion_header: str | None = Field(None, max_length=OUTBOUND_TEXT_MAX_CHARS)

    @property
    def sip_register_plan(self) -> SipRegisterPlan | None:
        """The registration plan, or None when the trunk does not register."""
        if self.outbound_authentication_plan is None:
            return None
        return self.outbound_authentication_plan.sip_register_plan


class BearerAuthenticationPlan(ConfigModel):
    """A static token sent in a header."""

    type: Literal["bearer"]
    token: Secret
    header_name: str = "Authorization"
    bearer_prefix_enabled: bool = True
    """Send the token as "Bearer TOKEN" rather than bare."""


class HmacAuthenticationPlan(ConfigModel):
    """An HMAC signature of each request body, with an optional timestamp."""

    type: Literal["hmac"]
    secret_key: Secret
    algorithm: Literal["sha256", "sha512", "sha1"]
    signature_header: str = "x-signature"
    timestamp_header: str = "x-timestamp"
    include_timestamp: bool = True
    payload_format: str = "{timestamp}.{body}"
    """The signed text; {timestamp} and {body} are replaced."""
    signature_prefix: str = ""
    signature_encoding: Literal["hex", "base64"] = "hex"


AuthenticationPlan = Annotated[
    BearerAuthenticationPlan | HmacAuthenticationPlan, Field(discriminator="type")
]


class WebhookCredential(ConfigModel):
    """Authentication of the webhooks that the router sends."""

    provider: Literal["webhook"]
    id: str = Field(min_length=1)
    name: str = Field(min_length=1, max_length=NAME_MAX_CHARS)
    authentication_plan: AuthenticationPlan


Credential = Annotated[
    SipTrunkCredential | WebhookCredential, Field(discriminator="provider")
]
