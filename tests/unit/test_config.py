"""Config loading: models, secrets, cross-checks and error paths."""

import copy
import json
import random
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr, TypeAdapter, ValidationError

from router.config import (
    Config,
    ConfigError,
    Destination,
    EndingHook,
    NumberDestination,
    RingingHook,
    SipDestination,
    SipTrunkCredential,
    TransferAction,
    WebhookCredential,
    check_limits,
    load_config,
)

EXAMPLE = Path(__file__).parents[2] / "config" / "router.example.yaml"

TRUNK = """
  - id: trunk-a
    provider: byo-sip-trunk
    name: Trunk A
    gateways: [{ip: 127.0.0.1}]
"""

WEBHOOK = """
  - id: hook-a
    provider: webhook
    name: Webhook A
    authenticationPlan: {type: bearer, token: inline-token}
"""


def config_text(numbers: str = "", credentials: str = TRUNK, head: str = "") -> str:
    """Build a file from a head section, credentials and phone numbers."""
    text = textwrap.dedent(head).strip("\n") + "\n" if head else ""
    text += "credentials:\n" + textwrap.dedent(credentials).strip("\n") + "\n"
    text += "phoneNumbers:\n" + (textwrap.dedent(numbers).strip("\n") or "  []") + "\n"
    return text


def number(extra: str = "", value: str = '"+14155550100"', id_: str = "pn-1") -> str:
    """Return one phone-number list item on trunk-a, with extra lines."""
    lines = [
        f"  - id: {id_}",
        "    credentialId: trunk-a",
        f"    number: {value}",
    ]
    lines += ["    " + line for line in textwrap.dedent(extra).strip("\n").splitlines()]
    return "\n".join(lines) + "\n"


def write(tmp_path: Path, text: str, name: str = "router.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_errors(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    return caught.value.errors


# Each bad file has exactly one problem: (case id, text, path, fragment).
BAD_FILES = [
    (
        "snake-case-key",
        config_text(number(), head="router: {max_concurrent_calls: 3}"),
        "router.max_concurrent_calls",
        "unknown key",
    ),
    (
        "http-port-on-sip-tcp-port",
        config_text(
            number(),
            head=(
                "router:\n  http: {port: 5060}\n  sip:\n    listen:\n"
                "      - {transport: tcp, host: 127.0.0.1, port: 5060}"
            ),
        ),
        "router.http.port",
        "also the SIP TCP listener",
    ),
    (
        "unknown-top-level-key",
        config_text(number(), head="colour: blue"),
        "colour",
        "unknown key",
    ),
    (
        "unknown-number-key",
        config_text(number("assistantID: a")),
        "phoneNumbers[0].assistantID",
        "unknown key",
    ),
    (
        "credential-name-too-long",
        config_text(
            number(),
            credentials=TRUNK.replace("name: Trunk A", "name: " + "n" * 41),
        ),
        "credentials[0].name",
        "at most 40 characters",
    ),
    (
        "credential-name-empty",
        config_text(number(), credentials=TRUNK.replace("Trunk A", '""')),
        "credentials[0].name",
        "must not be empty",
    ),
    (
        "trunk-without-gateways",
        config_text(
            number(),
            credentials=TRUNK.replace("gateways: [{ip: 127.0.0.1}]", "gateways: []"),
        ),
        "credentials[0].gateways",
        "at least 1",
    ),
    (
        "inbound-gateway-host-name",
        config_text(number(), credentials=TRUNK.replace("127.0.0.1", "sip.example")),
        "credentials[0].gateways[0].ip",
        "'sip.example' is a host name",
    ),
    (
        "gateway-address-invalid",
        config_text(number(), credentials=TRUNK.replace("127.0.0.1", "10.0.0.300")),
        "credentials[0].gateways[0].ip",
        "invalid gateway address '10.0.0.300'",
    ),
    (
        "gateway-netmask-below-24",
        config_text(
            number(),
            credentials=TRUNK.replace(
                "{ip: 127.0.0.1}", "{ip: 127.0.0.1, netmask: 16}"
            ),
        ),
        "credentials[0].gateways[0].netmask",
        "must be at least 24, got 16",
    ),
    (
        "gateway-port-zero",
        config_text(
            number(),
            credentials=TRUNK.replace("{ip: 127.0.0.1}", "{ip: 127.0.0.1, port: 0}"),
        ),
        "credentials[0].gateways[0].port",
        "must be at least 1, got 0",
    ),
    (
        "gateway-protocol-unknown",
        config_text(
            number(),
            credentials=TRUNK.replace(
                "{ip: 127.0.0.1}", "{ip: 127.0.0.1, outboundProtocol: sctp}"
            ),
        ),
        "credentials[0].gateways[0].outboundProtocol",
        "invalid value 'sctp'",
    ),
    (
        "tech-prefix-too-long",
        config_text(number(), credentials=TRUNK + "    techPrefix: " + "9" * 10001),
        "credentials[0].techPrefix",
        "at most 10000 characters",
    ),
    (
        "credential-provider-unknown",
        config_text(number(), credentials=TRUNK + WEBHOOK.replace("webhook\n", "x\n")),
        "credentials[1]",
        "unknown provider 'x'",
    ),
    (
        "credential-provider-missing",
        config_text(number(), credentials=TRUNK + "  - {id: c, name: C}"),
        "credentials[1]",
        "missing required field 'provider'",
    ),
    (
        "hmac-without-algorithm",
        config_text(
            number(),
            credentials=TRUNK
            + WEBHOOK.replace(
                "{type: bearer, token: inline-token}", "{type: hmac, secretKey: k}"
            ),
        ),
        "credentials[1].authenticationPlan.algorithm",
        "missing required field",
    ),
    (
        "authentication-type-unknown",
        config_text(number(), credentials=TRUNK + WEBHOOK.replace("bearer", "basic")),
        "credentials[1].authenticationPlan",
        "unknown type 'basic'",
    ),
    (
        "number-not-e164",
        config_text(number(value='"4155550100"')),
        "phoneNumbers[0].number",
        "is not E.164",
    ),
    (
        "number-too-many-digits",
        config_text(number(value='"+1234567890123456"')),
        "phoneNumbers[0].number",
        "at most 15 digits",
    ),
    (
        "number-too-short",
        config_text(number("numberE164CheckEnabled: false", value="ab")),
        "phoneNumbers[0].number",
        "expected 3 to 40",
    ),
    (
        "number-with-separator-unchecked",
        config_text(number("numberE164CheckEnabled: false", value="415-555")),
        "phoneNumbers[0].number",
        "invalid number '415-555'",
    ),
    (
        "number-missing-credential-id",
        config_text("  - {id: pn-1, number: '+14155550100'}"),
        "phoneNumbers[0].credentialId",
        "missing required field",
    ),
    (
        "ambiguous-route",
        config_text(number("assistantId: a\nworkflowId: w")),
        "phoneNumbers[0]",
        "ambiguous route: assistantId 'a' and workflowId 'w'",
    ),
    (
        "credential-id-not-found",
        config_text(number().replace("trunk-a", "trunk-b")),
        "phoneNumbers[0].credentialId",
        "credential 'trunk-b' not found",
    ),
    (
        "credential-id-names-webhook",
        config_text(number().replace("trunk-a", "hook-a"), credentials=TRUNK + WEBHOOK),
        "phoneNumbers[0].credentialId",
        "is a webhook credential; expected a byo-sip-trunk credential",
    ),
    (
        "server-credential-names-trunk",
        config_text(
            number("server: {url: 'http://127.0.0.1:8090/a', credentialId: trunk-a}")
        ),
        "phoneNumbers[0].server.credentialId",
        "is a byo-sip-trunk credential; expected a webhook credential",
    ),
    (
        "org-server-credential-not-found",
        config_text(
            number(),
            head="org: {server: {url: 'http://127.0.0.1:8090/a', credentialId: nope}}",
        ),
        "org.server.credentialId",
        "credential 'nope' not found",
    ),
    (
        "server-url-userinfo-and-authorization-header",
        config_text(
            number(
                "server:\n"
                "  url: http://bob:pw@127.0.0.1:18091/hook\n"
                "  headers: {authorization: Basic Ym9iOnB3}"
            )
        ),
        "phoneNumbers[0].server",
        "headers cannot also set Authorization",
    ),
    (
        "org-server-url-user-and-authorization-header",
        config_text(
            number(),
            head=(
                "org: {server: {url: 'http://bob@127.0.0.1:8090/a',"
                " headers: {Authorization: x}}}"
            ),
        ),
        "org.server",
        "headers cannot also set Authorization",
    ),
    (
        "server-url-userinfo-and-bearer-credential",
        config_text(
            number(
                "server: {url: 'http://bob:pw@127.0.0.1:18091/hook',"
                " credentialId: hook-a}"
            ),
            credentials=TRUNK + WEBHOOK,
        ),
        "phoneNumbers[0].server.credentialId",
        "the authenticationPlan of credential 'hook-a' cannot also set Authorization",
    ),
    (
        "org-server-url-userinfo-and-hmac-authorization",
        config_text(
            number(),
            credentials=TRUNK
            + WEBHOOK.replace(
                "{type: bearer, token: inline-token}",
                "{type: hmac, secretKey: k, algorithm: sha256,"
                " signatureHeader: AUTHORIZATION}",
            ),
            head=(
                "org: {server: {url: 'http://:pw@127.0.0.1:8090/a',"
                " credentialId: hook-a}}"
            ),
        ),
        "org.server.credentialId",
        "cannot also set Authorization",
    ),
    (
        "duplicate-credential-id",
        config_text(number(), credentials=TRUNK + TRUNK),
        "credentials[1].id",
        "duplicate credential id 'trunk-a'",
    ),
    (
        "duplicate-number-id",
        config_text(number() + number(value='"+14155550101"')),
        "phoneNumbers[1].id",
        "duplicate phone number id 'pn-1'",
    ),
    (
        "same-number-without-plus",
        config_text(
            number()
            + number("numberE164CheckEnabled: false", value='"14155550100"', id_="pn-2")
        ),
        "phoneNumbers[1].number",
        "same number as phoneNumbers[0].number '+14155550100' on trunk 'trunk-a'",
    ),
    (
        "server-url-not-http",
        config_text(number(), head="org: {server: {url: 'ftp://127.0.0.1/a'}}"),
        "org.server.url",
        "invalid URL 'ftp://127.0.0.1/a'",
    ),
    (
        "server-timeout-above-300",
        config_text(number("server: {url: 'http://127.0.0.1/a', timeoutSeconds: 301}")),
        "phoneNumbers[0].server.timeoutSeconds",
        "must be at most 300, got 301",
    ),
    (
        "backoff-retries-above-10",
        config_text(
            number("server: {url: 'http://127.0.0.1/a', backoffPlan: {maxRetries: 11}}")
        ),
        "phoneNumbers[0].server.backoffPlan.maxRetries",
        "must be at most 10, got 11",
    ),
    (
        "fallback-number-invalid",
        config_text(number("fallbackDestination: {type: number, number: '+0123'}")),
        "phoneNumbers[0].fallbackDestination.number",
        "number '+0123' is not E.164",
    ),
    (
        "fallback-extension-too-long",
        config_text(
            number(
                "fallbackDestination:\n"
                "  {type: number, number: '+14155550199', extension: '12345678901'}"
            )
        ),
        "phoneNumbers[0].fallbackDestination.extension",
        "at most 10 characters",
    ),
    (
        "fallback-caller-id-template-unknown",
        config_text(
            number(
                "fallbackDestination:\n"
                "  {type: number, number: '+14155550199', callerId: '{{call.id}}'}"
            )
        ),
        "phoneNumbers[0].fallbackDestination.callerId",
        "unknown callerId template",
    ),
    (
        "fallback-sip-verb-unknown",
        config_text(
            number(
                "fallbackDestination:\n"
                "  type: sip\n"
                "  sipUri: sip:a@127.0.0.1\n"
                "  transferPlan: {sipVerb: bye}"
            )
        ),
        "phoneNumbers[0].fallbackDestination.transferPlan.sipVerb",
        "invalid value 'bye'",
    ),
    (
        "fallback-sip-uri-invalid",
        config_text(number("fallbackDestination: {type: sip, sipUri: 'http://a'}")),
        "phoneNumbers[0].fallbackDestination.sipUri",
        "invalid SIP URI 'http://a'",
    ),
    (
        "fallback-sip-header-line-break",
        config_text(
            number(
                "fallbackDestination:\n"
                "  {type: sip, sipUri: 'sip:a@127.0.0.1', sipHeaders: {X-A: \"a\\nb\"}}"
            )
        ),
        "phoneNumbers[0].fallbackDestination.sipHeaders",
        "contains a line break",
    ),
    (
        "fallback-type-unknown",
        config_text(number("fallbackDestination: {type: queue}")),
        "phoneNumbers[0].fallbackDestination",
        "unknown type 'queue'",
    ),
    (
        "ringing-prefix-with-plus",
        config_text(
            number(
                """
                hooks:
                  - on: call.ringing
                    filters: [{type: startsWith, key: number, startsWith: ['+1']}]
                    do: [{type: say, exact: Closed}]
                """
            )
        ),
        "phoneNumbers[0].hooks[0].filters[0].startsWith[0]",
        "write it without '+'",
    ),
    (
        "ringing-too-many-prefixes",
        config_text(
            number(
                f"""
                hooks:
                  - on: call.ringing
                    filters:
                      - type: startsWith
                        key: number
                        startsWith: {list(map(str, range(21)))}
                    do: [{{type: say, exact: Closed}}]
                """
            )
        ),
        "phoneNumbers[0].hooks[0].filters[0].startsWith",
        "at most 20 items",
    ),
    (
        "ending-reason-unknown",
        config_text(
            number(
                """
                hooks:
                  - on: call.ending
                    filters: [{type: oneOf, key: call.endedReason, oneOf: [busy]}]
                    do: {type: say, exact: Sorry}
                """
            )
        ),
        "phoneNumbers[0].hooks[0].filters[0].oneOf[0]",
        "invalid value 'busy'",
    ),
    (
        "say-text-too-long",
        config_text(
            number(
                f"""
                hooks:
                  - on: call.ringing
                    do: [{{type: say, exact: {"a" * 4001}}}]
                """
            )
        ),
        "phoneNumbers[0].hooks[0].do[0].exact",
        "at most 4000 characters",
    ),
    (
        "transfer-without-any-destination",
        config_text(
            number(
                """
                hooks:
                  - on: call.ringing
                    do: [{type: transfer}]
                """
            )
        ),
        "phoneNumbers[0].hooks[0].do[0]",
        "no destination and the number has no fallbackDestination",
    ),
    (
        "hook-event-unknown",
        config_text(number("hooks: [{on: call.started, do: []}]")),
        "phoneNumbers[0].hooks[0]",
        "unknown on 'call.started'",
    ),
    (
        "number-status-unknown",
        config_text(number("status: gone")),
        "phoneNumbers[0].status",
        "invalid value 'gone'; expected 'active', 'activating' or 'blocked'",
    ),
    (
        "runtime-mode-unknown",
        config_text(number(), head="router: {runtime: {mode: proxy}}"),
        "router.runtime.mode",
        "invalid value 'proxy'",
    ),
    (
        "listen-transport-unknown",
        config_text(number(), head="router: {sip: {listen: [{transport: sctp}]}}"),
        "router.sip.listen[0].transport",
        "invalid value 'sctp'",
    ),
    (
        "listen-transport-twice",
        config_text(
            number(),
            head="""
                router:
                  sip: {listen: [{transport: udp}, {transport: udp, port: 5062}]}
            """,
        ),
        "router.sip.listen[1].transport",
        "already listed at router.sip.listen[0]",
    ),
    (
        "rtp-ports-past-65535",
        config_text(
            number(), head="router: {sip: {rtpPortStart: 65000, rtpPortCount: 1000}}"
        ),
        "router.sip.rtpPortCount",
        "go past 65535",
    ),
    (
        "udp-receive-buffer-tiny",
        config_text(number(), head="router: {sip: {udpReceiveBufferBytes: 1}}"),
        "router.sip.udpReceiveBufferBytes",
        "least 65536, or 0 for",
    ),
    (
        "udp-receive-buffer-negative",
        config_text(number(), head="router: {sip: {udpReceiveBufferBytes: -1}}"),
        "router.sip.udpReceiveBufferBytes",
        "must be at least 0, got -1",
    ),
    (
        "log-format-unknown",
        config_text(number(), head="router: {logFormat: xml}"),
        "router.logFormat",
        "invalid value 'xml'",
    ),
    (
        "log-level-unknown",
        config_text(number(), head="router: {logLevel: verbose}"),
        "router.logLevel",
        "invalid value 'verbose'",
    ),
    (
        "retry-max-below-min",
        config_text(
            number(),
            head="router: {registration: {retryMinSeconds: 60, retryMaxSeconds: 30}}",
        ),
        "router.registration.retryMaxSeconds",
        "less than retryMinSeconds 60",
    ),
    (
        "max-calls-not-a-number",
        config_text(number(), head="router: {maxConcurrentCalls: many}"),
        "router.maxConcurrentCalls",
        "must be a whole number, got 'many'",
    ),
    (
        "registration-without-user",
        config_text(
            number(),
            credentials=TRUNK + "    outboundAuthenticationPlan: {sipRegisterPlan: {}}",
        ),
        "credentials[0].outboundAuthenticationPlan.sipRegisterPlan",
        "address of record has no user",
    ),
    (
        "number-destination-without-outbound-gateway",
        config_text(
            number("fallbackDestination: {type: number, number: '+14155550199'}"),
            credentials=TRUNK.replace(
                "{ip: 127.0.0.1}", "{ip: 127.0.0.1, outboundEnabled: false}"
            ),
        ),
        "phoneNumbers[0].fallbackDestination",
        "no gateway with outboundEnabled: true",
    ),
    (
        "name-not-a-string",
        config_text(number("name: [a]")),
        "phoneNumbers[0].name",
        "must be a string, got a list",
    ),
]


@pytest.mark.parametrize(
    ("text", "path", "fragment"),
    [case[1:] for case in BAD_FILES],
    ids=[case[0] for case in BAD_FILES],
)
def test_bad_file_reports_path(tmp_path, text, path, fragment):
    errors = load_errors(tmp_path, text)

    assert len(errors) == 1, errors
    assert errors[0].startswith(f"{path}: "), errors[0]
    assert fragment in errors[0]


GOOD_FILES = [
    ("minimal", config_text(number())),
    ("no-numbers", config_text()),
    (
        "host-name-gateway-outbound-only",
        config_text(
            number(),
            credentials=TRUNK.replace(
                "[{ip: 127.0.0.1}]",
                "[{ip: 127.0.0.1}, {ip: sip.carrier.example, inboundEnabled: false}]",
            ),
        ),
    ),
    (
        "unchecked-alphanumeric-number",
        config_text(number("numberE164CheckEnabled: false", value="+agent007")),
    ),
    ("unquoted-e164-number", config_text(number(value="+14155550100"))),
    (
        "same-number-two-trunks",
        config_text(
            number() + number(id_="pn-2").replace("trunk-a", "trunk-b"),
            credentials=TRUNK + TRUNK.replace("trunk-a", "trunk-b"),
        ),
    ),
    (
        "caller-id-template",
        config_text(
            number(
                "fallbackDestination:\n"
                "  type: number\n"
                "  number: '+14155550199'\n"
                "  callerId: '{{customer.number}}'\n"
                "  extension: '12'"
            )
        ),
    ),
    (
        "transfer-action-uses-fallback",
        config_text(
            number(
                """
                fallbackDestination: {type: sip, sipUri: 'sip:f@127.0.0.1:5090'}
                hooks:
                  - on: call.ending
                    filters:
                      - type: oneOf
                        key: call.endedReason
                        oneOf: [assistant-request-failed]
                    do: {type: transfer}
                """
            )
        ),
    ),
    (
        "webhook-credential-referenced",
        config_text(
            number("server: {url: 'https://127.0.0.1/a', credentialId: hook-a}"),
            credentials=TRUNK + WEBHOOK,
        ),
    ),
    (
        "registering-trunk",
        config_text(
            number(),
            credentials=TRUNK
            + "    outboundAuthenticationPlan:\n"
            + "      authUsername: user\n"
            + "      authPassword: inline-password\n"
            + "      sipRegisterPlan: {realm: example}\n",
        ),
    ),
]


@pytest.mark.parametrize(
    "text", [case[1] for case in GOOD_FILES], ids=[case[0] for case in GOOD_FILES]
)
def test_good_file_loads(tmp_path, text):
    config = load_config(write(tmp_path, text))

    assert isinstance(config, Config)


def test_defaults_of_minimal_file(tmp_path):
    config = load_config(write(tmp_path, config_text(number())))

    router = config.router
    assert [(a.transport, a.host, a.port) for a in router.sip.listen] == [
        ("udp", "0.0.0.0", 5060),
        ("tcp", "0.0.0.0", 5060),
    ]
    assert router.http.host == "127.0.0.1"
    assert router.http.port == 8080
    assert router.http.admin_token is None
    assert router.runtime.uri == "sip:runtime@127.0.0.1:5080"
    assert router.runtime.mode == "bridge"
    assert router.registration.expires_seconds == 300
    assert router.max_concurrent_calls == 500
    assert router.assistant_request_deadline_seconds == 7.5
    assert router.drain_seconds == 30
    assert router.log_format == "auto"
    assert router.mask_caller_numbers is True
    assert config.org is None

    gateway = config.trunk("trunk-a").gateways[0]
    assert (gateway.port, gateway.netmask) == (5060, 32)
    assert gateway.inbound_enabled and gateway.outbound_enabled
    assert gateway.outbound_protocol == "udp"
    assert gateway.options_ping_enabled is False

    phone = config.phone_numbers[0]
    assert phone.provider == "byo-phone-number"
    assert phone.status == "active"
    assert phone.number_e164_check_enabled is True
    assert phone.hooks == []


def test_hooks_parse_with_unquoted_on_key(tmp_path):
    # YAML 1.1 reads a bare `on` as the boolean true.
    text = config_text(
        number(
            """
            fallbackDestination: {type: sip, sipUri: 'sip:f@127.0.0.1'}
            hooks:
              - on: call.ringing
                filters: [{type: startsWith, key: number, startsWith: [1415, "0044"]}]
                do: [{type: transfer}, {type: say, exact: Hello}]
              - on: call.ending
                filters:
                  - type: oneOf
                    key: call.endedReason
                    oneOf: [assistant-request-failed]
                do: {type: say, exact: Sorry}
            """
        )
    )

    hooks = load_config(write(tmp_path, text)).phone_numbers[0].hooks

    assert isinstance(hooks[0], RingingHook)
    assert hooks[0].filters[0].starts_with == ["1415", "0044"]
    assert isinstance(hooks[0].do[0], TransferAction)
    assert isinstance(hooks[1], EndingHook)
    assert hooks[1].filters[0].one_of == ["assistant-request-failed"]


def test_json_file_with_tabs_loads(tmp_path):
    data = {
        "credentials": [
            {
                "id": "trunk-a",
                "provider": "byo-sip-trunk",
                "name": "Trunk A",
                "gateways": [{"ip": "127.0.0.1"}],
            }
        ],
        "phoneNumbers": [
            {"id": "pn-1", "credentialId": "trunk-a", "number": "+14155550100"}
        ],
    }
    path = write(tmp_path, json.dumps(data, indent="\t"), name="router.json")

    config = load_config(path)

    assert config.phone_numbers[0].number == "+14155550100"


def test_several_errors_listed_together(tmp_path):
    text = config_text(
        number("assistantId: a\nsquadId: s\nstatus: gone")
        + number(value='"+0"', id_="pn-1").replace("trunk-a", "trunk-x"),
        credentials=TRUNK.replace("127.0.0.1", "sip.example"),
        head="router: {http: {port: 0}}",
    )

    errors = load_errors(tmp_path, text)
    paths = [error.split(": ", 1)[0] for error in errors]

    assert "router.http.port" in paths
    assert "credentials[0].gateways[0].ip" in paths
    assert "phoneNumbers[0].status" in paths
    assert "phoneNumbers[0]" in paths
    assert "phoneNumbers[1].number" in paths
    assert "phoneNumbers[1].id" in paths
    assert "phoneNumbers[1].credentialId" in paths
    assert len(errors) == 7, errors


def test_errors_sorted_in_file_order(tmp_path):
    text = config_text(
        number("status: gone") + number(id_="pn-1", value='"+14155550101"'),
        head="router: {logFormat: xml}",
    )

    errors = load_errors(tmp_path, text)

    assert errors[0].startswith("router.logFormat: ")
    assert errors[1].startswith("phoneNumbers[0].status: ")
    assert errors[2].startswith("phoneNumbers[1].id: ")


def test_secrets_from_env_and_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_ADMIN_TOKEN", "token-from-env")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "hmac.key").write_text("key-from-file\n", encoding="utf-8")
    credentials = TRUNK + WEBHOOK.replace(
        "{type: bearer, token: inline-token}",
        "{type: hmac, algorithm: sha256, secretKey: {file: secrets/hmac.key}}",
    )
    text = config_text(
        number(),
        credentials=credentials,
        head="router: {http: {adminToken: {env: TEST_ADMIN_TOKEN}}}",
    )
    path = write(tmp_path, text)
    monkeypatch.chdir(secrets)

    config = load_config(path)

    assert config.router.http.admin_token.get_secret_value() == "token-from-env"
    plan = config.webhook_credential("hook-a").authentication_plan
    assert plan.secret_key.get_secret_value() == "key-from-file"
    assert "key-from-file" not in repr(config)


def test_unset_env_secret_names_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("TEST_UNSET_TOKEN", raising=False)
    credentials = TRUNK + WEBHOOK.replace("inline-token", "{env: TEST_UNSET_TOKEN}")
    text = config_text(number(), credentials=credentials)

    errors = load_errors(tmp_path, text)

    assert errors == [
        "credentials[1].authenticationPlan.token:"
        " environment variable TEST_UNSET_TOKEN is not set"
    ]


def test_secret_values_never_in_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_EMPTY_TOKEN", "")
    (tmp_path / "password").write_text("password-from-file", encoding="utf-8")
    credentials = (
        TRUNK
        + "    outboundAuthenticationPlan: {authPassword: {file: password}}\n"
        + WEBHOOK.replace("inline-token", "{env: TEST_EMPTY_TOKEN}")
        + WEBHOOK.replace("hook-a", "hook-b").replace("inline-token", "[inline-secret]")
    )
    text = config_text(
        number("server: {url: 'http://127.0.0.1/a', secret: {file: missing.key}}"),
        credentials=credentials,
        head="router: {http: {adminToken: {env: NAME, file: x}}}",
    )

    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    errors = caught.value.errors
    shown = "\n".join(errors) + str(caught.value) + repr(caught.value)

    assert "password-from-file" not in shown
    assert "inline-secret" not in shown
    assert "router.http.adminToken: invalid secret" in shown
    assert "environment variable TEST_EMPTY_TOKEN is empty" in shown
    assert f"secret file {tmp_path / 'missing.key'} not found" in shown
    assert "credentials[2].authenticationPlan.token: invalid secret" in shown
    assert len(errors) == 4, errors


def test_secret_file_trailing_newline_stripped_once(tmp_path):
    (tmp_path / "token").write_text("abc\n\n", encoding="utf-8")
    credentials = TRUNK + WEBHOOK.replace("inline-token", "{file: token}")

    config = load_config(
        write(tmp_path, config_text(number(), credentials=credentials))
    )

    token = config.webhook_credential("hook-a").authentication_plan.token
    assert token.get_secret_value() == "abc\n"


def test_secret_file_too_large(tmp_path):
    (tmp_path / "token").write_bytes(b"a" * (64 * 1024 + 1))
    credentials = TRUNK + WEBHOOK.replace("inline-token", "{file: token}")

    errors = load_errors(tmp_path, config_text(number(), credentials=credentials))

    assert len(errors) == 1
    assert errors[0].startswith("credentials[1].authenticationPlan.token: ")
    assert "is larger than 65536 bytes" in errors[0]


def test_unreadable_file_is_one_error(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "missing.yaml")

    assert len(caught.value.errors) == 1
    assert "cannot read config file" in caught.value.errors[0]
    assert "No such file or directory" in caught.value.errors[0]


def test_yaml_syntax_error_names_line(tmp_path):
    errors = load_errors(tmp_path, "router:\n  sip: [\n  http: {}\nphoneNumbers: ]\n")

    assert len(errors) == 1
    assert errors[0].startswith("invalid YAML at line 4, column")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "- a\n- b\n",
            "must be a mapping of router, org, credentials and phoneNumbers",
        ),
        ("just text\n", "not a string"),
        ("", "the config file is empty"),
        ("# only a comment\n", "the config file is empty"),
    ],
    ids=["list", "string", "empty", "comment"],
)
def test_top_level_not_mapping(tmp_path, text, message):
    errors = load_errors(tmp_path, text)

    assert len(errors) == 1
    assert message in errors[0]


def test_duplicate_yaml_key_reported(tmp_path):
    text = config_text(number().replace("    number:", "    id: pn-2\n    number:"))

    errors = load_errors(tmp_path, text)

    assert errors == ["duplicate key 'id' at line 9, first used at line 7; keep one"]


def test_example_config_loads(monkeypatch):
    monkeypatch.delenv("COZMOX_ADMIN_TOKEN", raising=False)

    config = load_config(EXAMPLE)

    router = config.router
    assert {(a.transport, a.host, a.port) for a in router.sip.listen} == {
        ("udp", "127.0.0.1", 5060),
        ("tcp", "127.0.0.1", 5060),
    }
    assert (router.http.host, router.http.port) == ("127.0.0.1", 8080)
    assert router.http.admin_token is not None
    assert router.runtime.uri == "sip:runtime@127.0.0.1:5080"
    assert router.runtime.mode == "bridge"
    assert config.org.server.url == "http://127.0.0.1:8090/webhook"
    assert config.registering_trunks() == []
    assert [gateway.ip for trunk in config.trunks() for gateway in trunk.gateways] == [
        "127.0.0.1"
    ]

    numbers = {phone.number: phone for phone in config.phone_numbers}
    assert numbers["+14155550100"].assistant_id == "asst-support"
    assert numbers["+14155550101"].assistant_id is None
    assert numbers["+14155550101"].server is None
    broken = numbers["+14155550102"]
    assert broken.server.url == "http://127.0.0.1:8090/broken"
    assert isinstance(broken.fallback_destination, SipDestination)
    assert broken.fallback_destination.sip_uri == "sip:fallback@127.0.0.1:5090"
    assert broken.fallback_destination.transfer_plan.sip_verb == "redirect"
    assert numbers["+14155550103"].status == "blocked"


MUTATION_VALUES = [
    None,
    True,
    0,
    -1,
    10**30,
    1.5,
    "",
    "x",
    "+14155550100",
    "127.0.0.1",
    [],
    {},
    ["a"],
    [{}],
    {"env": "TEST_UNSET_MUTATION"},
    {"file": "missing.key"},
    {"type": "number"},
    {"provider": "webhook"},
    {"on": "call.ringing"},
]


def value_paths(node: object, prefix: tuple = ()) -> list[tuple]:
    paths = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            paths += value_paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            paths += value_paths(value, (*prefix, index))
    return paths


def mutate(data: dict, rng: random.Random) -> None:
    """Replace a few values anywhere in data, or add unknown keys."""
    for _ in range(rng.randint(1, 4)):
        path = rng.choice(value_paths(data)[1:])
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent, dict) and rng.random() < 0.2:
            parent["extraKey"] = 1
        else:
            parent[path[-1]] = copy.deepcopy(rng.choice(MUTATION_VALUES))


def test_mutated_example_fails_cleanly(tmp_path, monkeypatch):
    """Any damage to a valid file gives a ConfigError, never another exception."""
    monkeypatch.delenv("TEST_UNSET_MUTATION", raising=False)
    example = load_config(EXAMPLE)
    secrets = [
        example.router.http.admin_token.get_secret_value(),
        example.webhook_credential(
            "webhook-hmac"
        ).authentication_plan.secret_key.get_secret_value(),
    ]
    original = json.loads(json.dumps(yaml_data(EXAMPLE)))
    rng = random.Random(20240601)

    for _ in range(300):
        data = copy.deepcopy(original)
        mutate(data, rng)
        path = write(tmp_path, json.dumps(data), name="mutated.json")
        try:
            load_config(path)
        except ConfigError as error:
            assert error.errors
            shown = "\n".join(error.errors)
            assert not any(secret in shown for secret in secrets)


def yaml_data(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def registering_config(trunk_count: int) -> Config:
    credentials = [
        {
            "id": f"trunk-{index}",
            "provider": "byo-sip-trunk",
            "name": f"Trunk {index}",
            "gateways": [{"ip": f"127.0.0.{index + 1}"}],
            "outboundAuthenticationPlan": {
                "authUsername": "user",
                "authPassword": "inline-password",
                "sipRegisterPlan": {"domain": "127.0.0.1"},
            },
        }
        for index in range(trunk_count)
    ]
    return Config.model_validate({"credentials": credentials})


def test_check_limits_keeps_router_accounts():
    config = registering_config(6)

    assert len(config.registering_trunks()) == 6
    assert check_limits(config, max_accounts=8) == []


def test_check_limits_rejects_too_many_registrations():
    errors = check_limits(registering_config(7), max_accounts=8)

    assert len(errors) == 1
    assert errors[0].startswith("credentials: 7 trunks have a sipRegisterPlan")
    assert "registers at most 6" in errors[0]


def test_model_validate_applies_cross_checks():
    data = {
        "credentials": [
            {
                "id": "trunk-a",
                "provider": "byo-sip-trunk",
                "name": "Trunk A",
                "gateways": [{"ip": "127.0.0.1"}],
            }
        ],
        "phone_numbers": [
            {
                "id": "pn-1",
                "credential_id": "trunk-a",
                "number": "+14155550100",
                "assistant_id": "a",
                "squad_id": "s",
            }
        ],
    }

    with pytest.raises(ValidationError) as caught:
        Config.model_validate(data)

    assert "ambiguous route" in str(caught.value)


def test_credential_lookups(tmp_path):
    text = config_text(number(), credentials=TRUNK + WEBHOOK)

    config = load_config(write(tmp_path, text))

    assert isinstance(config.trunk("trunk-a"), SipTrunkCredential)
    assert config.trunk("hook-a") is None
    assert isinstance(config.webhook_credential("hook-a"), WebhookCredential)
    assert config.webhook_credential("trunk-a") is None
    assert config.phone_number("pn-1").number == "+14155550100"


def test_config_is_immutable(tmp_path):
    config = load_config(write(tmp_path, config_text(number())))

    with pytest.raises(ValidationError):
        config.phone_numbers[0].status = "blocked"


def test_destination_parses_alone():
    adapter = TypeAdapter(Destination)

    destination = adapter.validate_python(
        {
            "type": "number",
            "number": "+14155550199",
            "transferPlan": {"sipVerb": "dial"},
        }
    )

    assert isinstance(destination, NumberDestination)
    assert destination.transfer_plan.sip_verb == "dial"
    with pytest.raises(ValidationError):
        adapter.validate_python({"type": "number", "number": "4155550199"})


def test_server_accepts_secret_str():
    config = Config.model_validate(
        {
            "org": {
                "server": {"url": "http://127.0.0.1:8090/a", "secret": SecretStr("s")}
            }
        }
    )

    assert config.org.server.secret.get_secret_value() == "s"


def alias_bomb(levels: int) -> str:
    """Return YAML whose alias levels each repeat the level below nine times."""
    names = "abcdefghijklmnopqrstuvwxyz"
    lines = [f"{names[0]}: &{names[0]} [x,x,x,x,x,x,x,x,x]"]
    for level in range(1, levels):
        below = f"*{names[level - 1]}"
        items = ",".join([below] * 9)
        lines.append(f"{names[level]}: &{names[level]} [{items}]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_rejected_fast(tmp_path):
    text = alias_bomb(9)
    assert len(text.encode()) < 400

    started = time.monotonic()
    errors = load_errors(tmp_path, text)
    elapsed = time.monotonic() - started

    assert errors == [
        "the config file expands to more than 1000000 extra values through YAML"
        " aliases; write the repeated parts out or nest fewer aliases"
    ]
    assert elapsed < 0.5


def test_recursive_alias_rejected(tmp_path):
    errors = load_errors(tmp_path, "router: &loop [*loop]\n")

    assert len(errors) == 1
    assert "through YAML aliases" in errors[0]


def test_server_url_userinfo_alone_loads(tmp_path):
    server = "server: {url: 'http://bob:pw@127.0.0.1:18091/hook', headers: {X-A: b}}"

    config = load_config(write(tmp_path, config_text(number(server))))

    assert config.phone_numbers[0].server.headers == {"X-A": "b"}


def test_shared_server_alias_loads(tmp_path):
    server = "server: &hook {url: 'http://127.0.0.1:18091/hook'}"
    numbers = number(server) + number("server: *hook", '"+14155550101"', "pn-2")

    config = load_config(write(tmp_path, config_text(numbers)))

    assert config.phone_numbers[1].server.url == "http://127.0.0.1:18091/hook"
