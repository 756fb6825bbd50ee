"""The UDP SIP socket's receive buffer and the kernel's drop count."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from router.sip.udp_buffer import (
    ReceiveBuffer,
    UdpDropCollector,
    kernel_drops,
    set_receive_buffer,
)

pytestmark = pytest.mark.skipif(
    not Path("/proc/net/udp").exists(), reason="needs Linux's /proc/net/udp"
)


@pytest.fixture
def receiver() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as bound:
        bound.bind(("127.0.0.1", 0))
        yield bound


def fill(receiver: socket.socket, packets: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for _ in range(packets):
            sender.sendto(b"x" * 500, receiver.getsockname())


def test_sets_buffer_of_bound_socket(
    receiver: socket.socket,
) -> None:
    host, port = receiver.getsockname()
    before = receiver.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)

    buffer = set_receive_buffer(host, port, 2 * before)

    assert buffer is not None
    assert buffer.requested == 2 * before
    assert buffer.granted == receiver.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    assert buffer.granted > before
    assert kernel_drops(buffer.inode) == 0


def test_size_zero_keeps_the_kernel_default(receiver: socket.socket) -> None:
    before = receiver.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    buffer = set_receive_buffer(*receiver.getsockname(), 0)
    assert buffer is not None
    assert buffer.granted == before


def test_no_socket_on_that_address_gives_none(receiver: socket.socket) -> None:
    host, port = receiver.getsockname()
    assert set_receive_buffer("127.0.0.9", port, 1 << 20) is None
    assert set_receive_buffer(host, port + 1 if port < 65535 else 1, 1 << 20) is None


def test_counts_what_the_kernel_dropped(receiver: socket.socket) -> None:
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    buffer = set_receive_buffer(*receiver.getsockname(), 0)
    assert buffer is not None

    fill(receiver, 200)
    time.sleep(0.05)

    dropped = kernel_drops(buffer.inode)
    assert dropped is not None and dropped > 0
    registry = CollectorRegistry()
    registry.register(UdpDropCollector(buffer.inode))
    exposition = generate_latest(registry).decode()
    assert f"cozmox_router_sip_udp_receive_drops_total {float(dropped)}" in exposition


def test_closed_socket_exports_nothing() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as bound:
        bound.bind(("127.0.0.1", 0))
        buffer = set_receive_buffer(*bound.getsockname(), 0)
    assert buffer is not None
    assert kernel_drops(buffer.inode) is None
    registry = CollectorRegistry()
    registry.register(UdpDropCollector(buffer.inode))
    assert "udp_receive_drops" not in generate_latest(registry).decode()


def test_reads_the_drops_column_of_the_table(tmp_path: Path) -> None:
    table = tmp_path / "udp"
    table.write_text(
        "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when "
        "retrnsmt   uid  timeout inode ref pointer drops\n"
        "  12: 0100007F:13C4 00000000:0000 07 00000000:00000000 00:00000000 "
        "00000000  1000        0 4242 2 0000000000000000 17\n"
    )
    assert kernel_drops(4242, [table]) == 17
    assert kernel_drops(4243, [table]) is None


@pytest.mark.parametrize(
    ("requested", "granted", "capped"),
    [
        (4 << 20, 8 << 20, False),
        (4 << 20, 4 << 20, True),
        # Debian's default net.core.rmem_max of 212992 caps 300 kB.
        (300_000, 425_984, True),
        (0, 212_992, False),
    ],
)
def test_capped_compares_with_twice_the_request(
    requested: int, granted: int, capped: bool
) -> None:
    buffer = ReceiveBuffer(requested=requested, granted=granted, inode=1)
    assert buffer.capped is capped
