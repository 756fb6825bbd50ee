"""Delivery of server messages off the call path: a bounded queue.

`send()` never waits for the network, so a slow or failing server cannot
delay a call, and the call path catches any error it raises. Messages of
one call are sent one at a time, in the order they were queued, each to
its own server. Messages of different calls go out in parallel, up to
`maxConcurrentRequests` requests in flight. A failed request is retried by
the server's `backoffPlan`, except for the statuses in
`excludedStatusCodes`, and each attempt has the server's `timeoutSeconds`.
When `queueSize` messages wait, the oldest waiting one is dropped and
counted. `flush()` gives the waiting messages a bounded time to go out on
shutdown.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog
import yarl
from multidict import CIMultiDict

from router.config import Config, Server, WebhookDeliverySettings
from router.config.server import AUTHORIZATION_CLASH, url_has_userinfo
from router.metrics import Metrics
from router.webhooks.assistant_request import AttemptFailed, retry_delay_seconds
from router.webhooks.signing import auth_headers

log = structlog.get_logger("router.webhooks")

# A drop is logged at most this often; the metric counts every drop.
DROP_LOG_INTERVAL_SECONDS = 10.0


@dataclass(frozen=True)
class _Message:
    """One queued message: its JSON body and the server it goes to."""

    sequence: int
    call_id: str
    type: str
    body: bytes
    server: Server


class WebhookDelivery:
    """Queues server messages and sends them in the background.

    `config_provider` returns the configuration in force, which names the
    webhook credentials that sign each request.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        config_provider: Callable[[], Config],
        metrics: Metrics,
        settings: WebhookDeliverySettings,
    ) -> None:
        self._session = session
        self._config_provider = config_provider
        self._metrics = metrics
        self._settings = settings
        self._sequence = itertools.count()
        # Waiting messages, oldest first, and the same messages by call.
        self._waiting: OrderedDict[int, _Message] = OrderedDict()
        self._by_call: dict[str, deque[_Message]] = {}
        self._senders: dict[str, asyncio.Task[None]] = {}
        self._sending: dict[str, _Message] = {}
        self._in_flight = asyncio.Semaphore(settings.max_concurrent_requests)
        self._dropped_since_log = 0
        self._last_drop_log = -DROP_LOG_INTERVAL_SECONDS
        self._closed = False

    @property
    def depth(self) -> int:
        """The number of messages waiting, not counting those in flight."""
        return len(self._waiting)

    def send(self, call_id: str, message: dict[str, Any], server: Server) -> None:
        """Queue `message` of call `call_id` for `server`; return at once.

        After `flush()` the HTTP session is closing, so a message is only
        counted as `abandoned`.
        """
        body = json.dumps(message, separators=(",", ":")).encode()
        message_type = str(message["message"]["type"])
        if self._closed:
            self._metrics.webhook_deliveries.labels(
                type=message_type, result="abandoned"
            ).inc()
            log.warning("webhook.sent_after_flush", type=message_type, call_id=call_id)
            return
        if len(self._waiting) >= self._settings.queue_size:
            self._drop_oldest()
        queued = _Message(next(self._sequence), call_id, message_type, body, server)
        self._waiting[queued.sequence] = queued
        self._by_call.setdefault(call_id, deque()).append(queued)
        self._update_depth()
        if call_id not in self._senders:
            sender = asyncio.create_task(self._send_for_call(call_id))
            self._senders[call_id] = sender

    async def flush(self, timeout_seconds: float) -> None:
        """Wait up to `timeout_seconds` for every queued message to go out.

        Messages still waiting or in flight after that are abandoned: they
        are logged once and counted with the result `abandoned`. The queue
        takes no messages afterwards.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_seconds
        while self._senders and (remaining := deadline - loop.time()) > 0:
            await asyncio.wait(set(self._senders.values()), timeout=remaining)
        self._closed = True
        if not self._senders:
            return

        waiting = list(self._waiting.values())
        in_flight = list(self._sending.values())
        senders = list(self._senders.values())
        for sender in senders:
            sender.cancel()
        await asyncio.gather(*senders, return_exceptions=True)
        for message in [*in_flight, *waiting]:
            self._count(message, "abandoned")
        log.warning(
            "webhook.flush_timed_out",
            timeout_seconds=timeout_seconds,
            waiting=len(waiting),
            in_flight=len(in_flight),
        )
        self._waiting.clear()
        self._by_call.clear()
        self._update_depth()

    # ----- the queue --------------------------------------------------------

    def _drop_oldest(self) -> None:
        _, oldest = self._waiting.popitem(last=False)
        # Messages of a call wait in queue order, so the oldest waiting
        # message is also the first of its call.
        calls_queue = self._by_call[oldest.call_id]
        calls_queue.popleft()
        if not calls_queue:
            del self._by_call[oldest.call_id]
        self._metrics.webhook_queue_dropped.labels(type=oldest.type).inc()
        self._dropped_since_log += 1
        now = time.monotonic()
        if now - self._last_drop_log >= DROP_LOG_INTERVAL_SECONDS:
            log.warning(
                "webhook.dropped",
                type=oldest.type,
                call_id=oldest.call_id,
                dropped=self._dropped_since_log,
                queue_size=self._settings.queue_size,
            )
            self._dropped_since_log = 0
            self._last_drop_log = now

    def _next_of_call(self, call_id: str) -> _Message | None:
        calls_queue = self._by_call.get(call_id)
        if not calls_queue:
            return None
        message = calls_queue.popleft()
        if not calls_queue:
            del self._by_call[call_id]
        del self._waiting[message.sequence]
        self._update_depth()
        return message

    def _update_depth(self) -> None:
        self._metrics.webhook_queue_depth.set(len(self._waiting))

    async def _send_for_call(self, call_id: str) -> None:
        """Send the call's messages one after the other until none wait."""
        try:
            while True:
                # A message stays in the queue, where it can be dropped,
                # until a request slot is free for it.
                async with self._in_flight:
                    message = self._next_of_call(call_id)
                    if message is None:
                        return
                    self._sending[call_id] = message
                    await self._deliver(message)
                    del self._sending[call_id]
        finally:
            self._sending.pop(call_id, None)
            self._senders.pop(call_id, None)

    # ----- sending ------------------------------------------------------------

    async def _deliver(self, message: _Message) -> None:
        """Send one message, retrying by its server's backoff plan."""
        server = message.server
        retry = 0
        while True:
            try:
                await self._post(message)
            except AttemptFailed as failure:
                delay = retry_delay_seconds(server, retry, failure.status)
                if not failure.retryable or delay is None:
                    self._count(message, failure.result)
                    log.warning(
                        "webhook.failed",
                        type=message.type,
                        call_id=message.call_id,
                        result=failure.result,
                        status=failure.status,
                        detail=failure.detail,
                        attempts=retry + 1,
                        server_host=yarl.URL(server.url).host,
                    )
                    return
                log.info(
                    "webhook.retrying",
                    type=message.type,
                    call_id=message.call_id,
                    result=failure.result,
                    status=failure.status,
                    retry=retry + 1,
                    delay_seconds=delay,
                )
                await asyncio.sleep(delay)
                retry += 1
            else:
                self._count(message, "ok")
                return

    async def _post(self, message: _Message) -> None:
        server = message.server
        url = str(server.url)
        headers: CIMultiDict[str] = CIMultiDict({"Content-Type": "application/json"})
        try:
            headers.update(
                auth_headers(server, self._config_provider(), message.body, "POST", url)
            )
        except LookupError as error:
            raise AttemptFailed("fault", str(error), retryable=False) from None
        # The config checks reject this pair, but an inline assistant's server
        # from a webhook reply is checked only against its own fields.
        if "Authorization" in headers and url_has_userinfo(url):
            detail = AUTHORIZATION_CLASH.format(source="the server's credential")
            raise AttemptFailed("fault", detail, retryable=False)

        timeout = aiohttp.ClientTimeout(total=server.timeout_seconds)
        try:
            # A redirect would send the signed request to another URL.
            async with self._session.post(
                url,
                data=message.body,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
            ) as response:
                if not 200 <= response.status <= 299:
                    raise AttemptFailed(
                        "http-error",
                        f"server answered HTTP {response.status}",
                        status=response.status,
                    )
        except TimeoutError:
            raise AttemptFailed(
                "timeout", f"no response in {server.timeout_seconds:g} s"
            ) from None
        except aiohttp.ClientError as error:
            # Some aiohttp messages contain the URL, which may hold a token.
            raise AttemptFailed(
                "transport-error", f"transport error: {type(error).__name__}"
            ) from None

    def _count(self, message: _Message, result: str) -> None:
        self._metrics.webhook_deliveries.labels(type=message.type, result=result).inc()
