"""The outcome of a REFER, read from the statuses that pjsua2 reports."""

import asyncio
from types import SimpleNamespace

import pytest
import structlog
from structlog.testing import capture_logs

from router.calls import refer
from router.calls.refer import ReferResult, wait_for_refer_result
from router.sip.legs import TransferStatus

ACCEPTED = TransferStatus(100, "Accepted", final=False)
TRYING = TransferStatus(100, "Trying", final=False)


async def result_of(*statuses: TransferStatus) -> ReferResult:
    queue: asyncio.Queue[TransferStatus] = asyncio.Queue()
    for status in statuses:
        queue.put_nowait(status)
    call = SimpleNamespace(log=structlog.get_logger())
    return await wait_for_refer_result(call, queue)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([ACCEPTED, TRYING, TransferStatus(200, "OK", True)], ReferResult.TRANSFERRED),
        ([TransferStatus(405, "Method Not Allowed", True)], ReferResult.REJECTED),
        ([TransferStatus(501, "Not Implemented", True)], ReferResult.REJECTED),
        ([TransferStatus(603, "Decline", True)], ReferResult.REJECTED),
        (
            [ACCEPTED, TransferStatus(503, "Service Unavailable", True)],
            ReferResult.NOTIFY_FAILED,
        ),
        # A failing sipfrag ends the wait even in a NOTIFY that is not final.
        (
            [ACCEPTED, TransferStatus(486, "Busy Here", False)],
            ReferResult.NOTIFY_FAILED,
        ),
        # A final NOTIFY whose sipfrag is still 100 Trying is no transfer.
        ([ACCEPTED, TransferStatus(100, "Trying", True)], ReferResult.NOTIFY_FAILED),
    ],
)
async def test_refer_result_from_statuses(statuses, expected):
    assert await result_of(*statuses) is expected


async def test_refer_without_final_status_times_out(monkeypatch):
    monkeypatch.setattr(refer, "REFER_TIMEOUT_SECONDS", 0.05)

    with capture_logs() as events:
        result = await result_of(ACCEPTED, TRYING)

    assert result is ReferResult.TIMED_OUT
    (event,) = [e for e in events if e["event"] == "call.refer_timed_out"]
    assert event["accepted"] is True


async def test_refer_failure_logs_status_and_result():
    with capture_logs() as events:
        await result_of(ACCEPTED, TransferStatus(503, "Service Unavailable", True))

    (event,) = [e for e in events if e["event"] == "call.refer_failed"]
    assert event["status"] == 503
    assert event["result"] == "notify_failed"
