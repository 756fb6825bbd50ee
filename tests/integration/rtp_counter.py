"""A caller's audio port for tests: counts the RTP packets the router sends.

SIPp places the call, but its scenario offers `-key rtp_port` in the SDP
instead of SIPp's own media port, so the router's RTP for the caller comes
to a UDP socket that this module binds on 127.0.0.1. A thread reads every
datagram and counts:
- `packets`: datagrams that parse as RTP version 2 with payload type 0
  (PCMU, the only codec the scenarios offer);
- `voiced_packets`: those whose payload contains sound, at least one sample
  louder than `VOICED_MIN_AMPLITUDE` once decoded from mu-law. pjmedia sends
  near-silent frames while nothing plays, so a spoken prompt shows up here
  only.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field

from harness import LOOPBACK, free_port

RTP_VERSION = 2
PCMU_PAYLOAD_TYPE = 0
RTP_HEADER_BYTES = 12
# Out of 32767: about -30 dBFS, far above the noise of a silent frame.
VOICED_MIN_AMPLITUDE = 1000


def mu_law_to_linear(byte: int) -> int:
    """Decode one G.711 mu-law byte to a 16-bit linear sample (ITU-T G.711)."""
    byte = ~byte & 0xFF
    sign = byte & 0x80
    exponent = (byte >> 4) & 0x07
    mantissa = byte & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return -magnitude if sign else magnitude


_LOUD_BYTES = frozenset(
    value
    for value in range(256)
    if abs(mu_law_to_linear(value)) >= VOICED_MIN_AMPLITUDE
)


@dataclass
class RtpCounter:
    """A UDP socket on 127.0.0.1 that counts the RTP packets it receives."""

    port: int = field(default_factory=free_port)
    packets: int = 0
    voiced_packets: int = 0
    other_datagrams: int = 0

    def __post_init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind((LOOPBACK, self.port))
        self._socket.settimeout(0.1)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._read, name=f"rtp-counter-{self.port}", daemon=True
        )
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                datagram = self._socket.recv(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            self._count(datagram)

    def _count(self, datagram: bytes) -> None:
        is_rtp = (
            len(datagram) > RTP_HEADER_BYTES
            and datagram[0] >> 6 == RTP_VERSION
            and datagram[1] & 0x7F == PCMU_PAYLOAD_TYPE
        )
        with self._lock:
            if not is_rtp:
                self.other_datagrams += 1
                return
            self.packets += 1
            payload = datagram[RTP_HEADER_BYTES:]
            if not _LOUD_BYTES.isdisjoint(payload):
                self.voiced_packets += 1

    def wait_for_voiced(self, count: int, timeout: float) -> int:
        """Wait until `count` voiced packets arrived; return how many did."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.voiced_packets < count:
            time.sleep(0.05)
        return self.voiced_packets

    def close(self) -> None:
        """Stop the reading thread and close the socket."""
        self._stop.set()
        self._thread.join(timeout=2)
        self._socket.close()
