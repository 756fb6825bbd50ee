"""Properties of the routing code on arbitrary input: junk never crashes it."""

import json

from hypothesis import given
from hypothesis import strategies as st

from router.errors import AssistantRequestFailed
from router.routing.numbers import dialled_user, normalize_number, number_key
from router.routing.replies import (
    DestinationReply,
    ErrorReply,
    RouteReply,
    parse_assistant_request_body,
)

# Every code point, surrogates included, which st.text() leaves out by default.
any_text = st.text(st.characters(exclude_categories=()))

uri_like_text = st.builds(
    "".join,
    st.lists(
        st.sampled_from(
            ['"', "\\", "<", ">", "@", ":", ";", "?", "%", "%2B", "sip:",
             "sips:", "tel:", "SIP:", "+", "1", "a", " ", "-", ".", "(", ")",
             "\r\n", "\x00", "\u00e9"]
        ),
        max_size=30,
    ),
)  # fmt: skip

reply_keys = st.sampled_from(
    ["messageResponse", "error", "destination", "assistantId", "assistant",
     "assistantOverrides", "squadId", "squad", "squadOverrides", "workflowId",
     "workflow", "workflowOverrides", "type", "number", "sipUri",
     "transferPlan", "sipVerb", "extension", "callerId", "other"]
)  # fmt: skip

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.sampled_from(["number", "sip", "+14155550100", "sip:a@127.0.0.1"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(reply_keys, children, max_size=6)
    ),
    max_leaves=20,
)


@given(any_text)
def test_normalize_number_never_raises(raw):
    assert isinstance(normalize_number(raw), str)
    assert isinstance(number_key(raw), str)


@given(uri_like_text)
def test_normalize_number_never_raises_on_uri_text(raw):
    assert isinstance(normalize_number(raw), str)


@given(any_text)
def test_dialled_user_never_raises(uri):
    result = dialled_user(uri)
    assert result is None or isinstance(result, str)


@given(uri_like_text)
def test_dialled_user_never_raises_on_uri_text(uri):
    result = dialled_user(uri)
    assert result is None or result != ""


@given(st.binary())
def test_reply_body_never_raises_on_bytes(raw):
    try:
        reply = parse_assistant_request_body(raw)
    except AssistantRequestFailed:
        return
    assert isinstance(reply, ErrorReply | DestinationReply | RouteReply)


@given(json_values)
def test_reply_body_never_raises_on_json(value):
    raw = json.dumps(value).encode()
    try:
        reply = parse_assistant_request_body(raw)
    except AssistantRequestFailed:
        return
    assert isinstance(reply, ErrorReply | DestinationReply | RouteReply)
