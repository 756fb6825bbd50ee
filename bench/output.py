"""Output of the benchmark and the soak: progress lines and results files."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any


def say(line: str) -> None:
    """Print a progress line to stderr, so stdout keeps only the table."""
    print(line, file=sys.stderr, flush=True)


def write_results(
    directory: Path, stem: str, results: dict[str, Any], text: str
) -> None:
    """Write `<stem>.md` with `text` and `<stem>.json` with `results`."""
    directory.mkdir(parents=True, exist_ok=True)
    markdown = directory / f"{stem}.md"
    data = directory / f"{stem}.json"
    markdown.write_text(text)
    data.write_text(json.dumps(results, indent=1) + "\n")
    say(f"wrote {markdown} and {data}")


def command_line(module: str, make_target: str, argv: list[str] | None) -> str:
    """Return the command that started this run, as the results record it."""
    arguments = sys.argv[1:] if argv is None else argv
    command = " ".join([f"python -m {module}", *arguments])
    # make exports MAKELEVEL to the commands it runs.
    if os.environ.get("MAKELEVEL"):
        return f"make {make_target} ({command})"
    return command
