import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import structlog

from router.calls.record import CallRecord, CallState
from router.config import Config, PhoneNumber
from router.routing.decision import Route
from router.sip.messages import CallKey, InboundInvite
from router.webhooks.messages import (
    InvalidInlineServer,
    end_of_call_report,
    inline_assistant_server,
    message_server,
    status_update,
)

NOW = 1714564800.25
CREATED = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
NUMBER_SERVER = "http://127.0.0.1:8091/number"
ORG_SERVER = "http://127.0.0.1:8090/org"
INLINE_SERVER = "http://127.0.0.1:8092/inline"


def fixed_now() -> float:
    return NOW


def make_number(**fields: Any) -> PhoneNumber:
    return PhoneNumber.model_validate(
        {
            "id": "pn-1",
            "credentialId": "trunk-1",
            "number": "+14155550100",
            "name": "Support",
            **fields,
        }
    )


def make_call(number: PhoneNumber | None = None, **fields: Any) -> CallRecord:
    invite = InboundInvite(
        key=CallKey(0, 1),
        call_id="abc@127.0.0.1",
        source_ip="127.0.0.1",
        source_port=5061,
        transport="udp",
        request_uri="sip:+14155550100@127.0.0.1",
        from_header='"Ada" <sip:+14155559876@127.0.0.1>;tag=1',
        to_header="<sip:+14155550100@127.0.0.1>",
        x_headers={"X-Campaign": "spring"},
    )
    call = CallRecord(invite=invite, log=structlog.get_logger(), created_at=CREATED)
    call.number = number
    call.caller_number = "+14155559876"
    call.caller_name = "Ada"
    call.caller_uri = "sip:+14155559876@127.0.0.1"
    for name, value in fields.items():
        setattr(call, name, value)
    return call


def make_config(org_url: str | None = ORG_SERVER) -> Config:
    org = {"server": {"url": org_url}} if org_url else None
    return Config.model_validate({"org": org} if org else {})


# ----- status-update -----------------------------------------------------------


@pytest.mark.parametrize("status", ["ringing", "in-progress", "forwarding", "ended"])
def test_status_update_envelope(status: str) -> None:
    call = make_call(make_number(), ended_reason="customer-ended-call")

    body = status_update(call, status, now=fixed_now)

    message = body["message"]
    assert list(body) == ["message"]
    assert message["type"] == "status-update"
    assert message["status"] == status
    assert message["timestamp"] == 1714564800250
    assert message["call"]["id"] == call.id
    assert message["call"]["status"] == status
    assert message["call"]["phoneCallProviderId"] == "abc@127.0.0.1"
    assert message["call"]["phoneNumberId"] == "pn-1"
    assert message["call"]["createdAt"] == "2024-05-01T12:00:00.000Z"
    assert message["call"]["sipHeaders"] == {"X-Campaign": "spring"}
    assert message["phoneNumber"]["id"] == "pn-1"
    assert message["customer"] == {
        "number": "+14155559876",
        "name": "Ada",
        "sipUri": "sip:+14155559876@127.0.0.1",
    }


def test_status_update_ended_carries_reason() -> None:
    call = make_call(make_number(), ended_reason="assistant-request-failed")

    message = status_update(call, "ended", now=fixed_now)["message"]

    assert message["endedReason"] == "assistant-request-failed"
    assert message["call"]["endedReason"] == "assistant-request-failed"


def test_status_update_ringing_has_no_reason() -> None:
    message = status_update(make_call(make_number()), "ringing")["message"]

    assert "endedReason" not in message
    assert "endedReason" not in message["call"]
    assert "destination" not in message


def test_status_update_forwarding_carries_destination() -> None:
    destination = {"type": "sip", "sipUri": "sip:agent@127.0.0.1:5090"}
    call = make_call(make_number(), destination=destination)

    message = status_update(call, "forwarding")["message"]

    assert message["destination"] == destination


def test_status_update_names_route_by_id() -> None:
    call = make_call(make_number(), route=Route("squad", id="squad-7"))

    message = status_update(call, "in-progress")["message"]

    assert message["call"]["squadId"] == "squad-7"


def test_status_update_leaves_inline_route_out() -> None:
    route = Route("assistant", inline={"name": "helper"})
    call = make_call(make_number(), route=route)

    message = status_update(call, "in-progress")["message"]

    assert "assistantId" not in message["call"]
    assert "assistant" not in message["call"]


def test_status_update_without_number() -> None:
    call = make_call(None, ended_reason="call.start.error-get-phone-number")

    message = status_update(call, "ended")["message"]

    assert message["phoneNumber"] is None
    assert message["call"]["phoneNumberId"] is None


def test_messages_contain_no_secrets() -> None:
    number = make_number(
        server={
            "url": NUMBER_SERVER,
            "secret": "number-secret-value",
            "headers": {"Authorization": "Bearer header-token-value", "X-Team": "a"},
        }
    )
    destination = {
        "type": "sip",
        "sipUri": "sip:agent@127.0.0.1",
        "sipHeaders": {"X-Api-Token": "sip-token-value"},
    }
    call = make_call(number, destination=destination, ended_reason="x")

    texts = [
        json.dumps(status_update(call, "forwarding")),
        json.dumps(status_update(call, "ended")),
        json.dumps(end_of_call_report(call)),
    ]

    for text in texts:
        assert "number-secret-value" not in text
        assert "header-token-value" not in text
        assert "sip-token-value" not in text
        assert NUMBER_SERVER in text


# ----- end-of-call-report -------------------------------------------------------


def test_end_of_call_report_fields() -> None:
    destination = {"type": "sip", "sipUri": "sip:agent@127.0.0.1:5090"}
    call = make_call(
        make_number(),
        ended_reason="assistant-request-failed",
        destination=destination,
        answered_at=CREATED + timedelta(seconds=2),
        ended_at=CREATED + timedelta(seconds=12.5),
    )
    call.state = CallState.ENDED

    body = end_of_call_report(call, now=fixed_now)

    message = body["message"]
    assert list(body) == ["message"]
    assert message["type"] == "end-of-call-report"
    assert message["timestamp"] == 1714564800250
    assert message["endedReason"] == "assistant-request-failed"
    assert message["startedAt"] == "2024-05-01T12:00:00.000Z"
    assert message["answeredAt"] == "2024-05-01T12:00:02.000Z"
    assert message["endedAt"] == "2024-05-01T12:00:12.500Z"
    assert message["durationSeconds"] == 12.5
    assert message["destination"] == destination
    assert message["call"]["status"] == "ended"
    assert message["call"]["endedReason"] == "assistant-request-failed"
    assert message["phoneNumber"]["number"] == "+14155550100"
    assert message["customer"]["number"] == "+14155559876"


def test_end_of_call_report_unanswered_without_destination() -> None:
    call = make_call(
        make_number(),
        ended_reason="call.start.error-phone-number-blocked",
        ended_at=CREATED + timedelta(milliseconds=40),
    )

    message = end_of_call_report(call)["message"]

    assert message["answeredAt"] is None
    assert message["durationSeconds"] == 0.04
    assert "destination" not in message


# ----- where messages go ------------------------------------------------------


def test_server_org_by_default() -> None:
    call = make_call(make_number())

    server = message_server(call, make_config())

    assert server is not None
    assert server.url == ORG_SERVER


def test_server_number_before_org() -> None:
    call = make_call(make_number(server={"url": NUMBER_SERVER}))

    server = message_server(call, make_config())

    assert server is not None
    assert server.url == NUMBER_SERVER


def test_server_inline_assistant_first() -> None:
    route = Route("assistant", inline={"server": {"url": INLINE_SERVER}})
    call = make_call(make_number(server={"url": NUMBER_SERVER}), route=route)
    call.assistant_server = inline_assistant_server(route)

    server = message_server(call, make_config())

    assert server is not None
    assert server.url == INLINE_SERVER


def test_server_unknown_number_goes_to_org() -> None:
    server = message_server(make_call(None), make_config())

    assert server is not None
    assert server.url == ORG_SERVER


def test_server_none_when_unset() -> None:
    assert message_server(make_call(make_number()), make_config(None)) is None


@pytest.mark.parametrize(
    "route",
    [
        None,
        Route("assistant", id="asst-1"),
        Route("assistant", inline={"name": "no server"}),
        Route("squad", inline={"server": {"url": INLINE_SERVER}}),
    ],
    ids=["no-route", "by-id", "inline-without-server", "inline-squad"],
)
def test_inline_server_absent(route: Route | None) -> None:
    assert inline_assistant_server(route) is None


def test_inline_server_keeps_auth_fields() -> None:
    route = Route(
        "assistant",
        inline={
            "server": {
                "url": INLINE_SERVER,
                "secret": "inline-secret",
                "timeoutSeconds": 3,
                "backoffPlan": {"maxRetries": 2},
            }
        },
    )

    server = inline_assistant_server(route)

    assert server is not None
    assert server.secret is not None
    assert server.secret.get_secret_value() == "inline-secret"
    assert server.timeout_seconds == 3
    assert server.backoff_plan is not None
    assert server.backoff_plan.max_retries == 2


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        ({"url": INLINE_SERVER, "secret": {"env": "HOME"}}, "secret"),
        ({"url": INLINE_SERVER, "secret": {"file": "/etc/hostname"}}, "secret"),
        ({"url": "ftp://127.0.0.1/x"}, "url"),
        ({"url": INLINE_SERVER, "retries": 3}, "retries"),
        ("http://127.0.0.1/x", "object"),
    ],
    ids=["env-secret", "file-secret", "bad-url", "unknown-key", "not-object"],
)
def test_inline_server_invalid(server: Any, expected: str) -> None:
    route = Route("assistant", inline={"server": server})

    with pytest.raises(InvalidInlineServer, match=expected):
        inline_assistant_server(route)
