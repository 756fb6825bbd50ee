"""The machine and software a benchmark ran on, for the results file."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any


def describe(
    load_before: tuple[float, float, float], load_after: tuple[float, float, float]
) -> dict[str, Any]:
    """Return the CPU, core count, load averages and tool versions."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "pjsua2": _package_version("pjsua2-python"),
        "sipp": _first_line(["sipp", "-v"], "SIPp"),
        "kamailio": _first_line(["kamailio", "-v"], "version: "),
        "loadAverageBefore": [round(value, 2) for value in load_before],
        "loadAverageAfter": [round(value, 2) for value in load_after],
    }


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or "unknown"
    for line in lines:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _first_line(command: list[str], marker: str) -> str | None:
    """Return the first line of `command`'s output that contains `marker`."""
    if shutil.which(command[0]) is None:
        return None
    try:
        output = subprocess.run(
            command, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    for line in (output.stdout + output.stderr).splitlines():
        if marker in line:
            # "version: kamailio 5.6.3 (x86_64/linux) " and "SIPp v3.6.1-SCTP."
            return line.replace("version: ", "").strip().rstrip(".")
    return None
