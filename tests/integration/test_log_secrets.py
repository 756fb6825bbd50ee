"""A daemon with a secret in every place the config allows one, and its logs.

The calls, admin requests and reloads below make the daemon log what it
does with those secrets: signing and sending webhooks, rejecting a wrong
admin token, rejecting an invalid file. Its whole log output must contain
none of them, and caller numbers only masked.
"""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from harness import ADMIN_TOKEN, Daemon, free_port, phone_number
from log_scan import config_secrets, leaks
from sipp_runner import CALLER_NUMBER, requires_sipp, run_sipp
from webhook_server import WebhookServer

from router.logs import REDACTED

pytestmark = [pytest.mark.integration, requires_sipp]

TRUNK_PASSWORD = "trunk-password-7f3a91"
BEARER_TOKEN = "bearer-token-5c2e88"
HMAC_KEY = "hmac-key-0d94b7"
SERVER_SECRET = "server-secret-a61f02"
HEADER_TOKEN = "header-token-93be4d"
API_KEY = "api-key-2280c5"
# Written as a number in the invalid file, so the config error names it.
NUMERIC_API_KEY = 90817263545

StartRouter = Callable[[dict[str, Any]], Daemon]


def add_secrets(config: dict[str, Any], webhooks: WebhookServer) -> None:
    """Put a secret in every kind of place that the config has for one."""
    trunk = config["credentials"][0]
    trunk["outboundAuthenticationPlan"] = {
        "authUsername": "trunk-user",
        "authPassword": TRUNK_PASSWORD,
    }
    config["credentials"] += [
        {
            "id": "hook-bearer",
            "provider": "webhook",
            "name": "Bearer",
            "authenticationPlan": {"type": "bearer", "token": BEARER_TOKEN},
        },
        {
            "id": "hook-hmac",
            "provider": "webhook",
            "name": "HMAC",
            "authenticationPlan": {
                "type": "hmac",
                "secretKey": HMAC_KEY,
                "algorithm": "sha256",
            },
        },
    ]
    config["org"]["server"]["credentialId"] = "hook-bearer"
    phone_number(config, "pn-ask")["server"] = {
        "url": webhooks.url("/signed"),
        "credentialId": "hook-hmac",
        "secret": SERVER_SECRET,
        "headers": {"Authorization": f"Bearer {HEADER_TOKEN}", "X-Api-Key": API_KEY},
    }


def post(router: Daemon, path: str, token: str) -> tuple[int, str]:
    request = urllib.request.Request(router.http_url + path, method="POST")
    request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode()


def call(router: Daemon, scenario: str, number: str, log_dir: Path) -> None:
    extra = ("-set", "hold", "200") if "200" in scenario else ()
    result = run_sipp(
        scenario, router.sip_target, number, extra, timeout=20, log_dir=log_dir
    )
    assert result.exit_code == 0, result.describe()


@pytest.fixture
def secret_router(
    start_router: StartRouter,
    router_config: dict[str, Any],
    webhooks: WebhookServer,
) -> Daemon:
    add_secrets(router_config, webhooks)
    # Every step of a call is logged at debug, so the scan covers them too.
    router_config["router"]["logLevel"] = "debug"
    return start_router(router_config)


def test_logs_hold_no_secret(
    secret_router: Daemon, webhooks: WebhookServer, tmp_path: Path
) -> None:
    router = secret_router
    webhooks.reply("/signed", {"assistantId": "asst-signed"})
    call(router, "uac-static-assistant-expect-200.xml", "+14155550101", tmp_path)
    webhooks.reply("/signed", status=401)
    call(router, "uac-expect-480.xml", "+14155550101", tmp_path)
    webhooks.reply("/broken", status=500)
    call(router, "uac-expect-302.xml", "+14155550102", tmp_path)

    assert router.get_json("/calls", token="wrong-" + ADMIN_TOKEN)[0] == 401
    status, credentials = router.get_json("/credential", token=ADMIN_TOKEN)
    assert status == 200
    for secret in config_secrets(router.config):
        assert secret not in json.dumps(credentials)

    invalid = json.loads(router.config_path.read_text())
    phone_number(invalid, "pn-ask")["server"]["headers"]["X-Api-Key"] = NUMERIC_API_KEY
    router.config_path.write_text(json.dumps(invalid))
    status, body = post(router, "/admin/reload", ADMIN_TOKEN)
    assert status == 422
    assert str(NUMERIC_API_KEY) not in body
    router.config_path.write_text(json.dumps(router.config))
    router.process.send_signal(signal.SIGHUP)
    router.wait_for_event("config.reloaded")

    assert router.stop() == 0
    # The secrets were in use, so their absence from the logs means something.
    signed = {
        name.lower(): value
        for name, value in webhooks.requests("/signed")[0].headers.items()
    }
    assert signed["x-cozmox-secret"] == SERVER_SECRET
    assert signed["authorization"] == f"Bearer {HEADER_TOKEN}"
    assert signed["x-signature"]
    log_text = router.stderr_text()
    assert leaks(log_text, router.config, [CALLER_NUMBER]) == []
    assert str(NUMERIC_API_KEY) not in log_text
    rejected = router.wait_for_event("config.reload_rejected")
    assert "X-Api-Key" in rejected["errors"][0]
    # The caller is logged once the trunk is known, masked.
    matched = router.events("call.trunk_matched")
    assert len(matched) == 3
    assert {event["caller"] for event in matched} == {"+*******9876"}
    assert all("caller" not in event for event in router.events("call.received"))
    ended = router.events("call.ended")
    assert len(ended) == 3
    assert {event["caller"] for event in ended} == {"+*******9876"}


def test_unmasked_caller_when_masking_off(
    start_router: StartRouter, router_config: dict[str, Any], tmp_path: Path
) -> None:
    router_config["router"]["maskCallerNumbers"] = False
    router = start_router(router_config)

    call(router, "uac-expect-403.xml", "+14155550103", tmp_path)

    ended = router.wait_for_event("call.ended")
    assert ended["caller"] == CALLER_NUMBER


def test_log_events_of_a_call_carry_its_ids(
    start_router: StartRouter,
    router_config: dict[str, Any],
    webhooks: WebhookServer,
    tmp_path: Path,
) -> None:
    router_config["router"]["logLevel"] = "debug"
    router = start_router(router_config)
    webhooks.reply("/webhook", status=500)

    call(router, "uac-expect-480.xml", "+14155550101", tmp_path)

    ended = router.wait_for_event("call.ended")
    events = [e for e in router.events() if e.get("call_id") == ended["call_id"]]
    names = [event["event"] for event in events]
    assert "call.received" in names
    assert "assistant_request.failed" in names
    # Webhook deliveries of the call's messages go on after its end.
    events = [e for e in events if not e["event"].startswith("webhook.")]
    names = [event["event"] for event in events]
    assert names[-1] == "call.ended"
    for event in events:
        assert event["sip_call_id"], event
    # The number and trunk are bound once step 3 has found them.
    found_at = names.index("call.number_found")
    for event in events[found_at:]:
        assert event["number_id"] == "pn-ask", event
        if event["event"].startswith("call."):
            assert event["trunk"] == "trunk-local", event
            assert event["src"].startswith("127.0.0.1:"), event


@pytest.mark.parametrize(
    ("mode", "scenario", "number", "status", "outcome", "ended_reason"),
    [
        (
            "bridge",
            "uac-expect-404.xml",
            "+14155559999",
            404,
            "rejected",
            "call.start.error-get-phone-number",
        ),
        (
            "redirect",
            "uac-expect-302.xml",
            "+14155550100",
            302,
            "assistant",
            "call.handoff.transferred-to-runtime",
        ),
    ],
    ids=["reject", "redirect"],
)
def test_call_logs_one_summary_at_info(
    start_router: StartRouter,
    router_config: dict[str, Any],
    tmp_path: Path,
    mode: str,
    scenario: str,
    number: str,
    status: int,
    outcome: str,
    ended_reason: str,
) -> None:
    router_config["router"]["runtime"]["mode"] = mode
    router = start_router(router_config)

    call(router, scenario, number, tmp_path)

    ended = router.wait_for_event("call.ended")
    events = [e for e in router.events() if e.get("call_id") == ended["call_id"]]
    assert [event["event"] for event in events] == ["call.ended"]
    assert ended["outcome"] == outcome
    assert ended["sip_status"] == status
    assert ended["ended_reason"] == ended_reason
    assert ended["setup_ms"] >= 0
    assert ended["caller"] == "+*******9876"
    assert ended["dialled"] == number
    assert ended["transport"] == "udp"


# Secrets in the query or user information of URLs that the config or a
# webhook reply gives the router. The first four are in the config.
ORG_URL_TOKEN = "org-url-token-4b71d0"
URL_PASSWORD = "url-password-c83e15"
URL_API_KEY = "url-api-key-5f09a2"
RUNTIME_TOKEN = "runtime-token-e2d647"
INLINE_URL_TOKEN = "inline-url-token-17ac3b"
DESTINATION_TOKEN = "destination-token-9a4e50"
URL_SECRETS = (
    ORG_URL_TOKEN,
    URL_PASSWORD,
    URL_API_KEY,
    RUNTIME_TOKEN,
    INLINE_URL_TOKEN,
    DESTINATION_TOKEN,
)


def test_url_secrets_not_logged(
    start_router: StartRouter,
    router_config: dict[str, Any],
    webhooks: WebhookServer,
    tmp_path: Path,
) -> None:
    router_config["router"]["logLevel"] = "debug"
    router_config["org"]["server"]["url"] = (
        webhooks.url("/webhook") + f"?token={ORG_URL_TOKEN}"
    )
    broken = f"hook-user:{URL_PASSWORD}@127.0.0.1:{webhooks.port}/broken"
    phone_number(router_config, "pn-fallback")["server"]["url"] = (
        f"http://{broken}?team=support&api_key={URL_API_KEY}"
    )
    router_config["router"]["runtime"]["uri"] += f";token={RUNTIME_TOKEN}"
    router = start_router(router_config)

    # Nothing listens on this port, so each status-update and report sent
    # to the inline assistant's server fails with a transport error.
    closed = f"http://127.0.0.1:{free_port()}/inline?token={INLINE_URL_TOKEN}"
    assistant = {"name": "Inline", "server": {"url": closed}}
    webhooks.reply("/webhook", {"assistant": assistant})
    call(router, "uac-static-assistant-expect-200.xml", "+14155550101", tmp_path)
    # The space makes the URI invalid, so the reply is rejected with an
    # error that quotes it.
    bad_uri = f"sip:agent@127.0.0.1?X-Token={DESTINATION_TOKEN}&X-Note=two words"
    webhooks.reply("/webhook", {"destination": {"type": "sip", "sipUri": bad_uri}})
    call(router, "uac-expect-480.xml", "+14155550101", tmp_path)
    webhooks.reply("/broken", status=500)
    call(router, "uac-expect-302.xml", "+14155550102", tmp_path)
    router.wait_for_event("webhook.failed", type="end-of-call-report")
    # A string where a mapping belongs makes the error quote the URL.
    invalid = json.loads(router.config_path.read_text())
    invalid["org"]["server"] = router_config["org"]["server"]["url"]
    router.config_path.write_text(json.dumps(invalid))
    status, body = post(router, "/admin/reload", ADMIN_TOKEN)

    assert router.stop() == 0
    assert status == 422
    assert ORG_URL_TOKEN not in body
    # The URLs were in use, so the secrets' absence means something.
    assert webhooks.requests("/webhook")
    assert webhooks.requests("/broken")
    assert router.events("webhook.failed", result="transport-error")
    # The teardown's scan finds the ones that the config holds, too.
    assert set(URL_SECRETS[:4]) <= config_secrets(router.config)
    log_text = router.stderr_text()
    for secret in URL_SECRETS:
        assert secret not in log_text, f"{secret} is in {router.stderr_path}"
    rejected = router.wait_for_event("assistant_request.invalid_reply")
    assert f"X-Token={REDACTED}&X-Note=two words" in rejected["detail"]
    errors = router.wait_for_event("config.reload_rejected")["errors"]
    assert errors == [
        "org.server: must be a mapping, got "
        f"'{webhooks.url('/webhook')}?token={REDACTED}'"
    ]
