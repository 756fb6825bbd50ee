"""The `cozmox-router` command: `run`, `check` and `route`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any

from router.config import Config, ConfigError, load_config

EXIT_CONFIG_ERROR = 2
EXIT_START_FAILED = 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit status."""
    parser = _parser()
    arguments = parser.parse_args(argv)
    return arguments.command(arguments)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cozmox-router",
        description="SIP inbound-call router for cozmox BYO trunk numbers.",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the daemon")
    run.add_argument("-c", "--config", required=True, help="config file (YAML or JSON)")
    run.set_defaults(command=_run)

    check = commands.add_parser(
        "check", help="validate a config file and list every error"
    )
    check.add_argument(
        "-c", "--config", required=True, help="config file (YAML or JSON)"
    )
    check.set_defaults(command=_check)
    _add_route_command(commands)
    return parser


def _add_route_command(commands: Any) -> None:
    route = commands.add_parser(
        "route",
        help="print the decision path of one call without placing it",
        description="Print each step that the router takes for a call: trunk, "
        "number, status, hooks, route or assistant-request, and failure chain. "
        "No SIP message is sent. The assistant-request goes to the number's "
        "real server unless --no-webhook is given.",
    )
    route.add_argument(
        "-c", "--config", required=True, help="config file (YAML or JSON)"
    )
    route.add_argument("--to", required=True, help="dialled number, as in To")
    route.add_argument(
        "--from", dest="caller", required=True, help="caller's number, as in From"
    )
    route.add_argument("--src", required=True, help="source IP address of the INVITE")
    route.add_argument(
        "--ruri", help="Request-URI (default: sip:<--to>@<--src>)", default=None
    )
    route.add_argument(
        "--no-webhook",
        action="store_true",
        help="skip the assistant-request and show what happens if it fails",
    )
    route.add_argument("--json", action="store_true", help="print JSON for scripts")
    route.set_defaults(command=_route)


def _load_or_report(path: str) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as error:
        _print_errors(path, error.errors)
        return None


def _print_errors(path: str, errors: Sequence[str]) -> None:
    print(f"{path}: {len(errors)} error(s)", file=sys.stderr)
    for line in errors:
        print(f"  {line}", file=sys.stderr)


def _check(arguments: argparse.Namespace) -> int:
    config = _load_or_report(arguments.config)
    if config is None:
        return EXIT_CONFIG_ERROR
    from router.app import probe_and_check

    try:
        probe_and_check(config)
    except ConfigError as error:
        _print_errors(arguments.config, error.errors)
        return EXIT_CONFIG_ERROR
    print("ok")
    return 0


def _run(arguments: argparse.Namespace) -> int:
    config = _load_or_report(arguments.config)
    if config is None:
        return EXIT_CONFIG_ERROR
    from router.app import StartupError, run
    from router.logs import configure_logging

    configure_logging(config.router.log_format, config.router.log_level)
    try:
        asyncio.run(run(config, arguments.config))
    except ConfigError as error:
        _print_errors(arguments.config, error.errors)
        return EXIT_CONFIG_ERROR
    except StartupError as error:
        print(f"cozmox-router: {error}", file=sys.stderr)
        return EXIT_START_FAILED
    return 0


def _route(arguments: argparse.Namespace) -> int:
    config = _load_or_report(arguments.config)
    if config is None:
        return EXIT_CONFIG_ERROR
    from router.dry_run import CallInput, render_text
    from router.logs import configure_logging, redact_text

    # Log events of the assistant-request client go to stderr, apart from
    # the decision on stdout.
    configure_logging(config.router.log_format, level="warning")
    call = CallInput(
        to=arguments.to,
        caller=arguments.caller,
        source_ip=arguments.src,
        request_uri=arguments.ruri,
    )
    decision = asyncio.run(_decide(config, call, not arguments.no_webhook))
    if arguments.json:
        output = json.dumps(decision.as_json(), indent=2)
    else:
        output = render_text(decision)
    # URIs of the config and of the server's reply may carry a token.
    print(redact_text(output))
    return 0


async def _decide(config: Config, call: Any, ask: bool) -> Any:
    import aiohttp
    from prometheus_client import CollectorRegistry

    from router.dry_run import route_call
    from router.metrics import Metrics
    from router.webhooks.assistant_request import AssistantRequestClient

    if not ask:
        return await route_call(config, call, None)
    async with aiohttp.ClientSession() as session:
        client = AssistantRequestClient(
            session, lambda: config, Metrics(CollectorRegistry())
        )
        return await route_call(config, call, client.request)


if __name__ == "__main__":
    sys.exit(main())
