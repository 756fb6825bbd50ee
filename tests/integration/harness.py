"""The router daemon as a real process on 127.0.0.1, for integration tests.

`start_daemon()` writes a config file, runs `python -m router.cli run -c
FILE`, waits for `/readyz`, and returns a `Daemon` that reads the process's
JSON log lines and scrapes `/metrics`. Everything binds 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

LOOPBACK = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "integration-admin-token"

READY_TIMEOUT_SECONDS = 20.0
STOP_TIMEOUT_SECONDS = 10.0

# Ports are picked below 32768, where Linux hands out no ephemeral ports by
# default (net.ipv4.ip_local_port_range is 32768 to 60999), so an outgoing
# connection cannot take a port between its pick and its bind. The daemon's
# RTP range sits in the same low block, apart from the picked ports.
_PICKED_PORTS = range(20000, 30000)
RTP_PORT_START = 30000
RTP_PORT_COUNT = 2000
_handed_out: set[int] = set()


def free_port() -> int:
    """Return a port on 127.0.0.1 that is free for both UDP and TCP.

    A port is never returned twice in one test run, so two processes started
    one after the other cannot be handed the same port before either binds.
    """
    candidates = [port for port in _PICKED_PORTS if port not in _handed_out]
    for port in random.sample(candidates, k=min(200, len(candidates))):
        if is_port_free(socket.SOCK_DGRAM, port) and is_port_free(
            socket.SOCK_STREAM, port
        ):
            _handed_out.add(port)
            return port
    raise RuntimeError(
        f"no free UDP+TCP port on {LOOPBACK} among 200 tried in "
        f"{_PICKED_PORTS.start}-{_PICKED_PORTS.stop - 1}"
    )


def is_port_free(kind: socket.SocketKind, port: int) -> bool:
    """Return whether `port` on 127.0.0.1 can be bound for `kind`."""
    with socket.socket(socket.AF_INET, kind) as probe:
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def base_config(
    *,
    sip_port: int,
    http_port: int,
    runtime_uri: str,
    webhook_url: Callable[[str], str],
) -> dict[str, Any]:
    """Build a config like `config/router.example.yaml`, on the given ports.

    `webhook_url(path)` returns the URL of a path on the test's webhook
    server. Numbers, with the route each one takes:
    - `+14155550100` (pn-static): static assistant `asst-support`;
    - `+14155550101` (pn-ask): assistant-request to `org.server`, `/webhook`,
      and no fallback;
    - `+14155550102` (pn-fallback): its own server `/broken`, fallback to
      `sip:fallback@...` by redirect;
    - `+14155550103` (pn-blocked): status blocked.
    """
    return {
        "router": {
            "sip": {
                "listen": [
                    {"transport": "udp", "host": LOOPBACK, "port": sip_port},
                    {"transport": "tcp", "host": LOOPBACK, "port": sip_port},
                ],
                "rtpPortStart": RTP_PORT_START,
                "rtpPortCount": RTP_PORT_COUNT,
            },
            "http": {"host": LOOPBACK, "port": http_port, "adminToken": ADMIN_TOKEN},
            "runtime": {"uri": runtime_uri, "mode": "bridge"},
            "assistantRequestDeadlineSeconds": 5,
            # Teardown sends SIGTERM while a held call may still be up.
            "drainSeconds": 2,
            # Teardown may meet a webhook receiver that still delays a reply.
            "webhookDelivery": {"flushSeconds": 2},
            "logFormat": "json",
            "maskCallerNumbers": True,
        },
        "org": {"server": {"url": webhook_url("/webhook"), "timeoutSeconds": 10}},
        "credentials": [
            {
                "id": "trunk-local",
                "provider": "byo-sip-trunk",
                "name": "Loopback carrier",
                "gateways": [{"ip": LOOPBACK, "netmask": 32}],
            }
        ],
        "phoneNumbers": [
            {
                "id": "pn-static",
                "provider": "byo-phone-number",
                "credentialId": "trunk-local",
                "number": "+14155550100",
                "assistantId": "asst-support",
            },
            {
                "id": "pn-ask",
                "provider": "byo-phone-number",
                "credentialId": "trunk-local",
                "number": "+14155550101",
            },
            {
                "id": "pn-fallback",
                "provider": "byo-phone-number",
                "credentialId": "trunk-local",
                "number": "+14155550102",
                "server": {"url": webhook_url("/broken"), "timeoutSeconds": 10},
                "fallbackDestination": {
                    "type": "sip",
                    "sipUri": f"sip:fallback@{LOOPBACK}:{free_port()}",
                    "transferPlan": {"sipVerb": "redirect"},
                },
            },
            {
                "id": "pn-blocked",
                "provider": "byo-phone-number",
                "credentialId": "trunk-local",
                "number": "+14155550103",
                "status": "blocked",
            },
        ],
    }


def phone_number(config: dict[str, Any], number_id: str) -> dict[str, Any]:
    """Return the phone number `number_id` of `config`, to change it in place."""
    for number in config["phoneNumbers"]:
        if number["id"] == number_id:
            return number
    raise KeyError(f"phone number {number_id!r} not in the test config")


class DaemonStartFailed(Exception):
    """The daemon exited or was not ready in time; carries its stderr."""


@dataclass
class Daemon:
    """A running router process and what it wrote to stderr."""

    process: subprocess.Popen[bytes]
    config: dict[str, Any]
    config_path: Path
    stderr_path: Path

    @property
    def sip_port(self) -> int:
        return int(self.config["router"]["sip"]["listen"][0]["port"])

    @property
    def sip_target(self) -> str:
        """Return `127.0.0.1:port` of the SIP listener, as SIPp takes it."""
        return f"{LOOPBACK}:{self.sip_port}"

    @property
    def http_url(self) -> str:
        http = self.config["router"]["http"]
        return f"http://{http['host']}:{http['port']}"

    def get_json(self, path: str, *, token: str | None = None) -> tuple[int, Any]:
        """GET `path` on the HTTP port; return the status and the JSON body."""
        request = urllib.request.Request(self.http_url + path)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            with error:
                return error.code, json.loads(error.read() or b"null")

    def call_record(self, call_id: str) -> tuple[int, Any]:
        """GET `/calls/{call_id}` with the admin token."""
        return self.get_json(f"/calls/{call_id}", token=ADMIN_TOKEN)

    def metrics(self) -> MetricSamples:
        """Scrape `/metrics` now."""
        return scrape_metrics(self.http_url)

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def events(self, event: str | None = None, **fields: Any) -> list[dict[str, Any]]:
        """Return the JSON log events so far, filtered by name and fields."""
        found = []
        for line in self.stderr_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(record, dict):
                continue
            if event is not None and record.get("event") != event:
                continue
            if all(record.get(key) == value for key, value in fields.items()):
                found.append(record)
        return found

    def wait_for_event(
        self, event: str, *, timeout: float = 5.0, **fields: Any
    ) -> dict[str, Any]:
        """Return the first log event that matches, polling for `timeout` s.

        The daemon logs `call.ended` after it sends the final response, so
        SIPp may finish before the event is written.
        """
        deadline = time.monotonic() + timeout
        while True:
            found = self.events(event, **fields)
            if found:
                return found[0]
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no log event {event!r} with {fields} within {timeout} s; "
                    f"events seen: {[e.get('event') for e in self.events()]}"
                )
            time.sleep(0.05)

    def stop(self) -> int:
        """Send SIGTERM, then SIGKILL after 10 s; return the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        return self.process.returncode


def start_daemon(
    config: dict[str, Any], directory: Path, env: dict[str, str] | None = None
) -> Daemon:
    """Write `config` to `directory` and start the daemon on it.

    The daemon's spoken prompts are cached under `directory`, and `env`
    adds to or replaces its environment variables. Returns once `/readyz`
    returns 200 with `"ready": true`. Raises DaemonStartFailed with the
    daemon's stderr if it exits first or is not ready within 20 s; the
    process is stopped in that case.
    """
    config_path = directory / "router.json"
    config_path.write_text(json.dumps(config, indent=2))
    stderr_path = directory / "router.stderr"
    with stderr_path.open("wb") as stderr:
        environment = {**os.environ, "XDG_CACHE_HOME": str(directory / "cache")}
        environment.update(env or {})
        # stderr goes to a file, not a pipe: a pipe that is never read fills
        # up and blocks the daemon's logging. `-m` from the repository root
        # imports this checkout's `router` even when it is not installed.
        process = subprocess.Popen(
            [sys.executable, "-m", "router.cli", "run", "-c", str(config_path)],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={
                **os.environ,
                "XDG_CACHE_HOME": str(directory / "cache"),
                **(env or {}),
            },
        )
    daemon = Daemon(process, config, config_path, stderr_path)
    try:
        _wait_until_ready(daemon)
    except DaemonStartFailed:
        daemon.stop()
        raise
    return daemon


def _wait_until_ready(daemon: Daemon) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if daemon.process.poll() is not None:
            raise DaemonStartFailed(
                f"daemon exited with status {daemon.process.returncode} before "
                f"it was ready; stderr:\n{daemon.stderr_text()}"
            )
        try:
            status, body = daemon.get_json("/readyz")
        except (OSError, json.JSONDecodeError) as error:
            last_error = repr(error)
        else:
            if status == 200 and isinstance(body, dict) and body.get("ready"):
                return
            last_error = f"/readyz returned {status}: {body}"
        time.sleep(0.1)
    raise DaemonStartFailed(
        f"daemon not ready within {READY_TIMEOUT_SECONDS:g} s ({last_error}); "
        f"stderr:\n{daemon.stderr_text()}"
    )


@dataclass
class MetricSamples:
    """Samples of one `/metrics` scrape, looked up by name and labels."""

    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    def value(self, name: str, **labels: str) -> float:
        """Return the sum of the samples of `name` whose labels include `labels`.

        A name with no such sample gives 0.0, as a counter that has not been
        incremented yet has no labelled sample.
        """
        return sum(
            value
            for sample_name, sample_labels, value in self.samples
            if sample_name == name
            and all(sample_labels.get(key) == wanted for key, wanted in labels.items())
        )

    def labels(self, name: str) -> list[dict[str, str]]:
        """Return the label sets of every sample of `name`."""
        return [
            labels for sample_name, labels, _ in self.samples if sample_name == name
        ]


def scrape_metrics(http_url: str) -> MetricSamples:
    """GET `{http_url}/metrics` and parse the Prometheus text format."""
    with urllib.request.urlopen(http_url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = MetricSamples()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.samples.append((sample.name, dict(sample.labels), sample.value))
    return samples
