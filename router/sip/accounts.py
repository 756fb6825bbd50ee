"""The trunks' pjsua2 accounts, which send the REGISTERs.

Everything here runs on the engine's owner thread: `SipEngine` submits the
operations and posts the reports back to the event loop. One account per
registering trunk, next to the router's own local account, and never more
accounts in all than the build allows (a further `Account.create()` aborts
the process on the PyPI wheel).

Incoming INVITEs can land on a trunk account (pjsua picks the account whose
domain matches the To header), and pjsua does not end the calls of an
account it deletes. So an account that still carries a call is only
unregistered when its trunk goes, and deleted when its last call ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pjsua2 as pj
import structlog

from router.sip.messages import split_host_port
from router.sip.registration import (
    AccountFailed,
    AttemptOutcome,
    NoAccountSlot,
    RegistrationReport,
    UnregisterResult,
    parse_retry_after,
)
from router.sip.registration_spec import RegistrationSpec

log = structlog.get_logger(__name__)

# pj_status_t values that pjsua2 raises as pj.Error.status (pjlib and pjsip
# error numbering, pjproject 2.15.1).
PJSIP_EBUSY = 171001  # a REGISTER transaction is still in progress
PJ_EINVALIDOP = 70013  # un-REGISTER while not registered

# When the library is destroyed, pjsua waits this long for un-REGISTERs
# still in progress. The registration manager has waited for them before.
UNREGISTER_WAIT_MS = 500


class TrunkAccounts:
    """The accounts of the registering trunks. Owner thread only.

    `create_account(trunk_id)` builds the pj.Account subclass whose
    `onRegState` calls `on_reg_state()`. `calls_on(account)` counts the
    calls that pjsua put on an account. `report` posts to the event loop.
    """

    def __init__(
        self,
        max_accounts: int,
        create_account: Callable[[str], pj.Account],
        configure_media: Callable[[pj.AccountConfig], None],
        calls_on: Callable[[pj.Account], int],
        report: Callable[[RegistrationReport], None],
    ) -> None:
        self.max_accounts = max_accounts
        self._create_account = create_account
        self._configure_media = configure_media
        self._calls_on = calls_on
        self._report = report
        self._accounts: dict[str, pj.Account] = {}
        self._serials: dict[str, int] = {}
        self._retiring: list[pj.Account] = []
        self.transport_ids: dict[str, int] = {}
        self.transport_names: dict[str, str] = {}
        self.public_host: str | None = None

    @property
    def in_use(self) -> int:
        """Return the accounts in use: the local one, trunks and retiring ones."""
        return 1 + len(self._accounts) + len(self._retiring)

    def add(self, spec: RegistrationSpec, serial: int) -> None:
        """Create the trunk's account, which sends its first REGISTER at once.

        Its reports carry `serial`. Raises NoAccountSlot when the build has
        no account left, and AccountFailed when pjsua refuses the account.
        """
        if spec.trunk_id in self._accounts:
            raise AccountFailed(f"trunk {spec.trunk_id!r} already has an account")
        if self.in_use >= self.max_accounts:
            raise NoAccountSlot(
                f"all {self.max_accounts} SIP accounts are in use, "
                f"{len(self._retiring)} of them until their last call ends"
            )
        config = self._account_config(spec)
        account = self._create_account(spec.trunk_id)
        self._accounts[spec.trunk_id] = account
        self._serials[spec.trunk_id] = serial
        try:
            account.create(config, False)
        except pj.Error as error:
            del self._accounts[spec.trunk_id]
            del self._serials[spec.trunk_id]
            raise AccountFailed(error.info()) from None

    def modify(self, spec: RegistrationSpec, serial: int) -> None:
        """Change a trunk's account. pjsua unregisters the old binding first."""
        account = self._account(spec.trunk_id)
        config = self._account_config(spec)
        self._serials[spec.trunk_id] = serial
        try:
            account.modify(config)
        except pj.Error as error:
            raise AccountFailed(error.info()) from None

    def register(self, trunk_id: str) -> bool:
        """Send a REGISTER, or return False when one is already in progress."""
        try:
            self._account(trunk_id).setRegistration(True)
        except pj.Error as error:
            if error.status == PJSIP_EBUSY:
                return False
            raise AccountFailed(error.info()) from None
        return True

    def unregister(self, trunk_id: str) -> UnregisterResult:
        """Send an un-REGISTER (Expires 0) for the trunk's binding."""
        try:
            self._account(trunk_id).setRegistration(False)
        except pj.Error as error:
            if error.status == PJSIP_EBUSY:
                return UnregisterResult.BUSY
            if error.status == PJ_EINVALIDOP:
                return UnregisterResult.NOT_REGISTERED
            raise AccountFailed(error.info()) from None
        return UnregisterResult.SENT

    def remove(self, trunk_id: str) -> None:
        """Delete the trunk's account, or retire it while it carries calls.

        Deleting an account sends an un-REGISTER when it is registered,
        without waiting for the response.
        """
        account = self._accounts.pop(trunk_id, None)
        self._serials.pop(trunk_id, None)
        if account is None:
            return
        calls = self._calls_on(account)
        if calls:
            # The binding goes now, and the account stays until its calls end.
            with contextlib.suppress(pj.Error):
                account.setRegistration(False)
            self._retiring.append(account)
            log.info("sip.trunk_account_retired", trunk=trunk_id, calls=calls)
            return
        account.shutdown()
        log.info("sip.trunk_account_deleted", trunk=trunk_id)

    def call_ended(self, account: pj.Account | None) -> None:
        """Delete a retired account once its last call has ended."""
        if account is None or account not in self._retiring:
            return
        if self._calls_on(account):
            return
        self._retiring.remove(account)
        account.shutdown()
        log.info("sip.trunk_account_deleted", trunk=getattr(account, "trunk_id", None))

    def shutdown_all(self) -> None:
        """Delete every trunk account, before the library is destroyed."""
        for account in [*self._accounts.values(), *self._retiring]:
            try:
                account.shutdown()
            except pj.Error as error:
                log.warning("sip.account_shutdown_failed", error=error.info())
        self._accounts.clear()
        self._retiring.clear()

    def on_reg_state(self, trunk_id: str, prm: pj.OnRegStateParam) -> None:
        """Copy a finished REGISTER transaction and post it to the loop."""
        serial = self._serials.get(trunk_id)
        if serial is None:
            return
        response = prm.rdata.wholeMsg if prm.rdata is not None else ""
        outcome = AttemptOutcome(
            status_code=prm.code,
            reason=prm.reason,
            granted_seconds=prm.expiration,
            response_received=bool(response),
            retry_after_seconds=parse_retry_after(response) if response else None,
        )
        self._report(RegistrationReport(trunk_id, serial, outcome))

    def _account(self, trunk_id: str) -> pj.Account:
        account = self._accounts.get(trunk_id)
        if account is None:
            raise AccountFailed(f"trunk {trunk_id!r} has no account")
        return account

    def _account_config(self, spec: RegistrationSpec) -> pj.AccountConfig:
        transport_id = self.transport_ids.get(spec.transport)
        if transport_id is None:
            raise AccountFailed(
                f"trunk {spec.trunk_id!r} registers over {spec.transport}, but the "
                f"router listens on {', '.join(sorted(self.transport_ids))} only"
            )
        config = pj.AccountConfig()
        config.idUri = spec.aor
        _configure_registration(config.regConfig, spec)
        config.sipConfig.transportId = transport_id
        config.sipConfig.contactForced = self._contact(spec)
        if spec.auth_username and spec.auth_password is not None:
            config.sipConfig.authCreds.append(
                pj.AuthCredInfo(
                    "digest",
                    spec.realm or "*",
                    spec.auth_username,
                    0,
                    spec.auth_password.get_secret_value(),
                )
            )
        # The Contact is fixed above, so pjsua must not rewrite it (or Via)
        # from what the registrar saw, nor add SIP outbound parameters.
        config.natConfig.contactRewriteUse = 0
        config.natConfig.viaRewriteUse = 0
        config.natConfig.sipOutboundUse = 0
        self._configure_media(config)
        return config

    def _contact(self, spec: RegistrationSpec) -> str:
        # The transport's published name is its bound address, the default
        # interface for 0.0.0.0. pjsua publishes a UDP transport's
        # publicAddress as the address it resolves to, so publicHost is
        # written here as the operator gave it.
        host, port = split_host_port(self.transport_names[spec.transport])
        if self.public_host:
            host = self.public_host
        parameter = "" if spec.transport == "udp" else f";transport={spec.transport}"
        return f"<sip:{spec.contact_user}@{host}:{port}{parameter}>"


def _configure_registration(
    config: pj.AccountRegConfig, spec: RegistrationSpec
) -> None:
    config.registrarUri = spec.registrar_uri
    config.registerOnAdd = True
    config.timeoutSec = spec.expires_seconds
    # pjsua's own retry is off: the router retries by its policy.
    config.retryIntervalSec = 0
    config.firstRetryIntervalSec = 0
    config.dropCallsOnFail = False
    config.unregWaitMsec = UNREGISTER_WAIT_MS
