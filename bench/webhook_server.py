"""The operator's server for the webhook path: responds after a fixed delay.

Every POST gets the response `{"assistantId": "asst-bench"}` after
`--delay-seconds`, so the router's assistant-request takes at least that
long. It binds 127.0.0.1, prints `ready` once it listens, and stops on
SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from aiohttp import web

ASSISTANT_ID = "asst-bench"


def build_app(delay_seconds: float) -> web.Application:
    """Return an app that responds to every POST with the assistant, late."""

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(delay_seconds)
        return web.json_response({"assistantId": ASSISTANT_ID})

    app = web.Application()
    app.router.add_post("/{path:.*}", answer)
    return app


async def serve(port: int, delay_seconds: float) -> None:
    """Serve on 127.0.0.1:`port` until SIGTERM or SIGINT."""
    runner = web.AppRunner(build_app(delay_seconds), access_log=None)
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
    arguments = parser.parse_args()
    asyncio.run(serve(arguments.port, arguments.delay_seconds))


if __name__ == "__main__":
    main()
