"""The admin API on a real Router, in process: numbers, credentials, reload."""

import json
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import validate

from router.app import Router
from router.config import load_config
from router.http.openapi import openapi_document
from router.http.server import build_http_app
from router.sip.limits import SipLimits

ADMIN_TOKEN = "admin-token-for-api-tests"
SECRETS = (
    ADMIN_TOKEN,
    "trunk-password-for-api-tests",
    "bearer-token-for-api-tests",
    "hmac-key-for-api-tests",
    "server-secret-for-api-tests",
    "header-token-for-api-tests",
)
LIMITS = SipLimits(max_calls=4, max_accounts=8, max_packet_bytes=4000)

CONFIG: dict[str, Any] = {
    "router": {"http": {"host": "127.0.0.1", "port": 8080, "adminToken": ADMIN_TOKEN}},
    "credentials": [
        {
            "id": "trunk-a",
            "provider": "byo-sip-trunk",
            "name": "Trunk A",
            "gateways": [{"ip": "127.0.0.1"}],
            "outboundAuthenticationPlan": {
                "authUsername": "trunk-user",
                "authPassword": "trunk-password-for-api-tests",
            },
        },
        {
            "id": "hook-bearer",
            "provider": "webhook",
            "name": "Bearer",
            "authenticationPlan": {
                "type": "bearer",
                "token": "bearer-token-for-api-tests",
            },
        },
        {
            "id": "hook-hmac",
            "provider": "webhook",
            "name": "HMAC",
            "authenticationPlan": {
                "type": "hmac",
                "secretKey": "hmac-key-for-api-tests",
                "algorithm": "sha256",
            },
        },
    ],
    "phoneNumbers": [
        {
            "id": "pn-1",
            "credentialId": "trunk-a",
            "number": "+14155550100",
            "server": {
                "url": "http://127.0.0.1:8090/hook",
                "secret": "server-secret-for-api-tests",
                "headers": {
                    "Authorization": "Bearer header-token-for-api-tests",
                    "X-Team": "support",
                },
            },
        }
    ],
}

ADMIN_REQUESTS = [
    ("GET", "/calls"),
    ("GET", "/calls/call-1"),
    ("GET", "/phone-number"),
    ("GET", "/phone-number/pn-1"),
    ("GET", "/credential"),
    ("GET", "/credential/trunk-a"),
    ("POST", "/admin/reload"),
]


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "router.json"
    path.write_text(json.dumps(CONFIG))
    return path


@pytest.fixture
async def client(config_path: Path):
    router = Router(load_config(config_path), LIMITS, config_path)
    test_client = TestClient(TestServer(build_http_app(router), host="127.0.0.1"))
    await test_client.start_server()
    yield test_client
    await test_client.close()


def bearer() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, secret


@pytest.mark.parametrize(("method", "path"), ADMIN_REQUESTS)
async def test_admin_path_needs_token(client, method, path):
    response = await client.request(method, path)

    assert response.status == 401
    assert_no_secret(await response.text())


async def test_phone_numbers_listed_without_secrets(client):
    response = await client.get("/phone-number", headers=bearer())
    body = await response.json()

    assert response.status == 200
    assert [number["id"] for number in body] == ["pn-1"]
    server = body[0]["server"]
    assert server["url"] == "http://127.0.0.1:8090/hook"
    assert server["headers"] == {"X-Team": "support"}
    assert "secret" not in server
    assert_no_secret(await response.text())


async def test_phone_number_by_id(client):
    found = await client.get("/phone-number/pn-1", headers=bearer())
    missing = await client.get("/phone-number/pn-9", headers=bearer())

    assert found.status == 200
    assert (await found.json())["number"] == "+14155550100"
    assert missing.status == 404
    assert await missing.json() == {"error": "phone number 'pn-9' not found"}


async def test_phone_number_url_credentials_masked(tmp_path):
    url = (
        "http://bob:url-password-for-api-tests@127.0.0.1:18091/hook"
        "?team=support&token=query-token-for-api-tests"
    )
    config = json.loads(json.dumps(CONFIG))
    config["phoneNumbers"].append(
        {
            "id": "pn-url",
            "credentialId": "trunk-a",
            "number": "+14155550101",
            "server": {"url": url},
            "fallbackDestination": {
                "type": "sip",
                "sipUri": "sip:agent@127.0.0.1:5090;token=sip-token-for-api-tests",
            },
        }
    )
    path = tmp_path / "router.json"
    path.write_text(json.dumps(config))
    router = Router(load_config(path), LIMITS, path)
    client = TestClient(TestServer(build_http_app(router), host="127.0.0.1"))
    await client.start_server()
    try:
        by_id = await client.get("/phone-number/pn-url", headers=bearer())
        listed = await client.get("/phone-number", headers=bearer())
        by_id_text = await by_id.text()
        listed_text = await listed.text()
    finally:
        await client.close()

    assert by_id.status == 200
    assert json.loads(by_id_text)["server"]["url"] == (
        "http://bob:[redacted]@127.0.0.1:18091/hook?team=support&token=[redacted]"
    )
    assert json.loads(by_id_text)["fallbackDestination"]["sipUri"] == (
        "sip:agent@127.0.0.1:5090;token=[redacted]"
    )
    for text in (by_id_text, listed_text):
        assert "url-password-for-api-tests" not in text
        assert "query-token-for-api-tests" not in text
        assert "sip-token-for-api-tests" not in text
    assert_no_secret(listed_text)


async def test_credentials_listed_without_secrets(client):
    response = await client.get("/credential", headers=bearer())
    body = await response.json()

    assert response.status == 200
    assert [credential["id"] for credential in body] == [
        "trunk-a",
        "hook-bearer",
        "hook-hmac",
    ]
    plan = body[0]["outboundAuthenticationPlan"]
    assert plan == {"authUsername": "trunk-user"}
    assert "token" not in body[1]["authenticationPlan"]
    assert "secretKey" not in body[2]["authenticationPlan"]
    assert_no_secret(await response.text())


async def test_credential_by_id(client):
    found = await client.get("/credential/hook-hmac", headers=bearer())
    missing = await client.get("/credential/nope", headers=bearer())

    assert found.status == 200
    assert (await found.json())["authenticationPlan"]["algorithm"] == "sha256"
    assert_no_secret(await found.text())
    assert missing.status == 404


async def test_reload_applies_valid_file(client, config_path):
    changed = json.loads(config_path.read_text())
    changed["phoneNumbers"][0]["assistantId"] = "asst-after-reload"
    config_path.write_text(json.dumps(changed))

    response = await client.post("/admin/reload", headers=bearer())
    body = await response.json()
    number = await (await client.get("/phone-number/pn-1", headers=bearer())).json()

    assert response.status == 200
    assert body == {"result": "applied", "errors": [], "restartRequired": []}
    assert number["assistantId"] == "asst-after-reload"


async def test_reload_rejects_invalid_file(client, config_path):
    broken = json.loads(config_path.read_text())
    broken["phoneNumbers"][0]["status"] = "paused"
    config_path.write_text(json.dumps(broken))

    response = await client.post("/admin/reload", headers=bearer())
    body = await response.json()

    assert response.status == 422
    assert body["result"] == "rejected"
    assert len(body["errors"]) == 1
    assert body["errors"][0].startswith("phoneNumbers[0].status")
    assert_no_secret(await response.text())


async def test_reload_rejects_alias_bomb(client, config_path):
    lines = ["a: &a [x,x,x,x,x,x,x,x,x]"]
    for below, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{','.join([f'*{below}'] * 9)}]")
    config_path.write_text("\n".join(lines) + "\n")

    started = time.monotonic()
    response = await client.post("/admin/reload", headers=bearer())
    elapsed = time.monotonic() - started
    body = await response.json()

    assert response.status == 422
    assert body["result"] == "rejected"
    assert len(body["errors"]) == 1
    assert "through YAML aliases" in body["errors"][0]
    assert elapsed < 1


async def test_reload_needs_post(client):
    response = await client.get("/admin/reload", headers=bearer())

    assert response.status == 405


async def test_openapi_document_is_valid(client):
    response = await client.get("/openapi.json")
    document = await response.json()

    assert response.status == 200
    validate(document)


async def test_openapi_documents_every_route(client):
    documented = set(openapi_document()["paths"])
    served = {
        resource.canonical.replace("{call_id}", "{id}")
        .replace("{number_id}", "{id}")
        .replace("{credential_id}", "{id}")
        for resource in client.app.router.resources()
    }

    assert served == documented


async def test_openapi_marks_secrets_write_only():
    schemas = openapi_document()["components"]["schemas"]

    password = schemas["OutboundAuthenticationPlan"]["properties"]["authPassword"]

    assert password["anyOf"][0]["writeOnly"] is True
