"""The assistant-request webhook, which asks a number's server who takes a call.

The whole exchange (connect, headers, body and every retry) runs under one
hard deadline, `min(router.assistantRequestDeadlineSeconds,
server.timeoutSeconds)`, so the carrier does not give up on the call first.
Any failure raises `AssistantRequestFailed`, and its `endedReason` is the row
of the reply table that applied.
"""

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pydantic_core
import structlog
import yarl
from multidict import CIMultiDict

from router.config import Config, PhoneNumber, Server
from router.errors import AssistantRequestFailed
from router.logs import without_secrets
from router.metrics import Metrics
from router.routing import ended_reasons
from router.routing.replies import ErrorReply, Reply, parse_assistant_request_body
from router.webhooks.signing import auth_headers

# A reply is a small JSON object. An inline assistant with a long prompt
# stays well below this, and a larger body is treated as a failure.
MAX_RESPONSE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class AssistantRequestInput:
    """The facts of one inbound call that the assistant-request reports.

    `sip_headers` should contain the INVITE's custom `X-` headers. Other
    headers are dropped from the request body.
    """

    call_id: str
    sip_call_id: str
    phone_number: PhoneNumber
    created_at: datetime
    caller_number: str | None
    caller_name: str | None = None
    caller_sip_uri: str | None = None
    sip_headers: Mapping[str, str] = field(default_factory=dict)


def build_request_body(
    call: AssistantRequestInput, now: Callable[[], float] = time.time
) -> dict[str, Any]:
    """Build the `{"message": {...}}` body of an assistant-request.

    `customer.number` is the caller's real number, because masking applies
    to logs only. `phoneNumber` is the number's configuration by its API
    names, without any secret.
    """
    number_id = call.phone_number.id
    message = {
        "type": "assistant-request",
        "timestamp": int(now() * 1000),
        "call": {
            "id": call.call_id,
            "type": "inboundPhoneCall",
            "phoneCallTransport": "sip",
            "phoneNumberId": number_id,
            "createdAt": _iso_utc(call.created_at),
            "status": "ringing",
            "phoneCallProviderId": call.sip_call_id,
            "sipHeaders": _custom_headers(call.sip_headers),
        },
        "phoneNumber": phone_number_without_secrets(call.phone_number),
        "customer": {
            "number": call.caller_number,
            "name": call.caller_name,
            "sipUri": call.caller_sip_uri,
        },
    }
    return {"message": message}


def phone_number_without_secrets(number: PhoneNumber) -> dict[str, Any]:
    """Return a number's configuration as JSON-ready data, secrets removed.

    `SecretStr` values (the server's `secret`) and every key named like a
    secret (an `Authorization` extra header) are left out.
    """
    return pydantic_core.to_jsonable_python(without_secrets(number))


def _iso_utc(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    text = moment.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def _custom_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {
        name: value for name, value in headers.items() if name.lower().startswith("x-")
    }


class AttemptFailed(Exception):
    """One webhook POST that produced no usable answer, with its metric result."""

    def __init__(
        self,
        result: str,
        detail: str,
        status: int | None = None,
        retryable: bool = True,
    ) -> None:
        super().__init__(detail)
        self.result = result
        self.detail = detail
        self.status = status
        self.retryable = retryable


class AssistantRequestClient:
    """Sends assistant-requests and turns each reply into a `Reply`.

    `config_provider` returns the configuration in force, so a reload applies
    to the next request. `logger` is a structlog logger, usually bound to the
    call.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        config_provider: Callable[[], Config],
        metrics: Metrics,
        logger: Any = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self._session = session
        self._config_provider = config_provider
        self._metrics = metrics
        self._logger = logger if logger is not None else structlog.get_logger()
        self._max_response_bytes = max_response_bytes

    async def request(
        self,
        call: AssistantRequestInput,
        server: Server,
        config: Config | None = None,
    ) -> Reply:
        """POST the assistant-request for `call` to `server` and parse the reply.

        `config` is the configuration that the call started with, so a reload
        in the meantime does not change its deadline or signing credential.
        It defaults to the configuration in force.

        Raises `AssistantRequestFailed` with `assistant-request-failed` on a
        transport error, a timeout, a non-2xx status or an oversized body,
        and with the matching reason when the reply table rejects the body.
        Cancelling the task (the caller hung up) abandons the request.
        `logger`, usually the call's bound logger, replaces the client's own.
        """
        config = config or self._config_provider()
        deadline_seconds = min(
            config.router.assistant_request_deadline_seconds, server.timeout_seconds
        )
        body = json.dumps(build_request_body(call), separators=(",", ":")).encode()
        log = self._logger.bind(
            call_id=call.call_id,
            sip_call_id=call.sip_call_id,
            number_id=call.phone_number.id,
            server_host=_host_of(server.url),
        )

        loop = asyncio.get_running_loop()
        started = loop.time()
        result = "fault"
        try:
            async with asyncio.timeout(deadline_seconds):
                raw = await self._post_with_retries(
                    server, config, body, started + deadline_seconds, log
                )
            reply = parse_assistant_request_body(raw)
            result = _reply_result(reply)
            return reply
        except TimeoutError:
            result = "timeout"
            detail = f"no reply within the deadline of {deadline_seconds:g} s"
            log.warning("assistant_request.failed", result=result, detail=detail)
            raise AssistantRequestFailed(
                ended_reasons.ASSISTANT_REQUEST_FAILED, detail
            ) from None
        except AttemptFailed as failure:
            result = failure.result
            log.warning(
                "assistant_request.failed", result=result, detail=failure.detail
            )
            raise AssistantRequestFailed(
                ended_reasons.ASSISTANT_REQUEST_FAILED, failure.detail
            ) from failure
        except AssistantRequestFailed as failure:
            result = "invalid-reply"
            log.warning(
                "assistant_request.invalid_reply",
                ended_reason=failure.ended_reason,
                detail=failure.detail,
            )
            raise
        except asyncio.CancelledError:
            result = "cancelled"
            log.info("assistant_request.cancelled")
            raise
        finally:
            elapsed = loop.time() - started
            self._metrics.assistant_request_seconds.labels(result=result).observe(
                elapsed
            )

    async def _post_with_retries(
        self,
        server: Server,
        config: Config,
        body: bytes,
        deadline_at: float,
        log: Any,
    ) -> bytes:
        loop = asyncio.get_running_loop()
        retry = 0
        while True:
            try:
                return await self._post_once(server, config, body)
            except AttemptFailed as failure:
                delay = retry_delay_seconds(server, retry, failure.status)
                if not failure.retryable or delay is None:
                    raise
                # A retry that cannot start before the deadline would only
                # turn this failure into a timeout.
                if loop.time() + delay >= deadline_at:
                    raise
                log.info(
                    "assistant_request.retrying",
                    result=failure.result,
                    status=failure.status,
                    retry=retry + 1,
                    delay_seconds=delay,
                )
                await asyncio.sleep(delay)
                retry += 1

    async def _post_once(self, server: Server, config: Config, body: bytes) -> bytes:
        url = str(server.url)
        headers: CIMultiDict[str] = CIMultiDict({"Content-Type": "application/json"})
        headers.update(auth_headers(server, config, body, "POST", url))

        try:
            # A redirect would re-send the signed request to another URL, so
            # a 3xx is a failure like any other non-2xx status.
            async with self._session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                if not 200 <= response.status <= 299:
                    raise AttemptFailed(
                        "http-error",
                        f"server answered HTTP {response.status}",
                        status=response.status,
                    )
                return await self._read_body(response)
        except aiohttp.ClientError as error:
            raise AttemptFailed("transport-error", _describe(error)) from error

    async def _read_body(self, response: aiohttp.ClientResponse) -> bytes:
        cap = self._max_response_bytes
        declared = response.content_length
        if declared is not None and declared > cap:
            raise _oversize(cap)

        # Read at most cap + 1 bytes, which is enough to tell that the body is
        # over the cap without buffering all of it.
        raw = bytearray()
        while len(raw) <= cap:
            chunk = await response.content.read(cap + 1 - len(raw))
            if not chunk:
                break
            raw += chunk
        if len(raw) > cap:
            raise _oversize(cap)
        return bytes(raw)


def retry_delay_seconds(server: Server, retry: int, status: int | None) -> float | None:
    """Return the delay before retry number `retry + 1`, or None to stop.

    `fixed` waits `baseDelaySeconds` each time and `exponential` doubles it
    after each retry. A status listed in `excludedStatusCodes` is never
    retried. A transport error has no status and is retried.
    """
    plan = server.backoff_plan
    if plan is None or retry >= plan.max_retries:
        return None
    if status is not None and status in (plan.excluded_status_codes or ()):
        return None

    if plan.type == "exponential":
        return plan.base_delay_seconds * 2**retry
    return plan.base_delay_seconds


def _reply_result(reply: Reply) -> str:
    if isinstance(reply, ErrorReply):
        return "error-reply"
    return "ok"


def _oversize(cap: int) -> AttemptFailed:
    # The server responded, so a retry would most likely get the same body.
    return AttemptFailed(
        "oversize", f"response body larger than {cap} bytes", retryable=False
    )


def _describe(error: aiohttp.ClientError) -> str:
    # The message of some aiohttp errors contains the full URL, which may
    # carry credentials, so only the class and the OS error are reported.
    description = f"transport error: {type(error).__name__}"
    if isinstance(error, OSError) and error.strerror:
        description += f" ({error.strerror})"
    return description


def _host_of(url: object) -> str | None:
    return yarl.URL(str(url)).host
