import json

import pytest

from router.config import NumberDestination, SipDestination
from router.errors import AssistantRequestFailed
from router.routing import ended_reasons
from router.routing.decision import Route
from router.routing.replies import (
    DestinationReply,
    ErrorReply,
    RouteReply,
    parse_assistant_request_body,
    parse_assistant_request_reply,
)

FAILED = ended_reasons.ASSISTANT_REQUEST_FAILED
UNSPEAKABLE = ended_reasons.ASSISTANT_REQUEST_RETURNED_UNSPEAKABLE_ERROR
INVALID = ended_reasons.ASSISTANT_REQUEST_RETURNED_INVALID_ASSISTANT
NO_ASSISTANT = ended_reasons.ASSISTANT_REQUEST_RETURNED_NO_ASSISTANT

NUMBER_DESTINATION = {"type": "number", "number": "+14155550100"}
SIP_DESTINATION = {"type": "sip", "sipUri": "sip:support@127.0.0.1"}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"error": "We are closed."}, ErrorReply("We are closed.")),
        (
            {"messageResponse": {"error": "We are closed."}},
            ErrorReply("We are closed."),
        ),
        (
            {"error": "We are closed.", "assistantId": "asst-1"},
            ErrorReply("We are closed."),
        ),
        (
            {"error": "We are closed.", "destination": NUMBER_DESTINATION},
            ErrorReply("We are closed."),
        ),
        ({"assistantId": "asst-1"}, RouteReply(Route("assistant", id="asst-1"))),
        ({"squadId": "squad-1"}, RouteReply(Route("squad", id="squad-1"))),
        ({"workflowId": "wf-1"}, RouteReply(Route("workflow", id="wf-1"))),
        (
            {"messageResponse": {"assistantId": "asst-1"}},
            RouteReply(Route("assistant", id="asst-1")),
        ),
        (
            {"assistant": {"name": "Front desk"}},
            RouteReply(Route("assistant", inline={"name": "Front desk"})),
        ),
        (
            {"squad": {"members": []}},
            RouteReply(Route("squad", inline={"members": []})),
        ),
        (
            {"workflow": {"nodes": []}},
            RouteReply(Route("workflow", inline={"nodes": []})),
        ),
        (
            {"assistantId": "asst-1", "assistantOverrides": {"firstMessage": "Hi"}},
            RouteReply(
                Route("assistant", id="asst-1", overrides={"firstMessage": "Hi"})
            ),
        ),
        (
            {"squadId": "squad-1", "squadOverrides": {"x": 1}},
            RouteReply(Route("squad", id="squad-1", overrides={"x": 1})),
        ),
        (
            {"workflow": {"nodes": []}, "workflowOverrides": {"x": 1}},
            RouteReply(Route("workflow", inline={"nodes": []}, overrides={"x": 1})),
        ),
        (
            # Overrides of another kind name no route and are ignored.
            {"assistantId": "asst-1", "squadOverrides": {"x": 1}},
            RouteReply(Route("assistant", id="asst-1")),
        ),
        (
            # Null fields count as absent.
            {
                "error": None,
                "destination": None,
                "squadId": None,
                "assistantId": "asst-1",
                "assistantOverrides": None,
            },
            RouteReply(Route("assistant", id="asst-1")),
        ),  # fmt: skip
        (
            # A messageResponse that is not an object is ignored.
            {"messageResponse": "ok", "assistantId": "asst-1"},
            RouteReply(Route("assistant", id="asst-1")),
        ),
        (
            {"messageResponse": None, "assistantId": "asst-1"},
            RouteReply(Route("assistant", id="asst-1")),
        ),
    ],
)
def test_reply_table_success_rows(body, expected):
    assert parse_assistant_request_reply(body) == expected


def test_reply_message_response_wins():
    body = {"assistantId": "top", "messageResponse": {"squadId": "inner"}}
    assert parse_assistant_request_reply(body) == RouteReply(Route("squad", id="inner"))


def test_reply_empty_message_response():
    body = {"assistantId": "top", "messageResponse": {}}
    with pytest.raises(AssistantRequestFailed) as raised:
        parse_assistant_request_reply(body)
    assert raised.value.ended_reason == NO_ASSISTANT


@pytest.mark.parametrize(
    ("destination", "model"),
    [(NUMBER_DESTINATION, NumberDestination), (SIP_DESTINATION, SipDestination)],
)
def test_reply_destination_is_validated(destination, model):
    reply = parse_assistant_request_reply({"destination": destination})
    assert isinstance(reply, DestinationReply)
    assert isinstance(reply.destination, model)


def test_reply_destination_wins_over_route():
    reply = parse_assistant_request_reply(
        {"destination": SIP_DESTINATION, "assistantId": "asst-1"}
    )
    assert isinstance(reply, DestinationReply)
    assert reply.destination.sip_uri == "sip:support@127.0.0.1"


def test_reply_destination_inside_message_response():
    reply = parse_assistant_request_reply(
        {"messageResponse": {"destination": NUMBER_DESTINATION}}
    )
    assert isinstance(reply, DestinationReply)
    assert reply.destination.number == "+14155550100"


def test_reply_ended_reasons_of_outcomes():
    assert ErrorReply.ended_reason == ended_reasons.ASSISTANT_REQUEST_RETURNED_ERROR
    assert DestinationReply.ended_reason == (
        ended_reasons.ASSISTANT_REQUEST_RETURNED_FORWARDING_PHONE_NUMBER
    )


@pytest.mark.parametrize(
    ("body", "ended_reason"),
    [
        # Not a JSON object.
        ([], FAILED),
        ([{"assistantId": "asst-1"}], FAILED),
        ("assistant", FAILED),
        (42, FAILED),
        (None, FAILED),
        (True, FAILED),
        # `error` present but not speakable.
        ({"error": ""}, UNSPEAKABLE),
        ({"error": "   "}, UNSPEAKABLE),
        ({"error": 500}, UNSPEAKABLE),
        ({"error": False}, UNSPEAKABLE),
        ({"error": {"message": "closed"}}, UNSPEAKABLE),
        ({"error": ["closed"]}, UNSPEAKABLE),
        ({"error": "", "assistantId": "asst-1"}, UNSPEAKABLE),
        ({"messageResponse": {"error": ""}}, UNSPEAKABLE),
        # A destination that the Destination model rejects.
        ({"destination": "+14155550100"}, INVALID),
        ({"destination": {"type": "fax", "number": "+14155550100"}}, INVALID),
        ({"destination": {"type": "number"}}, INVALID),
        ({"destination": {"type": "sip"}}, INVALID),
        ({"destination": []}, INVALID),
        # Two or more kinds of route.
        ({"assistantId": "asst-1", "squadId": "squad-1"}, INVALID),
        ({"assistantId": "asst-1", "workflow": {"nodes": []}}, INVALID),
        ({"assistant": {}, "squad": {}, "workflow": {}}, INVALID),
        # One kind, but unusable.
        ({"assistantId": "asst-1", "assistant": {"name": "x"}}, INVALID),
        ({"assistant": "asst-1"}, INVALID),
        ({"squad": ["member"]}, INVALID),
        ({"workflow": 7}, INVALID),
        ({"assistantId": 42}, INVALID),
        ({"assistantId": ""}, INVALID),
        ({"assistantId": {"id": "asst-1"}}, INVALID),
        ({"assistantId": "asst-1", "assistantOverrides": "loud"}, INVALID),
        ({"squadId": "squad-1", "squadOverrides": []}, INVALID),
        # Nothing usable.
        ({}, NO_ASSISTANT),
        ({"assistantOverrides": {"x": 1}}, NO_ASSISTANT),
        ({"assistantId": None, "assistant": None}, NO_ASSISTANT),
        ({"unknown": "field"}, NO_ASSISTANT),
        ({"messageResponse": {"unknown": "field"}}, NO_ASSISTANT),
    ],
)
def test_reply_table_failure_rows(body, ended_reason):
    with pytest.raises(AssistantRequestFailed) as raised:
        parse_assistant_request_reply(body)
    assert raised.value.ended_reason == ended_reason


def test_reply_failure_detail_hides_values():
    with pytest.raises(AssistantRequestFailed) as raised:
        parse_assistant_request_reply({"assistant": "secret-token-123"})
    assert "secret-token-123" not in raised.value.detail
    assert "assistant" in raised.value.detail


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"assistantId": "asst-1"}', RouteReply(Route("assistant", id="asst-1"))),
        (
            json.dumps({"error": "Closed"}).encode("utf-16"),
            ErrorReply("Closed"),
        ),
        (
            '{"error": "Ferm\u00e9"}'.encode(),
            ErrorReply("Ferm\u00e9"),
        ),
    ],
)
def test_reply_body_decodes_json(raw, expected):
    assert parse_assistant_request_body(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"OK",
        b"<html>ok</html>",
        b'{"assistantId": ',
        b"\xff\xfe\x00",
        b'{"error": "\xff"}',
        b"[" * 100_000,
        b'"just a string"',
        b"null",
        b"[]",
    ],
)
def test_reply_body_not_object_fails(raw):
    with pytest.raises(AssistantRequestFailed) as raised:
        parse_assistant_request_body(raw)
    assert raised.value.ended_reason == FAILED
    assert raised.value.retryable is True


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        (b"[" * 1000 + b"]" * 1000, "reply body is nested deeper than 64 levels"),
        (b"[" * 100 + b"]" * 100, "reply body is nested deeper than 64 levels"),
        (b"{bad", "reply body is not valid JSON: Expecting property name"),
        (b"1e999", "reply body is not valid JSON: a number too large"),
    ],
    ids=["past-decoder-stack", "past-depth-limit", "invalid", "infinite"],
)
def test_body_failure_detail_names_cause(raw: bytes, detail: str) -> None:
    with pytest.raises(AssistantRequestFailed) as caught:
        parse_assistant_request_body(raw)

    assert caught.value.detail.startswith(detail)
