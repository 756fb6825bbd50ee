"""Start-up failures end the daemon with one clear message, never a crash."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from harness import base_config, free_port

pytestmark = pytest.mark.integration


def config_on_free_ports() -> dict:
    return base_config(
        sip_port=free_port(),
        http_port=free_port(),
        runtime_uri=f"sip:runtime@127.0.0.1:{free_port()}",
        webhook_url=lambda path: f"http://127.0.0.1:{free_port()}{path}",
    )


def run_daemon(config: dict, directory: Path) -> subprocess.CompletedProcess:
    path = directory / "router.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run(
        [sys.executable, "-m", "router.cli", "run", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_sip_port_in_use_exits_with_message(tmp_path: Path) -> None:
    config = config_on_free_ports()
    sip_port = config["router"]["sip"]["listen"][0]["port"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", sip_port))

        result = run_daemon(config, tmp_path)

    assert result.returncode == 1
    assert f"cannot listen for SIP on udp 127.0.0.1:{sip_port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_http_port_in_use_exits_with_message(tmp_path: Path) -> None:
    config = config_on_free_ports()
    http_port = config["router"]["http"]["port"]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", http_port))
        holder.listen()

        result = run_daemon(config, tmp_path)

    assert result.returncode == 1
    assert f"cannot listen for HTTP on 127.0.0.1:{http_port}" in result.stderr
    assert "Traceback" not in result.stderr
