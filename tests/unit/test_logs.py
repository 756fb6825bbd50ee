import io
import json
import logging

import pytest
import structlog
from pydantic import SecretStr
from structlog.testing import capture_logs

from router.logs import (
    REDACTED,
    configure_logging,
    is_secret_key,
    is_secret_parameter,
    mask_number,
    redact_secrets,
    redact_url,
    without_secrets,
)


@pytest.fixture(autouse=True)
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "authPassword",
        "secret",
        "X-Cozmox-Secret",
        "secret_key",
        "secretKey",
        "token",
        "adminToken",
        "Authorization",
        "api_key",
        "api-key",
        "apiKey",
    ],
)
def test_is_secret_key_matches(key):
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key", ["event", "call_id", "credentialId", "number", "maxTokens", "tokenCount", 3]
)
def test_is_secret_key_ignores(key):
    assert not is_secret_key(key)


def test_redact_secrets_top_level_and_nested():
    event = {
        "event": "webhook.sent",
        "password": "hunter2",
        "headers": {"Authorization": "Bearer abc", "Accept": "application/json"},
        "plans": [{"secretKey": "k", "algorithm": "sha256"}],
        "call_id": "c-1",
    }

    result = redact_secrets(None, "info", event)

    assert result["password"] == REDACTED
    assert result["headers"]["Authorization"] == REDACTED
    assert result["headers"]["Accept"] == "application/json"
    assert result["plans"][0]["secretKey"] == REDACTED
    assert result["plans"][0]["algorithm"] == "sha256"
    assert result["call_id"] == "c-1"
    assert result["event"] == "webhook.sent"


def test_redact_secrets_secretstr_under_any_key():
    result = redact_secrets(None, "info", {"event": "x", "value": SecretStr("s3")})

    assert result["value"] == REDACTED


def test_capture_logs_sees_redacted_values():
    with capture_logs(processors=[redact_secrets]) as logs:
        structlog.get_logger().info("login", token="abc", user="ops")

    assert logs == [
        {"event": "login", "token": REDACTED, "user": "ops", "log_level": "info"}
    ]


def test_json_output_is_one_redacted_line():
    stream = io.StringIO()
    configure_logging("json", stream=stream)

    structlog.get_logger().info(
        "assistant_request.sent",
        headers={"X-Cozmox-Secret": "topsecret"},
        number_id="n-1",
    )

    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["event"] == "assistant_request.sent"
    assert record["level"] == "info"
    assert record["headers"] == {"X-Cozmox-Secret": REDACTED}
    assert record["number_id"] == "n-1"
    assert "timestamp" in record
    assert "topsecret" not in stream.getvalue()


def test_auto_format_is_json_when_not_a_terminal():
    stream = io.StringIO()
    configure_logging("auto", stream=stream)

    structlog.get_logger().info("started")

    assert json.loads(stream.getvalue())["event"] == "started"


def test_auto_format_is_console_on_a_terminal():
    stream = FakeTerminal()
    configure_logging("auto", stream=stream)

    structlog.get_logger().info("started", password="hunter2")

    output = stream.getvalue()
    assert "started" in output
    assert not output.startswith("{")
    assert "hunter2" not in output


def test_level_filters_lower_events():
    stream = io.StringIO()
    configure_logging("json", level="warning", stream=stream)

    structlog.get_logger().info("hidden")
    structlog.get_logger().warning("shown")

    events = [json.loads(line)["event"] for line in stream.getvalue().splitlines()]
    assert events == ["shown"]


def test_stdlib_records_share_json_format():
    stream = io.StringIO()
    configure_logging("json", stream=stream)

    logging.getLogger("aiohttp.server").error("request failed")

    record = json.loads(stream.getvalue())
    assert record["event"] == "request failed"
    assert record["level"] == "error"
    assert record["logger"] == "aiohttp.server"


def test_configure_logging_rejects_unknown_level():
    with pytest.raises(ValueError, match="invalid log level 'loud'"):
        configure_logging("json", level="loud")


def test_configure_logging_rejects_unknown_format():
    with pytest.raises(ValueError, match="invalid log format 'xml'"):
        configure_logging("xml")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("+14155551234", "+*******1234"),
        ("14155551234", "*******1234"),
        ("+4930123456", "+******3456"),
        ("12345", "*2345"),
        ("1234", "****"),
        ("+123", "+***"),
        ("alice", "*lice"),
    ],
)
def test_mask_number_keeps_last_four(number, masked):
    assert mask_number(number) == masked


def test_mask_number_disabled_returns_number():
    assert mask_number("+14155551234", enabled=False) == "+14155551234"


@pytest.mark.parametrize("number", [None, ""])
def test_mask_number_empty_values(number):
    assert mask_number(number) == number


def test_without_secrets_drops_keys_and_secret_values():
    value = {
        "url": "http://127.0.0.1:8090/webhook",
        "secret": SecretStr("s"),
        "headers": {"Authorization": "Bearer abc", "X-Team": "a"},
        "other": SecretStr("hidden"),
        "list": [SecretStr("x"), "kept"],
    }

    assert without_secrets(value) == {
        "url": "http://127.0.0.1:8090/webhook",
        "headers": {"X-Team": "a"},
        "list": ["kept"],
    }


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "http://bob:pw-secret@127.0.0.1:18091/hook?token=tok-secret",
            "http://bob:[redacted]@127.0.0.1:18091/hook?token=[redacted]",
        ),
        ("https://tok-secret@127.0.0.1/a", "https://[redacted]@127.0.0.1/a"),
        (
            "http://127.0.0.1/a?x=1&api_key=k-secret&flag",
            "http://127.0.0.1/a?x=1&api_key=[redacted]&flag",
        ),
        ("http://127.0.0.1/a?maxTokens=5", "http://127.0.0.1/a?maxTokens=5"),
        ("sip:+14155550100@127.0.0.1", "sip:+14155550100@127.0.0.1"),
        (
            "https://127.0.0.1/a?key=k-secret&X-Amz-Signature=s-secret",
            "https://127.0.0.1/a?key=[redacted]&X-Amz-Signature=[redacted]",
        ),
    ],
    ids=[
        "password-and-token",
        "lone-user",
        "api-key",
        "plain-query",
        "sip-uri",
        "key-and-signature",
    ],
)
def test_redact_url(url, expected):
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    "name",
    [
        "token",
        "access_token",
        "X-Token",
        "api_key",
        "api%5Fkey",
        "key",
        "subscription-key",
        "sig",
        "X-Amz-Signature",
        "auth",
        "password",
        "pass",
        "pwd",
        "client_secret",
    ],
)
def test_is_secret_parameter_matches(name):
    assert is_secret_parameter(name)


@pytest.mark.parametrize(
    "name", ["transport", "user", "lr", "maxTokens", "page", "team", "keyword"]
)
def test_is_secret_parameter_ignores(name):
    assert not is_secret_parameter(name)
