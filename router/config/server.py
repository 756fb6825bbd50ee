"""Webhook servers: the URL, the authentication and the retry plan."""

from typing import Annotated, Literal

from pydantic import Field

from router.config.base import ConfigModel, HttpHeaders, HttpUrl
from router.config.secrets import Secret

StatusCode = Annotated[int, Field(ge=100, le=599)]


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
