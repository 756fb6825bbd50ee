"""Fixtures that start real processes on 127.0.0.1: router, SIPp, webhooks.

Each test gets its own webhook server, SIPp runtime and daemon, so tests
stand alone and run in any order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import Daemon, base_config, free_port, start_daemon
from log_scan import leaks
from sipp_runner import CALLER_NUMBER, SippRuntime
from webhook_server import WebhookServer


@pytest.fixture
def webhooks() -> Iterator[WebhookServer]:
    """The operator's webhook server; every path returns 200 `{}` until set."""
    server = WebhookServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[SippRuntime]:
    """The assistant runtime: `uas-runtime.xml`, which answers and holds calls."""
    process = SippRuntime("uas-runtime.xml", tmp_path)
    yield process
    process.stop()


@pytest.fixture
def router_config(runtime: SippRuntime, webhooks: WebhookServer) -> dict[str, Any]:
    """A config on free ports, with the runtime's URI and the webhook URLs."""
    return base_config(
        sip_port=free_port(),
        http_port=free_port(),
        runtime_uri=runtime.uri,
        webhook_url=webhooks.url,
    )


@pytest.fixture
def start_router(
    tmp_path: Path, webhooks: WebhookServer
) -> Iterator[Callable[..., Daemon]]:
    """Return a function that starts the daemon on a config.

    It takes the config and, optionally, `env`: environment variables to
    add or replace. Every daemon it started is stopped with SIGTERM at
    teardown, which fails if the daemon does not exit with status 0, or if
    its log output contains a secret of its config or an unmasked caller
    number. The webhook server outlives the daemons, which flush their
    webhooks to it on shutdown.
    """
    started: list[Daemon] = []

    def start(config: dict[str, Any], env: dict[str, str] | None = None) -> Daemon:
        directory = tmp_path / f"router-{len(started)}"
        directory.mkdir()
        daemon = start_daemon(config, directory, env)
        started.append(daemon)
        return daemon

    yield start
    statuses = [(daemon, daemon.stop()) for daemon in started]
    for daemon, status in statuses:
        assert status == 0, (
            f"daemon exited with status {status} after SIGTERM; stderr:\n"
            f"{daemon.stderr_text()[-5000:]}"
        )
    for daemon in started:
        found = leaks(daemon.stderr_text(), daemon.config, [CALLER_NUMBER])
        assert not found, f"log output of {daemon.stderr_path} contains {found}"


@pytest.fixture
def router(
    start_router: Callable[..., Daemon], router_config: dict[str, Any]
) -> Daemon:
    """The daemon on the unchanged test config."""
    return start_router(router_config)
