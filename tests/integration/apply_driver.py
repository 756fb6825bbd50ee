"""Run the router, and apply a second config's trunks on SIGUSR1.

Test helper: `python apply_driver.py FIRST SECOND` starts the daemon on
FIRST like `cozmox-router run`. On SIGUSR1 it loads SECOND and passes its
trunks to `RegistrationManager.apply()`, the call a config reload makes,
then logs `test.applied` with what was added, removed and changed.
SIGTERM stops it as it stops the daemon.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import structlog

from router.app import Router, probe_and_check
from router.config import load_config
from router.logs import configure_logging

log = structlog.get_logger("apply_driver")


async def main(first: str, second: str) -> None:
    config = load_config(first)
    configure_logging(config.router.log_format)
    router = Router(config, probe_and_check(config))
    await router.start()
    tasks: set[asyncio.Task[None]] = set()

    async def apply_second() -> None:
        new = load_config(second)
        result = await router.registrations.apply(new.trunks(), new.router.registration)
        log.info(
            "test.applied",
            added=list(result.added),
            removed=list(result.removed),
            changed=list(result.changed),
            unchanged=list(result.unchanged),
        )

    def on_signal() -> None:
        task = asyncio.create_task(apply_second())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, on_signal)
    await router.serve()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
