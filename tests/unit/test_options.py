"""OPTIONS pings against gateways played by small servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket

import pytest
from prometheus_client import CollectorRegistry

from router.config import Config
from router.metrics import Metrics
from router.sip.options import (
    MISSES_BEFORE_DOWN,
    GatewayHealth,
    GatewayMonitor,
    GatewayTarget,
    OptionsRequest,
    send_options,
)

LOOPBACK = "127.0.0.1"


def response_to(request: bytes, status: str) -> bytes:
    """Build a response that echoes the request's transaction headers."""
    lines = request.decode().split("\r\n")
    echoed = [
        line
        for line in lines[1:]
        if line.split(":", 1)[0] in ("Via", "From", "To", "Call-ID", "CSeq")
    ]
    head = [f"SIP/2.0 {status}", *echoed, "Content-Length: 0"]
    return ("\r\n".join(head) + "\r\n\r\n").encode()


class UdpGateway(asyncio.DatagramProtocol):
    """Responds to OPTIONS with `statuses`, after dropping `drop` requests."""

    def __init__(self, statuses: list[str], drop: int = 0) -> None:
        self.statuses = statuses
        self.drop = drop
        self.requests: list[bytes] = []
        self.answering = True

    def connection_made(self, transport: asyncio.DatagramTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.requests.append(data)
        if not self.answering:
            return
        if self.drop:
            self.drop -= 1
            return
        for status in self.statuses:
            self.transport.sendto(response_to(data, status), addr)


async def udp_gateway(statuses: list[str], drop: int = 0):
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: UdpGateway(statuses, drop), local_addr=(LOOPBACK, 0)
    )
    port = transport.get_extra_info("sockname")[1]
    return transport, protocol, GatewayTarget("trunk-a", LOOPBACK, port, "udp")


def closed_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


# ----- the request ----------------------------------------------------------------


def test_request_headers_follow_rfc_3261():
    target = GatewayTarget("trunk-a", LOOPBACK, 5060, "udp")
    request = OptionsRequest(target, "127.0.0.1", 40000, "abc@cozmox-router", 7)

    lines = request.encode().decode().split("\r\n")

    assert lines[0] == "OPTIONS sip:127.0.0.1:5060 SIP/2.0"
    via = lines[1]
    assert via.startswith("Via: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bK")
    assert via.endswith(";rport")
    assert "Max-Forwards: 70" in lines
    assert "Call-ID: abc@cozmox-router" in lines
    assert "CSeq: 7 OPTIONS" in lines
    assert "To: <sip:127.0.0.1:5060>" in lines
    assert any(
        line.startswith("From: <sip:cozmox-router@127.0.0.1>;tag=") for line in lines
    )
    assert "Content-Length: 0" in lines
    assert request.encode().endswith(b"\r\n\r\n")


def test_request_over_tcp():
    target = GatewayTarget("trunk-a", LOOPBACK, 5060, "tcp")
    request = OptionsRequest(target, "127.0.0.1", 40000, "abc", 1)

    text = request.encode().decode()

    assert text.startswith("OPTIONS sip:127.0.0.1:5060;transport=tcp SIP/2.0")
    assert "Via: SIP/2.0/TCP 127.0.0.1:40000;" in text


def test_each_request_has_a_new_branch():
    target = GatewayTarget("trunk-a", LOOPBACK, 5060, "udp")

    first = OptionsRequest(target, LOOPBACK, 1, "abc", 1)
    second = OptionsRequest(target, LOOPBACK, 1, "abc", 2)

    assert first.branch != second.branch


def test_response_must_match_the_transaction():
    target = GatewayTarget("trunk-a", LOOPBACK, 5060, "udp")
    request = OptionsRequest(target, LOOPBACK, 1, "abc", 3)
    other = OptionsRequest(target, LOOPBACK, 1, "abc", 4)
    answer = response_to(request.encode(), "200 OK")

    assert request.response_status(answer) == 200
    assert other.response_status(answer) is None
    assert request.response_status(answer.replace(b"abc", b"xyz")) is None
    assert request.response_status(b"garbage") is None
    assert request.response_status(b"SIP/2.0 abc Odd\r\n\r\n") is None


# ----- health ---------------------------------------------------------------------


def test_health_up_after_one_answer():
    health = GatewayHealth()

    assert health.up is None
    assert health.record(answered=True)
    assert health.up is True
    assert not health.record(answered=True)


def test_health_down_after_three_misses():
    health = GatewayHealth()
    health.record(answered=True)

    changes = [health.record(answered=False) for _ in range(MISSES_BEFORE_DOWN)]

    assert changes == [False, False, True]
    assert health.up is False
    assert health.record(answered=True)
    assert health.up is True
    assert health.misses == 0


def test_health_down_without_any_answer():
    health = GatewayHealth()

    for _ in range(MISSES_BEFORE_DOWN):
        health.record(answered=False)

    assert health.up is False


# ----- sending --------------------------------------------------------------------


async def test_udp_ping_answered():
    transport, gateway, target = await udp_gateway(["200 OK"])
    try:
        status = await send_options(target, "abc", 1, local_host=LOOPBACK)
    finally:
        transport.close()

    assert status == 200
    assert len(gateway.requests) == 1


@pytest.mark.parametrize("final", ["404 Not Found", "503 Unavailable", "603 Decline"])
async def test_udp_ping_any_final_status_counts(final):
    transport, _, target = await udp_gateway(["100 Trying", final])
    try:
        status = await send_options(target, "abc", 1, local_host=LOOPBACK)
    finally:
        transport.close()

    assert status == int(final.split()[0])


async def test_udp_ping_retransmits_lost_requests():
    transport, gateway, target = await udp_gateway(["200 OK"], drop=2)
    try:
        status = await send_options(
            target, "abc", 1, local_host=LOOPBACK, timeout_seconds=3
        )
    finally:
        transport.close()

    assert status == 200
    assert len(gateway.requests) == 3


async def test_udp_ping_silent_gateway_misses():
    transport, gateway, target = await udp_gateway([])
    try:
        status = await send_options(
            target, "abc", 1, local_host=LOOPBACK, timeout_seconds=0.3
        )
    finally:
        transport.close()

    assert status is None
    assert gateway.requests


async def test_udp_ping_closed_port_misses_at_once():
    target = GatewayTarget("trunk-a", LOOPBACK, closed_udp_port(), "udp")

    async with asyncio.timeout(1):
        status = await send_options(
            target, "abc", 1, local_host=LOOPBACK, timeout_seconds=5
        )

    assert status is None


async def test_tcp_ping_answered():
    received: list[bytes] = []

    async def answer(reader, writer):
        request = await reader.readuntil(b"\r\n\r\n")
        received.append(request)
        writer.write(response_to(request, "100 Trying"))
        writer.write(response_to(request, "200 OK"))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, LOOPBACK, 0)
    port = server.sockets[0].getsockname()[1]
    target = GatewayTarget("trunk-a", LOOPBACK, port, "tcp")
    try:
        status = await send_options(target, "abc", 1, local_host=LOOPBACK)
    finally:
        server.close()
        await server.wait_closed()

    assert status == 200
    assert received[0].startswith(b"OPTIONS sip:127.0.0.1:")


async def test_tcp_ping_refused_misses():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        port = probe.getsockname()[1]
    target = GatewayTarget("trunk-a", LOOPBACK, port, "tcp")

    status = await send_options(target, "abc", 1, local_host=LOOPBACK)

    assert status is None


# ----- the monitor ----------------------------------------------------------------


def trunks_with(port: int, **gateway):
    config = Config.model_validate(
        {
            "credentials": [
                {
                    "provider": "byo-sip-trunk",
                    "id": "trunk-a",
                    "name": "Trunk A",
                    "gateways": [
                        {"ip": LOOPBACK, "port": port, "optionsPingEnabled": True}
                        | gateway,
                        {"ip": LOOPBACK, "port": 9},
                    ],
                }
            ]
        }
    )
    return config.trunks()


async def wait_until(condition, timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_monitor_marks_gateway_up_then_down():
    transport, gateway, target = await udp_gateway(["200 OK"])
    registry = CollectorRegistry()
    monitor = GatewayMonitor(
        Metrics(registry),
        {"udp": LOOPBACK},
        interval_seconds=0.05,
        timeout_seconds=0.1,
    )
    labels = {"trunk": "trunk-a", "gateway": target.label}

    def gateway_up():
        return registry.get_sample_value("cozmox_router_gateway_up", labels)

    try:
        monitor.apply(trunks_with(target.port))
        await wait_until(lambda: gateway_up() == 1)
        assert monitor.states() == {"trunk-a": {target.label: "up"}}

        gateway.answering = False
        await wait_until(lambda: gateway_up() == 0)
        assert monitor.states() == {"trunk-a": {target.label: "down"}}
        missed = registry.get_sample_value(
            "cozmox_router_gateway_options_pings_total", {**labels, "result": "missed"}
        )
        assert missed == MISSES_BEFORE_DOWN
    finally:
        await monitor.stop()
        transport.close()


async def test_monitor_apply_keeps_and_drops_gateways():
    transport, gateway, target = await udp_gateway(["200 OK"])
    registry = CollectorRegistry()
    monitor = GatewayMonitor(
        Metrics(registry), {"udp": LOOPBACK}, interval_seconds=10, timeout_seconds=1
    )
    labels = {"trunk": "trunk-a", "gateway": target.label}
    try:
        monitor.apply(trunks_with(target.port))
        await wait_until(lambda: len(gateway.requests) == 1)

        monitor.apply(trunks_with(target.port))
        await asyncio.sleep(0.1)
        assert len(gateway.requests) == 1

        monitor.apply(trunks_with(target.port, optionsPingEnabled=False))
        assert monitor.states() == {}
        assert registry.get_sample_value("cozmox_router_gateway_up", labels) is None
    finally:
        await monitor.stop()
        transport.close()


async def test_monitor_skips_tls_gateways():
    monitor = GatewayMonitor(Metrics(CollectorRegistry()), {"udp": LOOPBACK})

    monitor.apply(trunks_with(5061, outboundProtocol="tls"))

    assert monitor.states() == {}
    await monitor.stop()
