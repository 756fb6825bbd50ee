"""The webhook delivery queue against real aiohttp servers on 127.0.0.1."""

import asyncio
import hashlib
import hmac
import json
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from router.config import Config, Server, WebhookDeliverySettings
from router.metrics import Metrics
from router.webhooks.delivery import WebhookDelivery

# Slack for scheduling on a loaded test machine.
MARGIN_SECONDS = 0.5

Handler = Callable[[web.Request, dict[str, Any]], Awaitable[web.StreamResponse]]


@dataclass
class Seen:
    message: dict[str, Any]
    headers: dict[str, str]
    body: bytes
    at: float
    status: int = 0


@dataclass
class Receiver:
    """A loopback receiver whose replies each test scripts."""

    handler: Handler | None = None
    seen: list[Seen] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        message = json.loads(body)["message"]
        loop = asyncio.get_running_loop()
        seen = Seen(message, dict(request.headers), body, loop.time())
        self.seen.append(seen)
        if self.handler is None:
            response = web.json_response({})
        else:
            response = await self.handler(request, message)
        seen.status = response.status
        return response

    def accepted(self) -> list[dict[str, Any]]:
        return [seen.message for seen in self.seen if seen.status == 200]

    def fail_first(self, count: int, status: int = 503) -> None:
        remaining = [count]

        async def handler(request, message):
            if remaining[0] > 0:
                remaining[0] -= 1
                return web.Response(status=status)
            return web.json_response({})

        self.handler = handler


@pytest.fixture
async def receiver():
    server = Receiver()
    app = web.Application()
    app.router.add_post("/hook", server.handle)
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    server.url = str(test_server.make_url("/hook"))
    yield server
    await test_server.close()


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as client_session:
        yield client_session


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


def make_delivery(
    session: aiohttp.ClientSession,
    metrics: Metrics,
    config: Config | None = None,
    **settings: Any,
) -> WebhookDelivery:
    config = config or Config()
    return WebhookDelivery(
        session, lambda: config, metrics, WebhookDeliverySettings(**settings)
    )


def make_server(url: str, **fields: Any) -> Server:
    return Server.model_validate({"url": url, **fields})


def message(number: int, kind: str = "status-update") -> dict[str, Any]:
    return {"message": {"type": kind, "sequence": number}}


def deliveries(metrics: Metrics, result: str, kind: str = "status-update") -> float:
    value = metrics.registry.get_sample_value(
        "cozmox_router_webhook_deliveries_total", {"type": kind, "result": result}
    )
    return value or 0.0


def dropped(metrics: Metrics, kind: str = "status-update") -> float:
    value = metrics.registry.get_sample_value(
        "cozmox_router_webhook_queue_dropped_total", {"type": kind}
    )
    return value or 0.0


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


# ----- order and parallelism ----------------------------------------------------


async def test_messages_of_call_in_order(receiver, session, metrics):
    delivery = make_delivery(session, metrics)
    server = make_server(receiver.url)

    for number in range(5):
        delivery.send("call-1", message(number), server)
    await delivery.flush(5)

    assert [m["sequence"] for m in receiver.accepted()] == [0, 1, 2, 3, 4]
    assert deliveries(metrics, "ok") == 5
    assert delivery.depth == 0


async def test_slow_call_does_not_hold_others(receiver, session, metrics):
    async def handler(request, body):
        if body["call"] == "slow":
            await asyncio.sleep(1.0)
        return web.json_response({})

    receiver.handler = handler
    delivery = make_delivery(session, metrics)
    server = make_server(receiver.url)

    delivery.send(
        "slow", {"message": {"type": "status-update", "call": "slow"}}, server
    )
    delivery.send(
        "fast", {"message": {"type": "status-update", "call": "fast"}}, server
    )
    await delivery.flush(5)

    assert [seen.message["call"] for seen in receiver.seen] == ["slow", "fast"]
    finished = [seen.message["call"] for seen in receiver.seen if seen.status]
    assert finished == ["slow", "fast"]
    assert receiver.seen[1].at - receiver.seen[0].at < 0.5


async def test_send_returns_without_waiting(receiver, session, metrics):
    async def handler(request, body):
        await asyncio.sleep(1.0)
        return web.json_response({})

    receiver.handler = handler
    delivery = make_delivery(session, metrics)
    loop = asyncio.get_running_loop()

    started = loop.time()
    delivery.send("call-1", message(0), make_server(receiver.url))
    elapsed = loop.time() - started
    await delivery.flush(5)

    assert elapsed < 0.05
    assert deliveries(metrics, "ok") == 1


# ----- retries ----------------------------------------------------------------------


async def test_fixed_backoff_retries_then_keeps_order(receiver, session, metrics):
    receiver.fail_first(2, status=503)
    delivery = make_delivery(session, metrics)
    server = make_server(
        receiver.url,
        backoffPlan={"type": "fixed", "maxRetries": 3, "baseDelaySeconds": 0.2},
    )

    delivery.send("call-1", message(0), server)
    delivery.send("call-1", message(1), server)
    await delivery.flush(5)

    assert [seen.message["sequence"] for seen in receiver.seen] == [0, 0, 0, 1]
    assert [seen.status for seen in receiver.seen] == [503, 503, 200, 200]
    times = [seen.at for seen in receiver.seen[:3]]
    gaps = [times[1] - times[0], times[2] - times[1]]
    assert all(0.2 - 0.05 <= gap < 0.2 + MARGIN_SECONDS for gap in gaps), gaps
    assert deliveries(metrics, "ok") == 2


async def test_exponential_backoff_doubles_delay(receiver, session, metrics):
    receiver.fail_first(3, status=500)
    delivery = make_delivery(session, metrics)
    server = make_server(
        receiver.url,
        backoffPlan={"type": "exponential", "maxRetries": 3, "baseDelaySeconds": 0.1},
    )

    delivery.send("call-1", message(0), server)
    await delivery.flush(5)

    times = [seen.at for seen in receiver.seen]
    assert len(times) == 4
    gaps = [times[index + 1] - times[index] for index in range(3)]
    for gap, expected in zip(gaps, [0.1, 0.2, 0.4], strict=True):
        assert expected - 0.05 <= gap < expected + MARGIN_SECONDS, gaps
    assert deliveries(metrics, "ok") == 1


async def test_excluded_status_never_retried(receiver, session, metrics):
    receiver.fail_first(1, status=400)
    delivery = make_delivery(session, metrics)
    server = make_server(
        receiver.url,
        backoffPlan={
            "maxRetries": 3,
            "baseDelaySeconds": 0.1,
            "excludedStatusCodes": [400],
        },
    )

    delivery.send("call-1", message(0), server)
    delivery.send("call-1", message(1), server)
    await delivery.flush(5)

    assert [seen.message["sequence"] for seen in receiver.seen] == [0, 1]
    assert deliveries(metrics, "http-error") == 1
    assert deliveries(metrics, "ok") == 1


async def test_retries_exhausted_then_next_message(receiver, session, metrics):
    receiver.fail_first(3, status=502)
    delivery = make_delivery(session, metrics)
    server = make_server(
        receiver.url, backoffPlan={"maxRetries": 2, "baseDelaySeconds": 0}
    )

    delivery.send("call-1", message(0), server)
    delivery.send("call-1", message(1), server)
    await delivery.flush(5)

    assert [seen.status for seen in receiver.seen] == [502, 502, 502, 200]
    assert receiver.accepted() == [message(1)["message"]]
    assert deliveries(metrics, "http-error") == 1


async def test_no_backoff_plan_means_one_attempt(receiver, session, metrics):
    receiver.fail_first(1, status=503)
    delivery = make_delivery(session, metrics)

    delivery.send("call-1", message(0), make_server(receiver.url))
    await delivery.flush(5)

    assert len(receiver.seen) == 1
    assert deliveries(metrics, "http-error") == 1


async def test_server_timeout_per_attempt(receiver, session, metrics):
    async def handler(request, body):
        await asyncio.sleep(5)
        return web.json_response({})

    receiver.handler = handler
    delivery = make_delivery(session, metrics)
    loop = asyncio.get_running_loop()

    started = loop.time()
    delivery.send("call-1", message(0), make_server(receiver.url, timeoutSeconds=1))
    await delivery.flush(4)
    elapsed = loop.time() - started

    assert 1 <= elapsed < 1 + MARGIN_SECONDS
    assert deliveries(metrics, "timeout") == 1


async def test_transport_error_retried(session, metrics):
    delivery = make_delivery(session, metrics)
    server = make_server(
        closed_port_url(), backoffPlan={"maxRetries": 2, "baseDelaySeconds": 0}
    )

    delivery.send("call-1", message(0), server)
    await delivery.flush(5)

    assert deliveries(metrics, "transport-error") == 1


async def test_missing_credential_is_a_fault(receiver, session, metrics):
    delivery = make_delivery(session, metrics)
    server = make_server(
        receiver.url,
        credentialId="nowhere",
        backoffPlan={"maxRetries": 3, "baseDelaySeconds": 0},
    )

    delivery.send("call-1", message(0), server)
    await delivery.flush(5)

    assert receiver.seen == []
    assert deliveries(metrics, "fault") == 1


async def test_url_userinfo_and_bearer_is_a_fault(receiver, session, metrics):
    config = Config.model_validate(
        {
            "credentials": [
                {
                    "id": "bearer",
                    "provider": "webhook",
                    "name": "bearer",
                    "authenticationPlan": {"type": "bearer", "token": "tok-9"},
                }
            ]
        }
    )
    delivery = make_delivery(session, metrics, config)
    url = receiver.url.replace("http://", "http://bob:pw@")
    server = make_server(
        url, credentialId="bearer", backoffPlan={"maxRetries": 3, "baseDelaySeconds": 0}
    )

    delivery.send("call-1", message(0), server)
    await delivery.flush(5)

    assert receiver.seen == []
    assert deliveries(metrics, "fault") == 1


# ----- a full queue ---------------------------------------------------------------


async def test_full_queue_drops_oldest(receiver, session, metrics):
    release = asyncio.Event()

    async def handler(request, body):
        await release.wait()
        return web.json_response({})

    receiver.handler = handler
    delivery = make_delivery(session, metrics, queue_size=3, max_concurrent_requests=1)
    server = make_server(receiver.url)

    delivery.send("call-1", message(0), server)
    await asyncio.sleep(0.2)  # message 0 is now in flight
    for number in range(1, 6):
        delivery.send(f"call-{number}", message(number), server)

    assert delivery.depth == 3
    assert dropped(metrics) == 2
    depth = metrics.registry.get_sample_value("cozmox_router_webhook_queue_depth")
    assert depth == 3
    release.set()
    await delivery.flush(5)
    assert sorted(m["sequence"] for m in receiver.accepted()) == [0, 3, 4, 5]
    assert deliveries(metrics, "ok") == 4


async def test_drop_keeps_order_of_call(receiver, session, metrics):
    release = asyncio.Event()

    async def handler(request, body):
        await release.wait()
        return web.json_response({})

    receiver.handler = handler
    delivery = make_delivery(session, metrics, queue_size=2, max_concurrent_requests=1)
    server = make_server(receiver.url)

    delivery.send("other", message(100), server)
    await asyncio.sleep(0.2)
    for number in range(4):
        delivery.send("call-1", message(number), server)
    release.set()
    await delivery.flush(5)

    call_messages = [m["sequence"] for m in receiver.accepted() if m["sequence"] < 100]
    assert call_messages == [2, 3]
    assert dropped(metrics) == 2


# ----- shutdown ---------------------------------------------------------------------


async def test_flush_gives_up_after_timeout(receiver, session, metrics):
    async def handler(request, body):
        await asyncio.sleep(30)
        return web.json_response({})

    receiver.handler = handler
    delivery = make_delivery(session, metrics, max_concurrent_requests=1)
    server = make_server(receiver.url, timeoutSeconds=60)
    loop = asyncio.get_running_loop()

    for number in range(3):
        delivery.send("call-1", message(number), server)
    started = loop.time()
    await delivery.flush(0.5)
    elapsed = loop.time() - started

    assert elapsed < 0.5 + MARGIN_SECONDS
    assert deliveries(metrics, "abandoned") == 3
    assert delivery.depth == 0


async def test_flush_without_messages_returns_at_once(session, metrics):
    delivery = make_delivery(session, metrics)

    await asyncio.wait_for(delivery.flush(10), timeout=0.5)


# ----- authentication ---------------------------------------------------------------


async def test_hmac_signature_verifies(receiver, session, metrics):
    key = "hmac-key-for-tests"
    config = Config.model_validate(
        {
            "credentials": [
                {
                    "id": "signing",
                    "provider": "webhook",
                    "name": "signing",
                    "authenticationPlan": {
                        "type": "hmac",
                        "secretKey": key,
                        "algorithm": "sha256",
                    },
                }
            ]
        }
    )
    delivery = make_delivery(session, metrics, config)
    server = make_server(
        receiver.url, credentialId="signing", headers={"X-Team": "ops"}, secret="s3"
    )

    delivery.send("call-1", message(0), server)
    await delivery.flush(5)

    (seen,) = receiver.seen
    timestamp = seen.headers["x-timestamp"]
    payload = timestamp.encode() + b"." + seen.body
    expected = hmac.new(key.encode(), payload, hashlib.sha256).hexdigest()
    wrong = hmac.new(b"wrong-key", payload, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(seen.headers["x-signature"], expected)
    assert not hmac.compare_digest(seen.headers["x-signature"], wrong)
    assert seen.headers["X-Team"] == "ops"
    assert seen.headers["X-Cozmox-Secret"] == "s3"
    assert seen.headers["Content-Type"] == "application/json"


async def test_bearer_token_sent(receiver, session, metrics):
    config = Config.model_validate(
        {
            "credentials": [
                {
                    "id": "bearer",
                    "provider": "webhook",
                    "name": "bearer",
                    "authenticationPlan": {"type": "bearer", "token": "tok-9"},
                }
            ]
        }
    )
    delivery = make_delivery(session, metrics, config)

    delivery.send(
        "call-1", message(0), make_server(receiver.url, credentialId="bearer")
    )
    await delivery.flush(5)

    (seen,) = receiver.seen
    assert seen.headers["Authorization"] == "Bearer tok-9"


async def test_send_after_flush_is_abandoned(receiver, session, metrics):
    delivery = make_delivery(session, metrics)
    await delivery.flush(1)

    delivery.send("call-1", message(0), make_server(receiver.url))
    await asyncio.sleep(0.1)

    assert receiver.seen == []
    assert deliveries(metrics, "abandoned") == 1
    assert delivery.depth == 0
