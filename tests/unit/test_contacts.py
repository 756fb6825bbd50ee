"""Registration contact users, and calls that arrive on a registration."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.config import Config
from router.errors import NumberNotFound
from router.routing.contacts import (
    contact_user_trunk_id,
    registration_contact_user,
)
from router.routing.numbers import number_key
from router.routing.table import RoutingTable

# What a configured number may look like (E.164 or not), from the config rules.
CONFIGURED_NUMBER = re.compile(r"^\+?[a-zA-Z0-9]+$")


def registering_trunk(trunk_id: str) -> dict:
    return {
        "provider": "byo-sip-trunk",
        "id": trunk_id,
        "name": trunk_id,
        "gateways": [{"ip": "127.0.0.1", "port": 5080}],
        "outboundAuthenticationPlan": {
            "authUsername": "14155550100",
            "authPassword": "inline-password",
            "sipRegisterPlan": {},
        },
    }


# Both trunks register through the same carrier address and both hold the
# number +14155550199, as two accounts of one carrier can.
CONFIG = {
    "credentials": [
        registering_trunk("reg-a"),
        registering_trunk("reg-b"),
        {
            "provider": "byo-sip-trunk",
            "id": "plain",
            "name": "plain",
            "gateways": [{"ip": "127.0.0.1"}],
        },
    ],
    "phoneNumbers": [
        {"id": "a-main", "credentialId": "reg-a", "number": "+14155550100"},
        {"id": "a-shared", "credentialId": "reg-a", "number": "+14155550199"},
        {"id": "b-shared", "credentialId": "reg-b", "number": "+14155550199"},
        {"id": "plain-shared", "credentialId": "plain", "number": "+14155550199"},
        {"id": "plain-word", "credentialId": "plain", "number": "cozmox",
         "numberE164CheckEnabled": False},
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def config():
    return Config.model_validate(CONFIG)


@pytest.fixture(scope="module")
def table(config):
    return RoutingTable.from_config(config)


@pytest.mark.parametrize(
    ("trunk_id", "user"),
    [
        ("reg-a", "cozmox~reg-a"),
        ("Trunk_1.x", "cozmox~Trunk_1.x"),
        ("a b@c;d", "cozmox~a%20b%40c%3Bd"),
        ("ünï", "cozmox~%C3%BCn%C3%AF"),
        ("50%", "cozmox~50%25"),
    ],
)
def test_contact_user_round_trip(trunk_id, user):
    assert registration_contact_user(trunk_id) == user
    assert contact_user_trunk_id(user) == trunk_id


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("cozmox%7Ereg-a", "reg-a"),
        ("cozmox~reg-a;npdi", "reg-a"),
        ("cozmox~", None),
        ("cozmox", None),
        ("+14155550100", None),
        ("", None),
        (None, None),
    ],
)
def test_contact_user_trunk_id_cases(user, expected):
    assert contact_user_trunk_id(user) == expected


@given(st.text(min_size=1, max_size=60))
def test_contact_user_never_matches_a_number(trunk_id):
    key = number_key(registration_contact_user(trunk_id))

    assert not CONFIGURED_NUMBER.match(key)


def test_number_comes_from_to_on_registration(table, config):
    trunks = config.trunks()

    number = table.find_number(trunks, "cozmox~reg-a", "+14155550100")

    assert number.id == "a-main"


def test_contact_user_picks_its_trunk(table, config):
    trunks = config.trunks()

    for trunk_id, expected in (("reg-a", "a-shared"), ("reg-b", "b-shared")):
        user = registration_contact_user(trunk_id)
        number = table.find_number(trunks, user, "+14155550199")
        assert number.id == expected


def test_contact_user_limits_numbers_to_its_trunk(table, config):
    trunks = config.trunks()

    with pytest.raises(NumberNotFound):
        table.find_number(trunks, "cozmox~reg-b", "+14155550100")


def test_contact_user_of_unmatched_trunk_is_ignored(table, config):
    trunks = [config.trunk("plain")]

    number = table.find_number(trunks, "cozmox~reg-a", "+14155550199")

    assert number.id == "plain-shared"


def test_contact_user_of_plain_trunk_is_ignored(table, config):
    trunks = config.trunks()

    number = table.find_number(trunks, "cozmox~plain", "+14155550199")

    assert number.id == "a-shared"


def test_contact_user_never_matches_word_number(table, config):
    trunks = [config.trunk("plain")]

    with pytest.raises(NumberNotFound):
        table.find_number(trunks, "cozmox~plain", None)
