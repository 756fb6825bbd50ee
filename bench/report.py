"""Turn the measured numbers into ratios, target checks and a Markdown report.

Everything here works on the run's JSON, so a results file can be
rendered again without running anything.
"""

from __future__ import annotations

from typing import Any

from bench.plan import BARE, KAMAILIO, ROUTER, SYSTEM_TITLES, TARGET_CPU_RATE

Results = dict[str, Any]

# Ratios of the router to each reference system.
REFERENCES = ((KAMAILIO, "router / Kamailio"), (BARE, "router / bare pjsua2"))


# ----- derived numbers -----------------------------------------------------------


def finalize(results: Results) -> None:
    """Add CPU per call at a common rate, the ratios and the target checks."""
    for path in results["paths"].values():
        path["cpuRate"] = common_cpu_rate(path)
        for system in path["systems"].values():
            system["cpuPerCall"] = cpu_per_call(system, path["cpuRate"])
    results["ratios"] = {
        key: path_ratios(path) for key, path in results["paths"].items()
    }
    results["targets"] = [] if results.get("smoke") else targets(results)


def common_cpu_rate(path: Results) -> float | None:
    """Return the rate for comparing CPU per call on a path.

    It is the target rate of 200 calls per second when every system ran it
    cleanly, else the highest rate that every system with a clean step ran
    cleanly, else None.
    """
    shared: set[float] | None = None
    for system in path["systems"].values():
        rates = {
            step["rate"]
            for step in system["steps"]
            if step["purpose"] in ("ladder", "smoke") and _clean(step)
        }
        if rates:  # a system with no clean step has no CPU per call to compare
            shared = rates if shared is None else shared & rates
    candidates = [rate for rate in shared or () if rate <= TARGET_CPU_RATE]
    return max(candidates, default=None)


def cpu_per_call(system: Results, rate: float | None) -> Results | None:
    """Return the CPU ms per call at `rate`, gross and net of idle CPU.

    Milliseconds per call equal seconds per 1,000 calls. Net subtracts what
    the system spends while idle (its polling loop and media clock) over
    the step's wall time, so that slow rates are not dominated by it.
    """
    if rate is None:
        return None
    steps = [
        step
        for step in system["steps"]
        if step["rate"] == rate and _clean(step) and step["purpose"] != "latency"
    ]
    if not steps:
        return None
    step = steps[0]
    idle = system.get("idleCpuFraction") or 0.0
    gross = step["systemCpuSeconds"] / step["offered"]
    net = (step["systemCpuSeconds"] - idle * step["wallSeconds"]) / step["offered"]
    return {
        "rate": rate,
        "grossMs": round(1000 * gross, 3),
        "netMs": round(1000 * max(net, 0.0), 3),
        # RSS rises with the rate and stays, so systems are compared at the
        # same step; older results have no memory per step.
        "peakMemoryMb": step.get("peakMemoryMb"),
    }


def path_ratios(path: Results) -> Results:
    """Return the router's numbers over each reference system's, per measure."""
    systems = path["systems"]
    router = systems.get(ROUTER)
    ratios: Results = {}
    for reference, label in REFERENCES:
        other = systems.get(reference)
        if router is None or other is None:
            continue
        ratios[label] = {
            "cpuPerCall": _ratio(_net_cpu(router), _net_cpu(other)),
            "topCps": _ratio(router["top"]["rate"], other["top"]["rate"]),
            "p99": _ratio(_p99(router), _p99(other)),
            "peakMemory": _ratio(_memory(router), _memory(other)),
        }
    return ratios


def targets(results: Results) -> list[Results]:
    """Check every target of the benchmark; `met` is None where it cannot be."""
    paths = results["paths"]
    checks = []
    for key in ("reject", "redirect"):
        checks.append(_cpu_target(paths, key, KAMAILIO, 5.0))
    checks.append(_cpu_target(paths, "static", BARE, 1.3))
    for key in ("reject", "redirect", "static"):
        checks.append(_top_target(paths, key))
    checks.append(_kamailio_share_target(results))
    # The webhook path's setup time includes the webhook's own 100 ms.
    for key in ("reject", "redirect", "static"):
        checks.append(_latency_target(paths, key))
    checks.extend(_concurrency_targets(results.get("concurrency")))
    checks.append(_webhook_target(results))
    return checks


def _cpu_target(paths: Results, key: str, reference: str, limit: float) -> Results:
    path = paths.get(key, {"systems": {}, "cpuRate": None})
    router = path["systems"].get(ROUTER)
    other = path["systems"].get(reference)
    ratio = _ratio(_net_cpu(router), _net_cpu(other))
    rate = path.get("cpuRate")
    measured = f"{_times(ratio)} at {_rate(rate)} calls/s"
    if ratio is not None and router["cpuPerCall"]["grossMs"] > 3 * _net_cpu(router):
        # Mostly idle CPU: show the gross numbers the net ones came from.
        measured += (
            f" (gross {router['cpuPerCall']['grossMs']:.1f} and "
            f"{other['cpuPerCall']['grossMs']:.1f} ms per call, mostly idle CPU)"
        )
    return {
        "target": f"{key}: CPU per call <= {limit:g}x {SYSTEM_TITLES[reference]}'s",
        "measured": measured if ratio is not None else "not measured",
        "met": None if ratio is None else ratio <= limit,
    }


def _top_target(paths: Results, key: str) -> Results:
    systems = paths.get(key, {"systems": {}})["systems"]
    router, bare = systems.get(ROUTER), systems.get(BARE)
    ratio = _ratio(_top(router), _top(bare))
    return {
        "target": f"{key}: top clean CPS >= 90 % of bare pjsua2's",
        "measured": f"{_percent(ratio)} ({_top_text(router)} vs {_top_text(bare)})"
        if ratio is not None
        else "not measured",
        "met": None if ratio is None else ratio >= 0.9,
    }


def _kamailio_share_target(results: Results) -> Results:
    systems = results["paths"].get("reject", {"systems": {}})["systems"]
    ratio = _ratio(_top(systems.get(ROUTER)), _top(systems.get(KAMAILIO)))
    raised = (results.get("limits") or {}).get("maxCalls", 0) > 4
    return {
        "target": "reject: top clean CPS >= 12 % of Kamailio's, on a build "
        "with raised limits",
        "measured": _percent(ratio) if ratio is not None else "not measured",
        # The target is set for builds with raised limits only.
        "met": None if ratio is None or not raised else ratio >= 0.12,
    }


def _latency_target(paths: Results, key: str) -> Results:
    router = paths.get(key, {"systems": {}})["systems"].get(ROUTER)
    latency = router.get("latency") if router else None
    p99 = latency.get("p99") if latency else None
    return {
        "target": f"{key}: router's setup p99 < 5 ms at half its top CPS",
        "measured": f"{p99:.2f} ms at {_rate(latency['rate'])} calls/s"
        if p99 is not None
        else "not measured",
        "met": None if p99 is None else p99 < 5.0,
    }


def _concurrency_targets(concurrency: Results | None) -> list[Results]:
    per_call = concurrency.get("rssPerCallKb") if concurrency else None
    memory = {
        "target": "< 1 MB RSS per held bridged call",
        "measured": f"{per_call:g} kB per call, {concurrency['held']} held"
        if per_call is not None
        else "not measured",
        "met": None if per_call is None else per_call < 1024,
    }
    under_hold = concurrency.get("rejectUnderHold") if concurrency else None
    loss = {
        "target": "no CPS loss while the build's limit of calls is held",
        "measured": _under_hold_text(under_hold) if under_hold else "not measured",
        "met": None if under_hold is None else _clean(under_hold),
    }
    return [memory, loss]


def _webhook_target(results: Results) -> Results:
    bound = webhook_bound(results)
    router = results["paths"].get("webhook", {"systems": {}})["systems"].get(ROUTER)
    ratio = _ratio(_top(router), bound)
    return {
        "target": "webhook 100 ms: top CPS lowered only by the call slots "
        "(>= 90 % of min(redirect top, usable slots x 10/s))",
        "measured": f"{_top_text(router)} of a bound of {_rate(bound)}"
        if ratio is not None
        else "not measured",
        "met": None if ratio is None else ratio >= 0.9,
    }


def webhook_bound(results: Results) -> float | None:
    """Return the top CPS the call slots allow with a 100 ms webhook.

    Every call occupies a slot while the webhook runs and the router keeps
    one slot free, so it can take at most (slots - 1) / 0.1 s calls per
    second. Nor can it beat its redirect path, which has no webhook.
    """
    slots = (results.get("limits") or {}).get("maxCalls")
    redirect = results["paths"].get("redirect", {"systems": {}})["systems"]
    tops = [_top(redirect.get(ROUTER))]
    if slots:
        tops.append((slots - 1) * 10.0)
    known = [top for top in tops if top is not None]
    return min(known, default=None)


# ----- small helpers ---------------------------------------------------------------


def _clean(step: Results) -> bool:
    offered = step["offered"]
    return not step["crashed"] and offered > 0 and step["failed"] / offered < 0.001


def _net_cpu(system: Results | None) -> float | None:
    cpu = system.get("cpuPerCall") if system else None
    return cpu["netMs"] if cpu else None


def _memory(system: Results) -> float:
    """Return the peak memory at the CPU comparison rate, else the overall one."""
    cpu = system.get("cpuPerCall")
    if cpu and cpu.get("peakMemoryMb"):
        return cpu["peakMemoryMb"]
    return system["peakMemoryMb"]


def _top(system: Results | None) -> float | None:
    return system["top"]["rate"] if system else None


def _p99(system: Results) -> float | None:
    latency = system.get("latency")
    return latency.get("p99") if latency else None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def _times(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.3g}x"


def _percent(ratio: float | None) -> str:
    return "-" if ratio is None else f"{100 * ratio:.0f} %"


def _rate(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:g}"


def _top_text(system: Results | None) -> str:
    if system is None:
        return "-"
    top = system["top"]
    if top["rate"] is None:
        return "none clean"
    text = _rate(top["rate"])
    if top.get("generatorBound"):
        return f">= {text} (SIPp-bound)"
    if top.get("capped"):
        return f">= {text} (ladder end)"
    if top.get("timeBound"):
        return f">= {text} (time budget)"
    return text


def _under_hold_text(step: Results) -> str:
    return (
        f"reject at {_rate(step['rate'])} calls/s: {step['failed']} of "
        f"{step['offered']} failed {step['failureReasons'] or ''}".rstrip()
    )


# ----- Markdown ------------------------------------------------------------------


def render(results: Results) -> str:
    """Return the whole report as Markdown."""
    sections = [
        _header(results),
        _results_table(results),
        _ratios_table(results),
        _targets_table(results),
        _concurrency_section(results.get("concurrency")),
        _crashes_section(results),
        _steps_table(results),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"


def _header(results: Results) -> str:
    machine = results["machine"]
    limits = results.get("limits") or {}
    kind = "Smoke run" if results.get("smoke") else "Benchmark"
    lines = [
        f"# {kind}, {results['date']}",
        "",
        f"- Command: `{results['command']}`, started {results['started']}, "
        f"took {results['durationSeconds']} s.",
        f"- Machine: {machine['cpu']}, {machine['cores']} cores, Linux "
        f"{machine['kernel']}; Python {machine['python']}, pjsua2-python "
        f"{machine['pjsua2']}, {machine['sipp'] or 'SIPp ?'}, "
        f"{machine['kamailio'] or 'no Kamailio'}.",
        f"- Load average (1, 5, 15 min) before the run "
        f"{_triple(machine['loadAverageBefore'])}, after "
        f"{_triple(machine['loadAverageAfter'])}. SIPp, the system under test "
        "and anything else running share these cores, so a load above zero "
        "before the run means noisy numbers.",
        f"- SIP build limits from the router's /readyz: "
        f"{limits.get('maxCalls', '?')} call slots, "
        f"{limits.get('maxAccounts', '?')} accounts, "
        f"{limits.get('maxPacketBytes', '?')}-byte UDP packets, "
        f"{limits.get('maxSockets', '?')} ioqueue sockets"
        f"{'' if limits.get('probed') else ' (not probed: known wheel values)'}.",
    ]
    return "\n".join(lines)


def _results_table(results: Results) -> str:
    rows = [
        "| path | system | top clean CPS | setup p50 / p99 ms (at CPS) "
        "| CPU s per 1,000 calls, net (at CPS) | idle CPU % "
        "| peak memory MB (at CPS) |",
        "|---|---|---|---|---|---|---|",
    ]
    for path in results["paths"].values():
        for name, system in path["systems"].items():
            rows.append(
                f"| {path['title']} | {SYSTEM_TITLES[name]} | {_top_text(system)} "
                f"| {_latency_text(system)} | {_cpu_text(system)} "
                f"| {_idle_text(system)} | {_memory_text(system)} |"
            )
    notes = (
        "CPU is utime + stime of the system's processes over the step, "
        "less its idle CPU over the same time; `gross` in the JSON keeps it. "
        "Peak memory is the largest RSS sampled during the step at the CPU "
        "rate for the router and the bare responder, and the summed PSS of all "
        "processes for Kamailio. A pjsua2 system's RSS rises with the call rate "
        "and stays: the JSON keeps the peak over clean steps and over all steps."
    )
    return "## Results\n\n" + "\n".join(rows) + "\n\n" + notes


def _latency_text(system: Results) -> str:
    latency = system.get("latency")
    if not latency or latency.get("p50") is None:
        return "-"
    return f"{latency['p50']:.2f} / {latency['p99']:.2f} ({_rate(latency['rate'])})"


def _cpu_text(system: Results) -> str:
    cpu = system.get("cpuPerCall")
    if not cpu:
        return "-"
    return f"{cpu['netMs']:.3f} ({_rate(cpu['rate'])})"


def _idle_text(system: Results) -> str:
    idle = system.get("idleCpuFraction")
    return "-" if idle is None else f"{100 * idle:.1f}"


def _memory_text(system: Results) -> str:
    memory = _memory(system)
    cpu = system.get("cpuPerCall")
    at = f" ({_rate(cpu['rate'])})" if cpu and cpu.get("peakMemoryMb") else ""
    return f"{memory:.1f} {system['memoryKind']}{at}"


def _ratios_table(results: Results) -> str:
    rows = [
        "| path | comparison | CPU per call | top clean CPS | setup p99 "
        "| peak memory |",
        "|---|---|---|---|---|---|",
    ]
    for key, ratios in results["ratios"].items():
        title = results["paths"][key]["title"]
        for label, ratio in ratios.items():
            rows.append(
                f"| {title} | {label} | {_times(ratio['cpuPerCall'])} "
                f"| {_times(ratio['topCps'])} | {_times(ratio['p99'])} "
                f"| {_times(ratio['peakMemory'])} |"
            )
    if len(rows) == 2:
        return ""
    return "## Ratios\n\n" + "\n".join(rows)


def _targets_table(results: Results) -> str:
    if not results.get("targets"):
        return ""
    rows = ["| target | measured | met |", "|---|---|---|"]
    for check in results["targets"]:
        met = {True: "yes", False: "**no**", None: "n/a"}[check["met"]]
        rows.append(f"| {check['target']} | {check['measured']} | {met} |")
    bound = webhook_bound(results)
    note = (
        f"The webhook bound on this build is {_rate(bound)} calls/s. A target "
        "marked n/a could not be checked on this build or was not measured."
    )
    return "## Targets\n\n" + "\n".join(rows) + "\n\n" + note


def _concurrency_section(concurrency: Results | None) -> str:
    if not concurrency:
        return ""
    if not concurrency.get("target"):
        return "## Concurrency\n\nThe build allows no bridged call to be held."
    lines = [
        "## Concurrency",
        "",
        f"- Bridged calls the build allows at once (router, one slot kept "
        f"free, two slots per call): {concurrency['target']}; held: "
        f"{concurrency['held']}; completed after {concurrency['holdSeconds']} s: "
        f"{concurrency['completed']}.",
        f"- Router RSS {concurrency['rssBeforeMb']} MB idle, "
        f"{concurrency['rssDuringMb']} MB while holding: "
        f"{concurrency['rssPerCallKb']} kB per held call.",
    ]
    under_hold = concurrency.get("rejectUnderHold")
    if under_hold:
        lines.append(f"- While holding, {_under_hold_text(under_hold)}.")
    return "\n".join(lines)


def _crashes_section(results: Results) -> str:
    lines = []
    for path in results["paths"].values():
        for name, system in path["systems"].items():
            rates_by_cause: dict[str, list[str]] = {}
            for crash in system["crashes"]:
                rates = rates_by_cause.setdefault(crash["cause"], [])
                rates.append(_rate(crash["rate"]))
            for cause, rates in rates_by_cause.items():
                lines.append(
                    f"- {SYSTEM_TITLES[name]}, {path['title']}, at "
                    f"{', '.join(rates)} calls/s: {_code(cause)}"
                )
    if not lines:
        return ""
    return "## Crashes\n\n" + "\n".join(lines)


def _steps_table(results: Results) -> str:
    rows = [
        "| path | system | step | CPS | calls | failed | failures "
        "| late responses | CPU ms/call, gross | SIPp CPU % |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for path in results["paths"].values():
        for name, system in path["systems"].items():
            for step in system["steps"]:
                rows.append(_step_row(path["title"], name, step))
    note = (
        "Late responses arrived after their call had ended: retransmissions "
        "from a system that processed the ACK late. They fail no call but "
        "show a system near its limit."
    )
    return "## Every step\n\n" + "\n".join(rows) + "\n\n" + note


def _step_row(title: str, name: str, step: Results) -> str:
    failures = ", ".join(f"{k}: {v}" for k, v in step["failureReasons"].items())
    if step["crashed"]:
        failures = f"crashed; {failures}" if failures else "crashed"
    cpu_ms = 1000 * step["systemCpuSeconds"] / step["offered"]
    sipp = 100 * step["sippCpuSeconds"] / step["wallSeconds"]
    return (
        f"| {title} | {SYSTEM_TITLES[name]} | {step['purpose']} "
        f"| {_rate(step['rate'])} | {step['offered']} | {step['failed']} "
        f"| {failures or '-'} | {step.get('lateResponses', 0)} "
        f"| {cpu_ms:.2f} | {sipp:.0f} |"
    )


def _code(text: str) -> str:
    """Return `text` as a Markdown code span, even when it contains backticks."""
    # pjlib's assertion messages quote with a backtick and an apostrophe.
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _triple(values: list[float]) -> str:
    return " / ".join(f"{value:.2f}" for value in values)
