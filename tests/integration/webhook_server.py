"""The operator's webhook server: aiohttp on 127.0.0.1, on its own thread.

A test sets what each path replies (JSON, status, delay, raw body, or a
number of failures first) and reads back every request the router sent,
with the status it returned. The server runs its own event loop on a
thread, so tests stay plain functions that can block on SIPp.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from harness import LOOPBACK


@dataclass(frozen=True)
class Behaviour:
    """What a path replies."""

    json_body: Any = None
    status: int = 200
    delay_seconds: float = 0.0
    raw_body: bytes | None = None
    """Sent as is, with Content-Type application/json; overrides json_body."""
    misbehaviour: str | None = None
    """One of MISBEHAVIOURS; overrides every other field."""


# What a path can do instead of a well-formed reply:
# - "reset": read the request, then reset the connection (RST);
# - "slow-headers": write a 200 response's head one byte per second;
# - "huge-body": stream a 10 MB body without Content-Length, then hang;
# - "redirect": 302 with a Location of REDIRECT_PATH on this server.
MISBEHAVIOURS = ("reset", "slow-headers", "huge-body", "redirect")
REDIRECT_PATH = "/redirected"
HUGE_BODY_BYTES = 10 * 1024 * 1024


@dataclass
class RecordedRequest:
    """One request that the server received, and the status it returned."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int | None = None
    """None while the reply is still being delayed."""

    @property
    def json(self) -> Any:
        """Return the body parsed as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def message(self) -> dict[str, Any]:
        """Return the body's `message` object; empty when there is none."""
        body = self.json
        message = body.get("message") if isinstance(body, dict) else None
        return message if isinstance(message, dict) else {}

    @property
    def message_type(self) -> str | None:
        """Return `message.type`, such as `status-update`."""
        return self.message.get("type")

    def header(self, name: str) -> str | None:
        """Return a request header, matched without regard to case."""
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None


class WebhookServer:
    """An aiohttp server on 127.0.0.1:0 whose replies each test sets."""

    # A reply that is still being delayed when the test ends is abandoned
    # after this long, so teardown never waits for a long delay.
    SHUTDOWN_TIMEOUT_SECONDS = 1.0

    def __init__(self) -> None:
        self._behaviours: dict[str, Behaviour] = {}
        self._failures_left: dict[str, tuple[int, int]] = {}
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="webhook-server", daemon=True
        )
        self._runner: web.AppRunner | None = None
        self.port = 0

    def start(self) -> None:
        """Start the loop thread and bind the server to a free port."""
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        self.port = future.result(timeout=10)

    async def _start(self) -> int:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        self._runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=self.SHUTDOWN_TIMEOUT_SECONDS
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, LOOPBACK, 0)
        await site.start()
        return self._runner.addresses[0][1]

    def stop(self) -> None:
        """Close the server, then stop and close its loop."""
        future = asyncio.run_coroutine_threadsafe(self._stop(), self._loop)
        future.result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        # The server stops tracking a handler whose client has gone away, so
        # a handler still delaying its reply is cancelled here, before the
        # loop closes.
        handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for handler in handlers:
            handler.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    def url(self, path: str) -> str:
        """Return the URL of `path` on this server."""
        return f"http://{LOOPBACK}:{self.port}{path}"

    def reply(
        self,
        path: str,
        json_body: Any = None,
        *,
        status: int = 200,
        delay_seconds: float = 0.0,
        raw_body: bytes | None = None,
        misbehaviour: str | None = None,
    ) -> None:
        """Set what `path` replies from now on.

        A path with no reply set returns 200 with `{}`.
        """
        if misbehaviour is not None and misbehaviour not in MISBEHAVIOURS:
            raise ValueError(f"unknown misbehaviour {misbehaviour!r}")
        with self._lock:
            self._behaviours[path] = Behaviour(
                json_body, status, delay_seconds, raw_body, misbehaviour
            )

    def fail_first(self, path: str, count: int, status: int = 503) -> None:
        """Reply to the next `count` requests to `path` with `status`, no body.

        Later requests get the reply set with `reply()`.
        """
        with self._lock:
            self._failures_left[path] = (count, status)

    def requests(self, path: str | None = None) -> list[RecordedRequest]:
        """Return the requests received so far, optionally for one path only."""
        with self._lock:
            return [r for r in self._requests if path is None or r.path == path]

    def messages(
        self,
        message_type: str | None = None,
        path: str | None = None,
        *,
        accepted_only: bool = False,
    ) -> list[RecordedRequest]:
        """Return the requests with `message.type` equal to `message_type`.

        With `accepted_only`, only those that the server returned 2xx for.
        """
        return [
            request
            for request in self.requests(path)
            if (message_type is None or request.message_type == message_type)
            and (not accepted_only or 200 <= (request.status or 0) <= 299)
        ]

    def wait_for_messages(
        self,
        message_type: str,
        count: int = 1,
        path: str | None = None,
        *,
        accepted_only: bool = False,
        timeout: float = 5.0,
    ) -> list[RecordedRequest]:
        """Return the matching requests once there are `count` of them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.messages(message_type, path, accepted_only=accepted_only)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        seen = [(r.path, r.message_type, r.status) for r in self.requests()]
        raise AssertionError(
            f"{len(self.messages(message_type, path))} {message_type} messages "
            f"to {path or 'any path'}, expected {count} within {timeout} s; "
            f"requests seen (path, type, status): {seen}"
        )

    def wait_for_requests(
        self, path: str, count: int = 1, timeout: float = 5.0
    ) -> list[RecordedRequest]:
        """Return the requests to `path` once there are `count` of them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.requests(path)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(
            f"{len(self.requests(path))} requests to {path}, expected {count} "
            f"within {timeout} s; paths seen: {[r.path for r in self.requests()]}"
        )

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        recorded = RecordedRequest(
            request.method, request.path, dict(request.headers), body
        )
        with self._lock:
            self._requests.append(recorded)
            behaviour = self._behaviours.get(request.path, Behaviour(json_body={}))
            failures, status = self._failures_left.get(request.path, (0, 0))
            if failures:
                self._failures_left[request.path] = (failures - 1, status)
                recorded.status = status
                return web.Response(status=status)
        if behaviour.misbehaviour is not None:
            return await self._misbehave(request, behaviour.misbehaviour)
        if behaviour.delay_seconds:
            await asyncio.sleep(behaviour.delay_seconds)
        recorded.status = behaviour.status
        if behaviour.raw_body is not None:
            return web.Response(
                body=behaviour.raw_body,
                status=behaviour.status,
                content_type="application/json",
            )
        return web.json_response(behaviour.json_body, status=behaviour.status)

    async def _misbehave(
        self, request: web.Request, misbehaviour: str
    ) -> web.StreamResponse:
        transport = request.transport
        assert transport is not None
        if misbehaviour == "redirect":
            return web.json_response(
                {"message": "moved"},
                status=302,
                headers={"Location": self.url(REDIRECT_PATH)},
            )
        if misbehaviour == "reset":
            sock = transport.get_extra_info("socket")
            # SO_LINGER with a zero timeout makes close() send RST, not FIN.
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            transport.abort()
        elif misbehaviour == "slow-headers":
            # Written past aiohttp, which would send the head in one piece.
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n"
            for byte in head:
                if transport.is_closing():
                    break
                transport.write(bytes([byte]))
                await asyncio.sleep(1.0)
        else:
            return await self._stream_huge_body(request)
        await asyncio.sleep(3600)
        raise AssertionError("unreachable: the client gives up first")

    async def _stream_huge_body(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        chunk = b" " * 65536
        try:
            for _ in range(HUGE_BODY_BYTES // len(chunk)):
                await response.write(chunk)
        except ConnectionResetError:
            # The client closed the connection before the end: expected.
            return response
        # The body never ends, so a client that reads to the end waits
        # until its own deadline.
        await asyncio.sleep(3600)
        return response
