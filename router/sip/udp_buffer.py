"""The kernel receive buffer of the router's UDP SIP socket.

pjsip leaves its UDP socket with the kernel's default receive buffer
(`net.core.rmem_default`, 208 KiB on Debian), which has room for about a
hundred INVITEs (an estimate: the kernel also charges each packet its
bookkeeping). When a burst arrives faster than the owner thread reads, for
example when a carrier fails its traffic over to this router, the kernel
drops the rest of the burst before pjsip reads it, and pjsip logs
nothing about it. The router reads the kernel's count of dropped packets from
`/proc/net/udp` for its metrics, and requests a larger buffer once the
socket is bound when the config sets one. A large buffer is not free:
under sustained overload every INVITE waits longer in it.

pjsua2 gives no access to the socket, so the router finds it among the
process's open files by its bound address.
"""

from __future__ import annotations

import os
import platform
import socket
import stat
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

PROC_TABLES = (Path("/proc/net/udp"), Path("/proc/net/udp6"))
# Column numbers in /proc/net/udp rows, counted from 0 after splitting on
# whitespace: "sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref
# pointer drops".
INODE_COLUMN = 9
DROPS_COLUMN = 12


@dataclass(frozen=True)
class ReceiveBuffer:
    """The receive buffer that the kernel granted the UDP SIP socket."""

    requested: int
    granted: int
    """Bytes that SO_RCVBUF reports, which Linux sets to twice the request."""
    inode: int
    """Identifies the socket in /proc/net/udp."""

    @property
    def capped(self) -> bool:
        """True when the kernel set less than the requested size.

        Linux reports twice the size it set, so a buffer of the full
        requested size reads back as `2 * requested`.
        """
        return self.granted < 2 * self.requested


def set_receive_buffer(host: str, port: int, size: int) -> ReceiveBuffer | None:
    """Ask for a `size`-byte receive buffer on the UDP socket bound to host:port.

    SO_RCVBUFFORCE goes past `net.core.rmem_max` when the process may do
    so (CAP_NET_ADMIN); otherwise SO_RCVBUF gets at most that maximum.
    Returns None when no such socket is open, for example where /proc is
    missing. A `size` of 0 leaves the buffer as it is.
    """
    found = _find_udp_socket(host, port)
    if found is None:
        return None
    with found:
        if size > 0:
            _request_size(found, size)
        granted = found.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        inode = os.fstat(found.fileno()).st_ino
    return ReceiveBuffer(requested=size, granted=granted, inode=inode)


# Python's socket module lacks the constant. 33 is its value in Linux's
# asm-generic/socket.h, which x86 and ARM use; other machines skip it.
_SO_RCVBUFFORCE = (
    33
    if sys.platform == "linux"
    and platform.machine() in {"x86_64", "i686", "aarch64", "armv7l"}
    else None
)


def _request_size(found: socket.socket, size: int) -> None:
    if _SO_RCVBUFFORCE is not None:
        try:
            found.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, size)
            return
        except OSError:
            pass  # no CAP_NET_ADMIN: fall back to the capped request
    found.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def _find_udp_socket(host: str, port: int) -> socket.socket | None:
    """Return a duplicate of the open UDP socket bound to host:port, or None."""
    try:
        descriptors = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return None
    for descriptor in descriptors:
        try:
            if not stat.S_ISSOCK(os.fstat(descriptor).st_mode):
                continue
            duplicate = os.dup(descriptor)
        except OSError:
            continue
        try:
            candidate = socket.socket(fileno=duplicate)
        except OSError:
            os.close(duplicate)
            continue
        if candidate.type == socket.SOCK_DGRAM and _bound_to(candidate, host, port):
            return candidate
        candidate.close()
    return None


def _bound_to(candidate: socket.socket, host: str, port: int) -> bool:
    try:
        name = candidate.getsockname()
    except OSError:
        return False
    return name[0] == host and name[1] == port


def kernel_drops(inode: int, tables: Iterable[Path] = PROC_TABLES) -> int | None:
    """Return the packets the kernel dropped on the socket with this inode.

    None when the socket is in neither table (it is closed, or /proc is
    missing).
    """
    inode_text = str(inode)
    for table in tables:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            columns = line.split()
            if len(columns) > DROPS_COLUMN and columns[INODE_COLUMN] == inode_text:
                return int(columns[DROPS_COLUMN])
    return None


class UdpDropCollector(Collector):
    """Exports the kernel's drop count of the UDP SIP socket at each scrape."""

    NAME = "cozmox_router_sip_udp_receive_drops"

    def __init__(self, inode: int, tables: Iterable[Path] = PROC_TABLES) -> None:
        self._inode = inode
        self._tables = tuple(tables)

    def collect(self) -> Iterator[CounterMetricFamily]:
        drops = kernel_drops(self._inode, self._tables)
        if drops is None:
            return
        family = CounterMetricFamily(
            self.NAME,
            "UDP packets to the SIP socket that the kernel dropped because "
            "its receive buffer was full (router.sip.udpReceiveBufferBytes).",
        )
        family.add_metric([], drops)
        yield family
