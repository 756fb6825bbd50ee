"""OPTIONS pings to the gateways with `optionsPingEnabled`: up or down.

Every 30 s each such gateway gets an out-of-dialog OPTIONS (RFC 3261
section 11.1). A final response of any class, 200 to 699, marks it up,
because the gateway received the request and responded. Three pings in a
row without a final response mark it down. The result is the
`cozmox_router_gateway_up` gauge.

The pings go out from sockets of their own, not from pjsua's transport, so
a dead gateway is seen after PING_TIMEOUT_SECONDS rather than pjsua's
32 s Timer F, and the pings never touch the pjsua owner thread. Over UDP a
ping is retransmitted as RFC 3261 section 17.1.2.2 says (T1 = 0.5 s,
doubling up to T2 = 4 s) until a response or the timeout.

NOTE: pjsua2 2.15 also has `Account.sendRequest()`, which could send the
pings from the SIP port itself, for a gateway that answers only the
address it has registered; it is not used here.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import structlog

from router.config import SipTrunkCredential
from router.metrics import Metrics

log = structlog.get_logger(__name__)

OPTIONS_INTERVAL_SECONDS = 30.0
MISSES_BEFORE_DOWN = 3
# A gateway without a final response in this time has missed the ping. It
# is shorter than the interval, so pings to one gateway never overlap.
PING_TIMEOUT_SECONDS = 8.0
T1_SECONDS = 0.5
T2_SECONDS = 4.0
USER_AGENT = "cozmox-router"
_READ_LIMIT_BYTES = 65536


@dataclass(frozen=True)
class GatewayTarget:
    """A gateway that the router pings."""

    trunk_id: str
    host: str
    port: int
    transport: str
    """`udp` or `tcp`."""

    @property
    def label(self) -> str:
        """Return `host:port`, the `gateway` metric label."""
        return f"{self.host}:{self.port}"

    @property
    def uri(self) -> str:
        """Return the Request-URI of the pings."""
        parameter = ";transport=tcp" if self.transport == "tcp" else ""
        return f"sip:{self.host}:{self.port}{parameter}"


@dataclass
class GatewayHealth:
    """Up or down, from the pings so far. Unknown until the first verdict."""

    up: bool | None = None
    misses: int = 0

    def record(self, answered: bool) -> bool:
        """Count one ping, and return whether the verdict changed."""
        before = self.up
        if answered:
            self.misses = 0
            self.up = True
        else:
            self.misses += 1
            if self.misses >= MISSES_BEFORE_DOWN:
                self.up = False
        return self.up is not before


@dataclass
class OptionsRequest:
    """One OPTIONS request: the fields that its response must echo."""

    target: GatewayTarget
    via_host: str
    via_port: int
    call_id: str
    cseq: int
    from_tag: str = field(default_factory=lambda: secrets.token_hex(4))
    branch: str = field(default_factory=lambda: "z9hG4bK" + secrets.token_hex(8))

    def encode(self) -> bytes:
        """Return the request as it goes on the wire."""
        transport = self.target.transport.upper()
        lines = [
            f"OPTIONS {self.target.uri} SIP/2.0",
            f"Via: SIP/2.0/{transport} {self.via_host}:{self.via_port}"
            f";branch={self.branch};rport",
            "Max-Forwards: 70",
            f"From: <sip:{USER_AGENT}@{self.via_host}>;tag={self.from_tag}",
            f"To: <{self.target.uri}>",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} OPTIONS",
            "Accept: application/sdp",
            f"User-Agent: {USER_AGENT}",
            "Content-Length: 0",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def response_status(self, data: bytes) -> int | None:
        """Return the status of `data` if it responds to this request, else None."""
        head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or parts[0] != "SIP/2.0" or not parts[1].isdigit():
            return None
        headers = _headers(lines[1:])
        if f"branch={self.branch}" not in headers.get("via", ""):
            return None
        if headers.get("call-id") != self.call_id:
            return None
        if headers.get("cseq", "").split() != [str(self.cseq), "OPTIONS"]:
            return None
        return int(parts[1])


def _headers(lines: list[str]) -> dict[str, str]:
    """Return the first value of each header, names lowercased and expanded."""
    compact = {"v": "via", "i": "call-id", "l": "content-length"}
    headers: dict[str, str] = {}
    for line in lines:
        name, separator, value = line.partition(":")
        if not separator:
            continue
        key = name.strip().lower()
        headers.setdefault(compact.get(key, key), value.strip())
    return headers


class _UdpPing(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.responses: asyncio.Queue[bytes | None] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.responses.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        # An ICMP port unreachable: nothing listens, so no response will come.
        self.responses.put_nowait(None)


async def send_options(
    target: GatewayTarget,
    call_id: str,
    cseq: int,
    *,
    local_host: str | None = None,
    public_host: str | None = None,
    timeout_seconds: float = PING_TIMEOUT_SECONDS,
) -> int | None:
    """Send one OPTIONS to `target`, and return the final status or None.

    None is a miss. `local_host` is the address to send from, any address
    when None, and `public_host` replaces it in Via and From. Provisional
    responses are skipped. A refused connection, a network error and the
    timeout are all misses.
    """
    ping = _udp_options if target.transport == "udp" else _tcp_options
    try:
        async with asyncio.timeout(timeout_seconds):
            return await ping(target, call_id, cseq, local_host, public_host)
    except (TimeoutError, OSError):
        return None


async def _udp_options(
    target: GatewayTarget,
    call_id: str,
    cseq: int,
    local_host: str | None,
    public_host: str | None,
) -> int | None:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        _UdpPing,
        local_addr=(local_host or "0.0.0.0", 0),
        remote_addr=(target.host, target.port),
    )
    try:
        host, port = transport.get_extra_info("sockname")[:2]
        request = OptionsRequest(target, public_host or host, port, call_id, cseq)
        return await _exchange_udp(transport, protocol, request)
    finally:
        transport.close()


async def _exchange_udp(
    transport: asyncio.DatagramTransport, protocol: _UdpPing, request: OptionsRequest
) -> int | None:
    data = request.encode()
    interval = T1_SECONDS
    retransmit = True
    transport.sendto(data)
    while True:
        wait = interval if retransmit else None
        try:
            async with asyncio.timeout(wait):
                response = await protocol.responses.get()
        except TimeoutError:
            transport.sendto(data)
            interval = min(interval * 2, T2_SECONDS)
            continue
        if response is None:
            return None
        status = request.response_status(response)
        if status is None:
            continue
        if status >= 200:
            return status
        retransmit = False  # a provisional response: the gateway has the request


async def _tcp_options(
    target: GatewayTarget,
    call_id: str,
    cseq: int,
    local_host: str | None,
    public_host: str | None,
) -> int | None:
    local = (local_host, 0) if local_host else None
    reader, writer = await asyncio.open_connection(
        target.host, target.port, local_addr=local, limit=_READ_LIMIT_BYTES
    )
    try:
        host, port = writer.get_extra_info("sockname")[:2]
        request = OptionsRequest(target, public_host or host, port, call_id, cseq)
        writer.write(request.encode())
        await writer.drain()
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = _headers(head.decode("utf-8", "replace").split("\r\n")).get(
                "content-length", "0"
            )
            if length.isdigit() and int(length):
                await reader.readexactly(int(length))
            status = request.response_status(head)
            if status is not None and status >= 200:
                return status
    except asyncio.IncompleteReadError:
        return None  # the gateway closed the connection without a response
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


class GatewayMonitor:
    """Pings every gateway with `optionsPingEnabled` and tracks its health.

    `local_hosts` maps `udp` and `tcp` to the address the pings go out
    from, the router's SIP listen host (None to let the system pick).
    """

    def __init__(
        self,
        metrics: Metrics,
        local_hosts: dict[str, str | None],
        public_host: str | None = None,
        interval_seconds: float = OPTIONS_INTERVAL_SECONDS,
        timeout_seconds: float = PING_TIMEOUT_SECONDS,
    ) -> None:
        self._metrics = metrics
        self._local_hosts = local_hosts
        self._public_host = public_host
        self._interval = interval_seconds
        self._timeout = timeout_seconds
        self._tasks: dict[GatewayTarget, asyncio.Task[None]] = {}
        self._health: dict[GatewayTarget, GatewayHealth] = {}

    def apply(self, trunks: Iterable[SipTrunkCredential]) -> None:
        """Ping the gateways of `trunks` that have `optionsPingEnabled`.

        New gateways start at once, gateways no longer configured stop, and
        the others go on with their health and schedule unchanged.
        """
        wanted = set(_targets(trunks))
        for target in [t for t in self._tasks if t not in wanted]:
            self._tasks.pop(target).cancel()
            self._health.pop(target, None)
            self._metrics.forget_gateway(target.trunk_id, target.label)
            log.info(
                "gateway.ping_stopped", trunk=target.trunk_id, gateway=target.label
            )
        for target in wanted - set(self._tasks):
            self._health[target] = GatewayHealth()
            self._tasks[target] = asyncio.create_task(self._watch(target))
            log.info(
                "gateway.ping_started",
                trunk=target.trunk_id,
                gateway=target.label,
                transport=target.transport,
            )

    def states(self) -> dict[str, dict[str, str]]:
        """Return `{trunk: {gateway: "up" | "down" | "unknown"}}`."""
        states: dict[str, dict[str, str]] = {}
        for target, health in self._health.items():
            verdict = {True: "up", False: "down", None: "unknown"}[health.up]
            states.setdefault(target.trunk_id, {})[target.label] = verdict
        return states

    async def stop(self) -> None:
        """Stop every ping."""
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _watch(self, target: GatewayTarget) -> None:
        call_id = f"{secrets.token_hex(8)}@cozmox-router"
        for cseq in range(1, 2**31):
            started = time.monotonic()
            status = await send_options(
                target,
                call_id,
                cseq,
                local_host=self._local_hosts.get(target.transport),
                public_host=self._public_host,
                timeout_seconds=self._timeout,
            )
            self._record(target, status)
            elapsed = time.monotonic() - started
            await asyncio.sleep(max(0.0, self._interval - elapsed))

    def _record(self, target: GatewayTarget, status: int | None) -> None:
        health = self._health.get(target)
        if health is None:
            return
        answered = status is not None
        labels = {"trunk": target.trunk_id, "gateway": target.label}
        self._metrics.gateway_options_pings.labels(
            **labels, result="answered" if answered else "missed"
        ).inc()
        if not health.record(answered):
            return
        self._metrics.gateway_up.labels(**labels).set(int(bool(health.up)))
        if health.up:
            log.info("gateway.up", status=status, **labels)
        else:
            log.warning("gateway.down", misses=health.misses, **labels)


def _targets(trunks: Iterable[SipTrunkCredential]) -> list[GatewayTarget]:
    targets = []
    for trunk in trunks:
        for gateway in trunk.gateways:
            if not gateway.options_ping_enabled:
                continue
            if gateway.outbound_protocol not in ("udp", "tcp"):
                # TODO: OPTIONS over TLS needs a TLS client with the trunk's
                # certificate checks; such gateways are not pinged yet.
                log.warning(
                    "gateway.ping_unsupported",
                    trunk=trunk.id,
                    gateway=f"{gateway.ip}:{gateway.port}",
                    transport=gateway.outbound_protocol,
                )
                continue
            targets.append(
                GatewayTarget(
                    trunk.id, gateway.ip, gateway.port, gateway.outbound_protocol
                )
            )
    return targets
