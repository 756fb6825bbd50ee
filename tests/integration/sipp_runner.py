"""SIPp 3.6.1 as the caller and as the assistant runtime, on 127.0.0.1.

Callers run one call (`-m 1`) of a scenario in `sipp-scenarios/` and trace
every message to a file, which `parse_message_file()` reads back so a test
can assert the status line and headers the router sent. The runtime runs
`uas-runtime.xml` in the background and logs the X-Cozmox-* headers of each
INVITE it receives.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness import LOOPBACK, REPO_ROOT, free_port, is_port_free

SIPP = shutil.which("sipp")
# Locally the integration tests are skipped without SIPp. Under CI, where
# `.ci/run` installs it, a missing sipp fails them instead of skipping.
requires_sipp = pytest.mark.skipif(
    SIPP is None and not os.environ.get("CI"),
    reason="sipp not found on PATH: install the Debian package sip-tester "
    "(`make test` does) to run the integration tests",
)
SCENARIOS = REPO_ROOT / "sipp-scenarios"
CALLER_NUMBER = "+14155559876"

# Compact header forms (RFC 3261 section 7.3.3, RFC 3515 for Refer-To).
_COMPACT_FORMS = {
    "i": "call-id",
    "m": "contact",
    "f": "from",
    "t": "to",
    "v": "via",
    "c": "content-type",
    "l": "content-length",
    "k": "supported",
    "e": "content-encoding",
    "s": "subject",
    "o": "event",
    "r": "refer-to",
    "b": "referred-by",
    "x": "session-expires",
}
# SIPp writes each traced message after a line of dashes and a timestamp,
# then a line such as "UDP message received [333] bytes :".
_TRACE_SEPARATOR = re.compile(r"^-{20,} .*$", re.MULTILINE)
_TRACE_DIRECTION = re.compile(r"^\w+ message (sent|received)\b")


@dataclass(frozen=True)
class SipMessage:
    """One SIP message from a SIPp trace."""

    direction: str
    """`sent` or `received`, from SIPp's side."""
    start_line: str
    headers: tuple[tuple[str, str], ...]
    body: str

    @property
    def status(self) -> int | None:
        """Return the status code of a response, None for a request."""
        if not self.start_line.startswith("SIP/2.0 "):
            return None
        return int(self.start_line.split()[1])

    @property
    def method(self) -> str | None:
        """Return the method of a request, None for a response."""
        return None if self.status is not None else self.start_line.split()[0]

    @property
    def cseq_method(self) -> str:
        """Return the method named in CSeq, empty when CSeq is missing."""
        parts = (self.header("CSeq") or "").split()
        return parts[-1] if parts else ""

    def header_values(self, name: str) -> list[str]:
        """Return every value of header `name`, compact forms included."""
        wanted = _canonical(name)
        return [value for key, value in self.headers if _canonical(key) == wanted]

    def header(self, name: str) -> str | None:
        """Return the first value of header `name`, or None."""
        values = self.header_values(name)
        return values[0] if values else None


def _canonical(name: str) -> str:
    lowered = name.strip().lower()
    return _COMPACT_FORMS.get(lowered, lowered)


def parse_message_file(text: str) -> list[SipMessage]:
    """Parse a SIPp `-trace_msg` file into messages, in order."""
    messages = []
    for chunk in _TRACE_SEPARATOR.split(text.replace("\r\n", "\n")):
        lines = chunk.strip("\n").split("\n")
        match = _TRACE_DIRECTION.match(lines[0])
        if match is None:
            continue
        message = "\n".join(lines[1:]).strip("\n")
        if message:
            messages.append(_parse_message(match.group(1), message))
    return messages


def _parse_message(direction: str, text: str) -> SipMessage:
    head, _, body = text.partition("\n\n")
    start_line, *header_lines = head.split("\n")
    headers: list[tuple[str, str]] = []
    for line in header_lines:
        if line[:1] in (" ", "\t") and headers:
            # A folded line continues the previous header (RFC 3261 7.3.1).
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}")
            continue
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return SipMessage(direction, start_line.strip(), tuple(headers), body)


@dataclass
class SippResult:
    """What one SIPp caller run ended with."""

    command: list[str]
    exit_code: int
    messages: list[SipMessage]
    errors: str
    log: str

    @property
    def received(self) -> list[SipMessage]:
        return [message for message in self.messages if message.direction == "received"]

    def responses(self, method: str = "INVITE") -> list[SipMessage]:
        """Return the responses received to requests of `method`."""
        return [
            message
            for message in self.received
            if message.status is not None and message.cseq_method == method
        ]

    @property
    def final_response(self) -> SipMessage | None:
        """Return the last final response (200 to 699) to the INVITE."""
        finals = [m for m in self.responses("INVITE") if m.status and m.status >= 200]
        return finals[-1] if finals else None

    @property
    def final_status(self) -> int | None:
        final = self.final_response
        return final.status if final else None

    def requests(self, method: str) -> list[SipMessage]:
        """Return the requests of `method` that SIPp received."""
        return [message for message in self.received if message.method == method]

    def describe(self) -> str:
        """Summarise the run for an assertion message."""
        flow = "\n".join(
            f"  {'<-' if m.direction == 'received' else '->'} {m.start_line}"
            for m in self.messages
        )
        return (
            f"sipp exited {self.exit_code}: {' '.join(self.command)}\n"
            f"messages:\n{flow or '  (none)'}\nerrors:\n{self.errors.strip()[-3000:]}"
        )


def require_sipp() -> str:
    """Return the path of `sipp`, or raise if it is not installed."""
    if SIPP is None:
        raise RuntimeError("sipp not found on PATH; install the sip-tester package")
    return SIPP


def _common_arguments(port: int) -> list[str]:
    # SIPp binds its control socket to 0.0.0.0 unless -ci names an address.
    return [
        "-i", LOOPBACK,
        "-p", str(port),
        "-mi", LOOPBACK,
        "-ci", LOOPBACK,
        "-cp", str(free_port()),
        "-nostdin",
    ]  # fmt: skip


class SippCall:
    """A SIPp caller running in the background, stopped by its PID."""

    def __init__(
        self, command: list[str], directory: Path, name: str, timeout: float
    ) -> None:
        self.command = command
        self.timeout = timeout
        self.message_file = directory / f"{name}.messages"
        self.error_file = directory / f"{name}.errors"
        self.log_file = directory / f"{name}.log"
        self.screen_file = directory / f"{name}.screen"
        full_command = [
            *command,
            "-trace_msg", "-message_file", str(self.message_file),
            "-trace_err", "-error_file", str(self.error_file),
            "-trace_logs", "-log_file", str(self.log_file),
        ]  # fmt: skip
        with self.screen_file.open("wb") as screen:
            self.process = subprocess.Popen(
                full_command,
                cwd=directory,
                stdin=subprocess.DEVNULL,
                stdout=screen,
                stderr=subprocess.STDOUT,
            )
        self.started = time.monotonic()

    def messages(self) -> list[SipMessage]:
        """Return the messages traced so far."""
        return parse_message_file(_read(self.message_file))

    def wait_for_response(self, status: int, timeout: float) -> bool:
        """Wait until SIPp has received `status` to its INVITE, or has exited."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(
                m.direction == "received"
                and m.status == status
                and m.cseq_method == "INVITE"
                for m in self.messages()
            ):
                return True
            if self.process.poll() is not None:
                return False
            time.sleep(0.05)
        return False

    def finish(self) -> SippResult:
        """Wait for SIPp to exit, killing it past its timeout, and read its traces."""
        remaining = self.timeout + 5 - (time.monotonic() - self.started)
        try:
            exit_code = self.process.wait(timeout=max(remaining, 0.1))
        except subprocess.TimeoutExpired:
            self.stop()
            exit_code = self.process.returncode
        messages = self.messages()
        errors = _read(self.error_file)
        if not messages:
            # SIPp sent nothing, so it likely rejected its arguments or the
            # scenario, which it reports on the screen, not in the error file.
            errors += _read(self.screen_file)[-2000:]
        return SippResult(
            command=self.command,
            exit_code=exit_code,
            messages=messages,
            errors=errors,
            log=_read(self.log_file),
        )

    def stop(self) -> None:
        """Stop SIPp by its PID: SIGTERM, then SIGKILL after 5 s."""
        _stop_process(self.process)


def start_sipp(
    scenario: str,
    target: str,
    service: str,
    extra_args: Sequence[str] = (),
    timeout: float = 30.0,
    *,
    log_dir: Path,
    caller: str = CALLER_NUMBER,
) -> SippCall:
    """Start one SIPp call of `scenario` to `target` in the background.

    `service` is the dialled number, the Request-URI user (`%2B...` for a
    percent-encoded `+`). SIPp gives up after `timeout` seconds and then
    exits non-zero.
    """
    port = free_port()
    command = [
        require_sipp(),
        "-sf", str(SCENARIOS / scenario),
        target,
        "-s", service,
        "-key", "caller", caller,
        *_common_arguments(port),
        "-m", "1",
        "-timeout", f"{timeout:g}",
        "-timeout_error",
        "-recv_timeout", str(int(timeout * 1000)),
        *extra_args,
    ]  # fmt: skip
    name = f"{Path(scenario).stem}-{port}"
    return SippCall(command, log_dir, name, timeout)


def run_sipp(
    scenario: str,
    target: str,
    service: str,
    extra_args: Sequence[str] = (),
    timeout: float = 30.0,
    *,
    log_dir: Path,
    caller: str = CALLER_NUMBER,
) -> SippResult:
    """Place one SIPp call of `scenario` to `target` and wait for its end."""
    call = start_sipp(
        scenario, target, service, extra_args, timeout, log_dir=log_dir, caller=caller
    )
    return call.finish()


@dataclass(frozen=True)
class RuntimeInvite:
    """One INVITE that the runtime received: its Call-ID and X-Cozmox-* headers."""

    sip_call_id: str
    headers: dict[str, str]

    def header(self, name: str) -> str:
        """Return the header's value; empty when the INVITE did not carry it."""
        return self.headers.get(name, "")


class SippServer:
    """A SIPp process that listens on a free UDP port, stopped by its PID.

    `role` names it in errors and `extra_arguments` follow the common ones.
    The constructor returns once SIPp has bound its port.
    """

    def __init__(
        self,
        scenario: str,
        directory: Path,
        role: str,
        extra_arguments: list[str],
    ) -> None:
        self.port = free_port()
        self.role = role
        name = f"{Path(scenario).stem}-{self.port}"
        self.log_file = directory / f"{name}.log"
        self.message_file = directory / f"{name}.messages"
        self.error_file = directory / f"{name}.errors"
        self.screen_file = directory / f"{name}.screen"
        command = [
            require_sipp(),
            "-sf", str(SCENARIOS / scenario),
            *_common_arguments(self.port),
            *extra_arguments,
            "-trace_logs", "-log_file", str(self.log_file),
            "-trace_msg", "-message_file", str(self.message_file),
            "-trace_err", "-error_file", str(self.error_file),
        ]  # fmt: skip
        with self.screen_file.open("wb") as screen:
            self.process = subprocess.Popen(
                command,
                cwd=directory,
                stdin=subprocess.DEVNULL,
                stdout=screen,
                stderr=subprocess.STDOUT,
            )
        self._wait_until_bound()

    def _wait_until_bound(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"SIPp {self.role} exited with status {self.process.returncode}:"
                    f"\n{_read(self.screen_file)[-2000:]}{_read(self.error_file)}"
                )
            if not is_port_free(socket.SOCK_DGRAM, self.port):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"SIPp {self.role} did not bind UDP {self.port} in {timeout} s"
        )

    def stop(self) -> None:
        """Stop SIPp by its PID: SIGTERM, then SIGKILL after 5 s."""
        _stop_process(self.process)


class SippRuntime(SippServer):
    """The assistant runtime, or a destination that the router dials."""

    def __init__(self, scenario: str, directory: Path, calls: int = 50) -> None:
        super().__init__(scenario, directory, "runtime", ["-m", str(calls)])

    @property
    def uri(self) -> str:
        return f"sip:runtime@{LOOPBACK}:{self.port}"

    def invites(self) -> list[RuntimeInvite]:
        """Return the INVITEs received so far, from the scenario's log lines."""
        invites = []
        for line in _read(self.log_file).splitlines():
            kind, *fields = line.split("\t")
            if kind != "invite":
                continue
            values = dict(field.partition("=")[::2] for field in fields)
            sip_call_id = values.pop("call-id", "")
            invites.append(RuntimeInvite(sip_call_id, values))
        return invites

    def wait_for_invites(self, count: int, timeout: float = 5.0) -> list[RuntimeInvite]:
        """Return the INVITEs once there are `count`, polling for `timeout` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            invites = self.invites()
            if len(invites) >= count:
                return invites
            time.sleep(0.05)
        raise AssertionError(
            f"runtime received {len(self.invites())} INVITEs, expected {count} "
            f"within {timeout} s; its errors:\n{_read(self.error_file)[-2000:]}"
        )


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
