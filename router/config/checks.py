"""Rules that span several fields or objects of a config.

They run on the plain data of the file, not on the models, so that they still
report their findings when some other part of the file failed validation.
Parts of the wrong type are skipped here because validation reports them.
"""

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from pydantic.alias_generators import to_snake

from router.config.number_rules import normalize_config_number
from router.config.server import AUTHORIZATION_CLASH, url_has_userinfo

if TYPE_CHECKING:
    from router.config.models import Config

# The router's own local accounts: one with RTP sockets, one without.
ROUTER_ACCOUNTS = 2

DEFER_CROSS_CHECKS_CONTEXT_KEY = "defer_cross_checks"
"""Validation context key: when true, Config leaves these rules to its caller."""

_ROUTE_KEYS = ("assistantId", "squadId", "workflowId")

Item = tuple[str, Mapping[str, Any]]
"""A mapping from the file with its display path, such as "phoneNumbers[2]"."""


def find_cross_check_errors(data: Mapping[str, Any]) -> list[str]:
    """Return a "path: message" string for each broken cross-field rule."""
    credentials = list(_items(data, "credentials"))
    numbers = list(_items(data, "phoneNumbers"))
    providers = _providers(credentials)
    credential_headers = _webhook_header_names(credentials)

    errors = _duplicate_transports(data)
    errors += _duplicate_ids(credentials, "credential")
    errors += _duplicate_ids(numbers, "phone number")
    for path, credential in credentials:
        errors += _check_registration(path, credential)

    org = _get(data, "org")
    if isinstance(org, Mapping):
        errors += _check_server(
            _join("org", "server"), _get(org, "server"), providers, credential_headers
        )

    trunks = _trunks_by_id(credentials)
    for path, number in numbers:
        errors += _check_phone_number(
            path, number, providers, trunks, credential_headers
        )

    errors += _duplicate_numbers(numbers)
    return errors


def _check_phone_number(
    path: str,
    number: Mapping[str, Any],
    providers: dict[str, str | None],
    trunks: dict[str, Mapping[str, Any]],
    credential_headers: dict[str, set[str]],
) -> list[str]:
    errors = _check_trunk_reference(path, number, providers)
    errors += _check_server(
        _join(path, "server"), _get(number, "server"), providers, credential_headers
    )
    errors += _check_route(path, number)
    errors += _check_transfer_actions(path, number)

    credential_id = _get(number, "credentialId")
    trunk = trunks.get(credential_id) if isinstance(credential_id, str) else None
    if trunk is not None and not _outbound_gateway(trunk):
        for destination_path in _number_destinations(path, number):
            errors.append(
                f"{destination_path}: a number destination is dialled through"
                f" trunk {credential_id!r}, which has no gateway"
                " with outboundEnabled: true"
            )
    return errors


def _check_trunk_reference(
    path: str, number: Mapping[str, Any], providers: dict[str, str | None]
) -> list[str]:
    credential_id = _get(number, "credentialId")
    if not isinstance(credential_id, str) or not credential_id:
        return []
    return _check_reference(
        _join(path, "credentialId"), credential_id, "byo-sip-trunk", providers
    )


def _check_server(
    path: str,
    server: Any,
    providers: dict[str, str | None],
    credential_headers: dict[str, set[str]],
) -> list[str]:
    if not isinstance(server, Mapping):
        return []

    credential_id = _get(server, "credentialId")
    if not isinstance(credential_id, str):
        return []
    credential_path = _join(path, "credentialId")
    errors = _check_reference(credential_path, credential_id, "webhook", providers)

    url = _get(server, "url")
    sets_authorization = "authorization" in credential_headers.get(credential_id, ())
    if sets_authorization and isinstance(url, str) and _has_userinfo(url):
        source = f"the authenticationPlan of credential {credential_id!r}"
        errors.append(f"{credential_path}: {AUTHORIZATION_CLASH.format(source=source)}")
    return errors


def _has_userinfo(url: str) -> bool:
    try:
        return url_has_userinfo(url)
    except ValueError:  # an invalid URL, which validation reports
        return False


def _check_reference(
    path: str, credential_id: str, expected: str, providers: dict[str, str | None]
) -> list[str]:
    if credential_id not in providers:
        return [
            f"{path}: credential {credential_id!r} not found;"
            f" expected the id of a {expected} credential"
        ]

    # A credential with an unknown provider is reported where it is defined.
    provider = providers[credential_id]
    if provider in ("byo-sip-trunk", "webhook") and provider != expected:
        return [
            f"{path}: credential {credential_id!r} is a {provider} credential;"
            f" expected a {expected} credential"
        ]
    return []


def _check_route(path: str, number: Mapping[str, Any]) -> list[str]:
    routes = [
        f"{key} {_get(number, key)!r}"
        for key in _ROUTE_KEYS
        if _get(number, key) is not None
    ]
    if len(routes) < 2:
        return []

    listed = ", ".join(routes[:-1]) + " and " + routes[-1]
    both_or_all = "both" if len(routes) == 2 else "all"
    return [
        f"{path}: ambiguous route: {listed} are {both_or_all} set; keep at most one"
    ]


def _check_transfer_actions(path: str, number: Mapping[str, Any]) -> list[str]:
    if _get(number, "fallbackDestination") is not None:
        return []

    errors = []
    for action_path, action in _actions(path, number):
        if _get(action, "type") == "transfer" and _get(action, "destination") is None:
            errors.append(
                f"{action_path}: transfer action has no destination and the"
                " number has no fallbackDestination; set one of them"
            )
    return errors


def _number_destinations(path: str, number: Mapping[str, Any]) -> Iterator[str]:
    fallback = _get(number, "fallbackDestination")
    if isinstance(fallback, Mapping) and _get(fallback, "type") == "number":
        yield _join(path, "fallbackDestination")

    for action_path, action in _actions(path, number):
        destination = _get(action, "destination")
        if isinstance(destination, Mapping) and _get(destination, "type") == "number":
            yield _join(action_path, "destination")


def _actions(path: str, number: Mapping[str, Any]) -> Iterator[Item]:
    for hook_path, hook in _items(number, "hooks", path):
        do = _get(hook, "do")
        if isinstance(do, Mapping):
            yield _join(hook_path, "do"), do
        else:
            yield from _items(hook, "do", hook_path)


def _check_registration(path: str, credential: Mapping[str, Any]) -> list[str]:
    plan = _get(credential, "outboundAuthenticationPlan")
    if not isinstance(plan, Mapping):
        return []
    register_plan = _get(plan, "sipRegisterPlan")
    if not isinstance(register_plan, Mapping):
        return []

    register_path = _join(path, "outboundAuthenticationPlan", "sipRegisterPlan")
    errors = []
    if not _get(register_plan, "username") and not _get(plan, "authUsername"):
        errors.append(
            f"{register_path}: the address of record has no user;"
            " set sipRegisterPlan.username or authUsername"
        )
    if not _get(register_plan, "domain") and not _outbound_gateway(credential):
        errors.append(
            f"{register_path}: no registrar: set sipRegisterPlan.domain"
            " or add a gateway with outboundEnabled: true"
        )
    return errors


def _duplicate_transports(data: Mapping[str, Any]) -> list[str]:
    router = _get(data, "router")
    sip = _get(router, "sip") if isinstance(router, Mapping) else None
    if not isinstance(sip, Mapping):
        return []

    errors = []
    first_paths: dict[str, str] = {}
    for path, address in _items(sip, "listen", "router.sip"):
        transport = _get(address, "transport")
        if not isinstance(transport, str):
            continue
        if transport in first_paths:
            errors.append(
                f"{path}.transport: transport {transport!r} is already listed"
                f" at {first_paths[transport]}; keep one entry per transport"
            )
        else:
            first_paths[transport] = path
    return errors + _http_port_clash(router, sip)


def _http_port_clash(router: Mapping[str, Any], sip: Mapping[str, Any]) -> list[str]:
    """Find a TCP listener on the HTTP listener's host and port."""
    http = _get(router, "http")
    http = http if isinstance(http, Mapping) else {}
    http_host = _get(http, "host", "127.0.0.1")
    http_port = _get(http, "port", 8080)
    for path, address in _items(sip, "listen", "router.sip"):
        if _get(address, "transport") != "tcp" or _get(address, "port") != http_port:
            continue
        host = _get(address, "host")
        if host == http_host or "0.0.0.0" in (host, http_host):
            return [
                f"router.http.port: port {http_port} on {http_host} is also the"
                f" SIP TCP listener at {path}; give HTTP another port"
            ]
    return []


def _duplicate_ids(items: list[Item], kind: str) -> list[str]:
    errors = []
    first_paths: dict[str, str] = {}
    for path, item in items:
        id_ = _get(item, "id")
        if not isinstance(id_, str):
            continue
        if id_ in first_paths:
            errors.append(
                f"{path}.id: duplicate {kind} id {id_!r},"
                f" already used by {first_paths[id_]}"
            )
        else:
            first_paths[id_] = path
    return errors


def _duplicate_numbers(numbers: list[Item]) -> list[str]:
    """Find numbers on one trunk that are equal without a leading '+'.

    The same number on two trunks is allowed, because the trunk that an
    INVITE's source address matches selects one of them.
    """
    errors = []
    first_seen: dict[tuple[str, str], tuple[str, str]] = {}
    for path, number in numbers:
        value = _get(number, "number")
        credential_id = _get(number, "credentialId")
        if not isinstance(value, str) or not isinstance(credential_id, str):
            continue

        key = (credential_id, normalize_config_number(value))
        if key in first_seen:
            first_path, first_value = first_seen[key]
            errors.append(
                f"{path}.number: {value!r} is the same number as"
                f" {first_path}.number {first_value!r} on trunk {credential_id!r}"
            )
        else:
            first_seen[key] = (path, value)
    return errors


def _outbound_gateway(trunk: Mapping[str, Any]) -> bool:
    gateways = list(_items(trunk, "gateways"))
    if not gateways:
        # No gateways at all is reported by validation.
        return True
    return any(
        _get(gateway, "outboundEnabled", True) is not False for _, gateway in gateways
    )


def _providers(credentials: list[Item]) -> dict[str, str | None]:
    providers: dict[str, str | None] = {}
    for _, credential in credentials:
        id_ = _get(credential, "id")
        if isinstance(id_, str):
            provider = _get(credential, "provider")
            providers.setdefault(id_, provider if isinstance(provider, str) else None)
    return providers


def _webhook_header_names(credentials: list[Item]) -> dict[str, set[str]]:
    """Map each webhook credential's id to the lower-case header names it sets."""
    names: dict[str, set[str]] = {}
    for _, credential in credentials:
        id_ = _get(credential, "id")
        plan = _get(credential, "authenticationPlan")
        if not isinstance(id_, str) or not isinstance(plan, Mapping):
            continue
        if _get(credential, "provider") != "webhook":
            continue
        if _get(plan, "type") == "bearer":
            keys = {"headerName": "Authorization"}
        else:
            keys = {"signatureHeader": "x-signature"}
            if _get(plan, "includeTimestamp", True) is not False:
                keys["timestampHeader"] = "x-timestamp"
        headers = [_get(plan, key, default) for key, default in keys.items()]
        lower_names = {name.lower() for name in headers if isinstance(name, str)}
        names.setdefault(id_, lower_names)
    return names


def _trunks_by_id(credentials: list[Item]) -> dict[str, Mapping[str, Any]]:
    trunks: dict[str, Mapping[str, Any]] = {}
    for _, credential in credentials:
        id_ = _get(credential, "id")
        if isinstance(id_, str) and _get(credential, "provider") == "byo-sip-trunk":
            trunks.setdefault(id_, credential)
    return trunks


def _items(data: Mapping[str, Any], key: str, parent: str = "") -> Iterator[Item]:
    values = _get(data, key)
    if not isinstance(values, list):
        return
    for index, value in enumerate(values):
        if isinstance(value, Mapping):
            yield f"{_join(parent, key)}[{index}]", value


def _get(data: Mapping[str, Any], key: str, default: Any = None) -> Any:
    # Files use the camelCase keys; Python callers may use the field names.
    if key in data:
        return data[key]
    return data.get(to_snake(key), default)


def _join(*parts: str) -> str:
    return ".".join(part for part in parts if part)


def check_limits(
    config: "Config", max_accounts: int, router_accounts: int = ROUTER_ACCOUNTS
) -> list[str]:
    """Return errors for a config that the SIP stack's account limit cannot run.

    The router keeps `router_accounts` local accounts of its own (one with
    RTP sockets, one without), so the trunks that register get the rest.
    """
    registering = [trunk.id for trunk in config.registering_trunks()]
    allowed = max_accounts - router_accounts
    if len(registering) <= allowed:
        return []

    return [
        f"credentials: {len(registering)} trunks have a sipRegisterPlan"
        f" ({', '.join(registering)}), but this SIP stack registers at most"
        f" {allowed}: {max_accounts} accounts, {router_accounts} of them the"
        " router's own; remove sipRegisterPlan from some trunks or run a"
        " pjproject build with a larger PJSUA_MAX_ACC"
    ]
