"""The operator's server for the webhook path: responds after a fixed delay.

Every POST gets its response after `--delay-seconds`, so the router's
assistant-request takes at least that long. The response is
`{"assistantId": "asst-bench"}` unless `--reply-json` sets another body.
The server counts the messages it receives by `message.type`, and the
distinct calls that sent an `end-of-call-report`; `GET /counts` returns
them. It binds 127.0.0.1, prints `ready` once it listens, and stops on
SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from collections import Counter
from typing import Any

from aiohttp import web

ASSISTANT_ID = "asst-bench"
DEFAULT_REPLY = {"assistantId": ASSISTANT_ID}
END_OF_CALL_REPORT = "end-of-call-report"


class MessageCounts:
    """Messages received, by type, and the calls that sent a report."""

    def __init__(self) -> None:
        self.by_type: Counter[str] = Counter()
        self.reported_calls: set[str] = set()

    def add(self, body: bytes) -> None:
        try:
            message = json.loads(body)["message"]
            kind = str(message["type"])
        except (ValueError, KeyError, TypeError):
            self.by_type["unreadable"] += 1
            return
        self.by_type[kind] += 1
        if kind == END_OF_CALL_REPORT:
            call = message.get("call") or {}
            self.reported_calls.add(str(call.get("id")))

    def as_json(self) -> dict[str, Any]:
        return {
            "byType": dict(self.by_type),
            "reportedCalls": len(self.reported_calls),
        }


def build_app(
    delay_seconds: float, reply: dict[str, Any] | None = None
) -> web.Application:
    """Return an app that responds to every POST with `reply`, late."""
    counts = MessageCounts()
    body = DEFAULT_REPLY if reply is None else reply

    async def answer(request: web.Request) -> web.Response:
        counts.add(await request.read())
        await asyncio.sleep(delay_seconds)
        return web.json_response(body)

    async def report_counts(request: web.Request) -> web.Response:
        return web.json_response(counts.as_json())

    app = web.Application()
    app.router.add_get("/counts", report_counts)
    app.router.add_post("/{path:.*}", answer)
    return app


async def serve(
    port: int, delay_seconds: float, reply: dict[str, Any] | None = None
) -> None:
    """Serve on 127.0.0.1:`port` until SIGTERM or SIGINT."""
    runner = web.AppRunner(build_app(delay_seconds, reply), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    print("ready", flush=True)
    await stopping.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port")
    parser.add_argument(
        "--delay-seconds",
        type=float,
        default=0.1,
        help="seconds to wait before each response",
    )
    parser.add_argument(
        "--reply-json",
        type=json.loads,
        default=None,
        help=f"JSON body of every response (default: {json.dumps(DEFAULT_REPLY)})",
    )
    arguments = parser.parse_args()
    asyncio.run(serve(arguments.port, arguments.delay_seconds, arguments.reply_json))


if __name__ == "__main__":
    main()
