"""What each registering trunk registers, built from its config.

`registration_spec()` turns a trunk with a sipRegisterPlan into the
settings of its pjsua2 account. Two specs compare equal when the trunk's
registration would not change, so a reload re-registers only the trunks
whose spec differs.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from urllib.parse import quote

from pydantic import SecretStr

from router.config import RegistrationSettings, SipTrunkCredential
from router.routing.contacts import registration_contact_user
from router.sip.messages import split_host_port

# RFC 3261 section 25.1: characters that a user part may contain unescaped.
_USER_SAFE = "-_.!~*'()&=+$,;?/"


@dataclass(frozen=True)
class RegistrationSpec:
    """The settings of one trunk's registration: its pjsua2 account."""

    trunk_id: str
    aor: str
    """Address of record, the From and To of each REGISTER."""
    registrar_uri: str
    """Request-URI of each REGISTER, with `;transport=` for TCP and TLS."""
    transport: str
    """`udp`, `tcp` or `tls`: the local transport that sends the REGISTERs."""
    contact_user: str
    auth_username: str | None
    auth_password: SecretStr | None = field(repr=False)
    realm: str | None
    expires_seconds: int
    """The expiry requested in every REGISTER, never the one granted."""


def registration_spec(
    trunk: SipTrunkCredential, settings: RegistrationSettings
) -> RegistrationSpec:
    """Return the registration settings of `trunk`, which has a sipRegisterPlan.

    The registrar is `sipRegisterPlan.domain` when set, else the first
    outbound-enabled gateway on its port. Either way the REGISTERs use that
    gateway's `outboundProtocol` (UDP without one). The address of record
    is `sip:<username or authUsername>@<domain or gateway address>`, without
    a port.
    """
    plan = trunk.sip_register_plan
    auth = trunk.outbound_authentication_plan
    if plan is None or auth is None:
        raise ValueError(f"trunk {trunk.id!r} has no sipRegisterPlan")

    gateway = next((g for g in trunk.gateways if g.outbound_enabled), None)
    transport = gateway.outbound_protocol if gateway else "udp"
    transport = "tls" if transport.startswith("tls") else transport
    if plan.domain:
        registrar = plan.domain.strip().removeprefix("sip:")
        aor_host = _host_without_port(registrar)
    elif gateway is not None:
        registrar = f"{gateway.ip}:{gateway.port}"
        aor_host = gateway.ip
    else:
        raise ValueError(f"trunk {trunk.id!r} has no domain and no outbound gateway")

    user = plan.username or auth.auth_username or ""
    parameter = "" if transport == "udp" else f";transport={transport}"
    return RegistrationSpec(
        trunk_id=trunk.id,
        aor=f"sip:{quote(user, safe=_USER_SAFE)}@{aor_host}",
        registrar_uri=f"sip:{registrar}{parameter}",
        transport=transport,
        contact_user=registration_contact_user(trunk.id),
        auth_username=auth.auth_username,
        auth_password=auth.auth_password,
        realm=plan.realm,
        expires_seconds=settings.expires_seconds,
    )


def registrar_is_inbound_gateway(
    trunk: SipTrunkCredential, spec: RegistrationSpec
) -> bool | None:
    """Return whether INVITEs from the registrar's address would be accepted.

    True when the registrar is an IPv4 address inside one of the trunk's
    inbound gateways, False when it is outside all of them, and None when
    the registrar is a host name, whose addresses are not known here.
    """
    host, _ = split_host_port(spec.registrar_uri.removeprefix("sip:").split(";")[0])
    try:
        address = ipaddress.IPv4Address(host)
    except ValueError:
        return None
    for gateway in trunk.gateways:
        if not gateway.inbound_enabled:
            continue
        try:
            network = ipaddress.IPv4Network(
                f"{gateway.ip}/{gateway.netmask}", strict=False
            )
        except ValueError:
            continue
        if address in network:
            return True
    return False


def _host_without_port(host_port: str) -> str:
    host, port = split_host_port(host_port)
    if not port and not host_port.startswith("["):
        host = host_port
    return f"[{host}]" if ":" in host else host
