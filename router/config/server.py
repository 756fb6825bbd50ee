"""Webhook servers: the URL, the authentication and the retry plan."""

from typing import Annotated, Literal

import yarl
from pydantic import Field, model_validator

from router.config.base import ConfigModel, HttpHeaders, HttpUrl
from router.config.secrets import Secret

StatusCode = Annotated[int, Field(ge=100, le=599)]

AUTHORIZATION_CLASH = (
    "url contains user:password, which aiohttp sends as an Authorization header,"
    " so {source} cannot also set Authorization; keep only one of the two"
)
"""Message for a URL with userinfo next to an Authorization header, which
aiohttp rejects on every request."""


def url_has_userinfo(url: str) -> bool:
    """Check whether `url` has a user or password part, as aiohttp 3 does."""
    parsed = yarl.URL(url)
    return parsed.raw_user is not None or parsed.raw_password is not None


class BackoffPlan(ConfigModel):
    """Retries of a failed webhook request.

    `fixed` waits `base_delay_seconds` between tries; `exponential` doubles the
    wait after each try.
    """

    type: Literal["fixed", "exponential"] = "fixed"
    max_retries: int = Field(0, ge=0, le=10)
    base_delay_seconds: float = Field(1.0, ge=0, le=10)
    excluded_status_codes: list[StatusCode] = []
    """HTTP status codes that are never retried."""


class Server(ConfigModel):
    """A webhook endpoint."""

    url: HttpUrl
    timeout_seconds: float = Field(20, ge=1, le=300)
    headers: HttpHeaders = {}
    credential_id: str | None = None
    """The id of a `webhook` credential that signs or authenticates requests."""
    secret: Secret | None = None
    """Shorthand authentication, sent as the X-Cozmox-Secret header."""
    backoff_plan: BackoffPlan | None = None

    @model_validator(mode="after")
    def _check_authorization_source(self) -> "Server":
        has_header = any(name.lower() == "authorization" for name in self.headers)
        if has_header and url_has_userinfo(self.url):
            raise ValueError(AUTHORIZATION_CLASH.format(source="headers"))
        return self
