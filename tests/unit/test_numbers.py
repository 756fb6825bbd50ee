import pytest

from router.routing.numbers import dialled_user, normalize_number, number_key


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+14155550100", "+14155550100"),
        ("14155550100", "14155550100"),
        ("%2B14155550100", "+14155550100"),
        ("%2b14155550100", "+14155550100"),
        ("+1-415-555-0100", "+14155550100"),
        ("+1.415.555.0100", "+14155550100"),
        ("+1 (415) 555 0100", "+14155550100"),
        ("%2B1%20415%20555%200100", "+14155550100"),
        ("+14155550100;npdi", "+14155550100"),
        ("+14155550100;rn=+14155559999;npdi", "+14155550100"),
        ("5550100;phone-context=+1-415", "+14155550100"),
        ("%2B14155550100%3Bnpdi", "+14155550100"),
        ("alice", "alice"),
        ("Alice", "Alice"),
        ("", ""),
        (";npdi", ""),
    ],
)
def test_normalize_number_cases(raw, expected):
    assert normalize_number(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # RFC 3966: the global context's digits go before the local number.
        ("4155550100;phone-context=+1", "+14155550100"),
        ("5550100;phone-context=+1-415", "+14155550100"),
        ("555-0100;phone-context=+1 (415)", "+14155550100"),
        ("2079460000;phone-context=+44", "+442079460000"),
        ("5550100;Phone-Context=%2B1415", "+14155550100"),
        ("5550100;npdi;phone-context=+1415", "+14155550100"),
        # The country code written twice: once in the number, once as context.
        ("14155550100;phone-context=+1", "+14155550100"),
        ("442079460000;phone-context=+44", "+442079460000"),
        # A global number ignores any context.
        ("+14155550100;phone-context=+1", "+14155550100"),
        # A domain context has no digits to add: the local number stays.
        ("5550100;phone-context=example.com", "5550100"),
        ("5550100;phone-context=+", "5550100"),
        ("alice;phone-context=+1", "alice"),
        (";phone-context=+1", ""),
    ],
)
def test_normalize_number_phone_context(raw, expected):
    assert normalize_number(raw) == expected


def test_normalize_number_ignores_routing_number():
    # `rn` names the switch of a ported number, not the number dialled.
    raw = "+14155550100;npdi;rn=+14155559999"
    assert normalize_number(raw) == "+14155550100"


def test_normalize_number_decodes_only_once():
    # `%252B` is an escaped `%2B`: one decoding pass leaves `%2B`, not `+`.
    assert normalize_number("%252B14155550100") == "%2B14155550100"


def test_normalize_number_keeps_literal_plus():
    assert normalize_number("+1+2") == "+1+2"


def test_normalize_number_keeps_broken_escapes():
    assert normalize_number("%2G12%") == "%2G12%"


def test_normalize_number_decodes_multibyte_escape():
    assert normalize_number("%C3%A9") == "\u00e9"


def test_normalize_number_replaces_invalid_utf8():
    assert normalize_number("%FF1") == "\ufffd1"


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        ("+14155550100", "14155550100"),
        ("14155550100", "14155550100"),
        ("%2B1-415-555-0100;npdi", "14155550100"),
        ("+abc", "abc"),
        ("++1", "+1"),
        ("", ""),
    ],
)
def test_number_key_cases(number, expected):
    assert number_key(number) == expected


def test_number_key_ignores_leading_plus():
    assert number_key("+14155550100") == number_key("14155550100")


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sip:+14155550100@10.0.0.1", "+14155550100"),
        ("sips:+14155550100@10.0.0.1:5061", "+14155550100"),
        ("SIP:+14155550100@10.0.0.1", "+14155550100"),
        ("sip:+14155550100@10.0.0.1;user=phone", "+14155550100"),
        ("sip:+14155550100;npdi@10.0.0.1;user=phone", "+14155550100;npdi"),
        ("sip:%2B14155550100@10.0.0.1", "%2B14155550100"),
        ("sip:14155550100:secret@10.0.0.1", "14155550100"),
        ("sip:alice@example.com?Subject=hi", "alice"),
        ("<sip:+14155550100@10.0.0.1>", "+14155550100"),
        ("<sip:+14155550100@10.0.0.1>;tag=abc", "+14155550100"),
        ('"Bob" <sip:+14155550100@10.0.0.1>;tag=abc', "+14155550100"),
        ('"Bob <x@y>" <sip:+14155550100@10.0.0.1>', "+14155550100"),
        ('"Say \\"hi\\"" <sip:+14155550100@10.0.0.1>', "+14155550100"),
        ("Bob <sip:+14155550100@10.0.0.1>", "+14155550100"),
        ("  <sip:+14155550100@10.0.0.1>  ", "+14155550100"),
        ("sip:+14155550100@10.0.0.1;tag=abc", "+14155550100"),
        ("tel:+1-415-555-0100", "+1-415-555-0100"),
        ("TEL:+14155550100", "+14155550100"),
        ("tel:5550100;phone-context=+1-415", "5550100;phone-context=+1-415"),
        ("<tel:+14155550100>;tag=abc", "+14155550100"),
        ("sip:10.0.0.1", None),
        ("sip:@10.0.0.1", None),
        ("sip::secret@10.0.0.1", None),
        ("tel:", None),
        ("<tel:>", None),
        ("http://example.com/", None),
        ("mailto:alice@example.com", None),
        ("<http://alice@example.com>", None),
        ("+14155550100", None),
        ("", None),
        ("<sip:+14155550100@10.0.0.1", None),
        ('"unterminated <sip:+14155550100@10.0.0.1>', None),
    ],
)
def test_dialled_user_cases(uri, expected):
    assert dialled_user(uri) == expected


def test_dialled_user_rejects_non_string():
    assert dialled_user(None) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "uri",
    [
        "tel:+14155550100",
        "<tel:+1-415-555-0100>",
        "tel:+1.415.555.0100;isub=12",
        "sip:+14155550100;npdi;rn=+14155559999@10.0.0.1",
        "sip:14155550100;phone-context=+1@10.0.0.1",
        "sip:5550100;phone-context=+1-415@10.0.0.1;user=phone",
        "sip:+14155550100@10.0.0.1;user=phone",
        "tel:5550100;phone-context=+1415",
    ],
)
def test_uri_forms_of_one_number(uri):
    user = dialled_user(uri)
    assert user is not None
    assert normalize_number(user) == "+14155550100"


def test_dialled_user_then_normalize():
    user = dialled_user('"Bob" <sip:%2B1-415-555-0100;npdi@10.0.0.1>')
    assert user is not None
    assert normalize_number(user) == "+14155550100"
