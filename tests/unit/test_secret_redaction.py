"""Secrets inside logged text and header pairs, and in config error messages."""

import io
import json
import logging
import textwrap

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from router import logs
from router.config import ConfigError, parse_config
from router.logs import REDACTED, configure_logging, redact_secrets, redact_text


@pytest.fixture(autouse=True)
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer abc", "abc"),
        ("INVITE sip:a@b SIP/2.0\r\nProxy-Authorization: Digest x=1\r\n", "x=1"),
        ("authorization:Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
        ("sent Bearer eyJhbGciOi.payload.sig to the server", "eyJhbGciOi"),
        ('challenge answered: Digest username="u", response="5f4d"', "5f4d"),
        ("GET https://user:pa55word@127.0.0.1/hook failed", "pa55word"),
    ],
    ids=["header", "sip-proxy", "no-space", "bearer", "digest", "url"],
)
def test_redact_text_hides_credentials(text, secret):
    redacted = redact_text(text)

    assert secret not in redacted
    assert REDACTED in redacted


@pytest.mark.parametrize(
    "text",
    ["bearer token missing", "digest mismatch", "http://127.0.0.1:8090/webhook"],
)
def test_redact_text_keeps_plain_words(text):
    assert redact_text(text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "POST http://127.0.0.1:9000/hook?token=abc123 failed",
            "POST http://127.0.0.1:9000/hook?token=[redacted] failed",
        ),
        (
            "http://127.0.0.1/a?x=1&api_key=k-1&flag",
            "http://127.0.0.1/a?x=1&api_key=[redacted]&flag",
        ),
        (
            "https://127.0.0.1/b?sv=1&sig=s-1&se=2",
            "https://127.0.0.1/b?sv=1&sig=[redacted]&se=2",
        ),
        (
            "https://127.0.0.1/cb#access_token=t-1&state=x",
            "https://127.0.0.1/cb#access_token=[redacted]&state=x",
        ),
        ("http://127.0.0.1/a?api%5Fkey=k-2", "http://127.0.0.1/a?api%5Fkey=[redacted]"),
        (
            "invalid SIP URI 'sip:agent@127.0.0.1?X-Token=t-2&X-Team=a': expected",
            "invalid SIP URI 'sip:agent@127.0.0.1?X-Token=[redacted]&X-Team=a': "
            "expected",
        ),
        (
            "Refer-To: <sip:rt@127.0.0.1;transport=tcp;token=t-3>",
            "Refer-To: <sip:rt@127.0.0.1;transport=tcp;token=[redacted]>",
        ),
        (
            "dial sips:alice:pw-1@127.0.0.1:5061 failed",
            "dial sips:alice:[redacted]@127.0.0.1:5061 failed",
        ),
        ("sip:a;b=1:pw-2@127.0.0.1", "sip:a;b=1:[redacted]@127.0.0.1"),
        (
            "['http://127.0.0.1/a?key=k-3', 'sip:b@127.0.0.1;auth=a-1']",
            "['http://127.0.0.1/a?key=[redacted]', 'sip:b@127.0.0.1;auth=[redacted]']",
        ),
    ],
    ids=[
        "query",
        "query-middle",
        "signature",
        "fragment",
        "encoded-name",
        "sip-header",
        "sip-parameter",
        "sip-password",
        "sip-user-with-semicolon",
        "two-uris",
    ],
)
def test_redact_text_masks_uri_secrets(text, expected):
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "sip:+14155550100@127.0.0.1:5060;transport=udp",
        "sip:127.0.0.1:5060",
        "http://127.0.0.1/a?maxTokens=5&page=2#top",
        "sip.invite_rejected_by_stack",
        "gossip: token=abc",
    ],
)
def test_redact_text_keeps_plain_uris(text):
    assert redact_text(text) == text


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (
            "sip:agent@127.0.0.1 ?X-Token=t-1",
            "sip:agent@127.0.0.1 ?X-Token=[redacted]",
        ),
        ("sip:alice:pw 1@127.0.0.1", "sip:alice:[redacted]@127.0.0.1"),
        (
            "http://u:p-1@127.0.0.1/a b?token=t-2",
            "http://[redacted]@127.0.0.1/a b?token=[redacted]",
        ),
        ("sip:+14155550100@127.0.0.1", "sip:+14155550100@127.0.0.1"),
    ],
    ids=["space-before-header", "space-in-password", "http", "plain"],
)
def test_redact_uri_spans_spaces(uri, expected):
    assert logs.redact_uri(uri) == expected


def test_common_call_event_skips_patterns(monkeypatch):
    # The fields of a call's events, as the daemon logs them: none has a
    # word or mark that a credential pattern needs, so no pattern runs.
    def fail(*args, **kwargs):
        raise AssertionError("a credential pattern ran on a plain event")

    for name in ("_AUTHORIZATION_LINE", "_CREDENTIAL", "_DIGEST", "_URL_USERINFO"):
        monkeypatch.setattr(logs, name, type("Stub", (), {"sub": fail}))
    monkeypatch.setattr(logs, "_redact_uris", fail)
    event = {
        "event": "call.ended",
        "sip_call_id": "1-7475@127.0.0.1",
        "src": "127.0.0.1:26966",
        "call_id": "1fa4695d-0fc1-406c-8260-6a241daef454",
        "number_id": "pn-ask",
        "trunk": "trunk-local",
        "outcome": "assistant",
        "ended_reason": "call.handoff.transferred-to-runtime",
        "sip_status": 302,
        "setup_ms": 4.1,
        "transport": "udp",
        "caller": "+*******9876",
    }

    assert redact_secrets(None, "info", dict(event)) == event


@pytest.mark.parametrize(
    "text",
    [
        "AUTHORIZATION: token-value",
        "BeArEr abcdefgh123",
        "BASIC dXNlcjpwYXNz",
        "DIGEST x=1",
        "ba\u017fic dXNlcjpwYXNz",
        "Di\u0262est x=1",
        "HTTPS://u:p@127.0.0.1/",
        "SIP:a@b?X-Token=t0k3n",
        "sips:a:pw@b",
        "\u017fip:a@b;token=t0k3n",
    ],
    ids=[
        "header",
        "bearer",
        "basic",
        "digest",
        "long-s",
        "non-ascii",
        "url",
        "sip",
        "sips",
        "long-s-sip",
    ],
)
def test_redact_text_quick_check_matches_patterns(text):
    assert redact_text(text) == _redact_with_every_pattern(text)


# Words and marks that the credential patterns look for, mixed with filler,
# so that generated text often contains a credential or nearly one.
_FRAGMENTS = st.sampled_from(
    [
        "Authorization:",
        "proxy-authorization :",
        "bearer ",
        "Bearer abcdefgh12",
        "BASIC ",
        "basic dXNlcjpwYXNz",
        "ba\u017fic ",
        "Digest ",
        "DIGEST a=1",
        "realm=x",
        "https://",
        "user:pw@",
        "sip:",
        "SIPS:alice:pw@",
        "\u017fip:",
        "?token=",
        ";key=",
        "&x=1",
        "#sig=",
        "abcdefgh12",
        "\r\n",
        " ",
        "\u00e9",
        "K",
        "\u212a",
    ]
)


@given(st.lists(_FRAGMENTS | st.text(max_size=6), max_size=8).map("".join))
def test_redact_text_same_as_every_pattern(text):
    assert redact_text(text) == _redact_with_every_pattern(text)


def _redact_with_every_pattern(text: str) -> str:
    # The five substitutions without the quick check that skips them.
    text = logs._AUTHORIZATION_LINE.sub(rf"\1 {REDACTED}", text)
    text = logs._CREDENTIAL.sub(rf"\1 {REDACTED}", text)
    text = logs._DIGEST.sub(rf"\1 {REDACTED}", text)
    text = logs._URL_USERINFO.sub(rf"\1{REDACTED}@", text)
    return logs._redact_uris(text)


def test_redact_header_pairs():
    event = {
        "event": "sip.request",
        "headers": [("Authorization", "Bearer t"), ("X-Team", "support")],
    }

    redacted = redact_secrets(None, "info", event)

    assert redacted["headers"] == [["Authorization", REDACTED], ["X-Team", "support"]]


def test_redacted_in_rendered_json_line():
    stream = io.StringIO()
    configure_logging("json", stream=stream)

    structlog.get_logger().warning(
        "webhook.failed", detail="Authorization: Bearer rendered-token-123"
    )

    line = json.loads(stream.getvalue())
    assert "rendered-token-123" not in stream.getvalue()
    assert line["detail"] == f"Authorization: {REDACTED}"


def test_stdlib_records_redacted():
    stream = io.StringIO()
    configure_logging("json", stream=stream)

    logging.getLogger("aiohttp.client").error(
        "request to https://user:hunter22@127.0.0.1/ failed"
    )

    assert "hunter22" not in stream.getvalue()


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_exception_text_redacted(log_format):
    stream = io.StringIO()
    configure_logging(log_format, stream=stream)

    try:
        raise ValueError("POST http://127.0.0.1/hook?token=exc-token-1 failed")
    except ValueError:
        structlog.get_logger().exception("webhook.queue_failed")

    output = stream.getvalue()
    assert "exc-token-1" not in output
    assert f"token={REDACTED}" in output
    assert "ValueError" in output


def test_stack_log_redacted_before_cut():
    import pjsua2 as pj

    from router.sip.callbacks import StackLogWriter

    # Cut at 160 characters, the line would end inside the password,
    # before the `@` that shows it is one.
    entry = pj.LogEntry()
    entry.msg = "x" * 150 + " sip:a:password-12345@127.0.0.1\nsecond line"
    entry.level = 1
    with capture_logs() as events:
        StackLogWriter().write(entry)

    [event] = events
    assert event["event"] == "sip.stack_log"
    assert "pas" not in event["text"]
    assert event["text"].endswith(" sip:a:[re")


def config_errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        parse_config(textwrap.dedent(text), config_dir=".")
    return raised.value.errors


def test_config_error_hides_secret_header_value():
    errors = config_errors(
        """
        org:
          server:
            url: http://127.0.0.1:8090/webhook
            headers: {X-Api-Key: 90817263545, Authorization: 5550123987}
        """
    )

    assert len(errors) == 2
    for error in errors:
        assert "90817263545" not in error
        assert "5550123987" not in error
        assert "got a number" in error


def test_config_error_shows_plain_header_value():
    errors = config_errors(
        """
        org:
          server:
            url: http://127.0.0.1:8090/webhook
            headers: {X-Team: 42}
        """
    )

    assert errors == [
        "org.server.headers.X-Team: must be a string, got the number 42; "
        "put it in quotes"
    ]


def test_config_error_masks_url_query():
    errors = config_errors(
        """
        org:
          server: http://127.0.0.1:8090/webhook?token=cfg-token-1
        """
    )

    assert errors == [
        "org.server: must be a mapping, got "
        "'http://127.0.0.1:8090/webhook?token=[redacted]'"
    ]


def test_config_error_masks_password_before_cut():
    password = "p" * 40 + "-cfg-password"
    errors = config_errors(
        f"""
        org:
          server: http://user:{password}@127.0.0.1/webhook
        """
    )

    assert len(errors) == 1
    assert "pppp" not in errors[0]
    assert "http://[redacted]@127.0.0.1/webhook" in errors[0]


def test_config_error_masks_invalid_sip_uri():
    errors = config_errors(
        """
        org:
          server: {url: http://127.0.0.1:8090/webhook}
        credentials:
          - {id: trunk-a, provider: byo-sip-trunk, name: A, gateways: [{ip: 127.0.0.1}]}
        phoneNumbers:
          - id: pn-1
            provider: byo-phone-number
            credentialId: trunk-a
            number: "+14155550100"
            fallbackDestination:
              type: sip
              sipUri: "sip:agent@127.0.0.1 ?X-Token=uri-token-1"
        """
    )

    assert len(errors) == 1
    assert "uri-token-1" not in errors[0]
    assert "X-Token=[redacted]" in errors[0]
