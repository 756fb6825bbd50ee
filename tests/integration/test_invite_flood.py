"""A burst of INVITEs never takes the daemon down."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from harness import Daemon
from sipp_runner import SippRuntime, requires_sipp, run_sipp

pytestmark = [pytest.mark.integration, requires_sipp]

BURST_SIZE = 200


def invite(number: str, index: int, source: str, port: int, target: int) -> bytes:
    sdp = (
        f"v=0\r\no=a 1 1 IN IP4 {source}\r\ns=-\r\nc=IN IP4 {source}\r\n"
        f"t=0 0\r\nm=audio {port + 2} RTP/AVP 0\r\n"
    )
    return (
        f"INVITE sip:{number}@127.0.0.1:{target} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {source}:{port};branch=z9hG4bK-flood-{index}\r\n"
        f"From: <sip:+14155559876@{source}>;tag=f{index}\r\n"
        f"To: <sip:{number}@127.0.0.1>\r\n"
        f"Call-ID: flood-{index}@{source}\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:c@{source}:{port}>\r\nMax-Forwards: 70\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}"
    ).encode()


def send_burst(router: Daemon, number: str, source: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.bind((source, 0))
        port = sender.getsockname()[1]
        for index in range(BURST_SIZE):
            sender.sendto(
                invite(number, index, source, port, router.sip_port),
                ("127.0.0.1", router.sip_port),
            )
            time.sleep(0.001)


def accounted(router: Daemon) -> tuple[float, float, float]:
    """Return the burst's INVITEs rejected by the router, by pjsua, and the
    packets the kernel dropped before the router could read them."""
    metrics = router.metrics()
    return (
        metrics.value("cozmox_router_calls_total", outcome="rejected"),
        metrics.value("cozmox_router_sip_invites_rejected_total", status="486"),
        metrics.value("cozmox_router_sip_udp_receive_drops_total"),
    )


@pytest.mark.parametrize(
    ("number", "source"),
    [("+19999999999", "127.0.0.2"), ("+14155550103", "127.0.0.1")],
    ids=["unknown-source", "blocked-number"],
)
def test_invite_burst_leaves_daemon_serving(
    start_router: Callable[..., Daemon],
    router_config: dict[str, Any],
    runtime: SippRuntime,
    tmp_path: Path,
    number: str,
    source: str,
) -> None:
    # The kernel's default buffer (208 KiB) drops part of this burst on a
    # busy machine. 1 MiB has room for all of it.
    router_config["router"]["sip"]["udpReceiveBufferBytes"] = 1 << 20
    router = start_router(router_config)
    send_burst(router, number, source)
    # On a loaded machine the owner thread may still be working through
    # the burst. Every INVITE must end up rejected or counted as dropped.
    deadline = time.monotonic() + 15
    while sum(accounted(router)) < BURST_SIZE and time.monotonic() < deadline:
        time.sleep(0.2)

    result = run_sipp(
        "uac-static-assistant-expect-200.xml",
        router.sip_target,
        "+14155550100",
        ("-set", "hold", "200"),
        timeout=20,
        log_dir=tmp_path,
    )
    assert result.exit_code == 0, result.describe()
    rejected, by_stack, dropped = accounted(router)
    print(f"rejected by the router {rejected}, by pjsua {by_stack}, dropped {dropped}")
    assert rejected + by_stack + dropped == BURST_SIZE
    # The 1 MiB receive buffer has room for a burst of this size,
    # unless the kernel capped it (net.core.rmem_max, without root).
    if not router.events("sip.udp_receive_buffer_capped"):
        assert dropped == 0
