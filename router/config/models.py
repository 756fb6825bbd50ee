"""The whole configuration, and every model it is made of.

The models live in one module per part of the file; they are all importable
from here and from `router.config`.
"""

from typing import Self

from pydantic import ValidationInfo, model_validator

from router.config.base import ConfigModel
from router.config.checks import (
    DEFER_CROSS_CHECKS_CONTEXT_KEY,
    find_cross_check_errors,
)
from router.config.credentials import (
    AuthenticationPlan,
    BearerAuthenticationPlan,
    Credential,
    Gateway,
    HmacAuthenticationPlan,
    OutboundAuthenticationPlan,
    SipRegisterPlan,
    SipTrunkCredential,
    WebhookCredential,
)
from router.config.destinations import (
    Destination,
    NumberDestination,
    SipDestination,
    TransferPlan,
)
from router.config.phone_numbers import (
    Action,
    AssistantRequestEndedReason,
    EndingHook,
    Hook,
    OneOfFilter,
    PhoneNumber,
    RingingHook,
    SayAction,
    StartsWithFilter,
    TransferAction,
)
from router.config.router_settings import (
    HttpSettings,
    ListenAddress,
    RegistrationSettings,
    RouterSettings,
    RuntimeSettings,
    SipSettings,
    SpeechSettings,
    WebhookDeliverySettings,
)
from router.config.server import BackoffPlan, Server

__all__ = [
    "Action",
    "AssistantRequestEndedReason",
    "AuthenticationPlan",
    "BackoffPlan",
    "BearerAuthenticationPlan",
    "Config",
    "Credential",
    "Destination",
    "EndingHook",
    "Gateway",
    "HmacAuthenticationPlan",
    "Hook",
    "HttpSettings",
    "ListenAddress",
    "NumberDestination",
    "OneOfFilter",
    "OrgSettings",
    "OutboundAuthenticationPlan",
    "PhoneNumber",
    "RegistrationSettings",
    "RingingHook",
    "RouterSettings",
    "RuntimeSettings",
    "SayAction",
    "Server",
    "SipDestination",
    "SipRegisterPlan",
    "SipSettings",
    "SipTrunkCredential",
    "SpeechSettings",
    "StartsWithFilter",
    "TransferAction",
    "TransferPlan",
    "WebhookDeliverySettings",
    "WebhookCredential",
]


class OrgSettings(ConfigModel):
    """Settings shared by every phone number."""

    server: Server | None = None
    """The default webhook server of every number without its own."""


class Config(ConfigModel):
    """A whole configuration file.

    Validating a Config also applies the cross-field rules of
    `router.config.checks`, unless the validation context sets
    DEFER_CROSS_CHECKS_CONTEXT_KEY because the caller runs them itself.
    """

    router: RouterSettings = RouterSettings()
    org: OrgSettings | None = None
    credentials: list[Credential] = []
    phone_numbers: list[PhoneNumber] = []

    @model_validator(mode="after")
    def _check_cross_field_rules(self, info: ValidationInfo) -> Self:
        context = info.context if isinstance(info.context, dict) else {}
        if context.get(DEFER_CROSS_CHECKS_CONTEXT_KEY):
            return self

        errors = find_cross_check_errors(self.model_dump(by_alias=True))
        if errors:
            raise ValueError("; ".join(errors))
        return self

    def trunk(self, credential_id: str) -> SipTrunkCredential | None:
        """Find the byo-sip-trunk credential with this id."""
        for trunk in self.trunks():
            if trunk.id == credential_id:
                return trunk
        return None

    def webhook_credential(self, credential_id: str) -> WebhookCredential | None:
        """Find the webhook credential with this id."""
        for credential in self.credentials:
            if not isinstance(credential, WebhookCredential):
                continue
            if credential.id == credential_id:
                return credential
        return None

    def trunks(self) -> list[SipTrunkCredential]:
        """Return the byo-sip-trunk credentials in file order."""
        return [c for c in self.credentials if isinstance(c, SipTrunkCredential)]

    def registering_trunks(self) -> list[SipTrunkCredential]:
        """Return the trunks with a sipRegisterPlan, which the router registers."""
        return [trunk for trunk in self.trunks() if trunk.sip_register_plan is not None]

    def phone_number(self, number_id: str) -> PhoneNumber | None:
        """Find the phone number with this id."""
        for number in self.phone_numbers:
            if number.id == number_id:
                return number
        return None
