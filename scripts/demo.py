"""Place one real SIP call per route of the example config; print each outcome.

Starts on 127.0.0.1: the example webhook server (`examples/webhook_server.py`,
port 8090), a SIPp UAS as the assistant runtime (port 5080), and the router
on `config/router.example.yaml` (SIP 5060, HTTP 8080). Then SIPp calls each
example number from 127.0.0.1:5070, the example trunk's gateway. Every
process it started is stopped by its PID at the end, and the logs stay in a
temporary folder. Exits 1 when a call ends otherwise than expected.

    .venv/bin/python scripts/demo.py
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = REPO_ROOT / "sipp-scenarios"
CONFIG = REPO_ROOT / "config" / "router.example.yaml"
LOOPBACK = "127.0.0.1"
ROUTER_SIP_PORT = 5060
ROUTER_HTTP_PORT = 8080
RUNTIME_PORT = 5080
WEBHOOK_PORT = 8090
CALLER_PORT = 5070
CALLER_NUMBER = "+14155559876"
READY_TIMEOUT_SECONDS = 20.0
CALL_TIMEOUT_SECONDS = 20


ANSWERED = "uac-static-assistant-expect-200.xml"


@dataclass(frozen=True)
class Route:
    """One example number, the route it takes and the response expected."""

    number: str
    description: str
    scenario: str
    expected_status: int


ROUTES = (
    Route("+14155550100", "static assistant", ANSWERED, 200),
    Route("+14155550101", "assistant-request", ANSWERED, 200),
    Route("+14155550102", "server fails, fallback", "uac-expect-302.xml", 302),
    Route("+14155550103", "blocked number", "uac-expect-403.xml", 403),
    Route("+14155550104", "unknown number", "uac-expect-404.xml", 404),
)  # fmt: skip


class DemoError(Exception):
    """A process of the demo could not start."""


def main() -> int:
    sipp = shutil.which("sipp")
    if sipp is None:
        print("sipp not found on PATH: install the Debian package sip-tester")
        return 1
    _check_ports_free()
    work_dir = Path(tempfile.mkdtemp(prefix="cozmox-demo-"))
    print(f"logs and SIP traces: {work_dir}")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        processes.append(_start_webhook_server(work_dir))
        processes.append(_start_runtime(sipp, work_dir))
        router = _start_router(work_dir)
        processes.append(router)
        _wait_until_ready(router, work_dir)
        failures = sum(not _call(sipp, route, work_dir) for route in ROUTES)
    except DemoError as error:
        print(f"demo failed: {error}")
        return 1
    finally:
        for process in reversed(processes):
            _stop(process)
    print(f"{len(ROUTES) - failures} of {len(ROUTES)} calls ended as expected")
    return 1 if failures else 0


def _check_ports_free() -> None:
    needed = [
        (socket.SOCK_DGRAM, ROUTER_SIP_PORT, "router SIP (UDP)"),
        (socket.SOCK_STREAM, ROUTER_SIP_PORT, "router SIP (TCP)"),
        (socket.SOCK_STREAM, ROUTER_HTTP_PORT, "router HTTP"),
        (socket.SOCK_DGRAM, RUNTIME_PORT, "SIPp runtime"),
        (socket.SOCK_STREAM, WEBHOOK_PORT, "webhook server"),
        (socket.SOCK_DGRAM, CALLER_PORT, "SIPp caller"),
    ]
    for kind, port, user in needed:
        with socket.socket(socket.AF_INET, kind) as probe:
            if kind == socket.SOCK_STREAM:
                # As the servers do: a TCP port whose last connections are in
                # TIME_WAIT can be bound again, one with a listener cannot.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((LOOPBACK, port))
            except OSError as error:
                raise SystemExit(
                    f"port {LOOPBACK}:{port} for the {user} is in use ({error}); "
                    "stop what uses it and run the demo again"
                ) from error


def _start_webhook_server(work_dir: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        str(REPO_ROOT / "examples" / "webhook_server.py"),
        "--host", LOOPBACK,
        "--port", str(WEBHOOK_PORT),
    ]  # fmt: skip
    return _spawn(command, work_dir / "webhook-server.log")


def _start_runtime(sipp: str, work_dir: Path) -> subprocess.Popen[bytes]:
    command = [
        sipp,
        "-sf", str(SCENARIOS / "uas-runtime.xml"),
        "-i", LOOPBACK, "-p", str(RUNTIME_PORT), "-mi", LOOPBACK, "-ci", LOOPBACK,
        "-m", str(len(ROUTES)),
        "-nostdin",
        "-trace_logs", "-log_file", str(work_dir / "runtime.log"),
        "-trace_msg", "-message_file", str(work_dir / "runtime.messages"),
    ]  # fmt: skip
    return _spawn(command, work_dir / "runtime.screen")


def _start_router(work_dir: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "router.cli", "run", "-c", str(CONFIG)]
    return _spawn(command, work_dir / "router.log")


def _spawn(command: list[str], output: Path) -> subprocess.Popen[bytes]:
    with output.open("wb") as log_file:
        return subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )


def _wait_until_ready(router: subprocess.Popen[bytes], work_dir: Path) -> None:
    url = f"http://{LOOPBACK}:{ROUTER_HTTP_PORT}/readyz"
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if router.poll() is not None:
            raise DemoError(
                f"router exited with status {router.returncode}; "
                f"see {work_dir / 'router.log'}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if json.loads(response.read()).get("ready"):
                    return
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise DemoError(
        f"router not ready within {READY_TIMEOUT_SECONDS:g} s; "
        f"see {work_dir / 'router.log'}"
    )


def _call(sipp: str, route: Route, work_dir: Path) -> bool:
    """Place one call of `route`; print its outcome and return whether it passed."""
    trace = work_dir / f"call-{route.number.lstrip('+')}.messages"
    command = [
        sipp,
        "-sf", str(SCENARIOS / route.scenario),
        f"{LOOPBACK}:{ROUTER_SIP_PORT}",
        "-s", route.number,
        "-key", "caller", CALLER_NUMBER,
        "-i", LOOPBACK, "-p", str(CALLER_PORT), "-mi", LOOPBACK, "-ci", LOOPBACK,
        "-m", "1",
        "-nostdin",
        "-timeout", str(CALL_TIMEOUT_SECONDS), "-timeout_error",
        "-trace_msg", "-message_file", str(trace),
    ]  # fmt: skip
    if route.scenario == ANSWERED:
        # Only the answered-call scenario declares the `hold` variable.
        command += ["-set", "hold", "1000"]

    try:
        exit_code = subprocess.run(
            command,
            cwd=work_dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=CALL_TIMEOUT_SECONDS + 5,
            check=False,
        ).returncode
    except subprocess.TimeoutExpired:
        exit_code = -1

    status_line, detail = _final_response(trace)
    if route.expected_status == 200 and status_line.startswith("200 "):
        detail = _runtime_route(work_dir / "runtime.log")

    passed = exit_code == 0
    verdict = "ok" if passed else f"FAILED (expected {route.expected_status})"
    print(
        f"{route.number}  {route.description:<24} "
        f"{status_line or 'no final response':<32} {verdict}"
    )
    if detail:
        print(f"{'':16}{detail}")
    return passed


def _final_response(trace: Path) -> tuple[str, str]:
    """Return the last final response to the INVITE and its Contact or Reason."""
    try:
        text = trace.read_text(errors="replace").replace("\r\n", "\n")
    except FileNotFoundError:
        return "", ""
    status_line, detail = "", ""
    for block in text.split("\n\n"):
        lines = block.strip("\n").split("\n")
        start = next((line for line in lines if line.startswith("SIP/2.0 ")), None)
        if start is None or int(start.split()[1]) < 200:
            continue
        headers = lines[lines.index(start) + 1 :]
        if not any(h.lower().startswith("cseq:") and "INVITE" in h for h in headers):
            continue
        status_line = " ".join(start.split()[1:])
        detail = next(
            (h for h in headers if h.lower().startswith(("contact:", "reason:"))), ""
        )
    return status_line, detail


def _runtime_route(runtime_log: Path) -> str:
    """Return the route header of the last INVITE that the runtime received."""
    try:
        lines = runtime_log.read_text().splitlines()
    except FileNotFoundError:
        return ""
    invites = [line.split("\t") for line in lines if line.startswith("invite\t")]
    if not invites:
        return ""
    routes = [field for field in invites[-1][1:] if not field.endswith("=")]
    names = ("X-Cozmox-Assistant-Id", "X-Cozmox-Squad-Id", "X-Cozmox-Workflow-Id")
    chosen = [field for field in routes if field.startswith(names)]
    return "runtime received " + ", ".join(chosen) if chosen else ""


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
