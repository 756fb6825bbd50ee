"""The pjsua2 subclasses whose callbacks reach the engine, and helpers.

Every callback is wrapped by `guarded_callback`, runs on the pjsua2 owner thread
and only hands over to `SipEngine`.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pjsua2 as pj
import structlog

from router.logs import redact_text
from router.sip.stack_drops import dropped_message_reason

if TYPE_CHECKING:
    from router.sip.engine import SipEngine

log = structlog.get_logger("router.sip.engine")

_LINE_BREAK = re.compile(r"[\r\n\x00]")


def guarded_callback(callback: Callable[..., None]) -> Callable[..., None]:
    """Log and swallow an exception raised in a pjsua2 callback.

    An exception escaping a SWIG director method becomes a C++ exception
    that nothing catches, which aborts the process.
    """

    def guarded(*args: Any) -> None:
        try:
            callback(*args)
        except BaseException:  # noqa: BLE001 - see the docstring
            log.exception("sip.callback_failed", callback=callback.__name__)

    guarded.__name__ = callback.__name__
    return guarded


class StackLogWriter(pj.LogWriter):
    """Sends pjsip's own log lines to structlog, cut short and rate-limited.

    pjsip logs whole packets with its errors, caller numbers and all, and
    any source can make it log one per packet; so only the first line is
    kept, and at most `LINES_PER_WINDOW` lines per window go out.
    `on_drop` gets the reason of every line that reports a received
    message pjsip dropped, rate limit or not.
    """

    LINES_PER_WINDOW = 20
    WINDOW_SECONDS = 10.0
    MAX_CHARACTERS = 160

    def __init__(self, on_drop: Callable[[str], None] = lambda reason: None) -> None:
        super().__init__()
        self._on_drop = on_drop
        self._window_start = 0.0
        self._lines = 0
        self._suppressed = 0

    def write(self, entry: pj.LogEntry) -> None:
        # Nothing may escape into C++: see guarded_callback().
        with contextlib.suppress(BaseException):
            first_line = entry.msg.strip().split("\n", 1)[0]
            reason = dropped_message_reason(first_line[: self.MAX_CHARACTERS])
            if reason is not None:
                self._on_drop(reason)
            now = time.monotonic()
            if now - self._window_start >= self.WINDOW_SECONDS:
                if self._suppressed:
                    log.warning("sip.stack_log_suppressed", lines=self._suppressed)
                self._window_start, self._lines, self._suppressed = now, 0, 0
            self._lines += 1
            if self._lines > self.LINES_PER_WINDOW:
                self._suppressed += 1
                return
            # Redacted before the cut, which could leave too little of a
            # URI for the redaction to recognise.
            text = redact_text(first_line)[: self.MAX_CHARACTERS]
            log.warning("sip.stack_log", stack_level=entry.level, text=text)


class RouterCall(pj.Call):
    def __init__(self, engine: SipEngine, account: pj.Account, call_id: int):
        super().__init__(account, call_id)
        self._engine = engine

    @guarded_callback
    def onCallState(self, prm: pj.OnCallStateParam) -> None:  # noqa: N802
        self._engine._on_call_state(self)

    @guarded_callback
    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:  # noqa: N802
        self._engine._on_media_state(self)

    @guarded_callback
    def onCallTransferStatus(self, prm: pj.OnCallTransferStatusParam) -> None:  # noqa: N802
        self._engine._on_transfer_status(self, prm)


class RouterAccount(pj.Account):
    def __init__(self, engine: SipEngine):
        super().__init__()
        self._engine = engine

    @guarded_callback
    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:  # noqa: N802
        self._engine._on_incoming_call(self, prm)

    @guarded_callback
    def onIncomingSubscribe(self, prm: pj.OnIncomingSubscribeParam) -> None:  # noqa: N802
        # pjsua accepts presence subscriptions by default and then sends
        # NOTIFYs to any Contact, which a spoofed source could aim anywhere.
        prm.code = 403


class TrunkAccount(RouterAccount):
    """A registering trunk's account; calls that land on it go the same way."""

    def __init__(self, engine: SipEngine, trunk_id: str):
        super().__init__(engine)
        self.trunk_id = trunk_id

    @guarded_callback
    def onRegState(self, prm: pj.OnRegStateParam) -> None:  # noqa: N802
        self._engine._trunk_accounts.on_reg_state(self.trunk_id, prm)


class RouterEndpoint(pj.Endpoint):
    def __init__(self, engine: SipEngine):
        super().__init__()
        self._engine = engine

    @guarded_callback
    def onRejectedIncomingCall(self, prm: Any) -> None:  # noqa: N802
        self._engine._on_rejected_by_pjsua(prm.statusCode)

    @guarded_callback
    def onSelectAccount(self, prm: pj.OnSelectAccountParam) -> None:  # noqa: N802
        self._engine._on_select_account(prm)


def active_audio(call: pj.Call) -> pj.AudioMedia | None:
    """Return the call's active audio media, or None while it has none."""
    # The media vector points into the CallInfo, so the CallInfo must stay
    # referenced while the loop reads it; a temporary is freed at once.
    info = call.getInfo()
    for index, media in enumerate(info.media):
        if (
            media.type == pj.PJMEDIA_TYPE_AUDIO
            and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE
        ):
            return call.getAudioMedia(index)
    return None


def describe_error(error: BaseException) -> str:
    if isinstance(error, pj.Error):
        return f"{error.title}: {error.reason}"
    return str(error)


@contextlib.contextmanager
def stdout_silenced() -> Iterator[None]:
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def call_op(
    status: int, reason: str | None, headers: list[tuple[str, str]]
) -> pj.CallOpParam:
    parameters = pj.CallOpParam(True)
    if status:
        parameters.statusCode = status
    if reason:
        parameters.reason = reason
    vector = pj.SipHeaderVector()
    for name, value in headers:
        # pjsua copies header text as it is: a line break would add headers.
        if _LINE_BREAK.search(name) or _LINE_BREAK.search(value):
            raise ValueError(f"SIP header {name!r} contains a line break")
        try:
            # SWIG raises TypeError for any surrogate, an escaped byte
            # ("\udc80") included, and JSON text such as "\ud800" can carry one.
            name.encode("utf-8")
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"SIP header {name!r} is not valid text") from None
        header = pj.SipHeader()
        header.hName = name
        header.hValue = value
        vector.append(header)
    parameters.txOption.headers = vector
    return parameters
