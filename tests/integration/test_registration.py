"""The daemon registers with SIPp registrars on 127.0.0.1.

Each test runs one `uas-register-*.xml` scenario as the trunk's registrar
and checks what the registrar received, `/readyz` and the metrics. The
registrar grants short expiries and the retry delays are 1 to 2 s, so
refreshes and retries come within seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import (
    LOOPBACK,
    REPO_ROOT,
    Daemon,
    DaemonStartFailed,
    _wait_until_ready,
)
from sipp_registrar import RegisterLine, SippRegistrar
from sipp_runner import SippRuntime, requires_sipp, run_sipp, start_sipp

from router.sip.options import GatewayTarget, send_options

pytestmark = [pytest.mark.integration, requires_sipp]

TRUNK = "trunk-reg"
CONTACT_USER = "cozmox~trunk-reg"
NUMBER = "+14155550111"
USER = "alice"
PASSWORD = "registrar-secret-1"
# The router requests 30 s and the registrars grant 4 s, so the router
# refreshes every 2 s while each REGISTER still requests 30 s.
SETTINGS = {"expiresSeconds": 30, "retryMinSeconds": 1, "retryMaxSeconds": 2}
GRANTED_SECONDS = "4"

StartRouter = Callable[[dict[str, Any]], Daemon]


@pytest.fixture
def registrars(tmp_path: Path) -> Iterator[Callable[..., SippRegistrar]]:
    """Return a function that starts a registrar. All of them stop at teardown.

    Tests request this fixture before `start_router`, so the daemons stop
    first and their un-REGISTERs still reach the registrar.
    """
    started: list[SippRegistrar] = []

    def start(scenario: str, password: str = PASSWORD, **keys: str) -> SippRegistrar:
        keys = {"user": USER, "pass": password, "expires": GRANTED_SECONDS, **keys}
        registrar = SippRegistrar(scenario, tmp_path, keys)
        started.append(registrar)
        return registrar

    yield start
    for registrar in started:
        registrar.stop()


def register_config(
    config: dict[str, Any],
    registrar: SippRegistrar,
    *,
    password: str = PASSWORD,
    plan: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    ping: bool = False,
) -> dict[str, Any]:
    """Add the registering trunk `trunk-reg`, whose registrar is `registrar`."""
    config["router"]["registration"] = settings or SETTINGS
    config["credentials"].append(
        {
            "id": TRUNK,
            "provider": "byo-sip-trunk",
            "name": "Registering carrier",
            "gateways": [
                {"ip": LOOPBACK, "port": registrar.port, "optionsPingEnabled": ping}
            ],
            "outboundAuthenticationPlan": {
                "authUsername": USER,
                "authPassword": password,
                "sipRegisterPlan": plan or {},
            },
        }
    )
    config["phoneNumbers"].append(
        {
            "id": "pn-registered",
            "provider": "byo-phone-number",
            "credentialId": TRUNK,
            "number": NUMBER,
            "assistantId": "asst-registered",
        }
    )
    return config


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.05)


def registration_state(router: Daemon) -> str | None:
    _, body = router.get_json("/readyz")
    return body.get("registrations", {}).get(TRUNK)


def wait_for_state(router: Daemon, state: str, timeout: float = 10) -> None:
    wait_for(
        lambda: registration_state(router) == state,
        timeout,
        f"registration state {state!r} (now {registration_state(router)!r})",
    )


def metric(router: Daemon, name: str, **labels: str) -> float:
    return router.metrics().value(f"cozmox_router_{name}", trunk=TRUNK, **labels)


def attempts(registers: list[RegisterLine]) -> list[list[RegisterLine]]:
    """Group REGISTERs by Call-ID, in the order the Call-IDs appeared."""
    groups: dict[str, list[RegisterLine]] = {}
    for register in registers:
        groups.setdefault(register.call_id, []).append(register)
    return list(groups.values())


def digest_parameters(header: str) -> dict[str, str]:
    pairs = re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]+))', header)
    return {name: quoted or bare for name, quoted, bare in pairs}


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # noqa: S324 - SIP digest


# ----- challenges ------------------------------------------------------------------


def test_plain_challenge_registers_and_refreshes(
    registrars, start_router: StartRouter, router_config
):
    registrar = registrars("uas-register-401-expect-auth.xml")
    router = start_router(register_config(router_config, registrar))

    # The registration, then two refreshes: each one challenged, then 200.
    registers = registrar.wait_for_registers(
        lambda found: len(found) >= 6, timeout=10, what="two refreshes"
    )
    wait_for_state(router, "registered")

    assert len({r.call_id for r in registers}) == 1
    cseqs = [r.cseq for r in registers]
    assert cseqs == sorted(set(cseqs))
    assert {r.expires for r in registers} == {30}
    assert {r.contact for r in registers} == {
        f"<sip:{CONTACT_USER}@{router.sip_target}>"
    }
    requests = [m for m in registrar.messages() if m.method == "REGISTER"]
    assert requests[0].header("Authorization") is None
    assert "sip:alice@127.0.0.1" in requests[0].header("To")
    assert "sip:alice@127.0.0.1" in requests[0].header("From")
    authorization = digest_parameters(requests[1].header("Authorization"))
    assert authorization["username"] == USER
    assert authorization["realm"] == "lab.local"

    assert metric(router, "registration_state") == 1
    assert metric(router, "registration_last_status_code") == 200
    assert metric(router, "registration_consecutive_failures") == 0
    assert 0 < metric(router, "registration_expires_seconds") <= 4
    assert metric(router, "registration_attempts_total", result="registered") >= 3
    assert PASSWORD not in router.stderr_text()


def test_contact_uses_public_host(registrars, start_router: StartRouter, router_config):
    registrar = registrars("uas-register-401-expect-auth.xml")
    router_config["router"]["sip"]["publicHost"] = "localhost"
    router = start_router(register_config(router_config, registrar))

    wait_for_state(router, "registered")

    contact = registrar.registers()[0].contact
    assert contact == f"<sip:{CONTACT_USER}@localhost:{router.sip_port}>"


def test_proxy_challenge_picks_qop_auth(
    registrars, start_router: StartRouter, router_config
):
    registrar = registrars("uas-register-407-qop-expect-auth.xml")
    router = start_router(register_config(router_config, registrar))

    wait_for_state(router, "registered")

    challenge = next(m for m in registrar.messages() if m.status == 407)
    offered = challenge.header("Proxy-Authenticate")
    assert 'qop="auth,auth-int"' in offered
    request = next(
        m for m in registrar.messages() if m.header("Proxy-Authorization") is not None
    )
    answer = digest_parameters(request.header("Proxy-Authorization"))
    assert answer["qop"] == "auth"
    assert answer["opaque"] == "5ccf0a9e"
    assert answer["realm"] == "proxy.lab.local"
    assert answer["username"] == USER
    # SIPp's verifyauth reads only Authorization, so the digest is checked here.
    ha1 = md5(f"{USER}:{answer['realm']}:{PASSWORD}")
    ha2 = md5(f"REGISTER:{answer['uri']}")
    expected = md5(
        f"{ha1}:{answer['nonce']}:{answer['nc']}:{answer['cnonce']}:auth:{ha2}"
    )
    assert answer["response"] == expected


def test_new_nonce_at_each_refresh_stays_registered(
    registrars, start_router: StartRouter, router_config
):
    registrar = registrars("uas-register-new-nonce-expect-auth.xml")
    router = start_router(register_config(router_config, registrar))

    registers = registrar.wait_for_registers(
        lambda found: len(found) >= 6, timeout=10, what="two refreshes"
    )
    wait_for_state(router, "registered")

    answered = [r.fields["answered"] for r in registers if r.fields["answered"]]
    assert len(answered) >= 3
    assert len(set(answered)) == len(answered)
    assert metric(router, "registration_attempts_total", result="auth-failed") == 0
    assert metric(router, "registration_consecutive_failures") == 0


def test_wrong_password_fails_and_waits_the_cap(
    registrars, start_router: StartRouter, router_config
):
    registrar = registrars("uas-register-401-expect-auth.xml")
    config = register_config(router_config, registrar, password="wrong-password-1")
    router = start_router(config)

    wait_for_state(router, "failed")
    failed_at = time.monotonic()

    (first,) = attempts(registrar.registers())
    assert len(first) == 2
    assert metric(router, "registration_attempts_total", result="auth-failed") == 1
    assert metric(router, "registration_last_status_code") == 401
    assert metric(router, "registration_consecutive_failures") == 1
    assert metric(router, "registration_retry_delay_seconds") >= 2
    registers = registrar.wait_for_registers(
        lambda found: len(attempts(found)) >= 2, timeout=6, what="a second attempt"
    )
    assert time.monotonic() - failed_at >= 1.5
    assert len(attempts(registers)) == 2
    assert "wrong-password-1" not in router.stderr_text()


def test_forbidden_fails_and_waits_the_cap(
    registrars, start_router: StartRouter, router_config
):
    registrar = registrars("uas-register-403.xml")
    router = start_router(register_config(router_config, registrar))

    wait_for_state(router, "failed")
    failed_at = time.monotonic()

    assert metric(router, "registration_attempts_total", result="forbidden") == 1
    assert metric(router, "registration_last_status_code") == 403
    assert metric(router, "registration_retry_delay_seconds") >= 2
    registrar.wait_for_registers(
        lambda found: len(attempts(found)) >= 2, timeout=6, what="a second attempt"
    )
    assert time.monotonic() - failed_at >= 1.5


# ----- expiry ----------------------------------------------------------------------


def test_min_expires_is_used_and_kept(
    registrars, start_router: StartRouter, router_config
):
    registrar = registrars("uas-register-423-expect-min-expires.xml")
    settings = {**SETTINGS, "expiresSeconds": 20}
    router = start_router(register_config(router_config, registrar, settings=settings))

    # 20 (423), 60 (401), 60 (200), then a refresh: 60 (401), 60 (200).
    registers = registrar.wait_for_registers(
        lambda found: len(found) >= 5, timeout=10, what="a refresh"
    )
    wait_for_state(router, "registered")

    assert [r.expires for r in registers[:5]] == [20, 60, 60, 60, 60]
    assert len({r.call_id for r in registers}) == 1
    too_brief = next(m for m in registrar.messages() if m.status == 423)
    assert too_brief.header("Min-Expires") == "60"


# ----- recovery --------------------------------------------------------------------


def test_silent_registrar_recovers_with_backoff(
    registrars, start_router: StartRouter, router_config
):
    registrar = registrars("uas-register-silent-then-503-expect-auth.xml")
    settings = {**SETTINGS, "retryMaxSeconds": 4}
    router = start_router(register_config(router_config, registrar, settings=settings))

    # pjsua gives up on the silent first attempt after Timer F (32 s), then
    # two 503s come before the registrar accepts the fourth attempt.
    delays: list[float] = []
    deadline = time.monotonic() + 60
    while registration_state(router) != "registered":
        assert time.monotonic() < deadline, f"not registered; retry delays {delays}"
        delay = metric(router, "registration_retry_delay_seconds")
        if delay and (not delays or delay != delays[-1]):
            delays.append(delay)
        time.sleep(0.05)

    assert len(delays) == 3, delays
    for delay, base in zip(delays, (1, 2, 4), strict=True):
        assert base * 0.8 <= delay <= base, delays
    assert metric(router, "registration_attempts_total", result="timeout") == 1
    assert metric(router, "registration_attempts_total", result="server-error") == 2
    assert metric(router, "registration_consecutive_failures") == 0
    assert metric(router, "registration_retry_delay_seconds") == 0
    groups = attempts(registrar.registers())
    assert len(groups) == 4
    # SIPp logs a request once, but traces each UDP retransmission of it.
    silent_call_id = groups[0][0].call_id
    sent = [
        m
        for m in registrar.messages()
        if m.method == "REGISTER" and m.header("Call-ID") == silent_call_id
    ]
    assert len(sent) > 1


# ----- shutdown --------------------------------------------------------------------


def test_shutdown_unregisters(registrars, start_router: StartRouter, router_config):
    registrar = registrars("uas-register-401-expect-auth.xml")
    router = start_router(register_config(router_config, registrar))
    wait_for_state(router, "registered")

    assert router.stop() == 0

    registers = registrar.registers()
    assert [r.expires for r in registers[-2:]] == [0, 0]
    assert len({r.call_id for r in registers}) == 1
    last_response = [m for m in registrar.messages() if m.status is not None][-1]
    assert last_response.status == 200
    assert router.events("registration.unregistered", trunk=TRUNK)


def test_shutdown_waits_briefly_for_unregister(
    registrars, start_router: StartRouter, router_config
):
    registrar = registrars("uas-register-ignore-unregister.xml")
    router = start_router(register_config(router_config, registrar))
    wait_for_state(router, "registered")

    started = time.monotonic()
    assert router.stop() == 0
    elapsed = time.monotonic() - started

    assert elapsed < 6
    assert registrar.registers()[-1].expires == 0
    assert router.events("registration.unregister_timed_out")


# ----- calls and pings -------------------------------------------------------------


def test_call_on_registration_reaches_assistant(
    registrars,
    start_router: StartRouter,
    router_config,
    runtime: SippRuntime,
    tmp_path: Path,
):
    registrar = registrars("uas-register-401-expect-auth.xml")
    # The carrier's domain is `localhost`, the To host of the call, so pjsua
    # puts the call on the trunk's own account.
    plan = {"domain": f"localhost:{registrar.port}"}
    router = start_router(register_config(router_config, registrar, plan=plan))
    wait_for_state(router, "registered")
    assert registrar.registers()[0].contact == (
        f"<sip:{CONTACT_USER}@{router.sip_target}>"
    )

    result = run_sipp(
        "uac-registered-contact-expect-200.xml",
        router.sip_target,
        CONTACT_USER,
        (
            "-key",
            "dialled",
            NUMBER,
            "-key",
            "to_host",
            "localhost",
            "-set",
            "hold",
            "300",
        ),
        timeout=20,
        log_dir=tmp_path,
    )

    assert result.exit_code == 0, result.describe()
    assert result.final_status == 200
    (invite,) = runtime.wait_for_invites(1)
    assert invite.header("X-Cozmox-Assistant-Id") == "asst-registered"
    assert invite.header("X-Cozmox-Phone-Number-Id") == "pn-registered"
    ended = router.wait_for_event(
        "call.ended", call_id=invite.header("X-Cozmox-Call-Id")
    )
    assert ended["outcome"] == "assistant"
    assert ended["trunk"] == TRUNK


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_router_answers_options(router: Daemon, transport: str):
    target = GatewayTarget("router", LOOPBACK, router.sip_port, transport)

    status = asyncio.run(send_options(target, "ping@test", 1, local_host=LOOPBACK))

    assert status == 200


def test_gateway_ping_marks_gateway_up(
    registrars, start_router: StartRouter, router_config
):
    registrar = registrars("uas-register-401-expect-auth.xml")
    router = start_router(register_config(router_config, registrar, ping=True))

    def gateways() -> dict:
        return router.get_json("/readyz")[1].get("gateways", {})

    wait_for(
        lambda: gateways() == {TRUNK: {registrar.address: "up"}},
        timeout=10,
        what="gateway up",
    )
    labels = {"gateway": registrar.address}
    assert metric(router, "gateway_up", **labels) == 1
    pings = metric(router, "gateway_options_pings_total", result="answered", **labels)
    assert pings >= 1


# ----- limits ----------------------------------------------------------------------


def test_too_many_registering_trunks_refused(start_router: StartRouter, router_config):
    for index in range(8):
        router_config["credentials"].append(
            {
                "id": f"trunk-{index}",
                "provider": "byo-sip-trunk",
                "name": f"Trunk {index}",
                "gateways": [{"ip": LOOPBACK, "port": 9, "inboundEnabled": False}],
                "outboundAuthenticationPlan": {
                    "authUsername": USER,
                    "authPassword": PASSWORD,
                    "sipRegisterPlan": {},
                },
            }
        )

    with pytest.raises(DaemonStartFailed) as failure:
        start_router(router_config)

    message = str(failure.value)
    assert "8 trunks have a sipRegisterPlan" in message
    assert "registers at most 6" in message


# ----- reload --------------------------------------------------------------------


def trunk_for(registrar: SippRegistrar, trunk_id: str, password: str) -> dict:
    return {
        "id": trunk_id,
        "provider": "byo-sip-trunk",
        "name": trunk_id,
        "gateways": [{"ip": LOOPBACK, "port": registrar.port}],
        "outboundAuthenticationPlan": {
            "authUsername": USER,
            "authPassword": password,
            "sipRegisterPlan": {},
        },
    }


def start_driver(first: dict, second: dict, directory: Path) -> Daemon:
    """Start `apply_driver.py` on `first`; SIGUSR1 applies `second`'s trunks."""
    first_path, second_path = directory / "first.json", directory / "second.json"
    first_path.write_text(json.dumps(first))
    second_path.write_text(json.dumps(second))
    stderr_path = directory / "driver.stderr"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("apply_driver.py")),
                str(first_path),
                str(second_path),
            ],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    router = Daemon(process, first, first_path, stderr_path)
    try:
        _wait_until_ready(router)
    except DaemonStartFailed:
        router.stop()
        raise
    return router


def test_apply_changes_only_changed_trunks(registrars, router_config, tmp_path: Path):
    scenario = "uas-register-401-expect-auth.xml"
    kept, changed, removed, added = (
        registrars(scenario),
        registrars(scenario, password="new-password-2"),
        registrars(scenario),
        registrars(scenario),
    )
    router_config["router"]["registration"] = SETTINGS
    base = list(router_config["credentials"])
    first = {
        **router_config,
        "credentials": [
            *base,
            trunk_for(kept, "trunk-kept", PASSWORD),
            trunk_for(changed, "trunk-changed", PASSWORD),
            trunk_for(removed, "trunk-removed", PASSWORD),
        ],
    }
    second = {
        **router_config,
        "credentials": [
            *base,
            trunk_for(kept, "trunk-kept", PASSWORD),
            trunk_for(changed, "trunk-changed", "new-password-2"),
            trunk_for(added, "trunk-added", PASSWORD),
        ],
    }
    router = start_driver(first, second, tmp_path)

    def states() -> dict:
        return router.get_json("/readyz")[1].get("registrations", {})

    try:
        wait_for(
            lambda: (
                states()
                == {
                    "trunk-kept": "registered",
                    "trunk-changed": "failed",
                    "trunk-removed": "registered",
                }
            ),
            timeout=10,
            what=f"the first registrations (now {states()})",
        )
        kept_call_ids = {r.call_id for r in kept.registers()}

        router.process.send_signal(signal.SIGUSR1)

        applied = router.wait_for_event("test.applied", timeout=5)
        assert applied["added"] == ["trunk-added"]
        assert applied["removed"] == ["trunk-removed"]
        assert applied["changed"] == ["trunk-changed"]
        assert applied["unchanged"] == ["trunk-kept"]
        wait_for(
            lambda: (
                states()
                == {
                    "trunk-kept": "registered",
                    "trunk-changed": "registered",
                    "trunk-added": "registered",
                }
            ),
            timeout=10,
            what=f"the second registrations (now {states()})",
        )
        removed.wait_for_registers(
            lambda found: found[-1].expires == 0, timeout=5, what="an un-REGISTER"
        )
        assert {r.call_id for r in kept.registers()} == kept_call_ids
        samples = router.metrics().labels("cozmox_router_registration_state")
        assert {"trunk": "trunk-removed"} not in samples
    finally:
        assert router.stop() == 0


def test_removed_trunk_leaves_its_call_up(
    registrars, router_config, runtime: SippRuntime, tmp_path: Path
):
    registrar = registrars("uas-register-401-expect-auth.xml")
    # `localhost` is the To host of the call, which pjsua would match to the
    # trunk's account; the router puts every inbound call on its own local
    # account instead, so removing the trunk leaves the call alone.
    plan = {"domain": f"localhost:{registrar.port}"}
    first = register_config(router_config, registrar, plan=plan)
    second = json.loads(json.dumps(first))
    second["credentials"] = [c for c in second["credentials"] if c["id"] != TRUNK]
    second["phoneNumbers"] = [
        n for n in second["phoneNumbers"] if n["credentialId"] != TRUNK
    ]
    router = start_driver(first, second, tmp_path)
    try:
        wait_for_state(router, "registered")
        call = start_sipp(
            "uac-registered-contact-expect-200.xml",
            router.sip_target,
            CONTACT_USER,
            (
                "-key",
                "dialled",
                NUMBER,
                "-key",
                "to_host",
                "localhost",
                "-set",
                "hold",
                "2000",
            ),  # fmt: skip
            timeout=20,
            log_dir=tmp_path,
        )
        assert call.wait_for_response(200, timeout=10)

        router.process.send_signal(signal.SIGUSR1)
        applied = router.wait_for_event("test.applied", timeout=5)
        assert applied["removed"] == [TRUNK]
        registrar.wait_for_registers(
            lambda found: found[-1].expires == 0, timeout=5, what="an un-REGISTER"
        )
        assert router.wait_for_event("sip.trunk_account_deleted", trunk=TRUNK)
        result = call.finish()

        assert result.exit_code == 0, result.describe()
        ended = router.wait_for_event("call.ended", outcome="assistant")
        assert ended["trunk"] == TRUNK
        assert registration_state(router) is None
    finally:
        assert router.stop() == 0
