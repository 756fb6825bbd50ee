"""The `cozmox-router` command: `run` and `check`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from router.config import Config, ConfigError, load_config

EXIT_CONFIG_ERROR = 2


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
    return parser


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
    from router.app import run
    from router.logs import configure_logging

    configure_logging(config.router.log_format)
    try:
        asyncio.run(run(config, arguments.config))
    except ConfigError as error:
        _print_errors(arguments.config, error.errors)
        return EXIT_CONFIG_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
