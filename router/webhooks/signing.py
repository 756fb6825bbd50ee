"""Authentication headers for the router's webhooks.

A server's webhooks carry, in this order, its extra `headers`, the
`X-Cozmox-Secret` shorthand, and the headers of its webhook credential: a
bearer token or an HMAC signature of the request. A later header replaces an
earlier one of the same name, so an extra header cannot overwrite the
credential's signature.
"""

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Callable

from router.config import (
    BearerAuthenticationPlan,
    Config,
    HmacAuthenticationPlan,
    Server,
)

SECRET_HEADER = "X-Cozmox-Secret"

_HASHES = {
    "sha256": hashlib.sha256,
    "sha512": hashlib.sha512,
    "sha1": hashlib.sha1,
}
_PLACEHOLDER = re.compile(rb"\{(timestamp|body|method|url)\}")


def auth_headers(
    server: Server,
    config: Config,
    body: bytes,
    method: str = "POST",
    url: str | None = None,
    now: Callable[[], float] = time.time,
) -> dict[str, str]:
    """Build the headers that authenticate one webhook request to `server`.

    `body` must be the exact bytes sent, and `url` defaults to `server.url`.
    Sign each attempt again, because an HMAC signature covers the timestamp.
    Raises LookupError when `server.credential_id` names no webhook
    credential.
    """
    headers = dict(server.headers or {})
    if server.secret is not None:
        _set_header(headers, SECRET_HEADER, server.secret.get_secret_value())
    if server.credential_id is None:
        return headers

    credential = config.webhook_credential(server.credential_id)
    if credential is None:
        raise LookupError(
            f"webhook credential {server.credential_id!r} not found: "
            "add it to credentials with provider webhook"
        )

    plan = credential.authentication_plan
    if isinstance(plan, BearerAuthenticationPlan):
        credential_headers = bearer_headers(plan)
    else:
        request_url = url if url is not None else str(server.url)
        credential_headers = hmac_headers(plan, body, method, request_url, now())
    for name, value in credential_headers.items():
        _set_header(headers, name, value)
    return headers


def _set_header(headers: dict[str, str], name: str, value: str) -> None:
    # HTTP header names are case-insensitive (RFC 9110, section 5.1), so
    # an `authorization` extra header must not survive next to `Authorization`.
    for existing in [key for key in headers if key.lower() == name.lower()]:
        del headers[existing]
    headers[name] = value


def bearer_headers(plan: BearerAuthenticationPlan) -> dict[str, str]:
    """Return the bearer token header of a `BearerAuthenticationPlan`."""
    token = plan.token.get_secret_value()
    if plan.bearer_prefix_enabled:
        token = f"Bearer {token}"
    return {plan.header_name: token}


def hmac_headers(
    plan: HmacAuthenticationPlan, body: bytes, method: str, url: str, now_seconds: float
) -> dict[str, str]:
    """Return the signature and timestamp headers of an `HmacAuthenticationPlan`.

    The signed payload is `payload_format` with `{timestamp}` (epoch seconds),
    `{body}`, `{method}` and `{url}` substituted in one pass, so a placeholder
    written inside the body is never substituted.
    """
    timestamp = str(int(now_seconds))
    values = {
        b"timestamp": timestamp.encode(),
        b"body": body,
        b"method": method.upper().encode(),
        b"url": url.encode(),
    }
    payload = _PLACEHOLDER.sub(
        lambda match: values[match.group(1)], plan.payload_format.encode()
    )

    digest = hmac.new(
        plan.secret_key.get_secret_value().encode(),
        payload,
        _HASHES[plan.algorithm],
    ).digest()
    if plan.signature_encoding == "base64":
        signature = base64.b64encode(digest).decode("ascii")
    else:
        signature = digest.hex()

    headers = {plan.signature_header: plan.signature_prefix + signature}
    if plan.include_timestamp:
        headers[plan.timestamp_header] = timestamp
    return headers
