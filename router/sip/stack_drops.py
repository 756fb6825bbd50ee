"""Recognise the pjsip log lines that report a received message it dropped.

pjsip parses every packet before pjsua2 receives it, and it drops a
message that it cannot parse without a response and without any callback.
Its log is the only trace, so the router reads the log lines to count the
drops. The texts are those that pjproject 2.15.1 logged in the tests of
tests/integration/test_malformed_sip.py.
"""

from __future__ import annotations

import re

# Values of the `reason` label of sip_messages_dropped_total.
DROP_REASONS = ("syntax-error", "missing-header", "too-large", "unreadable")

# A syntax error, logged at level 2: "Dropping 439 bytes packet from UDP
# 127.0.0.1:5061 : PJSIP syntax error exception when parsing 'From' ..."
_SYNTAX_ERROR = re.compile(r"^Dropping \d+ bytes packet from ")
# Logged at level 1: "Error processing packet from 127.0.0.1:5061: <error>".
_PROCESSING_ERROR = re.compile(r"^Error processing (?:\d+ bytes )?packet from ")


def dropped_message_reason(text: str) -> str | None:
    """Return why pjsip dropped a received message, or None.

    `text` is the first line of one pjsip log entry. Returns one of
    `DROP_REASONS`, or None when the line reports no dropped message.
    """
    if _SYNTAX_ERROR.match(text):
        return "syntax-error"
    if not _PROCESSING_ERROR.match(text):
        return None
    if "PJSIP_EMISSINGHDR" in text:
        return "missing-header"
    # A TCP message that does not fit the packet buffer
    # (PJSIP_MAX_PKT_LEN), logged once for each buffer full.
    if "PJSIP_ERXOVERFLOW" in text:
        return "too-large"
    return "unreadable"
