"""Properties of the routing and SIP parsing code on arbitrary input.

Junk never crashes it: each function returns a valid value or raises its
documented error.
"""

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.errors import AssistantRequestFailed, RouterFault, reason_header
from router.routing.numbers import dialled_user, normalize_number, number_key
from router.routing.replies import (
    DestinationReply,
    ErrorReply,
    RouteReply,
    parse_assistant_request_body,
)
from router.sip.callbacks import call_op
from router.sip.messages import (
    MAX_CONTENT_LENGTH,
    MalformedRequest,
    SipRequest,
    address_uri,
    display_name,
    parse_request,
    split_host_port,
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


# ----- normalisation: idempotence and carrier forms ---------------------------

e164_numbers = st.from_regex(r"\+[1-9][0-9]{2,14}", fullmatch=True)


@given(any_text.filter(lambda raw: "%" not in raw))
def test_normalize_number_idempotent(raw):
    # Percent-escapes are decoded once only, so "%252B" normalises to
    # "%2B" and then to "+": the property holds for text without "%".
    once = normalize_number(raw)
    assert normalize_number(once) == once


@given(any_text)
def test_number_key_has_no_separators_or_parameters(raw):
    key = number_key(raw)
    assert ";" not in key
    assert not set(key) & set("-.() ")


@given(
    e164_numbers,
    st.sampled_from(["sip:{n}@127.0.0.1", "sips:{n}@h;user=phone", "tel:{n}",
                     "<sip:{n}@h:5060;transport=udp>;tag=1",
                     '"Ada" <sip:{n}@h>', "sip:{n};npdi;rn=+1999@h"]),
    st.sampled_from(["plus", "escaped", "bare", "dashed", "dotted"]),
)  # fmt: skip
def test_carrier_forms_of_number_share_key(number, template, spelling):
    digits = number[1:]
    written = {
        "plus": number,
        "escaped": "%2B" + digits,
        "bare": digits,
        "dashed": f"+{digits[:1]}-{digits[1:4]}-{digits[4:]}",
        "dotted": f"{digits[:3]}.{digits[3:]}",
    }[spelling]
    user = dialled_user(template.format(n=written))
    assert user is not None
    assert number_key(user) == number_key(number) == digits


# ----- SIP message parsing ------------------------------------------------------

sip_lines = st.lists(
    st.sampled_from(
        ["INVITE sip:+1@h SIP/2.0", "FOO x SIP/2.0", "SIP/2.0 200 OK",
         "Via: SIP/2.0/TCP h",
         "v: SIP/2.0/UDP h", "Content-Length: 5", "l: \u00b2", "Content-Length: 0099",
         "Content-Length: " + "9" * 5000, "i: abc", "X-A: \udcff", " folded",
         "\tfolded", "no colon", ":", "", "\x00", "\udcff\udcfe", "\ud800"]
    )
    | any_text,
    max_size=12,
)  # fmt: skip


def check_request(request):
    assert isinstance(request, SipRequest)
    length = request.content_length()
    assert length is None or 0 <= length <= MAX_CONTENT_LENGTH
    assert isinstance(request.truncated, bool)
    assert isinstance(request.transport(), str)
    assert all(key.lower().startswith("x-") for key in request.x_headers())


@given(st.binary(max_size=2000))
def test_parse_request_bytes_parses_or_raises_malformed(raw):
    try:
        request = parse_request(raw)
    except MalformedRequest:
        return
    check_request(request)


@given(sip_lines, st.sampled_from(["\r\n", "\n"]), any_text)
def test_parse_request_text_parses_or_raises_malformed(lines, newline, body):
    raw = newline.join(lines) + newline * 2 + body
    try:
        request = parse_request(raw)
    except MalformedRequest:
        return
    check_request(request)


@given(any_text)
def test_address_helpers_never_raise(value):
    assert isinstance(address_uri(value), str)
    name = display_name(value)
    assert name is None or name.strip() == name
    host, port = split_host_port(value)
    assert isinstance(host, str)
    assert port >= 0


# ----- header values sent by the router ---------------------------------------


@given(any_text, any_text)
def test_reason_header_line_safe_or_rejected(name, value):
    try:
        parameters = call_op(480, None, [(name, value)])
    except ValueError:
        unsafe = any(char in name + value for char in "\r\n\x00")
        unencodable = any("\ud800" <= char <= "\udfff" for char in name + value)
        assert unsafe or unencodable
        return
    (header,) = list(parameters.txOption.headers)
    assert header.hName == name


@given(any_text)
def test_reason_header_quotes_any_text(text):
    error = RouterFault("detail")
    error.ended_reason = text
    name, value = reason_header(error)
    assert name == "Reason"
    assert not set(value) & set("\r\n\x00")
    quoted = value.split(';text="', 1)[1]
    assert quoted.endswith('"')
    unescaped = re.sub(r"\\(.)", r"\1", quoted[:-1])
    kept = "".join(
        c
        for c in text
        if (c == "\t" or c >= " ") and c != "\x7f" and not "\ud800" <= c <= "\udfff"
    )
    assert unescaped == kept
    value.encode("utf-8")


def test_call_op_rejects_escaped_byte_header():
    # Found by the property above: SWIG takes no surrogate, not even one
    # that stands for a byte.
    with pytest.raises(ValueError, match="not valid text"):
        call_op(480, None, [("X-Test", "a\udc80b")])
