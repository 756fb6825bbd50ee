"""Dialled numbers in the URI forms that carriers send, over real SIP.

SIPp sends the Request-URI and To URI as a test writes them, so pjsua2
parses each INVITE as it would a carrier's. Every form of +14155550100 must
reach the static assistant of `pn-static`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from call_helpers import HOLD_MS, StartRouter, ended_call
from harness import Daemon
from sipp_runner import SippRuntime, requires_sipp, run_sipp

pytestmark = [pytest.mark.integration, requires_sipp]

URI_CALLER = "uac-uri-expect-200.xml"


def call_with_uris(
    router: Daemon, ruri: str, to_uri: str, log_dir: Path, scenario: str = URI_CALLER
):
    """Place one call whose Request-URI and To URI are `ruri` and `to_uri`."""
    host = router.sip_target
    arguments = (
        "-key", "ruri", ruri.format(host=host),
        "-key", "to_uri", to_uri.format(host=host),
    )  # fmt: skip
    if scenario == URI_CALLER:
        arguments += ("-set", "hold", HOLD_MS)
    return run_sipp(scenario, host, "unused", arguments, timeout=20, log_dir=log_dir)


@pytest.mark.parametrize(
    ("ruri", "to_uri"),
    [
        pytest.param("tel:+14155550100", "tel:+14155550100", id="tel-both"),
        pytest.param("sip:carrier@{host}", "tel:+14155550100", id="tel-to-only"),
        pytest.param(
            "tel:+1-415-555-0100",
            "sip:+1.415.555.0100@{host}",
            id="tel-separators",
        ),
        pytest.param(
            "sip:+14155550100;npdi;rn=+14155559999@{host}",
            "sip:+14155550100@{host}",
            id="ported-rn",
        ),
        pytest.param(
            "sip:14155550100;phone-context=+1@{host}",
            "sip:14155550100;phone-context=+1@{host}",
            id="global-phone-context",
        ),
        pytest.param(
            "sip:5550100;phone-context=+1-415@{host};user=phone",
            "sip:5550100;phone-context=+1-415@{host};user=phone",
            id="area-code-context",
        ),
        pytest.param(
            "sip:+14155550100@{host};user=phone",
            "sip:+14155550100@{host};user=phone",
            id="user-phone",
        ),
    ],
)
def test_uri_form_reaches_static_assistant(
    router: Daemon, runtime: SippRuntime, tmp_path: Path, ruri: str, to_uri: str
) -> None:
    result = call_with_uris(router, ruri, to_uri, tmp_path)

    assert result.exit_code == 0, result.describe()
    assert result.final_status == 200
    (invite,) = runtime.wait_for_invites(1)
    assert invite.header("X-Cozmox-Phone-Number-Id") == "pn-static"
    assert invite.header("X-Cozmox-Assistant-Id") == "asst-support"
    ended = ended_call(router, call_id=invite.header("X-Cozmox-Call-Id"))
    assert ended["outcome"] == "assistant"


DOMAIN_CONTEXT = "sip:5550100;phone-context=example.com@{host};user=phone"


def test_domain_phone_context_unknown_gets_404(router: Daemon, tmp_path: Path) -> None:
    # A domain context cannot become a global number, so the local number
    # 5550100 is looked up as written, and no number of the config has it.
    result = call_with_uris(
        router, DOMAIN_CONTEXT, DOMAIN_CONTEXT, tmp_path, "uac-uri-expect-404.xml"
    )

    assert result.exit_code == 0, result.describe()
    assert result.final_status == 404
    ended = ended_call(router)
    assert ended["ended_reason"] == "call.start.error-get-phone-number"


def test_domain_phone_context_matches_local_number(
    start_router: StartRouter,
    router_config: dict[str, Any],
    runtime: SippRuntime,
    tmp_path: Path,
) -> None:
    router_config["phoneNumbers"].append(
        {
            "id": "pn-local",
            "provider": "byo-phone-number",
            "credentialId": "trunk-local",
            "number": "5550100",
            "numberE164CheckEnabled": False,
            "assistantId": "asst-local",
        }
    )
    router = start_router(router_config)

    result = call_with_uris(router, DOMAIN_CONTEXT, DOMAIN_CONTEXT, tmp_path)

    assert result.exit_code == 0, result.describe()
    (invite,) = runtime.wait_for_invites(1)
    assert invite.header("X-Cozmox-Phone-Number-Id") == "pn-local"
    assert invite.header("X-Cozmox-Assistant-Id") == "asst-local"
