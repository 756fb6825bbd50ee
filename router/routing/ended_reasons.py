"""The `endedReason` strings that a call can end with.

The values are the cozmox API's own, so webhooks, hooks and metrics use the
same strings as calls that the platform handles itself. The router adds a few
of its own for verdicts that only a SIP front end reaches: the source check,
its limits, draining, the runtime hand-off and its own faults.
"""

# The inbound call path.
GET_PHONE_NUMBER = "call.start.error-get-phone-number"
PHONE_NUMBER_BLOCKED = "call.start.error-phone-number-blocked"
PHONE_NUMBER_ACTIVATING = "call.start.error-phone-number-activating"
RINGING_HOOK_EXECUTED_SAY = "call.ringing.hook-executed-say"
RINGING_HOOK_EXECUTED_TRANSFER = "call.ringing.hook-executed-transfer"
ENDING_HOOK_EXECUTED_SAY = "call.ending.hook-executed-say"
ENDING_HOOK_EXECUTED_TRANSFER = "call.ending.hook-executed-transfer"
NEITHER_ASSISTANT_NOR_SERVER = "call-start-error-neither-assistant-nor-server-set"
CALLER_HUNG_UP_BEFORE_CONNECT = (
    "call.ringing.sip-inbound-caller-hungup-before-call-connect"
)

# A call handed off to the runtime ends with one of these.
CUSTOMER_ENDED_CALL = "customer-ended-call"
ASSISTANT_ENDED_CALL = "assistant-ended-call"

# The assistant-request exchange, one per row of the reply table.
ASSISTANT_REQUEST_FAILED = "assistant-request-failed"
ASSISTANT_REQUEST_RETURNED_ERROR = "assistant-request-returned-error"
ASSISTANT_REQUEST_RETURNED_UNSPEAKABLE_ERROR = (
    "assistant-request-returned-unspeakable-error"
)
ASSISTANT_REQUEST_RETURNED_FORWARDING_PHONE_NUMBER = (
    "assistant-request-returned-forwarding-phone-number"
)
ASSISTANT_REQUEST_RETURNED_INVALID_ASSISTANT = (
    "assistant-request-returned-invalid-assistant"
)
ASSISTANT_REQUEST_RETURNED_NO_ASSISTANT = "assistant-request-returned-no-assistant"

# Every reason of the assistant-request family, the only reasons that a
# `call.ending` hook filter may list.
ASSISTANT_REQUEST_REASONS = frozenset(
    {
        ASSISTANT_REQUEST_FAILED,
        ASSISTANT_REQUEST_RETURNED_ERROR,
        ASSISTANT_REQUEST_RETURNED_UNSPEAKABLE_ERROR,
        ASSISTANT_REQUEST_RETURNED_FORWARDING_PHONE_NUMBER,
        ASSISTANT_REQUEST_RETURNED_INVALID_ASSISTANT,
        ASSISTANT_REQUEST_RETURNED_NO_ASSISTANT,
    }
)

# The router's own verdicts.
SOURCE_NOT_ALLOWED = "call.start.error-source-not-allowed"
CONCURRENCY_LIMIT = "call.start.error-concurrency-limit-reached"
DRAINING = "call.start.error-router-draining"
MESSAGE_TOO_LARGE = "call.start.error-message-too-large"
TOO_MANY_HOPS = "call.start.error-too-many-hops"
RUNTIME_REJECTED = "call.start.error-runtime-rejected"
RUNTIME_UNREACHABLE = "call.start.error-runtime-timeout"
TRANSFER_FAILED = "call.forwarding.error-transfer-failed"
ROUTER_FAULT = "call.start.error-router-fault"
# The caller never ACKed the router's 200 OK (64*T1, 32 s by default).
ACK_TIMEOUT = "call.in-progress.error-sip-ack-timeout"
# A late-offer caller's ACK carried no SDP answer, so the router sent BYE.
NO_SDP_ANSWER = "call.in-progress.error-sip-no-sdp-answer"
# A call still in progress when the drain time after SIGTERM ran out.
ROUTER_SHUT_DOWN = "call.in-progress.error-router-shut-down"
