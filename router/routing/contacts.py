"""The user part of the Contact that the router registers for each trunk.

A registering trunk's carrier sends calls to the registered Contact, so the
Request-URI user of such an INVITE is this contact user and the dialled
number is only in To. The contact user contains `~`, which no configured
number can contain (numbers match `^\\+?[a-zA-Z0-9]+$`), so it never matches
a number and the lookup falls back to To.
"""

from urllib.parse import quote, unquote

CONTACT_USER_PREFIX = "cozmox~"

# RFC 3261 section 25.1: `unreserved` characters may appear unescaped in a
# user part, and anything else in a trunk id is percent-encoded.
_USER_SAFE = "-_.!~*'()"


def registration_contact_user(trunk_id: str) -> str:
    """Return the contact user of `trunk_id`'s registration, escaped for a URI."""
    return CONTACT_USER_PREFIX + quote(trunk_id, safe=_USER_SAFE)


def contact_user_trunk_id(user: str | None) -> str | None:
    """Return the trunk id that a Request-URI user names, or None.

    `user` is a raw user part as `dialled_user()` returns it. Escapes are
    decoded once and user parameters (after `;`) are dropped, so a carrier
    that re-escapes `~` or appends `;npdi` still matches.
    """
    if not user:
        return None
    decoded = unquote(user.split(";", 1)[0])
    if not decoded.startswith(CONTACT_USER_PREFIX):
        return None
    trunk_id = decoded[len(CONTACT_USER_PREFIX) :]
    return trunk_id or None
