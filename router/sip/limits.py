"""Find the compile-time limits of the installed pjsua2 build.

pjproject fixes `PJSUA_MAX_CALLS`, `PJSUA_MAX_ACC` and `PJSIP_MAX_PKT_LEN`
at build time and the Python bindings expose none of them. pjsua clamps a
larger `maxCalls` silently, and it aborts the process (a failed C assert)
when a call slot or account past the limit is touched. So the probe runs in
child processes: each one walks up to the limit and either reports the
limit or dies on the first slot past it, which gives the parent the same answer.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from dataclasses import dataclass

import structlog

log = structlog.get_logger(__name__)

# Defaults of pjproject 2.15.1 as built for the pjsua2-python wheel, used
# only when a probe cannot run at all.
WHEEL_DEFAULTS = {
    "maxCalls": 4,
    "maxAccounts": 8,
    "maxPacketBytes": 4000,
    "maxSockets": 64,
}

PROBE_TIMEOUT_SECONDS = 20.0


@dataclass(frozen=True)
class SipLimits:
    """The build's limits: concurrent calls, accounts, UDP packet bytes."""

    max_calls: int
    max_accounts: int
    max_packet_bytes: int
    max_sockets: int = WHEEL_DEFAULTS["maxSockets"]
    probed: bool = True

    def as_json(self) -> dict[str, int]:
        """Return the limits under the names `/readyz` shows."""
        return {
            "maxCalls": self.max_calls,
            "maxAccounts": self.max_accounts,
            "maxPacketBytes": self.max_packet_bytes,
            "maxSockets": self.max_sockets,
        }


def probe_limits(requested_calls: int, requested_accounts: int = 64) -> SipLimits:
    """Probe the limits, asking pjsua for `requested_calls` call slots.

    The engine asks for the same `maxCalls`, so the probed value is the one
    it will get. Falls back to the wheel's known defaults if a probe fails.
    """
    try:
        calls, packet = _probe_calls_and_packet(requested_calls)
        accounts = _count_created("accounts", "account", requested_accounts)

    except (OSError, ValueError, subprocess.SubprocessError) as error:
        log.warning("sip.limits_probe_failed", error=str(error))
        return SipLimits(
            WHEEL_DEFAULTS["maxCalls"],
            WHEEL_DEFAULTS["maxAccounts"],
            WHEEL_DEFAULTS["maxPacketBytes"],
            WHEEL_DEFAULTS["maxSockets"],
            probed=False,
        )
    # NOTE: the I/O queue's socket limit (PJ_IOQUEUE_MAX_HANDLES) is not
    # probed: a probe cannot register sockets without also hitting pjsua's
    # limit of 8 transports first. The wheel's value is assumed.
    return SipLimits(calls, accounts, packet)


def _probe_calls_and_packet(requested_calls: int) -> tuple[int, int]:
    lines = _run_probe("calls", requested_calls)
    packet = next(int(v) for k, v in lines if k == "packet")
    slots = [int(v) for k, v in lines if k == "slot"]
    if not slots:
        raise ValueError("the call-slot probe found no slot")
    return max(slots) + 1, packet


def _count_created(kind: str, item: str, count: int) -> int:
    lines = _run_probe(kind, count)
    created = [int(v) for k, v in lines if k == item]
    return max(created, default=0)


def _run_probe(kind: str, count: int) -> list[tuple[str, str]]:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE_SOURCE, kind, str(count)],
        capture_output=True,
        text=True,
        timeout=PROBE_TIMEOUT_SECONDS,
        preexec_fn=_no_core_dumps,
        check=False,
    )
    lines = []
    for line in result.stdout.splitlines():
        if line.startswith("{"):
            item = json.loads(line)
            lines.append((item["k"], str(item["v"])))
    if not lines:
        raise ValueError(f"the {kind} probe printed nothing (exit {result.returncode})")
    return lines


def _no_core_dumps() -> None:
    # The probe ends in an intended abort(); a core file would be litter.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


# Runs in the child. It prints one JSON line per finding and flushes, so
# whatever it printed before an abort() reaches the parent.
_PROBE_SOURCE = r"""
import json, socket, sys
import pjsua2 as pj

def say(k, v):
    print(json.dumps({"k": k, "v": v}), flush=True)

kind, count = sys.argv[1], int(sys.argv[2])
ep = pj.Endpoint()
ep.libCreate()
cfg = pj.EpConfig()
cfg.uaConfig.threadCnt = 0
cfg.uaConfig.maxCalls = count if kind == "calls" else 4
cfg.logConfig.level = 0
cfg.logConfig.consoleLevel = 0
ep.libInit(cfg)
tcfg = pj.TransportConfig()
tcfg.port = 0
tcfg.boundAddress = "127.0.0.1"
tid = ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
port = ep.transportGetInfo(tid).localName.rpartition(":")[2]
ep.libStart()

class Account(pj.Account):
    seen = None
    def onIncomingCall(self, prm):
        Account.seen = len(prm.rdata.wholeMsg.encode("utf-8", "surrogateescape"))
        call = pj.Call(self, prm.callId)
        op = pj.CallOpParam()
        op.statusCode = 480
        call.hangup(op)

if kind == "accounts":
    accounts = []
    for n in range(1, count + 1):
        acfg = pj.AccountConfig()
        acfg.idUri = "sip:probe%d@127.0.0.1" % n
        acc = pj.Account()
        acc.create(acfg)
        accounts.append(acc)
        say("account", n)
    sys.exit(0)

acfg = pj.AccountConfig()
acfg.idUri = "sip:probe@127.0.0.1"
acfg.mediaConfig.useLoopMedTp = True
acc = Account()
acc.create(acfg)

# One INVITE in a 60000-byte datagram; what arrives is the packet buffer.
body = (
    "v=0\r\no=probe 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\nm=audio 9 RTP/AVP 0\r\n" + ("a=x-probe:" + "p" * 88 + "\r\n") * 590
)
invite = (
    "INVITE sip:probe@127.0.0.1:%s SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKprobe1\r\n"
    "From: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:probe@127.0.0.1>\r\n"
    "Call-ID: limits-probe\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
    "Contact: <sip:probe@127.0.0.1:9>\r\nContent-Type: application/sdp\r\n"
    "Content-Length: %d\r\n\r\n%s"
) % (port, len(body), body)
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.sendto(invite.encode(), ("127.0.0.1", int(port)))
for _ in range(200):
    ep.libHandleEvents(10)
    if Account.seen is not None:
        break
say("packet", Account.seen or 0)

calls = []
for slot in range(count):
    call = pj.Call(acc, slot)
    calls.append(call)
    say("slot", slot)
sys.exit(0)
"""
