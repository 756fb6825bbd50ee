"""Dialled numbers: extraction from SIP and tel URIs, and normalisation.

Carriers write the same number in many ways: `+14155550100`,
`%2B1-415-555-0100;npdi`, `<tel:+1.415.555.0100>`. Everything here reduces
those to one form and returns None or an empty string for junk, never raises.
"""

import re

import phonenumbers

_PERCENT_ESCAPES = re.compile(r"(?:%[0-9A-Fa-f]{2})+")

# RFC 3966 visual separators plus the space that some carriers send.
_VISUAL_SEPARATORS = str.maketrans("", "", "-.() ")

_URI_SCHEMES = ("sip:", "sips:", "tel:")

_LOCAL_DIGITS = re.compile(r"[0-9]+")
# RFC 3966 global-number-digits: `+`, then digits and visual separators
# (with the space, as in `_VISUAL_SEPARATORS`).
_GLOBAL_CONTEXT = re.compile(r"\+[0-9\-.() ]*[0-9][0-9\-.() ]*")


def normalize_number(raw: str) -> str:
    """Reduce a dialled number to the form that numbers are compared in.

    Percent-escapes are decoded once, so `%2B` becomes `+` while a literal `+`
    stays (a `+` in a SIP URI is never a space). User-part parameters, from
    the first `;`, are dropped: `;npdi`, `;rn=...` and the rest. `rn` is the
    routing number of a ported number, which names the switch that serves
    it, so the dialled number before it is the one configured. Visual
    separators (`-`, `.`, `(`, `)`, space) are removed. Case is kept, because
    the SIP user part is case-sensitive.

    A local number with a global `;phone-context=+...` becomes a global
    number (RFC 3966 section 5.1.5), see `_with_global_context()`. A context
    that is a domain name cannot be turned into digits, so the local number
    comes back alone.
    """
    decoded = _PERCENT_ESCAPES.sub(_decode_escapes, raw)
    number, _, parameters = decoded.partition(";")
    number = number.translate(_VISUAL_SEPARATORS)
    context = _global_phone_context(parameters)
    if context is None or not _LOCAL_DIGITS.fullmatch(number):
        return number
    return _with_global_context(number, context)


def number_key(number: str) -> str:
    """Return the key that a dialled or configured number is matched by.

    The key is the normalised number without its leading `+`, so an E.164
    number matches with or without it. The `+` is dropped for every number,
    not only E.164 ones, so two configured numbers that differ only by a
    leading `+` have the same key.
    """
    return normalize_number(number).removeprefix("+")


def dialled_user(uri: str) -> str | None:
    """Return the user part of a `sip:` or `sips:` URI, or a `tel:` number.

    `uri` is a Request-URI or a From or To header value: a bare URI or a
    name-addr with a display name and angle brackets, with or without URI
    parameters, URI headers and header parameters. The user part comes back
    as written, escapes and user parameters included, for
    `normalize_number()` to clean. Returns None for another scheme, a URI
    without a user part, or text that is not a URI at all.
    """
    if not isinstance(uri, str):
        return None

    address = _addr_spec(uri.strip())
    if address is None:
        return None

    lowered = address.lower()
    if lowered.startswith("tel:"):
        return _tel_number(address[len("tel:") :])
    for scheme in ("sip:", "sips:"):
        if lowered.startswith(scheme):
            return _sip_user(address[len(scheme) :])
    return None


def uri_host(uri: str) -> str | None:
    """Return the host of a SIP URI, without port, or None for other URIs."""
    scheme, _, rest = uri.partition(":")
    if scheme.lower() not in ("sip", "sips"):
        return None
    host = rest.rpartition("@")[2]
    for stop in (";", "?", ">"):
        host = host.split(stop, 1)[0]
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _global_phone_context(parameters: str) -> str | None:
    """Return the digits of a global `phone-context` parameter, or None."""
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() != "phone-context":
            continue
        value = value.strip()
        if _GLOBAL_CONTEXT.fullmatch(value):
            return value[1:].translate(_VISUAL_SEPARATORS)
        return None
    return None


def _with_global_context(local: str, context: str) -> str:
    """Prefix a local number with the digits of its global phone-context.

    RFC 3966 puts the context's digits before the local number, so
    `5550100;phone-context=+1415` is `+14155550100`. Some carriers send the
    whole number with its country code as the local number and the country
    code again as the context (`14155550100;phone-context=+1`). When the
    prefixed number is not a plain possible E.164 number but the local
    number starts with the context and is one on its own, that reading is
    taken: `+14155550100`, not `+114155550100`.
    """
    combined = f"+{context}{local}"
    if local.startswith(context) and not _is_possible_e164(combined):
        repeated = f"+{local}"
        if _is_possible_e164(repeated):
            return repeated
    return combined


def _is_possible_e164(number: str) -> bool:
    # phonenumbers drops a national prefix written after the country code
    # (`+1 1 415...` parses as +1 415...), so a number that it had to
    # rewrite is not taken as written.
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return False
    formatted = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return formatted == number and phonenumbers.is_possible_number(parsed)


def _decode_escapes(match: re.Match[str]) -> str:
    # A run of escapes is decoded as one UTF-8 sequence, so a multi-byte
    # character split over several escapes comes back whole.
    hex_digits = match.group().replace("%", "")
    return bytes.fromhex(hex_digits).decode("utf-8", errors="replace")


def _addr_spec(value: str) -> str | None:
    """Return the URI inside a name-addr, or `value` itself for a bare URI."""
    rest = value
    if rest.startswith('"'):
        closing = _closing_quote(rest)
        if closing is None:
            return None
        rest = rest[closing + 1 :]

    opening = rest.find("<")
    if opening == -1:
        if not rest.lower().startswith(_URI_SCHEMES):
            return None
        return rest

    closing = rest.find(">", opening)
    if closing == -1:
        return None
    return rest[opening + 1 : closing].strip()


def _closing_quote(value: str) -> int | None:
    """Return the index of the `"` that ends the quoted string at index 0."""
    index = 1
    while index < len(value):
        char = value[index]
        if char == "\\":
            index += 2
            continue
        if char == '"':
            return index
        index += 1
    return None


def _sip_user(rest: str) -> str | None:
    # RFC 3261 section 19.1.1: `userinfo` ends at the first `@` and may hold
    # `user:password`. The user part itself may contain `;`, `?` and `/`, so
    # it cannot be cut at URI parameters or headers before the `@` is found.
    userinfo, separator, _host = rest.partition("@")
    if not separator:
        return None

    user = userinfo.split(":", 1)[0]
    return user or None


def _tel_number(rest: str) -> str | None:
    # A tel URI (RFC 3966) has no host: the telephone-subscriber is the whole
    # URI, parameters included. A bare tel URI in a To header may be followed
    # by header parameters, which `normalize_number()` drops with the rest.
    number = rest.strip()
    return number or None
