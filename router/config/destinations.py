"""Transfer destinations: a phone number dialled through the trunk, or a SIP URI.

The same models parse the `destination` of an assistant-request reply, so this
module depends on nothing but the shared value types.
"""

from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator

from router.config.base import ConfigModel, NumberText, SipHeaders, SipUri
from router.config.number_rules import validate_number_field

CALLER_ID_TEMPLATES = ("{{customer.number}}", "{{phoneNumber.number}}")
"""The templates a callerId may be, replaced by the caller's or the dialled number."""


class TransferPlan(ConfigModel):
    """How a call is moved to a destination.

    `refer` answers the call, then blind-transfers it with REFER. `dial`
    bridges a new leg and keeps the router in the path. `redirect` replies 302
    before answering, for trunks without REFER.
    """

    sip_verb: Literal["refer", "dial", "redirect"] = "refer"


class NumberDestination(ConfigModel):
    """A number dialled out through the phone number's trunk."""

    type: Literal["number"]
    # Declared before `number`, whose validator reads it.
    number_e164_check_enabled: bool = True
    number: NumberText
    extension: NumberText | None = Field(None, min_length=1, max_length=10)
    caller_id: NumberText | None = Field(None, max_length=40)
    message: str | None = None
    transfer_plan: TransferPlan = TransferPlan()

    @field_validator("number")
    @classmethod
    def _check_number(cls, number: str, info: ValidationInfo) -> str:
        return validate_number_field(number, info)

    @field_validator("caller_id")
    @classmethod
    def _check_caller_id(cls, caller_id: str | None) -> str | None:
        if caller_id and "{{" in caller_id and caller_id not in CALLER_ID_TEMPLATES:
            expected = " or ".join(CALLER_ID_TEMPLATES)
            raise ValueError(
                f"unknown callerId template {caller_id!r}; expected {expected}"
            )
        return caller_id


class SipDestination(ConfigModel):
    """A SIP URI, reached by the transfer plan's verb."""

    type: Literal["sip"]
    sip_uri: SipUri
    sip_headers: SipHeaders = {}
    message: str | None = None
    transfer_plan: TransferPlan = TransferPlan()


Destination = Annotated[NumberDestination | SipDestination, Field(discriminator="type")]
