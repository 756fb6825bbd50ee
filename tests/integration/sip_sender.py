"""A raw SIP sender on 127.0.0.x sockets, for messages SIPp cannot send.

Each request goes out from its own socket, so every response that socket
receives belongs to that request. A builder gets the sender's port, which
goes into Via and Contact so that responses come back to it.
"""

from __future__ import annotations

import select
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

SDP = (
    "v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\nm=audio 9 RTP/AVP 0\r\n"
)

Builder = Callable[[int], bytes]


@dataclass(frozen=True)
class Request:
    """A SIP request to build, with the parts a test may break."""

    target_port: int
    number: str = "+14155550103"
    method: str = "INVITE"
    source: str = "127.0.0.1"
    transport: str = "UDP"
    request_uri: str | None = None
    drop: tuple[str, ...] = ()
    extra_headers: tuple[str, ...] = ()
    content_length: str | None = None
    body: str = SDP
    replace: tuple[tuple[bytes, bytes], ...] = field(default_factory=tuple)
    """Byte replacements applied last, for bytes that are not text."""

    def build(self, port: int) -> bytes:
        """Return the request's bytes as sent from `port`."""
        uri = self.request_uri or (f"sip:{self.number}@127.0.0.1:{self.target_port}")
        branch = f"z9hG4bK-{uuid.uuid4().hex}"
        headers = [
            (
                "Via",
                f"SIP/2.0/{self.transport} {self.source}:{port};rport;branch={branch}",
            ),
            ("From", f"<sip:+14155559876@{self.source}>;tag={uuid.uuid4().hex[:8]}"),
            ("To", f"<sip:{self.number}@127.0.0.1>"),
            ("Call-ID", f"{uuid.uuid4().hex}@{self.source}"),
            ("CSeq", f"1 {self.method}"),
            ("Contact", f"<sip:caller@{self.source}:{port}>"),
            ("Max-Forwards", "70"),
            ("Content-Type", "application/sdp"),
        ]
        length = self.content_length
        if length is None:
            length = str(len(self.body.encode()))
        headers.append(("Content-Length", length))
        lines = [f"{self.method} {uri} SIP/2.0"]
        lines += [
            f"{name}: {value}" for name, value in headers if name not in self.drop
        ]
        lines += list(self.extra_headers)
        data = ("\r\n".join(lines) + "\r\n\r\n" + self.body).encode()
        for old, new in self.replace:
            data = data.replace(old, new)
        return data


@dataclass
class Exchange:
    """The responses that one request got: status codes in arrival order."""

    statuses: list[int] = field(default_factory=list)
    closed: bool = False

    @property
    def final(self) -> int | None:
        """Return the first final (>= 200) status, or None."""
        return next((s for s in self.statuses if s >= 200), None)


def send_udp(
    builders: Sequence[Builder],
    target_port: int,
    source: str = "127.0.0.1",
    wait_seconds: float = 1.0,
    interval_seconds: float = 0.0,
) -> list[Exchange]:
    """Send each request from its own UDP socket; collect the responses.

    Waits `interval_seconds` between sends, so that INVITEs which the
    daemon rejects do not meet its call-slot limit, and `wait_seconds`
    after the last send, so a request that gets no response costs that
    long once for the whole batch.
    """
    sockets = []
    try:
        for build in builders:
            sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sockets.append(sender)
            sender.bind((source, 0))
            sender.sendto(build(sender.getsockname()[1]), ("127.0.0.1", target_port))
            time.sleep(interval_seconds)
        exchanges = [Exchange() for _ in sockets]
        _collect(sockets, exchanges, wait_seconds)
        return exchanges
    finally:
        for sender in sockets:
            sender.close()


def send_tcp(build: Builder, target_port: int, wait_seconds: float = 1.0) -> Exchange:
    """Send one request over a new TCP connection; collect the responses."""
    with socket.create_connection(("127.0.0.1", target_port), timeout=5) as stream:
        stream.sendall(build(stream.getsockname()[1]))
        exchange = Exchange()
        received = b""
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline:
            ready, _, _ = select.select([stream], [], [], 0.05)
            if not ready:
                continue
            chunk = stream.recv(65536)
            if not chunk:
                exchange.closed = True
                break
            received += chunk
        exchange.statuses = _statuses(received)
        return exchange


def _collect(
    sockets: list[socket.socket], exchanges: list[Exchange], wait_seconds: float
) -> None:
    index = {sender.fileno(): position for position, sender in enumerate(sockets)}
    deadline = time.monotonic() + wait_seconds
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select(sockets, [], [], min(left, 0.05))
        for sender in ready:
            datagram = sender.recv(65536)
            exchanges[index[sender.fileno()]].statuses += _statuses(datagram)


def _statuses(data: bytes) -> list[int]:
    statuses = []
    for line in data.split(b"\r\n"):
        if line.startswith(b"SIP/2.0 "):
            statuses.append(int(line.split()[1]))
    return statuses


@dataclass(frozen=True)
class Response:
    """A SIP response received by `UdpDialog`."""

    status: int
    method: str
    to_header: str
    contact_uri: str | None
    text: str


class UdpDialog:
    """One caller dialog on its own UDP socket: an INVITE, then ACK and BYE.

    `invite` is built once, so sending it again is a retransmission with the
    same branch, Call-ID, tag and CSeq. Requests inside the dialog take the
    To tag and Contact of the 200.
    """

    def __init__(self, target_port: int, number: str) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self._target = ("127.0.0.1", target_port)
        self._port = self._socket.getsockname()[1]
        self._received: list[Response] = []
        self.invite = Request(target_port, number=number).build(self._port)
        headers = _header_values(self.invite)
        self._call_id = headers["call-id"]
        self._from = headers["from"]
        self._request_uri = self.invite.split(b" ", 2)[1].decode()

    def __enter__(self) -> UdpDialog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._socket.close()

    def send(self, data: bytes) -> None:
        self._socket.sendto(data, self._target)

    def in_dialog(self, method: str, cseq: int, answer: Response) -> bytes:
        """Build an ACK or BYE for the dialog that `answer` (a 200) set up."""
        uri = answer.contact_uri or self._request_uri
        branch = f"z9hG4bK-{uuid.uuid4().hex}"
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self._port};rport;branch={branch}",
            f"From: {self._from}",
            f"To: {answer.to_header}",
            f"Call-ID: {self._call_id}",
            f"CSeq: {cseq} {method}",
            "Max-Forwards: 70",
            "Content-Length: 0",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def wait_for_final(self, timeout: float, method: str = "INVITE") -> Response:
        """Return the first final response to `method`; raise on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            for response in self._received:
                if response.method == method and response.status >= 200:
                    return response
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no final response to {method} in {timeout} s")
            ready, _, _ = select.select([self._socket], [], [], min(left, 0.1))
            if ready:
                self._received.append(_parse_response(self._socket.recv(65536)))


def _header_values(message: bytes) -> dict[str, str]:
    head = message.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    values: dict[str, str] = {}
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        values.setdefault(name.strip().lower(), value.strip())
    return values


def _parse_response(data: bytes) -> Response:
    text = data.decode("utf-8", "replace")
    headers = _header_values(data)
    contact = headers.get("contact") or headers.get("m")
    contact_uri = None
    if contact:
        contact_uri = contact.split("<", 1)[-1].split(">", 1)[0]
    return Response(
        status=int(text.split(" ", 2)[1]),
        method=headers.get("cseq", "0 ?").split()[-1],
        to_header=headers.get("to") or headers.get("t", ""),
        contact_uri=contact_uri,
        text=text,
    )
