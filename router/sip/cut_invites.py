"""Detect INVITEs cut by the build's packet buffer, and keep pjsua off them.

The stack reads each UDP datagram into a buffer of `PJSIP_MAX_PKT_LEN`
bytes (4000 in the PyPI wheel) and silently drops the rest. pjsua then
handles the cut INVITE with what survived. When the cut falls inside the
SDP, pjsua answers `400 Bad SDP` (or `400 Missing media in SDP`) by itself
before the router sees the call. The router answers every cut INVITE with
`513 Message Too Large` instead, so the carrier learns why.

`onSelectAccount` runs before pjsua parses the SDP. When it finds a cut
INVITE, `accept_cut_offer()` stores a small stand-in SDP as the INVITE's
parsed offer, so pjsua creates the call, and the engine rejects it with 513.
pjsua2 has no API for that, so it calls three exported pjproject functions
through ctypes and writes one public struct, `pjsip_rdata_sdp_info`.
"""

from __future__ import annotations

import ctypes
import sys

import structlog

from router.sip.messages import SipRequest

log = structlog.get_logger(__name__)

# Never negotiated: the call gets 513 before any answer.
_STAND_IN_SDP = (
    b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\nm=audio 9 RTP/AVP 0\r\n"
)


def is_cut(request: SipRequest, max_packet_bytes: int) -> bool:
    """Return whether the packet buffer may have cut `request`.

    True when the body is shorter than Content-Length, or when the message
    fills the whole buffer: a cut that falls in the headers may have taken
    Content-Length with it. A message of exactly the buffer's size is
    taken as cut too, because the two cannot be told apart.
    """
    content_length = request.content_length()
    if content_length is not None and len(request.body) < content_length:
        return True
    return request.size_bytes >= max_packet_bytes


class _RdataSdpInfo(ctypes.Structure):
    """`pjsip_rdata_sdp_info` of pjsip-ua/sip_inv.h."""

    _fields_ = [
        ("body_ptr", ctypes.c_void_p),
        ("body_slen", ctypes.c_ssize_t),
        ("sdp_err", ctypes.c_int),
        ("sdp", ctypes.c_void_p),
    ]


def _load_stack() -> ctypes.CDLL | None:
    module = sys.modules.get("pjsua2._pjsua2")
    path = getattr(module, "__file__", None)
    if path is None:
        return None
    try:
        stack = ctypes.CDLL(path)
        get_info = stack.pjsip_rdata_get_sdp_info
        pool_alloc = stack.pj_pool_alloc
        parse = stack.pjmedia_sdp_parse
    except (OSError, AttributeError):
        return None
    get_info.argtypes = [ctypes.c_void_p]
    get_info.restype = ctypes.POINTER(_RdataSdpInfo)
    pool_alloc.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    pool_alloc.restype = ctypes.c_void_p
    parse.argtypes = [
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.POINTER(ctypes.c_void_p),
    ]
    parse.restype = ctypes.c_int
    return stack


_stack: ctypes.CDLL | None = None


def accept_cut_offer(rdata: object) -> bool:
    """Replace a cut INVITE's SDP offer with a stand-in; return success.

    `rdata` is `SipRxData.pjRxData` of `onSelectAccount`, a `pjsip_rx_data`
    pointer. Call it only on the pjsua2 owner thread, inside that callback.
    On False pjsua keeps its own verdict on the SDP (400 when it is invalid).
    """
    global _stack
    if _stack is None:
        _stack = _load_stack()
    address = _pointer_value(rdata)
    if _stack is None or not address:
        log.warning("sip.cut_invite_offer_not_replaced", reason="no stack symbols")
        return False
    info = _stack.pjsip_rdata_get_sdp_info(address)
    if not info:
        return False
    # NOTE: assumes `tp_info.pool` is the first field of `pjsip_rx_data`, as
    # in pjproject's sip_transport.h; the 513 integration tests fail if a
    # build moves it. The stand-in lives in that pool with the INVITE.
    pool = ctypes.c_void_p.from_address(address).value
    buffer = _stack.pj_pool_alloc(pool, len(_STAND_IN_SDP))
    if not buffer:
        return False
    ctypes.memmove(buffer, _STAND_IN_SDP, len(_STAND_IN_SDP))
    session = ctypes.c_void_p()
    status = _stack.pjmedia_sdp_parse(
        pool, buffer, len(_STAND_IN_SDP), ctypes.byref(session)
    )
    if status != 0 or not session.value:
        return False
    info.contents.sdp_err = 0
    info.contents.sdp = session.value
    return True


def _pointer_value(pointer: object) -> int:
    """Return the address that a SWIG `void *` object holds, 0 for None."""
    if pointer is None:
        return 0
    try:
        return int(pointer)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return 0
