import subprocess
import sys

import pytest

import router.routing
from router.config import Config, PhoneNumber
from router.errors import NumberActivating, NumberBlocked, RouterFault
from router.routing.decision import (
    INLINE_HEADER_VALUE,
    Route,
    check_status,
    static_route,
    webhook_server,
)

ORG_URL = "http://127.0.0.1:8090/org"
NUMBER_URL = "http://127.0.0.1:8090/number"

TRUNK = {
    "provider": "byo-sip-trunk",
    "id": "carrier-a",
    "name": "Carrier A",
    "gateways": [{"ip": "127.1.0.10"}],
}


def make_number(**fields):
    data = {"id": "n1", "credentialId": "carrier-a", "number": "+14155550100"}
    data.update(fields)
    return PhoneNumber.model_validate(data)


def make_config(org=None, numbers=()):
    data = {"credentials": [TRUNK], "phoneNumbers": list(numbers)}
    if org is not None:
        data["org"] = org
    return Config.model_validate(data)


def test_check_status_passes_active_number():
    assert check_status(make_number()) is None
    assert check_status(make_number(status="active")) is None


def test_check_status_rejects_blocked_number():
    with pytest.raises(NumberBlocked) as raised:
        check_status(make_number(status="blocked"))
    assert raised.value.sip_status == 403
    assert raised.value.detail == "number 'n1' is blocked"


def test_check_status_rejects_activating_number():
    with pytest.raises(NumberActivating) as raised:
        check_status(make_number(status="activating"))
    assert raised.value.sip_status == 480
    assert raised.value.retry_after_seconds == 300


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"assistantId": "asst-1"}, Route("assistant", id="asst-1")),
        ({"squadId": "squad-1"}, Route("squad", id="squad-1")),
        ({"workflowId": "wf-1"}, Route("workflow", id="wf-1")),
        ({}, None),
    ],
)
def test_static_route_cases(fields, expected):
    assert static_route(make_number(**fields)) == expected


def test_static_route_with_two_routes_is_a_fault():
    # load_config() rejects this number, so only a model built without the
    # config's cross-checks can reach static_route() with it.
    number = make_number(assistantId="asst-1", squadId="squad-1")
    with pytest.raises(RouterFault, match="assistant, squad"):
        static_route(number)


@pytest.mark.parametrize(
    ("route", "header_name", "header_value"),
    [
        (Route("assistant", id="asst-1"), "X-Cozmox-Assistant-Id", "asst-1"),
        (Route("squad", id="squad-1"), "X-Cozmox-Squad-Id", "squad-1"),
        (Route("workflow", id="wf-1"), "X-Cozmox-Workflow-Id", "wf-1"),
        (Route("assistant", inline={}), "X-Cozmox-Assistant-Id", "inline"),
        (Route("squad", inline={"members": []}), "X-Cozmox-Squad-Id", "inline"),
        (Route("workflow", inline={"nodes": []}), "X-Cozmox-Workflow-Id", "inline"),
    ],
)
def test_route_headers(route, header_name, header_value):
    assert route.header_name == header_name
    assert route.header_value == header_value


def test_inline_header_value_is_inline():
    assert INLINE_HEADER_VALUE == "inline"


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"id": "asst-1", "inline": {"name": "x"}},
    ],
)
def test_route_needs_id_or_inline(fields):
    with pytest.raises(ValueError, match="exactly one of id and inline"):
        Route("assistant", **fields)


def test_route_rejects_unknown_kind():
    with pytest.raises(ValueError, match="invalid route kind 'robot'"):
        Route("robot", id="r-1")  # type: ignore[arg-type]


def test_webhook_server_prefers_number_server():
    number = make_number(server={"url": NUMBER_URL})
    config = make_config(org={"server": {"url": ORG_URL}})
    server = webhook_server(number, config)
    assert server is not None
    assert server.url == NUMBER_URL


def test_webhook_server_falls_back_to_org_server():
    config = make_config(org={"server": {"url": ORG_URL}})
    server = webhook_server(make_number(), config)
    assert server is not None
    assert server.url == ORG_URL


@pytest.mark.parametrize("org", [None, {}])
def test_webhook_server_without_any_server(org):
    assert webhook_server(make_number(), make_config(org=org)) is None


@pytest.mark.parametrize("name", router.routing.__all__)
def test_routing_package_exports_name(name):
    assert getattr(router.routing, name) is not None


def test_routing_package_rejects_unknown_name():
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        router.routing.missing  # noqa: B018


@pytest.mark.parametrize(
    "statement",
    [
        "import router.errors",
        "import router.routing.table",
        "from router.routing import RoutingTable",
    ],
)
def test_import_order_has_no_cycle(statement):
    # A fresh interpreter, because this one has imported everything already.
    result = subprocess.run(
        [sys.executable, "-c", statement], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
