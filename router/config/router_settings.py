"""The daemon's own settings: the `router` section of the config file."""

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from router.config.base import ConfigModel, IPv4Text, SipUri
from router.config.secrets import Secret


class ListenAddress(ConfigModel):
    """A SIP transport the router binds."""

    transport: Literal["udp", "tcp"]
    host: IPv4Text = "0.0.0.0"
    port: int = Field(5060, ge=1, le=65535)


def _default_listen() -> list[ListenAddress]:
    return [ListenAddress(transport="udp"), ListenAddress(transport="tcp")]


# A 64 KiB buffer has room for about 30 INVITEs of 1 kB (an estimate: the
# kernel charges each packet its bookkeeping too).
MIN_UDP_RECEIVE_BUFFER_BYTES = 64 * 1024


class SipSettings(ConfigModel):
    """SIP transports and the RTP port range."""

    listen: list[ListenAddress] = Field(default_factory=_default_listen, min_length=1)
    """One entry per transport; udp and tcp on 0.0.0.0:5060 by default.

    The config loader rejects a second entry for the same transport.
    """
    public_host: str | None = Field(None, min_length=1)
    """Host announced in Contact, Via and SDP behind NAT; the listen host if None."""
    rtp_port_start: int = Field(40000, ge=1024, le=65534)
    # Declared after rtp_port_start, which its validator reads.
    rtp_port_count: int = Field(2000, ge=2)
    """Ports for RTP and RTCP, two per media stream."""
    udp_receive_buffer_bytes: int = Field(0, ge=0, le=1024**3)
    """Kernel receive buffer asked for on the UDP SIP socket, 0 or at least
    64 KiB. 0, the default, keeps the kernel's `net.core.rmem_default`.
    A larger buffer stores longer INVITE bursts, but under sustained
    overload each INVITE also waits longer in it. Without CAP_NET_ADMIN
    the kernel caps it at `net.core.rmem_max`."""

    @field_validator("udp_receive_buffer_bytes")
    @classmethod
    def _check_receive_buffer(cls, size: int) -> int:
        if 0 < size < MIN_UDP_RECEIVE_BUFFER_BYTES:
            raise ValueError(
                f"{size} bytes is too small for a burst of INVITEs; give at "
                f"least {MIN_UDP_RECEIVE_BUFFER_BYTES}, or 0 for the kernel's "
                "default"
            )
        return size

    @field_validator("rtp_port_count")
    @classmethod
    def _check_port_range(cls, count: int, info: ValidationInfo) -> int:
        start = info.data.get("rtp_port_start")
        if start is not None and start + count - 1 > 65535:
            raise ValueError(
                f"RTP ports {start} to {start + count - 1} go past 65535;"
                f" lower rtpPortStart or rtpPortCount"
            )
        return count


class HttpSettings(ConfigModel):
    """The HTTP server for /metrics, /healthz, /readyz and the admin API."""

    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(8080, ge=1, le=65535)
    admin_token: Secret | None = None
    """Bearer token of the admin API; without it the admin API is off."""


class RuntimeSettings(ConfigModel):
    """The SIP endpoint of the voice engine that runs assistants."""

    uri: SipUri = "sip:runtime@127.0.0.1:5080"
    mode: Literal["bridge", "refer", "redirect"] = "bridge"


class RegistrationSettings(ConfigModel):
    """Timers of the trunks' SIP registrations."""

    expires_seconds: int = Field(300, ge=1, le=86400)
    retry_min_seconds: float = Field(30, gt=0)
    # Declared after retry_min_seconds, which its validator reads.
    retry_max_seconds: float = Field(300, gt=0)

    @field_validator("retry_max_seconds")
    @classmethod
    def _check_retry_range(cls, maximum: float, info: ValidationInfo) -> float:
        minimum = info.data.get("retry_min_seconds")
        if minimum is not None and maximum < minimum:
            raise ValueError(
                f"retryMaxSeconds {maximum:g} is less than retryMinSeconds {minimum:g}"
            )
        return maximum


class WebhookDeliverySettings(ConfigModel):
    """The queue that sends status updates and end-of-call reports."""

    queue_size: int = Field(1000, ge=1, le=100000)
    """Maximum of messages waiting. Past it the oldest is dropped and counted."""
    max_concurrent_requests: int = Field(16, ge=1, le=256)
    """Requests in flight at once, across every server."""
    flush_seconds: float = Field(5, ge=0, le=300)
    """Seconds that queued messages may still be sent on shutdown."""


class SpeechSettings(ConfigModel):
    """Text-to-speech of the `say` action, `error` replies and transfer messages."""

    voice: str = Field(
        "en", min_length=1, max_length=40, pattern=r"^[A-Za-z0-9][A-Za-z0-9_+-]*$"
    )
    """An espeak-ng voice name, such as `en`, `en-us` or `de`."""
    sample_rate: Literal[8000, 16000] = 16000
    """Sample rate in Hz of the rendered WAV files, which pjsua resamples."""
    cache_dir: str | None = Field(None, min_length=1)
    """Folder of rendered prompts; None is `$XDG_CACHE_HOME/cozmox-router/speech`.

    Without XDG_CACHE_HOME set, `~/.cache` takes its place.
    """


class RouterSettings(ConfigModel):
    """The daemon's own settings; every field has a default."""

    sip: SipSettings = SipSettings()
    http: HttpSettings = HttpSettings()
    runtime: RuntimeSettings = RuntimeSettings()
    registration: RegistrationSettings = RegistrationSettings()
    max_concurrent_calls: int = Field(500, ge=1, le=100_000)
    """Calls past this limit get 503 with Retry-After."""
    assistant_request_deadline_seconds: float = Field(7.5, gt=0, le=300)
    """Deadline of the whole assistant-request exchange, retries included."""
    drain_seconds: float = Field(30, ge=0, le=86_400)
    """How long calls in progress may go on after SIGTERM."""
    webhook_delivery: WebhookDeliverySettings = WebhookDeliverySettings()
    speech: SpeechSettings = SpeechSettings()
    log_format: Literal["auto", "json", "console"] = "auto"
    """auto: console on a terminal, JSON lines otherwise."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """The lowest level logged. A call's steps are logged at debug, and its
    `call.ended` summary at info (warning when it was rejected or failed)."""
    mask_caller_numbers: bool = True
