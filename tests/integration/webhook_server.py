"""The operator's webhook server: aiohttp on 127.0.0.1, on its own thread.

A test sets what each path replies (JSON, status, delay, raw body) and
reads back every request the router sent. The server runs its own event
loop on a thread, so tests stay plain functions that can block on SIPp.
"""

from __future__ import annotations

import asyncio
import json
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


@dataclass(frozen=True)
class RecordedRequest:
    """One request that the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        """Return the body parsed as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


class WebhookServer:
    """An aiohttp server on 127.0.0.1:0 whose replies each test sets."""

    # A reply that is still being delayed when the test ends is abandoned
    # after this long, so teardown never waits for a long delay.
    SHUTDOWN_TIMEOUT_SECONDS = 1.0

    def __init__(self) -> None:
        self._behaviours: dict[str, Behaviour] = {}
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
        if self._runner is not None:
            future = asyncio.run_coroutine_threadsafe(
                self._runner.cleanup(), self._loop
            )
            future.result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

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
    ) -> None:
        """Set what `path` replies from now on.

        A path with no reply set returns 200 with `{}`.
        """
        with self._lock:
            self._behaviours[path] = Behaviour(
                json_body, status, delay_seconds, raw_body
            )

    def requests(self, path: str | None = None) -> list[RecordedRequest]:
        """Return the requests received so far, optionally for one path only."""
        with self._lock:
            return [r for r in self._requests if path is None or r.path == path]

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
        if behaviour.delay_seconds:
            await asyncio.sleep(behaviour.delay_seconds)
        if behaviour.raw_body is not None:
            return web.Response(
                body=behaviour.raw_body,
                status=behaviour.status,
                content_type="application/json",
            )
        return web.json_response(behaviour.json_body, status=behaviour.status)
