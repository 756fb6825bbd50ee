"""An operator's webhook server for `config/router.example.yaml`.

- `POST /webhook` returns `{"assistantId": "asst-sales"}` to every
  assistant-request and 200 `{}` to any other message. Its requests must
  carry a valid HMAC-SHA256 signature of `{timestamp}.{body}` made with the
  example's key (credential `webhook-hmac`), else it returns 401.
- `POST /broken` returns 500, so the number that uses it falls back.

Run it beside the router:

    python examples/webhook_server.py --host 127.0.0.1 --port 8090
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import time

from aiohttp import web

EXAMPLE_HMAC_KEY = "example-hmac-key-change-me"
# A request whose timestamp is further than this from the server's clock
# is rejected, so a captured request cannot be replayed later.
MAX_CLOCK_SKEW_SECONDS = 300

log = logging.getLogger("webhook_server")
HMAC_KEY = web.AppKey("hmac_key", bytes)


def signature_is_valid(key: bytes, timestamp: str, body: bytes, signature: str) -> bool:
    """Check an `x-signature` header: hex HMAC-SHA256 of `{timestamp}.{body}`."""
    if not timestamp.isdigit():
        return False
    if abs(time.time() - int(timestamp)) > MAX_CLOCK_SKEW_SECONDS:
        return False
    payload = timestamp.encode() + b"." + body
    expected = hmac.new(key, payload, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


async def webhook(request: web.Request) -> web.Response:
    """Route every assistant-request to `asst-sales`."""
    body = await request.read()
    valid = signature_is_valid(
        request.app[HMAC_KEY],
        request.headers.get("x-timestamp", ""),
        body,
        request.headers.get("x-signature", ""),
    )
    if not valid:
        log.warning("rejected %s: missing or invalid x-signature", request.path)
        return web.json_response({"error": "invalid signature"}, status=401)

    try:
        message = json.loads(body)["message"]
    except (ValueError, KeyError, TypeError):
        log.warning('rejected %s: body is not {"message": {...}}', request.path)
        return web.json_response({"error": "invalid body"}, status=400)

    message_type = message.get("type")
    log.info(
        "%s from phone number %s",
        message_type,
        (message.get("phoneNumber") or {}).get("id"),
    )
    if message_type == "assistant-request":
        return web.json_response({"assistantId": "asst-sales"})
    return web.json_response({})


async def broken(request: web.Request) -> web.Response:
    """Fail every request, as a server that is down would."""
    log.info("returning 500 on %s", request.path)
    return web.json_response({"error": "this server always fails"}, status=500)


def build_app(hmac_key: str) -> web.Application:
    """Build the application with its two paths."""
    app = web.Application()
    app[HMAC_KEY] = hmac_key.encode()
    app.router.add_post("/webhook", webhook)
    app.router.add_post("/broken", broken)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")
    parser.add_argument("--port", type=int, default=8090, help="TCP port to bind")
    parser.add_argument(
        "--hmac-key",
        default=EXAMPLE_HMAC_KEY,
        help="HMAC-SHA256 key that signs the router's requests "
        "(default: the example config's key)",
    )
    arguments = parser.parse_args()

    logging.basicConfig(level=logging.INFO, format="webhook-server: %(message)s")
    web.run_app(
        build_app(arguments.hmac_key),
        host=arguments.host,
        port=arguments.port,
        access_log=None,
        print=lambda text: log.info("%s", text.strip()),
    )


if __name__ == "__main__":
    main()
