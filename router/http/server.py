"""The router's own HTTP endpoints: metrics, health, readiness and admin API.

`/metrics`, `/healthz`, `/readyz` and `/openapi.json` need no token, so the
HTTP listener should be bound to a private address. The admin API requires
`Authorization: Bearer <router.http.adminToken>`: `/calls` and
`/calls/{id}` (the assistant runtime reads a call's route, inline objects
and overrides there), `/phone-number`, `/credential` and their `/{id}`
forms (never a password, token or key), and `POST /admin/reload`.
"""

import hmac
from typing import Any, Protocol

import pydantic_core
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from router.http.openapi import openapi_document
from router.logs import redact_uri, redact_url, without_secrets

log = structlog.get_logger(__name__)

_AUTH_SCHEME = "bearer"
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="cozmox-router"'}


class HttpState(Protocol):
    """The daemon state that the HTTP layer reads."""

    registry: CollectorRegistry

    def is_ready(self) -> bool:
        """Return whether the config is loaded and the SIP transports are bound."""
        ...

    def readiness(self) -> dict[str, Any]:
        """Return the SIP limits, call slots and registration states."""
        ...

    def admin_token(self) -> str | None:
        """Return `router.http.adminToken`, or None when it is not set."""
        ...

    def call_record(self, call_id: str) -> dict[str, Any] | None:
        """Return the record of a call, or None when the id is unknown."""
        ...

    def call_records(self) -> list[dict[str, Any]]:
        """Return the records of every call in progress."""
        ...

    def phone_numbers(self) -> list[dict[str, Any]]:
        """Return the phone numbers of the config in force."""
        ...

    def phone_number(self, number_id: str) -> dict[str, Any] | None:
        """Return one phone number, or None when the id is unknown."""
        ...

    def credentials(self) -> list[dict[str, Any]]:
        """Return the credentials of the config in force, without secrets."""
        ...

    def credential(self, credential_id: str) -> dict[str, Any] | None:
        """Return one credential without secrets, or None when unknown."""
        ...

    async def reload_config(self) -> dict[str, Any]:
        """Reload the config file; return `{"result": "applied", ...}`."""
        ...


_STATE = web.AppKey("state", HttpState)


def build_http_app(state: HttpState) -> web.Application:
    """Build the aiohttp application that serves `state`."""
    app = web.Application()
    app[_STATE] = state
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/openapi.json", _openapi)
    app.router.add_get("/calls", _list_calls)
    app.router.add_get("/calls/{call_id}", _get_call)
    app.router.add_get("/phone-number", _list_phone_numbers)
    app.router.add_get("/phone-number/{number_id}", _get_phone_number)
    app.router.add_get("/credential", _list_credentials)
    app.router.add_get("/credential/{credential_id}", _get_credential)
    app.router.add_post("/admin/reload", _reload)
    return app


async def _metrics(request: web.Request) -> web.Response:
    registry = request.app[_STATE].registry
    return web.Response(
        body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def _readyz(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    ready = state.is_ready()
    details = {key: value for key, value in state.readiness().items() if key != "ready"}
    return web.json_response(
        _jsonable({"ready": ready, **details}), status=200 if ready else 503
    )


async def _list_calls(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    _require_admin(request, state)
    return web.json_response(_jsonable({"calls": state.call_records()}))


async def _get_call(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    _require_admin(request, state)

    call_id = request.match_info["call_id"]
    record = state.call_record(call_id)
    if record is None:
        return _error(404, f"call {call_id!r} not found")
    return web.json_response(_jsonable(record))


async def _openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


async def _list_phone_numbers(request: web.Request) -> web.Response:
    state = _admin_state(request)
    return web.json_response(_jsonable(state.phone_numbers()))


async def _get_phone_number(request: web.Request) -> web.Response:
    state = _admin_state(request)
    number_id = request.match_info["number_id"]
    number = state.phone_number(number_id)
    if number is None:
        return _error(404, f"phone number {number_id!r} not found")
    return web.json_response(_jsonable(number))


async def _list_credentials(request: web.Request) -> web.Response:
    state = _admin_state(request)
    return web.json_response(_jsonable(state.credentials()))


async def _get_credential(request: web.Request) -> web.Response:
    state = _admin_state(request)
    credential_id = request.match_info["credential_id"]
    credential = state.credential(credential_id)
    if credential is None:
        return _error(404, f"credential {credential_id!r} not found")
    return web.json_response(_jsonable(credential))


async def _reload(request: web.Request) -> web.Response:
    state = _admin_state(request)
    log.info("config.reload_requested", remote=request.remote)
    result = await state.reload_config()
    status = 200 if result.get("result") == "applied" else 422
    return web.json_response(_jsonable(result), status=status)


def _admin_state(request: web.Request) -> HttpState:
    state = request.app[_STATE]
    _require_admin(request, state)
    return state


def _require_admin(request: web.Request, state: HttpState) -> None:
    expected = state.admin_token()
    if not expected:
        raise _rejected(
            request,
            web.HTTPForbidden,
            "admin API disabled: set router.http.adminToken to enable it",
        )

    presented = _bearer_token(request.headers.get("Authorization", ""))
    if presented is None:
        raise _rejected(request, web.HTTPUnauthorized, "missing bearer token")
    # Compared as bytes: compare_digest rejects str with non-ASCII characters.
    if not hmac.compare_digest(
        presented.encode("utf-8", "surrogateescape"), expected.encode()
    ):
        raise _rejected(request, web.HTTPUnauthorized, "invalid bearer token")


def _bearer_token(authorization: str) -> str | None:
    # RFC 9110 section 11.1: the scheme name is case-insensitive.
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != _AUTH_SCHEME or not token:
        return None
    return token


def _jsonable(value: Any) -> Any:
    # Call records may contain pydantic models and datetimes. Secrets are
    # dropped here too, so a record built carelessly still never leaks one.
    return _without_url_credentials(
        pydantic_core.to_jsonable_python(without_secrets(value))
    )


def _without_url_credentials(value: Any) -> Any:
    """Copy JSON data with the credentials in every URL string masked.

    A webhook `url` may carry `user:password@` or a `?token=` parameter,
    and a SIP URI a `;token=` parameter or a `user:password@`.
    """
    if isinstance(value, str):
        if "://" in value:
            return redact_url(value)
        if value[:4].lower() == "sip:" or value[:5].lower() == "sips:":
            return redact_uri(value)
        return value
    if isinstance(value, dict):
        return {key: _without_url_credentials(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_url_credentials(item) for item in value]
    return value


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _rejected(
    request: web.Request, error_class: type[web.HTTPException], message: str
) -> web.HTTPException:
    # The presented token is never logged, even when it is wrong, because it
    # may be a valid token of another service.
    log.warning(
        "admin.request_rejected",
        path=request.path,
        remote=request.remote,
        error=message,
    )
    headers = _CHALLENGE if error_class is web.HTTPUnauthorized else None
    return error_class(
        text=pydantic_core.to_json({"error": message}).decode(),
        content_type="application/json",
        headers=headers,
    )
