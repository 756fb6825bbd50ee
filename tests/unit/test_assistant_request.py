"""The assistant-request client against real aiohttp servers on 127.0.0.1."""

import asyncio
import hashlib
import hmac
import json
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from router.config import Config, PhoneNumber, Server
from router.errors import AssistantRequestFailed
from router.metrics import Metrics
from router.routing import ended_reasons
from router.routing.replies import DestinationReply, ErrorReply, RouteReply
from router.webhooks.assistant_request import (
    AssistantRequestClient,
    AssistantRequestInput,
    build_request_body,
    retry_delay_seconds,
)

# Slack for scheduling on a loaded test machine, added to every deadline.
DEADLINE_MARGIN_SECONDS = 0.4

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class SeenRequest:
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class WebhookServer:
    """A loopback webhook server whose replies each test scripts."""

    handler: Handler | None = None
    seen: list[SeenRequest] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        loop = asyncio.get_running_loop()
        self.seen.append(SeenRequest(dict(request.headers), body, loop.time()))
        assert self.handler is not None
        return await self.handler(request)

    def reply_json(self, payload: Any, status: int = 200) -> None:
        async def handler(request: web.Request) -> web.StreamResponse:
            return web.json_response(payload, status=status)

        self.handler = handler

    def reply_statuses(self, *statuses: int, then: Any = None) -> None:
        """Respond with each status in turn, then 200 with `then` as JSON."""
        remaining = list(statuses)

        async def handler(request: web.Request) -> web.StreamResponse:
            if remaining:
                return web.Response(status=remaining.pop(0))
            return web.json_response(then)

        self.handler = handler


@pytest.fixture
async def webhook():
    server = WebhookServer()
    app = web.Application()
    app.router.add_post("/webhook", server.handle)
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    server.url = str(test_server.make_url("/webhook"))
    yield server
    await test_server.close()


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as client_session:
        yield client_session


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


def make_config(deadline_seconds: float = 7.5, credentials: list | None = None):
    return Config.model_validate(
        {
            "router": {"assistantRequestDeadlineSeconds": deadline_seconds},
            "credentials": credentials or [],
        }
    )


def make_server(url: str, **fields) -> Server:
    return Server.model_validate({"url": url, **fields})


def make_number(**fields) -> PhoneNumber:
    return PhoneNumber.model_validate(
        {
            "id": "number-1",
            "credentialId": "trunk-1",
            "number": "+14155550100",
            "name": "Front desk",
            **fields,
        }
    )


def make_input(number: PhoneNumber | None = None) -> AssistantRequestInput:
    return AssistantRequestInput(
        call_id="call-1",
        sip_call_id="a84b4c76e66710@127.0.0.1",
        phone_number=number or make_number(),
        created_at=datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC),
        caller_number="+14155551234",
        caller_name="Alice",
        caller_sip_uri="sip:+14155551234@127.0.0.1",
        sip_headers={"X-Campaign": "spring", "User-Agent": "carrier", "x-tenant": "7"},
    )


def make_client(session, metrics, config: Config, **options) -> AssistantRequestClient:
    return AssistantRequestClient(session, lambda: config, metrics, **options)


def result_count(metrics: Metrics, result: str) -> float:
    value = metrics.registry.get_sample_value(
        "cozmox_router_assistant_request_seconds_count", {"result": result}
    )
    return value or 0.0


async def expect_failure(client, server, call=None) -> AssistantRequestFailed:
    with pytest.raises(AssistantRequestFailed) as caught:
        await client.request(call or make_input(), server)
    return caught.value


REPLY_KINDS = [
    pytest.param({"assistantId": "asst-1"}, RouteReply, id="assistant-id"),
    pytest.param(
        {"messageResponse": {"assistant": {"name": "Inline", "model": {}}}},
        RouteReply,
        id="inline-assistant",
    ),
    pytest.param(
        {"squadId": "squad-1", "squadOverrides": {"x": 1}}, RouteReply, id="squad-id"
    ),
    pytest.param({"workflow": {"nodes": []}}, RouteReply, id="inline-workflow"),
    pytest.param(
        {"destination": {"type": "sip", "sipUri": "sip:desk@127.0.0.1"}},
        DestinationReply,
        id="destination",
    ),
    pytest.param({"error": "We are closed."}, ErrorReply, id="error"),
]


@pytest.mark.parametrize(("payload", "reply_type"), REPLY_KINDS)
async def test_reply_kinds_parsed(webhook, session, metrics, payload, reply_type):
    webhook.reply_json(payload)
    client = make_client(session, metrics, make_config())

    reply = await client.request(make_input(), make_server(webhook.url))

    assert isinstance(reply, reply_type)
    assert len(webhook.seen) == 1


async def test_route_reply_carries_overrides(webhook, session, metrics):
    webhook.reply_json(
        {"messageResponse": {"squadId": "squad-1", "squadOverrides": {"x": 1}}}
    )
    client = make_client(session, metrics, make_config())

    reply = await client.request(make_input(), make_server(webhook.url))

    assert isinstance(reply, RouteReply)
    assert reply.route.kind == "squad"
    assert reply.route.id == "squad-1"
    assert reply.route.overrides == {"x": 1}
    assert result_count(metrics, "ok") == 1


async def test_error_reply_counted_as_error_reply(webhook, session, metrics):
    webhook.reply_json({"error": "We are closed."})
    client = make_client(session, metrics, make_config())

    reply = await client.request(make_input(), make_server(webhook.url))

    assert reply == ErrorReply("We are closed.")
    assert result_count(metrics, "error-reply") == 1
    assert result_count(metrics, "ok") == 0


async def test_reply_table_failure_keeps_its_reason(webhook, session, metrics):
    webhook.reply_json({"assistantId": "a", "squadId": "s"})
    client = make_client(session, metrics, make_config())

    failure = await expect_failure(client, make_server(webhook.url))

    assert failure.ended_reason == (
        ended_reasons.ASSISTANT_REQUEST_RETURNED_INVALID_ASSISTANT
    )
    assert result_count(metrics, "invalid-reply") == 1


async def test_http_500_fails(webhook, session, metrics):
    webhook.reply_statuses(500)
    client = make_client(session, metrics, make_config())

    failure = await expect_failure(client, make_server(webhook.url))

    assert failure.ended_reason == ended_reasons.ASSISTANT_REQUEST_FAILED
    assert "HTTP 500" in failure.detail
    assert result_count(metrics, "http-error") == 1


async def test_redirect_not_followed(webhook, session, metrics):
    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/webhook")

    webhook.handler = redirect
    client = make_client(session, metrics, make_config())

    failure = await expect_failure(client, make_server(webhook.url))

    assert "HTTP 302" in failure.detail
    assert len(webhook.seen) == 1


async def test_garbage_json_fails(webhook, session, metrics):
    async def garbage(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"{not json", content_type="application/json")

    webhook.handler = garbage
    client = make_client(session, metrics, make_config())

    failure = await expect_failure(client, make_server(webhook.url))

    assert failure.ended_reason == ended_reasons.ASSISTANT_REQUEST_FAILED
    assert result_count(metrics, "invalid-reply") == 1


async def test_json_array_body_fails(webhook, session, metrics):
    webhook.reply_json([{"assistantId": "a"}])
    client = make_client(session, metrics, make_config())

    failure = await expect_failure(client, make_server(webhook.url))

    assert failure.ended_reason == ended_reasons.ASSISTANT_REQUEST_FAILED


async def test_slow_server_times_out_at_router_deadline(webhook, session, metrics):
    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(10)
        return web.json_response({"assistantId": "late"})

    webhook.handler = slow
    client = make_client(session, metrics, make_config(deadline_seconds=0.5))
    started = time.monotonic()

    failure = await expect_failure(client, make_server(webhook.url))

    elapsed = time.monotonic() - started
    assert failure.ended_reason == ended_reasons.ASSISTANT_REQUEST_FAILED
    assert "deadline of 0.5 s" in failure.detail
    assert 0.5 <= elapsed < 0.5 + DEADLINE_MARGIN_SECONDS
    assert result_count(metrics, "timeout") == 1


async def test_deadline_is_server_timeout_when_shorter(webhook, session, metrics):
    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(10)
        return web.json_response({"assistantId": "late"})

    webhook.handler = slow
    client = make_client(session, metrics, make_config(deadline_seconds=30))
    started = time.monotonic()

    await expect_failure(client, make_server(webhook.url, timeoutSeconds=1))

    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 1.0 + DEADLINE_MARGIN_SECONDS


async def test_slow_body_counts_against_deadline(webhook, session, metrics):
    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b'{"assistantId":')
        await asyncio.sleep(10)
        await response.write(b'"late"}')
        return response

    webhook.handler = trickle
    client = make_client(session, metrics, make_config(deadline_seconds=0.5))
    started = time.monotonic()

    await expect_failure(client, make_server(webhook.url))

    assert time.monotonic() - started < 0.5 + DEADLINE_MARGIN_SECONDS
    assert result_count(metrics, "timeout") == 1


async def test_retries_cannot_extend_deadline(webhook, session, metrics):
    async def slow_error(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.2)
        return web.Response(status=503)

    webhook.handler = slow_error
    plan = {"type": "fixed", "maxRetries": 10, "baseDelaySeconds": 0}
    client = make_client(session, metrics, make_config(deadline_seconds=0.5))
    started = time.monotonic()

    await expect_failure(client, make_server(webhook.url, backoffPlan=plan))

    assert time.monotonic() - started < 0.5 + DEADLINE_MARGIN_SECONDS
    assert len(webhook.seen) <= 3


async def test_body_over_cap_with_length_fails(webhook, session, metrics):
    webhook.reply_json({"assistantId": "a", "padding": "x" * 2000})
    client = make_client(session, metrics, make_config(), max_response_bytes=1024)

    failure = await expect_failure(client, make_server(webhook.url))

    assert "larger than 1024 bytes" in failure.detail
    assert result_count(metrics, "oversize") == 1


async def test_chunked_body_over_cap_fails(webhook, session, metrics):
    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(64):
            await response.write(b" " * 512)
        await response.write(b'{"assistantId":"a"}')
        return response

    webhook.handler = endless
    plan = {"type": "fixed", "maxRetries": 3, "baseDelaySeconds": 0}
    client = make_client(session, metrics, make_config(), max_response_bytes=1024)

    failure = await expect_failure(client, make_server(webhook.url, backoffPlan=plan))

    assert "larger than 1024 bytes" in failure.detail
    assert len(webhook.seen) == 1


async def test_body_exactly_at_cap_accepted(webhook, session, metrics):
    payload = b'{"assistantId":"a"}'
    body = payload + b" " * (1024 - len(payload))

    async def exact(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, content_type="application/json")

    webhook.handler = exact
    client = make_client(session, metrics, make_config(), max_response_bytes=1024)

    reply = await client.request(make_input(), make_server(webhook.url))

    assert isinstance(reply, RouteReply)


@pytest.fixture
async def resetting_url():
    """A URL whose server resets each connection once the request arrives."""

    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        await reader.readuntil(b"\r\n\r\n")
        sock = writer.get_extra_info("socket")
        # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    server = await asyncio.start_server(reset, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/webhook"
    server.close()
    await server.wait_closed()


async def test_connection_reset_fails(resetting_url, session, metrics):
    client = make_client(session, metrics, make_config())

    failure = await expect_failure(client, make_server(resetting_url))

    assert failure.ended_reason == ended_reasons.ASSISTANT_REQUEST_FAILED
    assert failure.detail.startswith("transport error: ")
    assert "127.0.0.1" not in failure.detail
    assert result_count(metrics, "transport-error") == 1


async def test_connection_refused_fails(session, metrics):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = make_client(session, metrics, make_config())

    failure = await expect_failure(
        client, make_server(f"http://127.0.0.1:{port}/webhook")
    )

    assert failure.detail.startswith("transport error: ")
    assert result_count(metrics, "transport-error") == 1


async def test_retries_until_success(webhook, session, metrics):
    webhook.reply_statuses(503, 502, then={"assistantId": "asst-1"})
    plan = {"type": "fixed", "maxRetries": 3, "baseDelaySeconds": 0.01}
    client = make_client(session, metrics, make_config())

    reply = await client.request(
        make_input(), make_server(webhook.url, backoffPlan=plan)
    )

    assert isinstance(reply, RouteReply)
    assert len(webhook.seen) == 3
    assert result_count(metrics, "ok") == 1


async def test_retries_stop_after_max_retries(webhook, session, metrics):
    webhook.reply_statuses(*[500] * 10)
    plan = {"type": "fixed", "maxRetries": 2, "baseDelaySeconds": 0}
    client = make_client(session, metrics, make_config())

    failure = await expect_failure(client, make_server(webhook.url, backoffPlan=plan))

    assert "HTTP 500" in failure.detail
    assert len(webhook.seen) == 3


async def test_excluded_status_not_retried(webhook, session, metrics):
    webhook.reply_statuses(*[401] * 10)
    plan = {
        "type": "fixed",
        "maxRetries": 5,
        "baseDelaySeconds": 0,
        "excludedStatusCodes": [401, 403],
    }
    client = make_client(session, metrics, make_config())

    failure = await expect_failure(client, make_server(webhook.url, backoffPlan=plan))

    assert "HTTP 401" in failure.detail
    assert len(webhook.seen) == 1


async def test_unexcluded_status_retried(webhook, session, metrics):
    webhook.reply_statuses(503, then={"assistantId": "asst-1"})
    plan = {
        "type": "fixed",
        "maxRetries": 1,
        "baseDelaySeconds": 0,
        "excludedStatusCodes": [401],
    }
    client = make_client(session, metrics, make_config())

    await client.request(make_input(), make_server(webhook.url, backoffPlan=plan))

    assert len(webhook.seen) == 2


async def test_no_backoff_plan_means_one_attempt(webhook, session, metrics):
    webhook.reply_statuses(503, then={"assistantId": "asst-1"})
    client = make_client(session, metrics, make_config())

    await expect_failure(client, make_server(webhook.url))

    assert len(webhook.seen) == 1


async def test_transport_error_retried(session, metrics, resetting_url):
    plan = {"type": "fixed", "maxRetries": 2, "baseDelaySeconds": 0}
    client = make_client(session, metrics, make_config())

    with capture_logs() as logs:
        await expect_failure(client, make_server(resetting_url, backoffPlan=plan))

    retries = [log for log in logs if log["event"] == "assistant_request.retrying"]
    assert [log["retry"] for log in retries] == [1, 2]


async def test_exponential_backoff_doubles(webhook, session, metrics):
    webhook.reply_statuses(500, 500, 500, then={"assistantId": "asst-1"})
    plan = {"type": "exponential", "maxRetries": 3, "baseDelaySeconds": 0.1}
    client = make_client(session, metrics, make_config())

    await client.request(make_input(), make_server(webhook.url, backoffPlan=plan))

    times = [seen.at for seen in webhook.seen]
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    assert len(gaps) == 3
    assert gaps[0] >= 0.1
    assert gaps[1] >= 0.2
    assert gaps[2] >= 0.4


async def test_retry_skipped_when_delay_passes_deadline(webhook, session, metrics):
    webhook.reply_statuses(503, then={"assistantId": "asst-1"})
    plan = {"type": "fixed", "maxRetries": 3, "baseDelaySeconds": 2}
    client = make_client(session, metrics, make_config(deadline_seconds=1))
    started = time.monotonic()

    failure = await expect_failure(client, make_server(webhook.url, backoffPlan=plan))

    assert time.monotonic() - started < 0.5
    assert "HTTP 503" in failure.detail
    assert len(webhook.seen) == 1
    assert result_count(metrics, "http-error") == 1


@pytest.mark.parametrize(
    ("plan", "retry", "status", "delay"),
    [
        (None, 0, 500, None),
        ({"type": "fixed", "maxRetries": 2, "baseDelaySeconds": 1.5}, 0, 500, 1.5),
        ({"type": "fixed", "maxRetries": 2, "baseDelaySeconds": 1.5}, 1, None, 1.5),
        ({"type": "fixed", "maxRetries": 2, "baseDelaySeconds": 1.5}, 2, 500, None),
        (
            {"type": "exponential", "maxRetries": 4, "baseDelaySeconds": 0.5},
            0,
            500,
            0.5,
        ),
        (
            {"type": "exponential", "maxRetries": 4, "baseDelaySeconds": 0.5},
            3,
            500,
            4.0,
        ),
        (
            {"type": "fixed", "maxRetries": 2, "excludedStatusCodes": [429]},
            0,
            429,
            None,
        ),
    ],
)
def test_retry_delay_seconds(plan, retry, status, delay):
    fields = {"backoffPlan": plan} if plan else {}
    server = make_server("http://127.0.0.1:8090/webhook", **fields)

    assert retry_delay_seconds(server, retry, status) == delay


async def test_server_sees_hmac_signature_and_secret(webhook, session, metrics):
    webhook.reply_json({"assistantId": "asst-1"})
    credentials = [
        {
            "provider": "webhook",
            "id": "signer",
            "name": "signer",
            "authenticationPlan": {
                "type": "hmac",
                "secretKey": "hmac-key",
                "algorithm": "sha256",
                "signaturePrefix": "v1=",
            },
        }
    ]
    server = make_server(
        webhook.url, credentialId="signer", secret="shared", headers={"X-Team": "a"}
    )
    client = make_client(session, metrics, make_config(credentials=credentials))

    await client.request(make_input(), server)

    seen = webhook.seen[0]
    timestamp = seen.headers["x-timestamp"]
    payload = timestamp.encode() + b"." + seen.body
    expected = hmac.new(b"hmac-key", payload, hashlib.sha256).hexdigest()
    assert seen.headers["x-signature"] == "v1=" + expected
    assert abs(int(timestamp) - time.time()) < 5
    assert seen.headers["X-Cozmox-Secret"] == "shared"
    assert seen.headers["X-Team"] == "a"
    assert seen.headers["Content-Type"] == "application/json"


async def test_each_retry_signed_again(webhook, session, metrics):
    webhook.reply_statuses(503, then={"assistantId": "asst-1"})
    credentials = [
        {
            "provider": "webhook",
            "id": "bearer",
            "name": "bearer",
            "authenticationPlan": {"type": "bearer", "token": "tok"},
        }
    ]
    plan = {"type": "fixed", "maxRetries": 1, "baseDelaySeconds": 0}
    server = make_server(webhook.url, credentialId="bearer", backoffPlan=plan)
    client = make_client(session, metrics, make_config(credentials=credentials))

    await client.request(make_input(), server)

    assert [seen.headers["Authorization"] for seen in webhook.seen] == [
        "Bearer tok",
        "Bearer tok",
    ]


async def test_server_sees_spec_body(webhook, session, metrics):
    webhook.reply_json({"assistantId": "asst-1"})
    number = make_number(
        server={
            "url": "http://127.0.0.1:8090/number",
            "secret": "number-secret",
            "headers": {"Authorization": "Bearer number-token", "X-Team": "a"},
        }
    )
    client = make_client(session, metrics, make_config())
    before_ms = time.time() * 1000

    await client.request(make_input(number), make_server(webhook.url))

    message = json.loads(webhook.seen[0].body)["message"]
    assert set(message) == {"type", "timestamp", "call", "phoneNumber", "customer"}
    assert message["type"] == "assistant-request"
    assert isinstance(message["timestamp"], int)
    assert before_ms - 1 <= message["timestamp"] <= time.time() * 1000 + 1
    assert message["call"] == {
        "id": "call-1",
        "type": "inboundPhoneCall",
        "phoneCallTransport": "sip",
        "phoneNumberId": "number-1",
        "createdAt": "2024-05-01T12:30:15.123Z",
        "status": "ringing",
        "phoneCallProviderId": "a84b4c76e66710@127.0.0.1",
        "sipHeaders": {"X-Campaign": "spring", "x-tenant": "7"},
    }
    assert message["customer"] == {
        "number": "+14155551234",
        "name": "Alice",
        "sipUri": "sip:+14155551234@127.0.0.1",
    }
    phone_number = message["phoneNumber"]
    assert phone_number["id"] == "number-1"
    assert phone_number["credentialId"] == "trunk-1"
    assert phone_number["number"] == "+14155550100"
    assert phone_number["server"]["url"] == "http://127.0.0.1:8090/number"
    assert phone_number["server"]["headers"] == {"X-Team": "a"}
    assert "secret" not in phone_number["server"]
    assert b"number-secret" not in webhook.seen[0].body
    assert b"number-token" not in webhook.seen[0].body


def test_naive_created_at_taken_as_utc():
    call = AssistantRequestInput(
        call_id="c",
        sip_call_id="s",
        phone_number=make_number(),
        created_at=datetime(2024, 5, 1, 12, 0, 0),
        caller_number=None,
    )

    body = build_request_body(call, now=lambda: 1.5)

    assert body["message"]["call"]["createdAt"] == "2024-05-01T12:00:00.000Z"
    assert body["message"]["timestamp"] == 1500
    assert body["message"]["call"]["sipHeaders"] == {}


async def test_cancel_abandons_request(webhook, session, metrics):
    arrived = asyncio.Event()

    async def hang(request: web.Request) -> web.StreamResponse:
        arrived.set()
        await asyncio.sleep(10)
        return web.json_response({"assistantId": "late"})

    webhook.handler = hang
    client = make_client(session, metrics, make_config())
    task = asyncio.create_task(client.request(make_input(), make_server(webhook.url)))
    await arrived.wait()

    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert result_count(metrics, "cancelled") == 1


async def test_failure_log_has_no_secret_or_number(webhook, session, metrics):
    webhook.reply_statuses(500)
    server = make_server(webhook.url, secret="shared-secret")
    client = make_client(session, metrics, make_config())

    with capture_logs() as logs:
        await expect_failure(client, server)

    failed = [log for log in logs if log["event"] == "assistant_request.failed"]
    assert len(failed) == 1
    assert failed[0]["result"] == "http-error"
    assert failed[0]["server_host"] == "127.0.0.1"
    assert "shared-secret" not in repr(logs)
    assert "14155551234" not in repr(logs)


async def test_missing_credential_counted_as_fault(webhook, session, metrics):
    webhook.reply_json({"assistantId": "asst-1"})
    client = make_client(session, metrics, make_config())

    with pytest.raises(LookupError):
        await client.request(
            make_input(), make_server(webhook.url, credentialId="missing")
        )

    assert result_count(metrics, "fault") == 1
    assert webhook.seen == []
