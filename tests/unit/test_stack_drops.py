"""Reading pjsip's log lines about received messages that it dropped."""

import pytest

from router.sip.stack_drops import DROP_REASONS, dropped_message_reason

# First lines of log entries as pjsip 2.15.1 wrote them, except the
# "Invalid URI" line: a made-up processing error of another kind.
LINES = [
    (
        "Dropping 439 bytes packet from UDP 127.0.0.1:56291 : PJSIP syntax "
        "error exception when parsing 'Content-Length' header on line 10 col 17",
        "syntax-error",
    ),
    (
        "Error processing packet from 127.0.0.1:49349: Missing required "
        "header(s) (PJSIP_EMISSINGHDR) Call-ID [code 171050]:",
        "missing-header",
    ),
    (
        "Error processing packet from 127.0.0.1:44692: Rx buffer overflow "
        "(PJSIP_ERXOVERFLOW)  [code 171062]:",
        "too-large",
    ),
    (
        "Error processing 52 bytes packet from UDP 127.0.0.1:5061 : "
        "Invalid URI (PJSIP_EINVALIDURI)",
        "unreadable",
    ),
    ("Field Content-Length not found!", None),
    ("Request msg FOO/cseq=1 was dropped/unhandled by any modules", None),
    ("pjsua_call.c Call 0: hanging up", None),
    ("", None),
]


@pytest.mark.parametrize(("line", "reason"), LINES)
def test_dropped_message_reason(line, reason):
    assert dropped_message_reason(line) == reason


def test_reasons_are_the_metric_labels():
    found = {dropped_message_reason(line) for line, _ in LINES} - {None}
    assert found == set(DROP_REASONS)
