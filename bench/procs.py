"""CPU time and memory of a process tree, read from /proc, and free ports.

CPU time is utime + stime from /proc/<pid>/stat, in clock ticks (10 ms
with the usual USER_HZ of 100), summed over a process and its live
descendants so that Kamailio's worker processes count too. Memory is
VmRSS of one process, or PSS summed over a tree, because PSS counts
the pages that Kamailio's processes share only once.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
from pathlib import Path

LOOPBACK = "127.0.0.1"
CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")

# Ports the benchmark binds: below 32768, where Linux hands out no
# ephemeral ports by default, and apart from 20000-29999, which the
# integration tests pick from.
BENCH_PORTS = range(12000, 20000)
_handed_out: set[int] = set()


def free_port(block: int = 1) -> int:
    """Return the first of `block` consecutive ports free for UDP and TCP.

    A port is never returned twice in one run, so two processes started
    one after the other cannot be handed the same port before either binds.
    """
    starts = [p for p in BENCH_PORTS if p + block - 1 < BENCH_PORTS.stop]
    for start in random.sample(starts, k=200):
        ports = range(start, start + block)
        if any(port in _handed_out for port in ports):
            continue
        if all(_is_free(socket.SOCK_DGRAM, p) for p in ports) and all(
            _is_free(socket.SOCK_STREAM, p) for p in ports
        ):
            _handed_out.update(ports)
            return start
    raise RuntimeError(
        f"no {block} free consecutive UDP+TCP ports on {LOOPBACK} among 200 "
        f"tried in {BENCH_PORTS.start}-{BENCH_PORTS.stop - 1}"
    )


def _is_free(kind: socket.SocketKind, port: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as probe:
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _stat_fields(pid: int) -> list[str]:
    """Return the fields of /proc/<pid>/stat after the parenthesised name."""
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name may contain spaces and parentheses: split after the
    # last closing parenthesis. Field 3 (state) is then index 0.
    return text[text.rindex(")") + 2 :].split()


def descendants(root: int) -> list[int]:
    """Return `root` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int(_stat_fields(int(entry.name))[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, pending = [], [root]
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(children.get(pid, []))
    return found


def cpu_seconds(pid: int) -> float:
    """Return utime + stime of one process, 0.0 once it has exited."""
    try:
        fields = _stat_fields(pid)
    except OSError:
        return 0.0
    # utime and stime are fields 14 and 15 of stat(5), indexes 11 and 12 here.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_SECOND


def tree_cpu_seconds(root: int) -> float:
    """Return the CPU time of `root` and its live descendants."""
    return sum(cpu_seconds(pid) for pid in descendants(root))


def tree_runtime_seconds(root: int) -> float:
    """Return the CPU time of a tree's live threads, in nanosecond steps.

    /proc/<pid>/task/<tid>/schedstat starts with the thread's time on a CPU
    in nanoseconds, so a short window is measured more finely than the
    10 ms ticks of /proc/<pid>/stat allow. Threads that exited are not
    counted, so use it only over windows in which none exit, such as idle.
    """
    total_ns = 0
    for pid in descendants(root):
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                total_ns += int((task / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    return total_ns / 1e9


def _status_kib(pid: int, key: str) -> int:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def rss_bytes(pid: int) -> int:
    """Return the resident set size (VmRSS) of one process."""
    return _status_kib(pid, "VmRSS") * 1024


def tree_pss_bytes(root: int) -> int:
    """Return the proportional set size summed over a process tree."""
    total = 0
    for pid in descendants(root):
        try:
            lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            if line.startswith("Pss:"):
                total += int(line.split()[1]) * 1024
                break
    return total


def stop_process(process: subprocess.Popen, timeout_seconds: float = 10.0) -> None:
    """Stop a process we started, by its PID: SIGTERM, then SIGKILL."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout_seconds)
