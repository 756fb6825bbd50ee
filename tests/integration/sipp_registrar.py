"""SIPp 3.6.1 as the trunk's registrar, on 127.0.0.1.

`SippRegistrar` runs one of the `uas-register-*.xml` scenarios in the
background. Each scenario logs one tab-separated `register` line per
REGISTER it receives, which `registers()` reads back, and traces every
message, which `messages()` parses.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness import LOOPBACK, free_port, is_port_free
from sipp_runner import (
    SCENARIOS,
    SipMessage,
    _common_arguments,
    _read,
    _stop_process,
    parse_message_file,
    require_sipp,
)


@dataclass(frozen=True)
class RegisterLine:
    """One REGISTER that the registrar received, from its log line."""

    call_id: str
    cseq: int
    expires: int | None
    contact: str
    fields: dict[str, str]


class SippRegistrar:
    """A SIPp registrar on a free port, stopped by its PID.

    `keys` become `-key NAME VALUE` arguments (user, pass, expires). With
    `-aa` SIPp also responds 200 to OPTIONS, so the registrar doubles as a
    gateway for the pings.
    """

    def __init__(self, scenario: str, directory: Path, keys: dict[str, str]) -> None:
        self.port = free_port()
        name = f"{Path(scenario).stem}-{self.port}"
        self.log_file = directory / f"{name}.log"
        self.message_file = directory / f"{name}.messages"
        self.error_file = directory / f"{name}.errors"
        self.screen_file = directory / f"{name}.screen"
        key_arguments = [
            part for key, value in keys.items() for part in ("-key", key, value)
        ]
        command = [
            require_sipp(),
            "-sf", str(SCENARIOS / scenario),
            *_common_arguments(self.port),
            "-m", "100",
            "-aa",
            *key_arguments,
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
                    f"SIPp registrar exited with status {self.process.returncode}:"
                    f"\n{_read(self.screen_file)[-2000:]}{_read(self.error_file)}"
                )
            if not is_port_free(socket.SOCK_DGRAM, self.port):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"SIPp registrar did not bind UDP {self.port} in {timeout} s"
        )

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def registers(self) -> list[RegisterLine]:
        """Return the REGISTERs received so far, in order."""
        lines = []
        for line in _read(self.log_file).splitlines():
            kind, *parts = line.split("\t")
            if kind != "register":
                continue
            fields = dict(part.partition("=")[::2] for part in parts)
            expires = fields.get("expires", "")
            lines.append(
                RegisterLine(
                    call_id=fields.get("call-id", ""),
                    cseq=int(fields.get("cseq") or 0),
                    expires=int(expires) if expires.isdigit() else None,
                    contact=fields.get("contact", ""),
                    fields=fields,
                )
            )
        return lines

    def wait_for_registers(
        self,
        condition: Callable[[list[RegisterLine]], bool],
        timeout: float,
        what: str,
    ) -> list[RegisterLine]:
        """Return the REGISTERs once `condition` holds, polling for `timeout` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            registers = self.registers()
            if condition(registers):
                return registers
            time.sleep(0.05)
        raise AssertionError(
            f"registrar did not see {what} within {timeout} s; REGISTERs: "
            f"{[(r.call_id[-6:], r.cseq, r.expires) for r in self.registers()]}; "
            f"errors:\n{_read(self.error_file)[-2000:]}"
        )

    def messages(self) -> list[SipMessage]:
        """Return every message traced so far."""
        return parse_message_file(_read(self.message_file))

    def stop(self) -> None:
        """Stop SIPp by its PID: SIGTERM, then SIGKILL after 5 s."""
        _stop_process(self.process)
