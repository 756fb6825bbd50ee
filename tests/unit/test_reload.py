"""Config reload: restart-only settings, rejection, listeners and metrics."""

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from router.app import Router
from router.config import Config, ConfigError
from router.reload import ReloadResult, keep_restart_only_settings, load_checked
from router.sip.limits import SipLimits

LIMITS = SipLimits(max_calls=4, max_accounts=8, max_packet_bytes=4000)

BASE: dict[str, Any] = {
    "router": {
        "sip": {"listen": [{"transport": "udp", "host": "127.0.0.1", "port": 5060}]},
        "http": {"host": "127.0.0.1", "port": 8080},
    },
    "credentials": [
        {
            "id": "trunk-a",
            "provider": "byo-sip-trunk",
            "name": "Trunk A",
            "gateways": [{"ip": "127.0.0.1"}],
        }
    ],
    "phoneNumbers": [
        {
            "id": "pn-1",
            "credentialId": "trunk-a",
            "number": "+14155550100",
            "assistantId": "asst-1",
        }
    ],
}


def config_data(**router_changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data["router"].update(router_changes)
    return data


def write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data))
    return path


def validated(data: dict[str, Any]) -> Config:
    return Config.model_validate(data)


# ----- pure parts ----------------------------------------------------------------


def test_keep_restart_only_settings_unchanged():
    old = validated(config_data())
    new = validated(config_data(drainSeconds=5))

    kept, changed = keep_restart_only_settings(old, new)

    assert changed == []
    assert kept is new


def test_keep_restart_only_settings_keeps_listen_and_http():
    old = validated(config_data())
    data = config_data(drainSeconds=5, logFormat="console", logLevel="debug")
    data["router"]["sip"]["listen"][0]["port"] = 5070
    data["router"]["http"] = {"host": "127.0.0.1", "port": 9090, "adminToken": "t"}
    new = validated(data)

    kept, changed = keep_restart_only_settings(old, new)

    assert changed == [
        "router.sip.listen",
        "router.http.port",
        "router.logFormat",
        "router.logLevel",
    ]
    assert kept.router.sip.listen[0].port == 5060
    assert kept.router.http.port == 8080
    assert kept.router.log_format == old.router.log_format
    assert kept.router.log_level == "info"
    assert kept.router.drain_seconds == 5
    assert kept.router.http.admin_token.get_secret_value() == "t"


def test_keep_restart_only_settings_keeps_udp_buffer():
    old = validated(config_data())
    data = config_data()
    data["router"]["sip"]["udpReceiveBufferBytes"] = 1 << 20
    new = validated(data)

    kept, changed = keep_restart_only_settings(old, new)

    assert changed == ["router.sip.udpReceiveBufferBytes"]
    assert kept.router.sip.udp_receive_buffer_bytes == 0


def test_reload_result_json_names():
    result = ReloadResult(applied=False, errors=["a: b"])

    assert result.as_json() == {
        "result": "rejected",
        "errors": ["a: b"],
        "restartRequired": [],
    }


def test_load_checked_rejects_too_many_registering_trunks(tmp_path):
    data = config_data()
    trunk = data["credentials"][0]
    trunk["outboundAuthenticationPlan"] = {
        "authUsername": "user",
        "authPassword": "pw",
        "sipRegisterPlan": {"domain": "127.0.0.1"},
    }
    path = write(tmp_path / "router.json", data)

    with pytest.raises(ConfigError) as raised:
        load_checked(path, max_accounts=1)

    assert "sipRegisterPlan" in raised.value.errors[0]


# ----- Router.reload ---------------------------------------------------------------


async def test_router_reload_applies_valid_file(tmp_path):
    path = write(tmp_path / "router.json", config_data())
    router = Router(validated(config_data()), LIMITS, path)
    seen: list[tuple[str, str]] = []

    async def listener(old: Config, new: Config) -> None:
        seen.append(
            (old.phone_numbers[0].assistant_id, new.phone_numbers[0].assistant_id)
        )

    router.reload_listeners.append(listener)
    data = config_data()
    data["phoneNumbers"][0]["assistantId"] = "asst-2"
    write(path, data)

    result = await router.reload()

    assert result.applied
    assert router.config.phone_numbers[0].assistant_id == "asst-2"
    assert seen == [("asst-1", "asst-2")]
    assert _reloads(router, "applied") == 1


async def test_router_reload_rejects_invalid_file(tmp_path):
    path = write(tmp_path / "router.json", config_data())
    router = Router(validated(config_data()), LIMITS, path)
    data = config_data(unknownSetting=1)
    data["phoneNumbers"][0]["number"] = "bad"
    write(path, data)

    with capture_logs() as logs:
        result = await router.reload()

    assert not result.applied
    assert len(result.errors) == 2
    assert router.config.phone_numbers[0].number == "+14155550100"
    (event,) = [e for e in logs if e["event"] == "config.reload_rejected"]
    assert event["errors"] == result.errors
    assert event["log_level"] == "error"
    assert _reloads(router, "rejected") == 1


async def test_router_reload_reports_restart_only_settings(tmp_path):
    path = write(tmp_path / "router.json", config_data())
    router = Router(validated(config_data()), LIMITS, path)
    data = config_data()
    data["router"]["http"]["port"] = 9999
    write(path, data)

    result = await router.reload()

    assert result.applied
    assert result.restart_required == ["router.http.port"]
    assert router.config.router.http.port == 8080


async def test_router_reload_survives_failing_listener(tmp_path):
    path = write(tmp_path / "router.json", config_data())
    router = Router(validated(config_data()), LIMITS, path)

    def broken(old: Config, new: Config) -> None:
        raise RuntimeError("listener bug")

    router.reload_listeners.append(broken)

    with capture_logs() as logs:
        result = await router.reload()

    assert result.applied
    assert any(e["event"] == "router.listener_failed" for e in logs)


async def test_router_reload_without_file_is_rejected():
    router = Router(validated(config_data()), LIMITS)

    result = await router.reload()

    assert not result.applied
    assert result.errors


async def test_router_credentials_never_contain_secrets(tmp_path):
    data = config_data()
    data["credentials"][0]["outboundAuthenticationPlan"] = {
        "authUsername": "user",
        "authPassword": "trunk-password-value",
    }
    data["credentials"].append(
        {
            "id": "hook-a",
            "provider": "webhook",
            "name": "Webhook A",
            "authenticationPlan": {"type": "bearer", "token": "bearer-token-value"},
        }
    )
    router = Router(validated(data), LIMITS)

    text = json.dumps([router.credentials(), router.credential("hook-a")], default=str)

    assert "trunk-password-value" not in text
    assert "bearer-token-value" not in text
    assert "authUsername" in text
    assert router.credential("missing") is None


def _reloads(router: Router, result: str) -> float:
    value = router.registry.get_sample_value(
        "cozmox_router_config_reloads_total", {"result": result}
    )
    return value or 0.0
