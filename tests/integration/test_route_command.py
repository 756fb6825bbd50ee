"""`cozmox-router route` as a real process, for each number of the example.

With `--no-webhook` nothing leaves the process. Without it, the example's
server URLs point at a webhook server of the test on 127.0.0.1, and the
real assistant-request client signs and sends the request.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import REPO_ROOT
from webhook_server import WebhookServer

pytestmark = pytest.mark.integration

EXAMPLE = REPO_ROOT / "config" / "router.example.yaml"
CALLER = "+14155559876"


def route(config: Path, to: str, *options: str, src: str = "127.0.0.1") -> Any:
    """Run `route` and return the completed process."""
    command = [
        sys.executable,
        "-m",
        "router.cli",
        "route",
        "-c",
        str(config),
        "--to",
        to,
        "--from",
        CALLER,
        "--src",
        src,
        *options,
    ]
    return subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=30
    )


def route_json(config: Path, to: str, *options: str, src: str = "127.0.0.1") -> Any:
    completed = route(config, to, "--json", *options, src=src)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def step(decision: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in decision["steps"] if s["name"] == name)


@pytest.fixture
def example_on_test_server(tmp_path: Path, webhooks: WebhookServer) -> Path:
    """The example config with its server URLs on the test's webhook server."""
    # The example quotes its numbers, so YAML 1.1 reads it unchanged.
    data = yaml.safe_load(EXAMPLE.read_text())
    # YAML 1.1 reads a hook's `on:` key as True.
    for number in data["phoneNumbers"]:
        for hook in number.get("hooks", []):
            if True in hook:
                hook["on"] = hook.pop(True)
    data["org"]["server"]["url"] = webhooks.url("/webhook")
    for number in data["phoneNumbers"]:
        if "server" in number:
            number["server"]["url"] = webhooks.url("/broken")
    path = tmp_path / "router.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("to", "action", "detail"),
    [
        (
            "+14155550100",
            "hand-off",
            {"header": {"X-Cozmox-Assistant-Id": "asst-support"}},
        ),
        ("+14155550101", "reject", {"sipStatus": 480}),
        ("+14155550102", "transfer", {"target": "sip:fallback@127.0.0.1:5090"}),
        ("+14155550103", "reject", {"sipStatus": 403}),
        ("+14155550104", "reject", {"sipStatus": 404}),
    ],
    ids=["static", "ask-server", "fallback", "blocked", "unknown"],
)
def test_route_example_without_webhook(to, action, detail):
    decision = route_json(EXAMPLE, to, "--no-webhook")

    assert decision["verdict"]["action"] == action
    for key, value in detail.items():
        assert decision["verdict"][key] == value


def test_route_asks_the_server(example_on_test_server, webhooks):
    webhooks.reply("/webhook", {"assistantId": "asst-sales"})

    decision = route_json(example_on_test_server, "+14155550101")

    assert step(decision, "assistant-request")["result"] == "assistant asst-sales"
    assert decision["verdict"]["header"] == {"X-Cozmox-Assistant-Id": "asst-sales"}
    (request,) = webhooks.requests("/webhook")
    message = request.json["message"]
    assert message["type"] == "assistant-request"
    assert message["customer"]["number"] == CALLER
    assert request.headers.get("x-signature")


def test_route_server_failure_takes_fallback(example_on_test_server, webhooks):
    webhooks.reply("/broken", status=500)

    decision = route_json(example_on_test_server, "+14155550102")

    assert step(decision, "assistant-request")["result"] == "failed"
    assert step(decision, "failure")["result"] == "assistant-request-failed"
    assert decision["verdict"]["action"] == "transfer"
    assert decision["verdict"]["verb"] == "redirect"
    assert len(webhooks.requests("/broken")) == 1


def test_route_no_webhook_sends_nothing(example_on_test_server, webhooks):
    decision = route_json(example_on_test_server, "+14155550101", "--no-webhook")

    assert step(decision, "assistant-request")["result"] == "skipped (--no-webhook)"
    assert webhooks.requests() == []


def test_route_text_output():
    completed = route(EXAMPLE, "+14155550100")

    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[0] == f"call to +14155550100 from {CALLER}, source 127.0.0.1"
    assert any(line.startswith("  2 trunk") for line in lines)
    assert "verdict: hand-off" in lines


def test_route_output_masks_uri_tokens(tmp_path):
    data = yaml.safe_load(EXAMPLE.read_text())
    for number in data["phoneNumbers"]:
        for hook in number.get("hooks", []):
            if True in hook:
                hook["on"] = hook.pop(True)
    data["router"]["runtime"]["uri"] = (
        "sip:runtime@127.0.0.1:5080;token=route-runtime-secret"
    )
    (fallback,) = [
        number["fallbackDestination"]
        for number in data["phoneNumbers"]
        if number["number"] == "+14155550102"
    ]
    fallback["sipUri"] = "sip:fallback@127.0.0.1:5090;token=route-fallback-secret"
    config = tmp_path / "router.json"
    config.write_text(json.dumps(data))

    for to in ("+14155550100", "+14155550102"):
        for options in (["--no-webhook"], ["--no-webhook", "--json"]):
            completed = route(config, to, *options)
            assert completed.returncode == 0, completed.stderr
            assert "route-runtime-secret" not in completed.stdout
            assert "route-fallback-secret" not in completed.stdout
    decision = route_json(config, "+14155550102", "--no-webhook")
    assert decision["verdict"]["target"] == (
        "sip:fallback@127.0.0.1:5090;token=[redacted]"
    )


def test_route_invalid_config_exits_2(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("router: {unknownSetting: 1}\n")

    completed = route(broken, "+14155550100")

    assert completed.returncode == 2
    assert "router.unknownSetting" in completed.stderr
    assert completed.stdout == ""
