"""Secrets inside logged text and header pairs, and in config error messages."""

import io
import json
import logging
import textwrap

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

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
    "text",
    [
        "AUTHORIZATION: token-value",
        "BeArEr abcdefgh123",
        "BASIC dXNlcjpwYXNz",
        "DIGEST x=1",
        "ba\u017fic dXNlcjpwYXNz",
        "Di\u0262est x=1",
        "HTTPS://u:p@127.0.0.1/",
    ],
    ids=["header", "bearer", "basic", "digest", "long-s", "non-ascii", "url"],
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
    # The four substitutions without the quick check that skips them.
    text = logs._AUTHORIZATION_LINE.sub(rf"\1 {REDACTED}", text)
    text = logs._CREDENTIAL.sub(rf"\1 {REDACTED}", text)
    text = logs._DIGEST.sub(rf"\1 {REDACTED}", text)
    return logs._URL_USERINFO.sub(rf"\1{REDACTED}@", text)


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
