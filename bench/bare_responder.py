"""A bare pjsua2 responder: the least code that answers INVITEs as the router does.

It keeps the router's threading rule (the main thread owns pjsua2, with
`threadCnt = 0`, and loops `libHandleEvents`) and its endpoint and media
settings, with the loop media transport for calls it does not bridge. It
answers every INVITE the same way from inside
`onIncomingCall`: `--reply 404`, `--reply 302` with `--target` as Contact,
or `--reply bridge`: dial `--target`, answer 200 when it answers, relay the
audio, and end both legs together. It prints `ready` once it listens and
stops on SIGTERM.
"""

import argparse
import contextlib
import signal

import pjsua2 as pj

legs: dict[int, pj.Call] = {}  # pjsua call id -> live leg, as in the router


class Leg(pj.Call):
    def __init__(self, account, call_id=pj.PJSUA_INVALID_ID, peer=None):
        super().__init__(account, call_id)
        self.peer = peer

    def peer_alive(self):
        return self.peer is not None and legs.get(self.peer.getId()) is self.peer

    def onCallState(self, prm):  # noqa: N802 - pjsua2's name
        info = self.getInfo()
        outbound = info.role == pj.PJSIP_ROLE_UAC
        answered = info.state == pj.PJSIP_INV_STATE_CONFIRMED
        if answered and outbound and self.peer_alive():
            quietly(self.peer.answer, call_op(200))
        elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            # Drop every reference now: a Call destroyed later, by the garbage
            # collector, would hang up whichever new call took its slot.
            alive, peer = self.peer_alive(), self.peer
            legs.pop(info.id, None)
            self.peer = None
            if alive:
                peer.peer = None
                # 480 to an unanswered caller, else BYE; CANCEL or BYE to the
                # outbound leg when the caller leaves.
                quietly(peer.hangup, call_op(480 if outbound else 0))

    def onCallMediaState(self, prm):  # noqa: N802 - pjsua2's name
        if not self.peer_alive():
            return
        try:
            ours, theirs = self.getAudioMedia(-1), self.peer.getAudioMedia(-1)
        except pj.Error:
            return  # the other leg's audio is not active yet
        ours.startTransmit(theirs)
        theirs.startTransmit(ours)


class Responder(pj.Account):
    def __init__(self, reply, target):
        super().__init__()
        self.reply, self.target = reply, target

    def onIncomingCall(self, prm):  # noqa: N802 - pjsua2's name
        call = legs[prm.callId] = Leg(self, prm.callId)
        if self.reply != "bridge":
            reply = call_op(int(self.reply))
            if reply.statusCode == 302:
                reply.txOption.headers.append(header("Contact", f"<{self.target}>"))
            quietly(call.hangup, reply)
            return
        outbound = call.peer = Leg(self, peer=call)
        try:
            outbound.makeCall(self.target, call_op(0))
        except pj.Error:
            quietly(call.hangup, call_op(503))  # no call slot for the outbound leg
            return
        if call.peer is outbound:  # still linked, so it did not fail at once
            legs[outbound.getId()] = outbound


def quietly(operation, parameters):
    # An exception escaping a pjsua2 callback aborts the process.
    with contextlib.suppress(pj.Error):
        operation(parameters)


def call_op(status_code):
    parameters = pj.CallOpParam(True)
    if status_code:
        parameters.statusCode = status_code
    return parameters


def header(name, value):
    sip_header = pj.SipHeader()
    sip_header.hName, sip_header.hValue = name, value
    return sip_header


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="SIP UDP port")
    parser.add_argument("--rtp-port", type=int, required=True, help="first RTP port")
    parser.add_argument("--reply", choices=["404", "302", "bridge"], required=True)
    parser.add_argument("--target", default="", help="Contact of 302, URI to bridge")
    parser.add_argument("--max-calls", type=int, default=1001, help="call slots")
    args = parser.parse_args()

    endpoint = pj.Endpoint()
    endpoint.libCreate()
    config = pj.EpConfig()
    config.uaConfig.threadCnt = 0
    config.uaConfig.mainThreadOnly = False
    config.uaConfig.maxCalls = args.max_calls  # pjsua clamps it to the build's
    config.logConfig.level = config.logConfig.consoleLevel = 1
    config.medConfig.threadCnt = 0
    config.medConfig.hasIoqueue = False
    config.medConfig.noVad = True
    config.medConfig.sndAutoCloseTime = -1  # see the router's engine
    config.medConfig.maxMediaPorts = max(254, 2 * args.max_calls + 4)
    endpoint.libInit(config)
    endpoint.audDevManager().setNullDev()
    transport = pj.TransportConfig()
    transport.port, transport.boundAddress = args.port, "127.0.0.1"
    endpoint.transportCreate(pj.PJSIP_TRANSPORT_UDP, transport)
    endpoint.libStart()

    account_config = pj.AccountConfig()
    account_config.idUri = f"sip:bare@127.0.0.1:{args.port}"
    # Like the router, open RTP sockets only for calls that carry audio.
    account_config.mediaConfig.useLoopMedTp = args.reply != "bridge"
    media = account_config.mediaConfig.transportConfig
    media.port, media.portRange, media.boundAddress = args.rtp_port, 2000, "127.0.0.1"
    account = Responder(args.reply, args.target)
    account.create(account_config, True)
    print("ready", flush=True)

    running = [True]
    signal.signal(signal.SIGTERM, lambda *_: running.clear())
    while running:
        endpoint.libHandleEvents(2)  # the router's owner thread waits 2 ms too
    endpoint.hangupAllCalls()
    for _ in range(50):
        if not legs:
            break
        endpoint.libHandleEvents(10)
    legs.clear()
    del account
    endpoint.libDestroy()


if __name__ == "__main__":
    main()
