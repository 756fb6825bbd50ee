import pytest

from router.config import Config
from router.errors import NumberNotFound, SourceNotAllowed
from router.routing.table import RoutingTable

# Every address is on loopback: the table is pure code, but no test should
# name a host outside this machine.
CONFIG = {
    "credentials": [
        {
            "provider": "byo-sip-trunk",
            "id": "carrier-a",
            "name": "Carrier A",
            "gateways": [
                {"ip": "127.1.0.10"},
                {"ip": "127.1.1.0", "netmask": 24},
                {"ip": "127.1.2.10", "inboundEnabled": False},
                {"ip": "sbc.carrier-a.invalid", "inboundEnabled": False},
            ],
        },
        {
            "provider": "byo-sip-trunk",
            "id": "carrier-b",
            "name": "Carrier B",
            # Shares 127.1.1.64/26 with carrier-a, as carriers' SBCs do.
            "gateways": [
                {"ip": "127.1.1.77", "netmask": 26},
                {"ip": "127.2.0.0", "netmask": 28},
            ],
        },
        {
            "provider": "byo-sip-trunk",
            "id": "Carrier-C",
            "name": "Carrier C",
            "gateways": [{"ip": "127.3.0.1"}],
        },
        {
            "provider": "webhook",
            "id": "hooks",
            "name": "Webhook signing",
            "authenticationPlan": {"type": "bearer", "token": "t0ken"},
        },
    ],
    "phoneNumbers": [
        {"id": "a-main", "credentialId": "carrier-a", "number": "+14155550100",
         "assistantId": "asst-a"},
        {"id": "a-shared", "credentialId": "carrier-a", "number": "+14155550199",
         "assistantId": "asst-a"},
        {"id": "b-main", "credentialId": "carrier-b", "number": "+14155550200",
         "assistantId": "asst-b"},
        {"id": "b-shared", "credentialId": "carrier-b", "number": "+14155550199",
         "assistantId": "asst-b"},
        {"id": "b-plain", "credentialId": "carrier-b", "number": "sales",
         "numberE164CheckEnabled": False, "assistantId": "asst-b"},
        {"id": "c-main", "credentialId": "Carrier-C", "number": "+14155550300",
         "assistantId": "asst-c"},
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def table():
    return RoutingTable.from_config(Config.model_validate(CONFIG))


def ids(trunks):
    return [trunk.id for trunk in trunks]


@pytest.mark.parametrize(
    ("src_ip", "expected"),
    [
        ("127.1.0.10", ["carrier-a"]),
        ("127.1.1.5", ["carrier-a"]),
        ("127.1.1.64", ["carrier-a", "carrier-b"]),
        ("127.1.1.77", ["carrier-a", "carrier-b"]),
        ("127.1.1.127", ["carrier-a", "carrier-b"]),
        ("127.1.1.128", ["carrier-a"]),
        ("127.2.0.15", ["carrier-b"]),
        ("127.3.0.1", ["Carrier-C"]),
        (" 127.1.0.10 ", ["carrier-a"]),
        ("::ffff:127.1.0.10", ["carrier-a"]),
        ("[::ffff:127.2.0.1]", ["carrier-b"]),
    ],
)
def test_match_trunks_by_source(table, src_ip, expected):
    assert ids(table.match_trunks(src_ip, None)) == expected


@pytest.mark.parametrize(
    "src_ip",
    [
        "127.1.0.11",  # next to a /32 gateway
        "127.1.2.10",  # inbound disabled
        "127.2.0.16",  # just past a /28
        "127.9.9.9",
        "::1",
        "::ffff:127.9.9.9",
        "",
        "localhost",
        "sbc.carrier-a.invalid",
        "127.1.0.10:5060",
        "127.1.0",
        "not an address",
    ],
)
def test_match_trunks_rejects_unknown_source(table, src_ip):
    with pytest.raises(SourceNotAllowed):
        table.match_trunks(src_ip, None)


def test_match_trunks_rejects_non_string_source(table):
    with pytest.raises(SourceNotAllowed):
        table.match_trunks(None, None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("src_ip", "ruri_host", "expected"),
    [
        ("127.1.1.77", "carrier-b.sip.example.invalid", ["carrier-b"]),
        ("127.1.1.77", "carrier-a.sip.example.invalid", ["carrier-a"]),
        ("127.1.1.77", "CARRIER-B.sip.example.invalid", ["carrier-b"]),
        ("127.1.1.77", "carrier-b.sip.example.invalid.", ["carrier-b"]),
        ("127.1.1.77", "carrier-b", ["carrier-b"]),
        ("127.3.0.1", "carrier-c.sip.example.invalid", ["Carrier-C"]),
        # A first label that is no trunk id selects nothing.
        ("127.1.1.77", "sip.example.invalid", ["carrier-a", "carrier-b"]),
        ("127.1.1.77", "carrier.sip.example.invalid", ["carrier-a", "carrier-b"]),
        # Only trunk ids count, not webhook credential ids.
        ("127.1.1.77", "hooks.example.invalid", ["carrier-a", "carrier-b"]),
        # An IP literal is not a DNS name.
        ("127.1.1.77", "127.0.0.1", ["carrier-a", "carrier-b"]),
        ("127.1.1.77", "[::1]", ["carrier-a", "carrier-b"]),
        ("127.1.1.77", "", ["carrier-a", "carrier-b"]),
        ("127.1.1.77", None, ["carrier-a", "carrier-b"]),
    ],
)
def test_match_trunks_by_request_uri_host(table, src_ip, ruri_host, expected):
    assert ids(table.match_trunks(src_ip, ruri_host)) == expected


@pytest.mark.parametrize(
    ("src_ip", "ruri_host"),
    [
        ("127.1.0.10", "carrier-b.sip.example.invalid"),
        ("127.2.0.1", "carrier-a.sip.example.invalid"),
        ("127.1.1.5", "carrier-b.sip.example.invalid"),
        ("127.1.1.77", "carrier-c.sip.example.invalid"),
    ],
)
def test_match_trunks_host_names_other_trunk(table, src_ip, ruri_host):
    with pytest.raises(SourceNotAllowed, match="Request-URI host"):
        table.match_trunks(src_ip, ruri_host)


def test_source_not_allowed_detail(table):
    with pytest.raises(SourceNotAllowed) as raised:
        table.match_trunks("127.9.9.9", None)
    assert raised.value.detail == "source 127.9.9.9 matches no inbound gateway"


@pytest.mark.parametrize(
    ("trunk_ids", "ruri_user", "to_user", "expected"),
    [
        (["carrier-a"], "+14155550100", None, "a-main"),
        (["carrier-a"], "14155550100", None, "a-main"),
        (["carrier-a"], "%2B1-415-555-0100;npdi", None, "a-main"),
        (["carrier-a"], "+1 (415) 555.0100;rn=+14155559999", None, "a-main"),
        # On a registration trunk the dialled number is only in To.
        (["carrier-a"], "router-contact", "+14155550100", "a-main"),
        (["carrier-a"], None, "14155550100", "a-main"),
        (["carrier-a"], "", "+14155550100", "a-main"),
        # The Request-URI user wins over To.
        (["carrier-a", "carrier-b"], "+14155550200", "+14155550100", "b-main"),
        # A number that only the To user names is still found.
        (["carrier-a", "carrier-b"], "+19999999999", "+14155550200", "b-main"),
        # A number on two matched trunks: the first of `trunks` wins.
        (["carrier-a", "carrier-b"], "+14155550199", None, "a-shared"),
        (["carrier-b", "carrier-a"], "+14155550199", None, "b-shared"),
        (["carrier-b"], "+14155550199", None, "b-shared"),
        # A plain number matches with or without '+' too.
        (["carrier-b"], "sales", None, "b-plain"),
        (["carrier-b"], "+sales", None, "b-plain"),
        (["Carrier-C"], "+14155550300", None, "c-main"),
    ],
)
def test_find_number_cases(table, trunk_ids, ruri_user, to_user, expected):
    config = Config.model_validate(CONFIG)
    trunks = [config.trunk(trunk_id) for trunk_id in trunk_ids]
    assert table.find_number(trunks, ruri_user, to_user).id == expected


@pytest.mark.parametrize(
    ("trunk_ids", "ruri_user", "to_user"),
    [
        # Only numbers of the matched trunks count.
        (["carrier-a"], "+14155550200", None),
        (["carrier-b"], "+14155550100", "+14155550100"),
        (["carrier-a"], "+14155550101", "+14155550102"),
        (["carrier-a"], None, None),
        (["carrier-a"], "", ""),
        (["carrier-a"], ";npdi", "---"),
        (["carrier-a"], "%2B%2B14155550100", None),
        (["carrier-b"], "SALES", None),
        ([], "+14155550100", None),
    ],
)
def test_find_number_not_found(table, trunk_ids, ruri_user, to_user):
    config = Config.model_validate(CONFIG)
    trunks = [config.trunk(trunk_id) for trunk_id in trunk_ids]
    with pytest.raises(NumberNotFound) as raised:
        table.find_number(trunks, ruri_user, to_user)
    assert raised.value.sip_status == 404


def test_match_then_find_on_shared_gateway(table):
    trunks = table.match_trunks("127.1.1.77", None)
    assert table.find_number(trunks, "+14155550200", None).id == "b-main"
    assert table.find_number(trunks, "+14155550100", None).id == "a-main"


def test_empty_table_rejects_source():
    table = RoutingTable.from_config(Config.model_validate({}))
    with pytest.raises(SourceNotAllowed):
        table.match_trunks("127.0.0.1", None)
