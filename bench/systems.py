"""The processes of the benchmark: three systems under test and two helpers.

Systems: the router (`python -m router.cli run`), the bare pjsua2
responder (`bench/bare_responder.py`) and Kamailio (`bench/kamailio.cfg`).
Helpers: a SIPp UAS standing in for the assistant runtime, and the
operator's webhook server. Everything binds 127.0.0.1 on ports from
`procs.free_port()`, and every process is stopped by its own PID.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procs import (
    LOOPBACK,
    free_port,
    rss_bytes,
    stop_process,
    tree_cpu_seconds,
    tree_pss_bytes,
    tree_runtime_seconds,
)
from bench.sipp import SCENARIOS, require_sipp

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO_ROOT / "bench"
START_TIMEOUT_SECONDS = 30.0

# The numbers in every system's configuration. SIPp dials them without the
# `+`, because the router matches an E.164 number with or without it and
# Kamailio's htable key is the Request-URI user as sent.
STATIC_NUMBER = "14155550100"
ASK_SERVER_NUMBER = "14155550101"
UNKNOWN_NUMBER = "14155559999"
ASSISTANT_ID = "asst-bench"


@dataclass(frozen=True)
class Setup:
    """How a system answers a known number on one path.

    `reply` is `404` (the path dials an unknown number), `302` (redirect to
    the runtime) or `bridge` (connect the caller to the runtime).
    """

    reply: str
    runtime_uri: str
    webhook_url: str | None = None


class System:
    """A system under test: one process tree, restarted after a crash."""

    name = "system"
    memory_kind = "RSS"

    def __init__(self, setup: Setup, directory: Path) -> None:
        self.setup = setup
        self.directory = directory
        self.process: subprocess.Popen | None = None
        self.log_path: Path | None = None
        self.port = 0
        self.starts = 0
        self._peak_memory = 0
        self._step_peak_memory = 0
        self._sampler: threading.Thread | None = None
        self._sampling = threading.Event()

    @property
    def sip_target(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None, "the system is not running"
        return self.process.pid

    def start(self) -> None:
        """Start the process and wait until it takes calls."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        self.port = free_port()
        self.log_path = self.directory / f"{self.name}-{self.starts}.log"
        with self.log_path.open("wb") as output:
            self.process = subprocess.Popen(
                self.command(),
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self.ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"{self.name} did not start (exit {self.process.returncode}); "
                    f"its output:\n{self.log_tail()}"
                )
            time.sleep(0.1)
        self._start_sampler()

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        return "ready" in self.log_tail()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def restart(self) -> None:
        """Start again after a crash; the peak memory keeps the old process's."""
        self.stop()
        self.start()

    def stop(self) -> None:
        self._stop_sampler()
        if self.process is not None:
            stop_process(self.process)

    def cpu_seconds(self) -> float:
        """Return the CPU time of the running process tree, 0.0 if it died."""
        return tree_cpu_seconds(self.pid) if self.alive() else 0.0

    def runtime_seconds(self) -> float:
        """Return the CPU time of the running tree's live threads, finely."""
        return tree_runtime_seconds(self.pid) if self.alive() else 0.0

    def memory_bytes(self) -> int:
        """Return the current memory of the kind `peak_memory_bytes` reports."""
        return rss_bytes(self.pid) if self.alive() else 0

    @property
    def peak_memory_bytes(self) -> int:
        """Return the largest memory sampled since the first start."""
        return self._peak_memory

    def begin_step(self) -> None:
        """Start sampling the peak memory of one load step."""
        self._step_peak_memory = self.memory_bytes()

    def end_step(self) -> int:
        """Return the largest memory sampled since `begin_step()`."""
        self._sample_once()
        return self._step_peak_memory

    def log_tail(self, characters: int = 3000) -> str:
        """Return the end of what the process wrote to stdout and stderr."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-characters:]

    def crash_line(self) -> str:
        """Return the last line of output that names an assertion or signal."""
        for line in reversed(self.log_tail(20000).splitlines()):
            if "Assertion" in line or "Segmentation" in line or "Abort" in line:
                return line.strip()
        return f"exit status {self.process.returncode if self.process else None}"

    def _start_sampler(self) -> None:
        self._sampling.clear()
        self._sampler = threading.Thread(
            target=self._sample_memory, name="memory-sampler", daemon=True
        )
        self._sampler.start()

    def _stop_sampler(self) -> None:
        if self._sampler is not None:
            self._sampling.set()
            self._sampler.join()
            self._sampler = None

    def _sample_memory(self) -> None:
        # A crashed process leaves no /proc entry to read its peak from,
        # so the peak is sampled while it runs.
        while True:
            self._sample_once()
            if self._sampling.wait(0.5):
                return

    def _sample_once(self) -> None:
        if not self.alive():
            return
        memory = self.memory_bytes()
        self._peak_memory = max(self._peak_memory, memory)
        self._step_peak_memory = max(self._step_peak_memory, memory)


class RouterSystem(System):
    """The router daemon, on a config written for the path."""

    name = "router"
    http_port = 0

    def command(self) -> list[str]:
        self.http_port = free_port()
        config_path = self.directory / f"router-{self.starts}.json"
        config_path.write_text(json.dumps(self.config(), indent=2))
        return [sys.executable, "-m", "router.cli", "run", "-c", str(config_path)]

    def config(self) -> dict[str, Any]:
        """Return the router's config: one trunk on 127.0.0.1 and two numbers.

        Only the webhook path has an operator's server. Elsewhere the router
        sends no webhooks at all, as Kamailio and the bare responder do not.
        """
        config: dict[str, Any] = {
            "router": {
                "sip": {
                    "listen": [
                        {"transport": "udp", "host": LOOPBACK, "port": self.port}
                    ],
                    "rtpPortStart": 10000,
                    "rtpPortCount": 2000,
                },
                "http": {"host": LOOPBACK, "port": self.http_port},
                "runtime": {
                    "uri": self.setup.runtime_uri,
                    "mode": "redirect" if self.setup.reply == "302" else "bridge",
                },
                # Large enough that the SIP build's call slots, not this,
                # bound the router. It requests 2 x this + 1 slots from pjsua.
                "maxConcurrentCalls": 1000,
                "assistantRequestDeadlineSeconds": 5,
                "drainSeconds": 2,
                "logFormat": "json",
            },
            "credentials": [
                {
                    "id": "trunk-bench",
                    "provider": "byo-sip-trunk",
                    "name": "Benchmark caller",
                    "gateways": [{"ip": LOOPBACK, "netmask": 32}],
                }
            ],
            "phoneNumbers": [
                {
                    "id": "pn-static",
                    "provider": "byo-phone-number",
                    "credentialId": "trunk-bench",
                    "number": f"+{STATIC_NUMBER}",
                    "assistantId": ASSISTANT_ID,
                },
                {
                    "id": "pn-ask-server",
                    "provider": "byo-phone-number",
                    "credentialId": "trunk-bench",
                    "number": f"+{ASK_SERVER_NUMBER}",
                },
            ],
        }
        if self.setup.webhook_url is not None:
            server = {"url": self.setup.webhook_url, "timeoutSeconds": 10}
            config["org"] = {"server": server}
        return config

    def ready(self) -> bool:
        status, body = self.readiness()
        return status == 200 and bool(body.get("ready"))

    def readiness(self) -> tuple[int, dict[str, Any]]:
        """GET /readyz: the SIP build's limits and the call slots in use."""
        url = f"http://{LOOPBACK}:{self.http_port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            with error:
                return error.code, {}
        except (OSError, ValueError):
            return 0, {}

    def limits(self) -> dict[str, Any]:
        """Return the build's limits as the router probed them."""
        _, body = self.readiness()
        sip = body.get("sip", {})
        return {**sip.get("limits", {}), "probed": sip.get("limitsProbed")}

    def slots_used(self) -> int:
        _, body = self.readiness()
        return int(body.get("sip", {}).get("slots", {}).get("used", 0))


class BareSystem(System):
    """The bare pjsua2 responder, with the router's endpoint settings."""

    name = "bare"

    def command(self) -> list[str]:
        return [
            sys.executable,
            str(BENCH_DIR / "bare_responder.py"),
            "--port", str(self.port),
            # The same RTP range as the router: one system runs at a time.
            "--rtp-port", "10000",
            "--reply", self.setup.reply,
            "--target", self.setup.runtime_uri,
        ]  # fmt: skip


class KamailioSystem(System):
    """Kamailio with `bench/kamailio.cfg`: an htable lookup, then a reply or a proxy."""

    name = "kamailio"
    memory_kind = "PSS"
    MODULE_DIRS = (
        "/usr/lib/x86_64-linux-gnu/kamailio/modules",
        "/usr/lib/aarch64-linux-gnu/kamailio/modules",
        "/usr/lib/kamailio/modules",
    )

    def __init__(self, setup: Setup, directory: Path, workers: int) -> None:
        super().__init__(setup, directory)
        self.workers = workers

    def command(self) -> list[str]:
        executable = shutil.which("kamailio")
        if executable is None:
            raise RuntimeError(
                "kamailio not found on PATH: install the Debian package "
                "kamailio (`make bench` does)"
            )
        modules = next((d for d in self.MODULE_DIRS if Path(d).is_dir()), None)
        if modules is None:
            raise RuntimeError(f"no Kamailio module folder among {self.MODULE_DIRS}")
        runtime_dir = self.directory / f"kamailio-run-{self.starts}"
        runtime_dir.mkdir(parents=True, exist_ok=True)
        command = [
            executable,
            "-f", str(BENCH_DIR / "kamailio.cfg"),
            "-L", modules,
            "-Y", str(runtime_dir),
            # -DD: stay in the foreground, so the PID we hold is the main
            # process, and still fork the worker processes.
            "-DD", "-E",
            "-m", "64", "-M", "8",
            "-A", f"SIP_PORT={self.port}",
            "-A", f'RUNTIME_URI="{self.setup.runtime_uri}"',
            "-A", f"CHILDREN={self.workers}",
        ]  # fmt: skip
        if self.setup.reply == "302":
            command += ["-A", "REDIRECT"]
        return command

    def ready(self) -> bool:
        # Kamailio logs the addresses it listens on once its sockets are bound.
        return f"127.0.0.1]:{self.port}" in self.log_tail()

    def memory_bytes(self) -> int:
        return tree_pss_bytes(self.pid) if self.alive() else 0


class SippRuntime:
    """The assistant runtime: SIPp's `uas-runtime.xml`, answering and holding."""

    # Bounds of one runtime's life: it serves one system's run of one path.
    MAX_CALLS = 200000
    MAX_SECONDS = 1200

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.screen = directory / f"runtime-{self.port}.txt"
        command = [
            require_sipp(),
            "-sf", str(SCENARIOS / "uas-runtime.xml"),
            "-i", LOOPBACK, "-p", str(self.port),
            "-mi", LOOPBACK, "-mp", str(free_port(block=4)),
            "-ci", LOOPBACK, "-cp", str(free_port()),
            "-nostdin",
            "-m", str(self.MAX_CALLS),
            "-timeout", str(self.MAX_SECONDS),
            "-l", "20000",
        ]  # fmt: skip
        with self.screen.open("wb") as screen:
            self.process = subprocess.Popen(
                command,
                cwd=directory,
                stdin=subprocess.DEVNULL,
                stdout=screen,
                stderr=subprocess.STDOUT,
            )
        # The first INVITE arrives seconds later, once the system under test
        # has started, so a short wait only has to catch an early exit.
        time.sleep(0.5)
        if self.process.poll() is not None:
            raise RuntimeError(
                f"the SIPp runtime exited with status {self.process.returncode}: "
                f"{self.screen.read_text(errors='replace')[-2000:]}"
            )

    @property
    def uri(self) -> str:
        return f"sip:runtime@{LOOPBACK}:{self.port}"

    def stop(self) -> None:
        stop_process(self.process)


class WebhookServer:
    """The operator's server of `bench/webhook_server.py`, in its own process."""

    def __init__(
        self,
        directory: Path,
        delay_seconds: float,
        reply: dict[str, Any] | None = None,
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.output = directory / f"webhook-{self.port}.txt"
        command = [
            sys.executable,
            str(BENCH_DIR / "webhook_server.py"),
            "--port", str(self.port),
            "--delay-seconds", str(delay_seconds),
        ]  # fmt: skip
        if reply is not None:
            command += ["--reply-json", json.dumps(reply)]
        with self.output.open("wb") as output:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=output, stderr=output
            )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while "ready" not in self.output.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"the webhook server did not start: {self.output.read_text()}"
                )
            time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/webhook"

    def counts(self) -> dict[str, Any]:
        """GET /counts: the messages received by type, and the reported calls."""
        url = f"http://{LOOPBACK}:{self.port}/counts"
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        stop_process(self.process)
