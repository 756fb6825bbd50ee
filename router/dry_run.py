"""The `route` command: the decision path of one call, without placing it.

The steps and their order are those of the call path in
`router.calls.path`, and the decisions come from the same functions of
`router.routing`. The assistant-request goes to the number's real server
through the real client, unless the caller of `route_call()` skips it.
Limits are not checked: a dry run has no calls in progress.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import yarl

from router.calls.handoff import destination_target
from router.calls.hooks import matching_ending_hook, matching_ringing_hook
from router.config import Config, PhoneNumber
from router.errors import CallFailed, CallRejected, NoRouteOrServer, final_response
from router.routing import ended_reasons
from router.routing.decision import Route, check_status, static_route, webhook_server
from router.routing.numbers import dialled_user, normalize_number, number_key, uri_host
from router.routing.replies import DestinationReply, ErrorReply, Reply
from router.routing.table import RoutingTable
from router.webhooks.assistant_request import AssistantRequestInput

AskServer = Callable[[AssistantRequestInput, Any], Awaitable[Reply]]
"""A function that sends the assistant-request, such as the real client's `request`."""


@dataclass(frozen=True)
class CallInput:
    """The facts of the call to route, as the command line gives them."""

    to: str
    caller: str
    source_ip: str
    request_uri: str | None = None

    def effective_request_uri(self) -> str:
        """Return the Request-URI: `--ruri`, else the dialled number's."""
        return self.request_uri or f"sip:{self.to}@{self.source_ip}"


@dataclass
class Step:
    """One step of the decision: its number in the call path, what it found."""

    number: int
    name: str
    result: str
    details: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "step": self.number,
            "name": self.name,
            "result": self.result,
            **self.details,
        }


@dataclass
class Decision:
    """Every step taken and the call's final verdict."""

    call: CallInput
    steps: list[Step] = field(default_factory=list)
    verdict: dict[str, Any] = field(default_factory=dict)

    def add(self, number: int, name: str, result: str, **details: Any) -> None:
        self.steps.append(Step(number, name, result, details))

    def as_json(self) -> dict[str, Any]:
        return {
            "call": {
                "to": self.call.to,
                "from": self.call.caller,
                "src": self.call.source_ip,
                "requestUri": self.call.effective_request_uri(),
            },
            "steps": [step.as_json() for step in self.steps],
            "verdict": self.verdict,
        }


async def route_call(
    config: Config, call: CallInput, ask_server: AskServer | None
) -> Decision:
    """Run the decision steps for `call`; no webhook when `ask_server` is None."""
    routing = _DryRun(config, call, ask_server)
    await routing.run()
    return routing.decision


class _DryRun:
    def __init__(
        self, config: Config, call: CallInput, ask_server: AskServer | None
    ) -> None:
        self.config = config
        self.call = call
        self.table = RoutingTable.from_config(config)
        self.ask_server = ask_server
        self.decision = Decision(call)

    async def run(self) -> None:
        self.decision.add(1, "receive", "limits not checked in a dry run")
        number = None
        try:
            trunks = self._identify_trunk()
            number = self._find_number(trunks)
            self._check_status(number)
            self.decision.add(5, "ring", "180 Ringing")
            if self._run_ringing_hook(number):
                return
            await self._route(number)
        except CallRejected as rejection:
            self._reject(rejection)
        except CallFailed as failure:
            assert number is not None
            self._fail_well(number, failure)

    # ----- steps 2 to 4 ---------------------------------------------------------------

    def _identify_trunk(self) -> list[Any]:
        host = uri_host(self.call.effective_request_uri())
        trunks = self.table.match_trunks(self.call.source_ip, host)
        ids = [trunk.id for trunk in trunks]
        self.decision.add(2, "trunk", f"matched {', '.join(ids)}", trunks=ids)
        return trunks

    def _find_number(self, trunks: list[Any]) -> PhoneNumber:
        ruri_user = dialled_user(self.call.effective_request_uri())
        number = self.table.find_number(trunks, ruri_user, self.call.to)
        dialled_in = "Request-URI"
        if ruri_user is None or number_key(ruri_user) != number_key(number.number):
            dialled_in = "To"
        self.decision.add(
            3,
            "number",
            f"{number.id} ({number.number}), dialled in the {dialled_in}",
            phoneNumberId=number.id,
            credentialId=number.credential_id,
        )
        return number

    def _check_status(self, number: PhoneNumber) -> None:
        self.decision.add(4, "status", number.status)
        check_status(number)

    # ----- step 6: ringing hooks ------------------------------------------------------

    def _run_ringing_hook(self, number: PhoneNumber) -> bool:
        match = matching_ringing_hook(number, normalize_number(self.call.caller))
        if match is None:
            self.decision.add(6, "hooks", "no call.ringing hook matches")
            return False
        index, hook = match
        action = hook.do[0]
        self.decision.add(
            6, "hooks", f"call.ringing hook {index} matches", action=action.type
        )
        reason = (
            ended_reasons.RINGING_HOOK_EXECUTED_SAY
            if action.type == "say"
            else ended_reasons.RINGING_HOOK_EXECUTED_TRANSFER
        )
        self._run_action(number, action, reason)
        return True

    # ----- steps 7 and 8: the route ---------------------------------------------------

    async def _route(self, number: PhoneNumber) -> None:
        route = static_route(number)
        if route is not None:
            self.decision.add(7, "route", f"static {route.kind} {route.id}")
            self._hand_off(route)
            return
        self.decision.add(7, "route", "none set: ask the server")
        reply = await self._ask_server(number)
        if isinstance(reply, DestinationReply):
            self._transfer(number, reply.destination, reply.ended_reason)
        elif isinstance(reply, ErrorReply):
            self._set_verdict(
                "reject",
                sipStatus=480,
                endedReason=reply.ended_reason,
                text=reply.text,
            )
        else:
            self._hand_off(reply.route)

    async def _ask_server(self, number: PhoneNumber) -> Reply:
        server = webhook_server(number, self.config)
        if server is None:
            self.decision.add(8, "assistant-request", "no server set")
            raise NoRouteOrServer("no assistant, squad, workflow or server set")
        url = _without_credentials(str(server.url))
        if self.ask_server is None:
            self.decision.add(8, "assistant-request", "skipped (--no-webhook)", url=url)
            raise _Skipped()
        try:
            reply = await self.ask_server(self._request_input(number), server)
        except CallFailed as failure:
            self.decision.add(
                8, "assistant-request", "failed", url=url, detail=failure.detail
            )
            raise
        self.decision.add(8, "assistant-request", _describe_reply(reply), url=url)
        return reply

    def _request_input(self, number: PhoneNumber) -> AssistantRequestInput:
        return AssistantRequestInput(
            call_id=f"dry-run-{uuid.uuid4()}",
            sip_call_id="dry-run",
            phone_number=number,
            created_at=datetime.now(UTC),
            caller_number=self.call.caller,
            caller_sip_uri=f"sip:{self.call.caller}@{self.call.source_ip}",
        )

    # ----- step 9: fail well ----------------------------------------------------------

    def _fail_well(self, number: PhoneNumber, failure: CallFailed) -> None:
        reason = failure.ended_reason
        if isinstance(failure, _Skipped):
            reason = ended_reasons.ASSISTANT_REQUEST_FAILED
            self.decision.add(9, "failure", f"if the request fails: {reason}")
        else:
            self.decision.add(9, "failure", reason)
        match = matching_ending_hook(number, reason)
        if match is not None:
            index, hook = match
            self.decision.add(9, "hooks", f"call.ending hook {index} matches")
            hook_reason = (
                ended_reasons.ENDING_HOOK_EXECUTED_SAY
                if hook.do.type == "say"
                else ended_reasons.ENDING_HOOK_EXECUTED_TRANSFER
            )
            self._run_action(number, hook.do, hook_reason)
            return
        if number.fallback_destination is not None:
            self.decision.add(9, "fallback", "fallbackDestination")
            self._transfer(number, number.fallback_destination, reason)
            return
        self.decision.add(9, "fallback", "none: reject")
        self._reject(failure, reason)

    # ----- verdicts -------------------------------------------------------------------

    def _run_action(self, number: PhoneNumber, action: Any, reason: str) -> None:
        if action.type == "say":
            self._set_verdict("say", endedReason=reason, text=action.exact)
            return
        destination = action.destination or number.fallback_destination
        if destination is None:
            self._set_verdict("reject", sipStatus=480, endedReason=reason)
            return
        self._transfer(number, destination, reason)

    def _hand_off(self, route: Route) -> None:
        runtime = self.config.router.runtime
        self._set_verdict(
            "hand-off",
            mode=runtime.mode,
            runtimeUri=runtime.uri,
            header={route.header_name: route.header_value},
        )

    def _transfer(self, number: PhoneNumber, destination: Any, reason: str) -> None:
        trunk = self.config.trunk(number.credential_id)
        try:
            target, headers = destination_target(destination, trunk)
        except CallFailed as failure:
            self._reject(failure, reason)
            return
        self._set_verdict(
            "transfer",
            verb=destination.transfer_plan.sip_verb,
            target=target,
            headers=dict(headers),
            endedReason=reason,
        )

    def _reject(self, error: Any, reason: str | None = None) -> None:
        response = final_response(error)
        self._set_verdict(
            "reject",
            sipStatus=response.status,
            endedReason=reason or error.ended_reason,
            headers=dict(response.headers),
        )

    def _set_verdict(self, action: str, **details: Any) -> None:
        self.decision.verdict = {"action": action, **details}


class _Skipped(CallFailed):
    """The assistant-request was skipped, so its reply is unknown."""

    ended_reason = ended_reasons.ASSISTANT_REQUEST_FAILED


def _describe_reply(reply: Reply) -> str:
    if isinstance(reply, DestinationReply):
        return f"destination ({reply.destination.type})"
    if isinstance(reply, ErrorReply):
        return "error text"
    route = reply.route
    return f"{route.kind} {route.header_value}"


def _without_credentials(url: str) -> str:
    """Return the URL without user information, query or fragment."""
    parsed = yarl.URL(url)
    return str(parsed.with_user(None).with_query(None).with_fragment(None))


def render_text(decision: Decision) -> str:
    """Format a decision for a terminal: one line per step, then the verdict."""
    call = decision.call
    lines = [
        f"call to {call.to} from {call.caller}, source {call.source_ip}",
        f"Request-URI {call.effective_request_uri()}",
        "",
    ]
    for step in decision.steps:
        lines.append(f"  {step.number} {step.name:<18} {step.result}")
        # Details already named in the result line are left out.
        details = {
            key: value
            for key, value in step.details.items()
            if _text(value) not in step.result
        }
        lines.extend(_detail_lines(details, indent=23))
    verdict = dict(decision.verdict)
    lines += ["", f"verdict: {verdict.pop('action', 'none')}"]
    lines.extend(_detail_lines(verdict, indent=2))
    return "\n".join(lines)


def _detail_lines(details: dict[str, Any], indent: int) -> list[str]:
    lines = []
    for key, value in details.items():
        text = _text(value)
        if text:
            lines.append(f"{' ' * indent}{key}: {text}")
    return lines


def _text(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{name}: {item}" for name, item in value.items())
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    return "" if value is None else str(value)
