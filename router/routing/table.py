"""Trunk and number lookup for inbound calls, indexed once per config."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, ip_address

from router.config import Config, PhoneNumber, SipTrunkCredential
from router.errors import NumberNotFound, SourceNotAllowed
from router.routing.contacts import contact_user_trunk_id
from router.routing.numbers import number_key


@dataclass(frozen=True)
class _GatewayNetwork:
    network: IPv4Network
    trunk: SipTrunkCredential


class RoutingTable:
    """Indexes of one config: trunks by gateway network, numbers by trunk.

    Build it with `from_config()` whenever a config is loaded. It never
    changes afterwards, so calls in progress keep the table they started
    with while a reload builds a new one.
    """

    def __init__(
        self,
        trunks: Sequence[SipTrunkCredential],
        numbers: Iterable[PhoneNumber],
    ) -> None:
        self._trunks = list(trunks)
        self._networks = [
            _GatewayNetwork(network, trunk)
            for trunk in self._trunks
            for network in _inbound_networks(trunk)
        ]
        self._trunks_by_label = _index_by_lowercase_id(self._trunks)
        self._numbers = _index_numbers(numbers)

    @classmethod
    def from_config(cls, config: Config) -> "RoutingTable":
        """Build the table from a loaded config."""
        return cls(config.trunks(), config.phone_numbers)

    def match_trunks(
        self, src_ip: str, ruri_host: str | None
    ) -> list[SipTrunkCredential]:
        """Return the trunks whose inbound gateways contain the source address.

        Several trunks may share a carrier's addresses, so all of them are
        returned, in config order, for `find_number()` to pick from. When
        the first label of `ruri_host` (a host name, without port) is a
        trunk's id, only that trunk is returned, and the source must match
        one of its own gateways.

        Raises SourceNotAllowed when the source is not an IP address, when
        no trunk matches it, or when the trunk that the host names does not.
        """
        address = _source_address(src_ip)
        if address is None:
            raise SourceNotAllowed(f"source {src_ip!r} is not an IP address")

        matched = self._trunks_containing(address)
        if not matched:
            raise SourceNotAllowed(f"source {src_ip} matches no inbound gateway")

        named = self._trunk_named_by_host(ruri_host)
        if named is None:
            return matched
        if all(trunk.id != named.id for trunk in matched):
            raise SourceNotAllowed(
                f"source {src_ip} matches no inbound gateway of trunk "
                f"{named.id!r}, which the Request-URI host names"
            )
        return [named]

    def find_number(
        self,
        trunks: Sequence[SipTrunkCredential],
        ruri_user: str | None,
        to_user: str | None,
    ) -> PhoneNumber:
        """Return the number of `trunks` that the call dialled.

        The Request-URI user is tried first, then the To user, because on a
        registration trunk the Request-URI user is the router's own contact
        and the dialled number is only in To. When the Request-URI user is
        the registration contact user of one of `trunks`, only that trunk's
        numbers count. Users are raw user parts, as `dialled_user()` returns
        them.

        When several trunks hold the same number, the first of `trunks`
        wins. `match_trunks()` returns trunks in config order, so that is
        the first trunk in the config. The config cannot forbid the overlap
        because carriers share gateway addresses between trunks.

        Raises NumberNotFound when neither user matches a number of
        `trunks`.
        """
        trunks = _registered_trunk(trunks, ruri_user) or trunks
        for user in (ruri_user, to_user):
            number = self._lookup(trunks, user)
            if number is not None:
                return number

        trunk_ids = ", ".join(trunk.id for trunk in trunks)
        raise NumberNotFound(
            f"neither the Request-URI nor the To user matches a number of "
            f"trunks [{trunk_ids}]"
        )

    def _trunks_containing(self, address: IPv4Address) -> list[SipTrunkCredential]:
        matched: dict[str, SipTrunkCredential] = {}
        for entry in self._networks:
            if address in entry.network:
                matched.setdefault(entry.trunk.id, entry.trunk)
        return list(matched.values())

    def _trunk_named_by_host(self, host: str | None) -> SipTrunkCredential | None:
        if not host:
            return None
        host = host.strip().rstrip(".")
        if _is_ip_literal(host):
            return None

        first_label = host.split(".", 1)[0].lower()
        return self._trunks_by_label.get(first_label)

    def _lookup(
        self, trunks: Sequence[SipTrunkCredential], user: str | None
    ) -> PhoneNumber | None:
        if not user:
            return None
        key = number_key(user)
        if not key:
            return None

        for trunk in trunks:
            number = self._numbers.get((trunk.id, key))
            if number is not None:
                return number
        return None


def _registered_trunk(
    trunks: Sequence[SipTrunkCredential], ruri_user: str | None
) -> list[SipTrunkCredential]:
    """Return the trunk whose registration contact `ruri_user` is, if any."""
    trunk_id = contact_user_trunk_id(ruri_user)
    if trunk_id is None:
        return []
    return [
        trunk
        for trunk in trunks
        if trunk.id == trunk_id and trunk.sip_register_plan is not None
    ]


def _inbound_networks(trunk: SipTrunkCredential) -> list[IPv4Network]:
    networks: list[IPv4Network] = []
    for gateway in trunk.gateways:
        if not gateway.inbound_enabled:
            continue
        try:
            address = ip_address(gateway.ip)
        except ValueError:
            # A host name cannot match a source address. The config allows
            # one only on gateways with inbound disabled.
            continue
        if isinstance(address, IPv4Address):
            networks.append(IPv4Network(f"{address}/{gateway.netmask}", strict=False))
    return networks


def _index_by_lowercase_id(
    trunks: Sequence[SipTrunkCredential],
) -> dict[str, SipTrunkCredential]:
    # DNS names are case-insensitive, so a host label is compared with trunk
    # ids in lower case. If two ids differ only by case, the first in config
    # order is the one that a host name selects.
    index: dict[str, SipTrunkCredential] = {}
    for trunk in trunks:
        index.setdefault(trunk.id.lower(), trunk)
    return index


def _index_numbers(
    numbers: Iterable[PhoneNumber],
) -> dict[tuple[str, str], PhoneNumber]:
    # The config rejects two numbers with the same key, so setdefault only
    # decides between duplicates in a table built outside `load_config()`.
    index: dict[tuple[str, str], PhoneNumber] = {}
    for number in numbers:
        index.setdefault((number.credential_id, number_key(number.number)), number)
    return index


def _source_address(src_ip: str) -> IPv4Address | None:
    try:
        address = ip_address(src_ip.strip().removeprefix("[").removesuffix("]"))
    except (ValueError, AttributeError):
        return None

    if isinstance(address, IPv6Address):
        # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d.
        return address.ipv4_mapped
    return address


def _is_ip_literal(host: str) -> bool:
    try:
        ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        return False
    return True
