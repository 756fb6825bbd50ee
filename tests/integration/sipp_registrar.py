"""SIPp 3.6.1 as the trunk's registrar, on 127.0.0.1.

`SippRegistrar` runs one of the `uas-register-*.xml` scenarios in the
background. Each scenario logs one tab-separated `register` line per
REGISTER it receives, which `registers()` reads back, and traces every
message, which `messages()` parses.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness import LOOPBACK
from sipp_runner import SipMessage, SippServer, _read, parse_message_file


@dataclass(frozen=True)
class RegisterLine:
    """One REGISTER that the registrar received, from its log line."""

    call_id: str
    cseq: int
    expires: int | None
    contact: str
    fields: dict[str, str]


class SippRegistrar(SippServer):
    """A SIPp registrar on a free port, stopped by its PID.

    `keys` become `-key NAME VALUE` arguments (user, pass, expires). With
    `-aa` SIPp also responds 200 to OPTIONS, so the registrar doubles as a
    gateway for the pings.
    """

    def __init__(self, scenario: str, directory: Path, keys: dict[str, str]) -> None:
        key_arguments = [
            part for key, value in keys.items() for part in ("-key", key, value)
        ]
        arguments = ["-m", "100", "-aa", *key_arguments]
        super().__init__(scenario, directory, "registrar", arguments)

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
