import pytest

from router import errors
from router.calls.actions import reason_header as spoken_error_reason
from router.errors import (
    AssistantRequestFailed,
    CallFailed,
    CallRejected,
    ConcurrencyLimitReached,
    Draining,
    FinalResponse,
    MessageTooLarge,
    NoRouteOrServer,
    NumberActivating,
    NumberBlocked,
    NumberNotFound,
    RouterError,
    RouterFault,
    RuntimeRejected,
    RuntimeUnreachable,
    SourceNotAllowed,
    TooManyHops,
    TransferFailed,
    final_response,
    reason_header,
)
from router.routing import ended_reasons

# error, status, phrase, endedReason, outcome, Retry-After, fault, retryable
VERDICTS = [
    (SourceNotAllowed(), 403, "Forbidden",
     ended_reasons.SOURCE_NOT_ALLOWED, "rejected", None, False, False),
    (NumberNotFound(), 404, "Not Found",
     ended_reasons.GET_PHONE_NUMBER, "rejected", None, False, False),
    (NumberBlocked(), 403, "Forbidden",
     ended_reasons.PHONE_NUMBER_BLOCKED, "rejected", None, False, False),
    (NumberActivating(), 480, "Temporarily Unavailable",
     ended_reasons.PHONE_NUMBER_ACTIVATING, "rejected", 300, False, True),
    (ConcurrencyLimitReached(), 503, "Service Unavailable",
     ended_reasons.CONCURRENCY_LIMIT, "rejected", 5, False, True),
    (Draining(), 503, "Service Unavailable",
     ended_reasons.DRAINING, "rejected", 30, False, True),
    (MessageTooLarge(), 513, "Message Too Large",
     ended_reasons.MESSAGE_TOO_LARGE, "rejected", None, False, False),
    (TooManyHops(), 483, "Too Many Hops",
     ended_reasons.TOO_MANY_HOPS, "rejected", None, False, False),
    (NoRouteOrServer(), 480, "Temporarily Unavailable",
     ended_reasons.NEITHER_ASSISTANT_NOR_SERVER, "failed", None, False, False),
    (AssistantRequestFailed(ended_reasons.ASSISTANT_REQUEST_FAILED), 480,
     "Temporarily Unavailable", ended_reasons.ASSISTANT_REQUEST_FAILED,
     "failed", None, False, True),
    (AssistantRequestFailed(
        ended_reasons.ASSISTANT_REQUEST_RETURNED_NO_ASSISTANT), 480,
     "Temporarily Unavailable",
     ended_reasons.ASSISTANT_REQUEST_RETURNED_NO_ASSISTANT,
     "failed", None, False, False),
    (RuntimeRejected(503), 480, "Temporarily Unavailable",
     ended_reasons.RUNTIME_REJECTED, "failed", None, False, True),
    (RuntimeRejected(404), 480, "Temporarily Unavailable",
     ended_reasons.RUNTIME_REJECTED, "failed", None, False, False),
    (RuntimeUnreachable(), 480, "Temporarily Unavailable",
     ended_reasons.RUNTIME_UNREACHABLE, "failed", None, False, True),
    (TransferFailed(), 480, "Temporarily Unavailable",
     ended_reasons.TRANSFER_FAILED, "failed", None, False, True),
    (RouterFault(), 500, "Server Internal Error",
     ended_reasons.ROUTER_FAULT, "failed", None, True, False),
    (RouterError(), 500, "Server Internal Error",
     ended_reasons.ROUTER_FAULT, "failed", None, True, False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("error", "status", "phrase", "ended_reason", "outcome", "retry_after",
     "fault", "retryable"),
    VERDICTS,
    ids=[type(row[0]).__name__ for row in VERDICTS],
)  # fmt: skip
def test_error_verdict(
    error, status, phrase, ended_reason, outcome, retry_after, fault, retryable
):
    assert error.sip_status == status
    assert error.reason_phrase == phrase
    assert error.ended_reason == ended_reason
    assert error.outcome == outcome
    assert error.retry_after_seconds == retry_after
    assert error.fault is fault
    assert error.retryable is retryable


def test_every_error_is_a_router_error():
    for row in VERDICTS:
        assert isinstance(row[0], RouterError)


@pytest.mark.parametrize(
    "cls",
    [
        SourceNotAllowed,
        NumberNotFound,
        NumberBlocked,
        NumberActivating,
        ConcurrencyLimitReached,
        Draining,
        MessageTooLarge,
        TooManyHops,
    ],
)
def test_rejections_are_call_rejected(cls):
    assert issubclass(cls, CallRejected)
    assert not issubclass(cls, CallFailed)


@pytest.mark.parametrize(
    "cls",
    [
        NoRouteOrServer,
        AssistantRequestFailed,
        RuntimeRejected,
        RuntimeUnreachable,
        TransferFailed,
        RouterFault,
    ],
)
def test_failures_are_call_failed(cls):
    assert issubclass(cls, CallFailed)
    assert not issubclass(cls, CallRejected)


def test_final_response_failure_reason():
    response = final_response(NoRouteOrServer())
    assert response == FinalResponse(
        480,
        "Temporarily Unavailable",
        [
            (
                "Reason",
                'SIP;cause=480;text="'
                'call-start-error-neither-assistant-nor-server-set"',
            )
        ],
    )


def test_final_response_fault_500():
    response = final_response(RouterFault("task crashed"))
    assert response.status == 500
    assert response.headers == [
        ("Reason", 'SIP;cause=500;text="call.start.error-router-fault"')
    ]


def test_final_response_unknown_source_bare():
    response = final_response(SourceNotAllowed("src 203.0.113.9"))
    assert response == FinalResponse(403, "Forbidden", [])


def test_final_response_unknown_number_reason():
    response = final_response(NumberNotFound())
    assert response.status == 404
    assert response.headers == [
        ("Reason", 'SIP;cause=404;text="call.start.error-get-phone-number"')
    ]


def test_final_response_blocked_number_reason():
    response = final_response(NumberBlocked())
    assert response.status == 403
    assert response.headers == [
        ("Reason", 'SIP;cause=403;text="call.start.error-phone-number-blocked"')
    ]


def test_final_response_activating_retry_after():
    response = final_response(NumberActivating())
    assert response.status == 480
    assert ("Retry-After", "300") in response.headers
    assert response.headers[0][0] == "Reason"


@pytest.mark.parametrize(
    ("error", "retry_after"),
    [(ConcurrencyLimitReached(), "5"), (Draining(), "30")],
)
def test_final_response_overload_retry_after(error, retry_after):
    response = final_response(error)
    assert response.status == 503
    assert response.reason_phrase == "Service Unavailable"
    assert response.headers == [("Retry-After", retry_after)]


def test_final_response_cut_invite_513():
    response = final_response(MessageTooLarge())
    assert response == FinalResponse(513, "Message Too Large", [])


def test_final_response_instance_retry_after():
    error = Draining()
    error.retry_after_seconds = 12
    assert final_response(error).headers == [("Retry-After", "12")]


def test_reason_header_escapes_quotes_and_backslashes():
    error = RouterFault()
    error.ended_reason = 'a"b\\c'
    assert reason_header(error) == (
        "Reason",
        'SIP;cause=500;text="a\\"b\\\\c"',
    )


def test_reason_header_drops_line_breaks():
    error = RouterFault()
    error.ended_reason = "a\r\nInjected: 1\x00\x7f"
    name, value = reason_header(error)
    assert name == "Reason"
    assert value == 'SIP;cause=500;text="aInjected: 1"'


def test_reason_header_drops_lone_surrogates():
    # A webhook's JSON reply can carry "\ud800", which no UTF-8 encoder takes.
    error = RouterFault()
    error.ended_reason = "busy\ud800 line\udfff"
    name, value = reason_header(error)
    assert value == 'SIP;cause=500;text="busy line"'


def test_spoken_error_reason_header_drops_lone_surrogates():
    name, value = spoken_error_reason(480, "closed\udc00 today")
    assert name == "Reason"
    assert value == 'SIP;cause=480;text="closed today"'


def test_assistant_request_failed_fields():
    error = AssistantRequestFailed(
        ended_reasons.ASSISTANT_REQUEST_RETURNED_INVALID_ASSISTANT,
        "squadId and assistant both set",
    )
    assert error.ended_reason == (
        ended_reasons.ASSISTANT_REQUEST_RETURNED_INVALID_ASSISTANT
    )
    assert error.detail == "squadId and assistant both set"
    assert str(error) == "squadId and assistant both set"


def test_assistant_request_failed_foreign_reason():
    with pytest.raises(ValueError, match="invalid assistant-request"):
        AssistantRequestFailed(ended_reasons.ROUTER_FAULT)


def test_assistant_request_failed_class_untouched():
    AssistantRequestFailed(ended_reasons.ASSISTANT_REQUEST_RETURNED_ERROR)
    assert "ended_reason" not in AssistantRequestFailed.__dict__


def test_runtime_rejected_keeps_runtime_status():
    error = RuntimeRejected(486)
    assert error.runtime_status == 486
    assert error.retryable is True
    assert error.sip_status == 480
    assert str(error) == "runtime answered 486"


def test_error_str_without_detail():
    assert str(NumberNotFound()) == ended_reasons.GET_PHONE_NUMBER
    assert NumberNotFound().detail == ""


def test_ended_reasons_are_distinct():
    names = [name for name in dir(ended_reasons) if name.isupper()]
    values = [getattr(ended_reasons, name) for name in names]
    strings = [value for value in values if isinstance(value, str)]
    assert len(strings) == len(set(strings))


def test_assistant_request_family_has_six_reasons():
    family = ended_reasons.ASSISTANT_REQUEST_REASONS
    assert len(family) == 6
    assert all(reason.startswith("assistant-request-") for reason in family)


def test_outcome_labels_are_bounded():
    labels = set(errors.Outcome.__args__)
    assert labels == {
        "assistant", "squad", "workflow", "transferred", "rejected", "failed"
    }  # fmt: skip
    for row in VERDICTS:
        assert row[0].outcome in labels
