"""Reload of the config file while the daemon runs.

A reload never touches calls in progress, because each call keeps the
`Config` and routing table it started with. Only new calls see the new
file. Some settings are bound at start (sockets, the log renderer), so a
change to them is reported and the running value is kept until a restart.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from router.config import Config, ConfigError, check_limits, load_config

ReloadListener = Callable[[Config, Config], Awaitable[None] | None]
"""Called with the old and the new config after a reload was applied."""

# Settings that the daemon reads once at start, as (attribute path, name in
# the file). Sockets stay bound and the log renderer stays configured.
RESTART_ONLY_SETTINGS = (
    (("sip", "listen"), "router.sip.listen"),
    (("sip", "public_host"), "router.sip.publicHost"),
    (("sip", "rtp_port_start"), "router.sip.rtpPortStart"),
    (("sip", "rtp_port_count"), "router.sip.rtpPortCount"),
    (("sip", "udp_receive_buffer_bytes"), "router.sip.udpReceiveBufferBytes"),
    (("http", "host"), "router.http.host"),
    (("http", "port"), "router.http.port"),
    (("log_format",), "router.logFormat"),
    (("log_level",), "router.logLevel"),
)


@dataclass(frozen=True)
class ReloadResult:
    """The outcome of one reload, as the admin API returns it."""

    applied: bool
    errors: list[str] = field(default_factory=list)
    restart_required: list[str] = field(default_factory=list)
    """Settings that changed in the file but keep their running value."""

    def as_json(self) -> dict[str, Any]:
        """Return the result with the API's camelCase keys."""
        return {
            "result": "applied" if self.applied else "rejected",
            "errors": self.errors,
            "restartRequired": self.restart_required,
        }


def load_checked(path: str | os.PathLike[str], max_accounts: int) -> Config:
    """Load a config file and check it against the SIP stack's account limit.

    Raises ConfigError with every problem found.
    """
    config = load_config(path)
    errors = check_limits(config, max_accounts)
    if errors:
        raise ConfigError(errors)
    return config


def keep_restart_only_settings(old: Config, new: Config) -> tuple[Config, list[str]]:
    """Return `new` with the running values of restart-only settings.

    Also returns the names, as written in the file, of the settings that
    differed, so the operator learns that they need a restart.
    """
    changed = [
        name
        for attributes, name in RESTART_ONLY_SETTINGS
        if _get(old.router, attributes) != _get(new.router, attributes)
    ]
    if not changed:
        return new, []

    http = new.router.http.model_copy(
        update={"host": old.router.http.host, "port": old.router.http.port}
    )
    router = new.router.model_copy(
        update={
            "sip": old.router.sip,
            "http": http,
            "log_format": old.router.log_format,
            "log_level": old.router.log_level,
        }
    )
    return new.model_copy(update={"router": router}), changed


def _get(settings: Any, attributes: tuple[str, ...]) -> Any:
    for attribute in attributes:
        settings = getattr(settings, attribute)
    return settings
