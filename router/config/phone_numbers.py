"""Phone numbers on the operator's trunks, with their routes and hooks."""

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator

from router.config.base import ConfigModel, NumberText
from router.config.destinations import Destination
from router.config.number_rules import validate_number_field
from router.config.server import Server

AssistantRequestEndedReason = Literal[
    "assistant-request-failed",
    "assistant-request-returned-error",
    "assistant-request-returned-unspeakable-error",
    "assistant-request-returned-forwarding-phone-number",
    "assistant-request-returned-invalid-assistant",
    "assistant-request-returned-no-assistant",
]
"""The endedReason values a call.ending hook may filter on."""


def _check_prefix(prefix: str) -> str:
    if prefix.startswith("+"):
        raise ValueError(
            f"prefix {prefix!r} starts with '+'; write it without '+',"
            " because it is compared with the caller's number without its '+'"
        )
    return prefix


NumberPrefix = Annotated[
    NumberText, Field(min_length=1, max_length=20), AfterValidator(_check_prefix)
]


class StartsWithFilter(ConfigModel):
    """A filter that matches a caller's number, without '+', by its prefix."""

    type: Literal["startsWith"]
    key: Literal["number"]
    starts_with: list[NumberPrefix] = Field(min_length=1, max_length=20)


class OneOfFilter(ConfigModel):
    """A filter that matches when the call's endedReason is one of the listed values."""

    type: Literal["oneOf"]
    key: Literal["call.endedReason"]
    one_of: list[AssistantRequestEndedReason] = Field(min_length=1)


class SayAction(ConfigModel):
    """An action that answers the call, speaks the text and hangs up."""

    type: Literal["say"]
    exact: str = Field(min_length=1, max_length=4000)


class TransferAction(ConfigModel):
    """An action that transfers the call.

    Without a destination the call goes to the number's fallbackDestination.
    """

    type: Literal["transfer"]
    destination: Destination | None = None


Action = Annotated[SayAction | TransferAction, Field(discriminator="type")]


class RingingHook(ConfigModel):
    """A call.ringing hook, which runs its first action when every filter matches."""

    on: Literal["call.ringing"]
    filters: list[StartsWithFilter] = []
    do: list[Action] = Field(min_length=1)


class EndingHook(ConfigModel):
    """A call.ending hook, which runs its action on a listed endedReason."""

    on: Literal["call.ending"]
    filters: list[OneOfFilter] = []
    do: Action


Hook = Annotated[RingingHook | EndingHook, Field(discriminator="on")]


class PhoneNumber(ConfigModel):
    """A number on one of the operator's trunks.

    At most one of assistant_id, squad_id and workflow_id is set; with none,
    the route comes from an assistant-request to the number's or the org's
    server. The config loader checks this and the credential references.
    """

    provider: Literal["byo-phone-number"] = "byo-phone-number"
    id: str = Field(min_length=1)
    credential_id: str = Field(min_length=1)
    """The id of the byo-sip-trunk credential the number's calls arrive on."""
    # Declared before `number`, whose validator reads it.
    number_e164_check_enabled: bool = True
    number: NumberText
    name: str | None = Field(None, max_length=40)
    assistant_id: str | None = Field(None, min_length=1)
    squad_id: str | None = Field(None, min_length=1)
    workflow_id: str | None = Field(None, min_length=1)
    server: Server | None = None
    fallback_destination: Destination | None = None
    hooks: list[Hook] = []
    status: Literal["active", "activating", "blocked"] = "active"

    @field_validator("number")
    @classmethod
    def _check_number(cls, number: str, info: ValidationInfo) -> str:
        return validate_number_field(number, info)
