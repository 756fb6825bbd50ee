"""Parsing the raw INVITE text that pjsua2 hands over."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.routing.numbers import dialled_user, normalize_number
from router.sip.messages import (
    MalformedRequest,
    address_uri,
    display_name,
    parse_request,
    split_host_port,
)

INVITE = (
    "INVITE sip:%2B14155550100@127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/TCP 127.0.0.1:5061;branch=z9hG4bK1\r\n"
    'f: "Ann \\"A\\" Lee" <sip:+14155551234@127.0.0.1>;tag=1\r\n'
    "t: <sip:+14155550100@127.0.0.1>\r\n"
    "i: abc@127.0.0.1\r\n"
    "CSeq: 1 INVITE\r\n"
    "X-Customer-Tier: gold\r\n"
    "X-Folded: first\r\n"
    "  second\r\n"
    "l: 4\r\n"
    "\r\n"
    "v=0\n"
)


def test_parse_request_line_and_compact_headers():
    request = parse_request(INVITE)

    assert request.method == "INVITE"
    assert request.request_uri == "sip:%2B14155550100@127.0.0.1:5060"
    assert request.header("Call-ID") == "abc@127.0.0.1"
    assert request.header("to") == "<sip:+14155550100@127.0.0.1>"
    assert request.content_length() == 4
    assert request.body == b"v=0\n"


@pytest.mark.parametrize(
    ("request_uri", "to"),
    [
        ("tel:+14155550100", "<tel:+14155550100>"),
        ("tel:+1-415-555-0100", "<tel:+1-415-555-0100>;tag=9"),
        (
            "sip:+14155550100;npdi;rn=+14155559999@127.0.0.1;user=phone",
            "<sip:+14155550100;npdi;rn=+14155559999@127.0.0.1;user=phone>",
        ),
        (
            "sip:14155550100;phone-context=+1@127.0.0.1",
            "sip:14155550100;phone-context=+1@127.0.0.1",
        ),
    ],
)
def test_number_uri_forms_parse_to_one_number(request_uri, to):
    raw = (
        f"INVITE {request_uri} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK1\r\n"
        f"To: {to}\r\n"
        "Call-ID: uri@127.0.0.1\r\n"
        "Content-Length: 0\r\n\r\n"
    )

    request = parse_request(raw)

    assert request.request_uri == request_uri
    ruri_user = dialled_user(request.request_uri)
    to_user = dialled_user(request.header("To") or "")
    assert ruri_user is not None
    assert to_user is not None
    assert normalize_number(ruri_user) == "+14155550100"
    assert normalize_number(to_user) == "+14155550100"


def test_parse_transport_from_top_via():
    assert parse_request(INVITE).transport() == "tcp"


def test_x_headers_joined_when_folded():
    headers = parse_request(INVITE).x_headers()

    assert headers["X-Customer-Tier"] == "gold"
    assert headers["X-Folded"] == "first second"


def test_display_name_unquoted():
    request = parse_request(INVITE)

    assert display_name(request.header("from")) == 'Ann "A" Lee'
    assert display_name("<sip:a@b>") is None
    assert display_name("Bob <sip:b@c>") == "Bob"


def test_address_uri_forms():
    assert address_uri('"A" <sip:a@b;user=phone>;tag=1') == "sip:a@b;user=phone"
    assert address_uri("sip:a@b;tag=1") == "sip:a@b"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("127.0.0.1:5061", ("127.0.0.1", 5061)),
        ("[::1]:5060", ("::1", 5060)),
        ("127.0.0.1", ("127.0.0.1", 0)),
    ],
)
def test_split_host_port(raw, expected):
    assert split_host_port(raw) == expected


def test_truncated_body_shorter_than_content_length():
    request = parse_request(INVITE.replace("l: 4", "l: 400"))

    assert request.content_length() == 400
    assert len(request.body) == 4


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Max-Forwards: 70\r\n", 70),
        ("Max-Forwards: 0\r\n", 0),
        ("Max-Forwards: 000\r\n", 0),
        ("Max-Forwards:  1 \r\n", 1),
        ("Max-Forwards: 100000\r\n", 255),
        ("Max-Forwards: 1" + "0" * 5000 + "\r\n", 255),
        ("Max-Forwards: -1\r\n", None),
        ("Max-Forwards: ten\r\n", None),
        ("", None),
    ],
)
def test_max_forwards_read_and_clamped(header, expected):
    request = parse_request(
        INVITE.replace("CSeq: 1 INVITE\r\n", header + "CSeq: 1 INVITE\r\n")
    )

    assert request.max_forwards() == expected


@pytest.mark.parametrize("raw", ["", "garbage", "INVITE sip:a@b\r\n\r\n"])
def test_malformed_request_line_raises(raw):
    with pytest.raises(MalformedRequest):
        parse_request(raw)


@given(st.binary(max_size=2000))
def test_parse_request_never_raises_other_errors(raw):
    try:
        request = parse_request(raw)
    except MalformedRequest:
        return
    request.x_headers()
    request.content_length()
    request.max_forwards()
    request.transport()
