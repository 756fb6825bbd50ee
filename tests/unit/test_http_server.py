from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, SecretStr
from structlog.testing import capture_logs

from router.http.server import build_http_app
from router.metrics import Metrics

ADMIN_TOKEN = "admin-token-for-tests"

READINESS = {
    "sip": {
        "limits": {"maxCalls": 4, "maxAccounts": 8, "maxPacketBytes": 4000},
        "slots": {"used": 0, "max": 4},
    },
    "registrations": {"trunk-a": "registered", "trunk-b": "failed"},
}


class InlineServer(BaseModel):
    url: str
    secret: SecretStr | None = None


@dataclass
class StubState:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    ready: bool = True
    token: str | None = ADMIN_TOKEN
    records: dict[str, dict[str, Any]] = field(default_factory=dict)

    def is_ready(self) -> bool:
        return self.ready

    def readiness(self) -> dict[str, Any]:
        return READINESS

    def admin_token(self) -> str | None:
        return self.token

    def call_record(self, call_id: str) -> dict[str, Any] | None:
        return self.records.get(call_id)

    def call_records(self) -> list[dict[str, Any]]:
        return list(self.records.values())


def inline_call_record() -> dict[str, Any]:
    return {
        "id": "call-1",
        "phoneNumberId": "number-1",
        "createdAt": datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
        "route": {
            "kind": "assistant",
            "assistant": {
                "name": "Inline",
                "server": InlineServer(
                    url="http://127.0.0.1:8090/a", secret=SecretStr("inline-secret")
                ),
            },
            "assistantOverrides": {"variableValues": {"plan": "gold"}},
        },
    }


@pytest.fixture
async def serve():
    clients: list[TestClient] = []

    async def start(state: StubState) -> TestClient:
        client = TestClient(TestServer(build_http_app(state), host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


def bearer(token: str = ADMIN_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_healthz_is_ok(serve):
    client = await serve(StubState(ready=False))

    response = await client.get("/healthz")

    assert response.status == 200
    assert await response.json() == {"ok": True}


async def test_readyz_ready_returns_spec_shape(serve):
    client = await serve(StubState(ready=True))

    response = await client.get("/readyz")

    assert response.status == 200
    assert await response.json() == {"ready": True, **READINESS}


async def test_readyz_not_ready_returns_503(serve):
    client = await serve(StubState(ready=False))

    response = await client.get("/readyz")
    body = await response.json()

    assert response.status == 503
    assert body["ready"] is False
    assert body["registrations"] == READINESS["registrations"]


async def test_metrics_serves_prometheus_text(serve):
    state = StubState()
    metrics = Metrics(state.registry)
    metrics.sip_invites_received.labels(transport="udp").inc(3)
    client = await serve(state)

    response = await client.get("/metrics")
    text = await response.text()

    assert response.status == 200
    assert response.content_type == "text/plain"
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = families["cozmox_router_sip_invites_received"].samples
    assert [(s.labels, s.value) for s in samples if s.name.endswith("_total")] == [
        ({"transport": "udp"}, 3.0)
    ]


async def test_metrics_needs_no_token(serve):
    client = await serve(StubState(token=ADMIN_TOKEN))

    response = await client.get("/metrics")

    assert response.status == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer tökén"},
        {"Authorization": ADMIN_TOKEN},
    ],
    ids=["missing", "wrong", "basic", "empty", "non-ascii", "no-scheme"],
)
@pytest.mark.parametrize("path", ["/calls", "/calls/call-1"])
async def test_admin_rejects_bad_token_with_401(serve, headers, path):
    state = StubState(records={"call-1": inline_call_record()})
    client = await serve(state)

    response = await client.get(path, headers=headers)
    body = await response.json()

    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "error" in body
    assert ADMIN_TOKEN not in await response.text()


async def test_admin_rejection_logged_without_token(serve):
    client = await serve(StubState())

    with capture_logs() as logs:
        await client.get("/calls", headers=bearer("presented-wrong-token"))

    rejected = [log for log in logs if log["event"] == "admin.request_rejected"]
    assert len(rejected) == 1
    assert rejected[0]["error"] == "invalid bearer token"
    assert rejected[0]["path"] == "/calls"
    assert rejected[0]["log_level"] == "warning"
    assert "presented-wrong-token" not in repr(logs)
    assert ADMIN_TOKEN not in repr(logs)


async def test_admin_without_configured_token_is_403(serve):
    client = await serve(StubState(token=None))

    response = await client.get("/calls", headers=bearer("anything"))
    body = await response.json()

    assert response.status == 403
    assert "adminToken" in body["error"]


async def test_admin_scheme_is_case_insensitive(serve):
    client = await serve(StubState())

    response = await client.get(
        "/calls", headers={"Authorization": f"bearer {ADMIN_TOKEN}"}
    )

    assert response.status == 200


async def test_get_unknown_call_is_404(serve):
    client = await serve(StubState())

    response = await client.get("/calls/nope", headers=bearer())
    body = await response.json()

    assert response.status == 404
    assert body == {"error": "call 'nope' not found"}


async def test_get_call_returns_route_without_secrets(serve):
    client = await serve(StubState(records={"call-1": inline_call_record()}))

    response = await client.get("/calls/call-1", headers=bearer())
    body = await response.json()
    text = await response.text()

    assert response.status == 200
    assert body["id"] == "call-1"
    assert body["createdAt"] == "2024-05-01T12:00:00Z"
    assert body["route"]["kind"] == "assistant"
    assert body["route"]["assistant"]["server"] == {"url": "http://127.0.0.1:8090/a"}
    assert body["route"]["assistantOverrides"] == {"variableValues": {"plan": "gold"}}
    assert "inline-secret" not in text
    assert "secret" not in body["route"]["assistant"]["server"]


async def test_list_calls_returns_every_record(serve):
    second = {"id": "call-2", "route": {"kind": "squad", "squadId": "squad-1"}}
    state = StubState(records={"call-1": inline_call_record(), "call-2": second})
    client = await serve(state)

    response = await client.get("/calls", headers=bearer())
    body = await response.json()

    assert response.status == 200
    assert [call["id"] for call in body["calls"]] == ["call-1", "call-2"]
    assert "inline-secret" not in await response.text()


async def test_calls_reject_other_methods(serve):
    client = await serve(StubState())

    response = await client.post("/calls", headers=bearer())

    assert response.status == 405
