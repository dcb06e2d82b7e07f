"""Staff accounts: role and region, password + TOTP sign-in, short separate sessions.

Staff tokens are a different kind from member tokens (own table, `ks_` prefix, 1 h default):
a member token never opens a staff route and the reverse. Sign-ins are throttled like
members' (`core.signin`: per client address and per account name, an unknown name answering
like a real one); a TOTP code is accepted once (replays of the same step fail).
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from typing import Any

import pyotp
from sqlalchemy.ext.asyncio import AsyncEngine

from keyhold.clock import iso, now_ms
from keyhold.config import Settings
from keyhold.core.accounts import check_password, check_username
from keyhold.core.errors import conflict, forbidden, invalid, not_found, unauthorized
from keyhold.core.passwords import Passwords
from keyhold.core.signin import SignInGuard
from keyhold.crypto.keyprovider import KeyProvider, WrappedKey
from keyhold.crypto.tokens import token_digest
from keyhold.governance.roles import ROLES
from keyhold.store import staff as store

STAFF_TOKEN_PREFIX = "ks_"  # noqa: S105 - a marker for secret scanners, not a secret


@dataclass(frozen=True, slots=True)
class StaffMember:
    id: int
    username: str
    role: str
    region: str


# Who may do what: every staff role check reads one of these, through `require_role`.
SEE_REPORTS = ("moderator", "admin")  # list and look at report cases (no content)
TAKE_REPORTS = ("moderator",)  # claim, decide and read report cases
HANDLE_LEGAL = ("legal",)  # legal cases, their content and disclosure
AUDIT = ("auditor", "admin")  # whole log entries, running transparency periods


def has_role(staff: StaffMember, roles: tuple[str, ...]) -> bool:
    return staff.role in roles


def require_role(staff: StaffMember, roles: tuple[str, ...], work: str) -> None:
    """Refuse (403) unless `staff` has one of `roles`; `work` says what was asked."""
    if not has_role(staff, roles):
        raise forbidden(f"{work} is for {' or '.join(roles)} staff")


def _totp_context(username: str) -> bytes:
    return b"keyhold/staff-totp/v1|" + username.encode()


class StaffService:
    def __init__(
        self,
        engine: AsyncEngine,
        passwords: Passwords,
        guard: SignInGuard,
        provider: KeyProvider,
        settings: Settings,
    ) -> None:
        self._engine = engine
        self._passwords = passwords
        self._guard = guard
        self._provider = provider
        self._settings = settings

    async def add(self, username: str, password: str, role: str, region: str) -> dict[str, Any]:
        """Create a staff account; returns the TOTP secret and otpauth URI (shown once)."""
        check_username(username)
        check_password(password)
        if role not in ROLES:
            raise invalid(f"role must be one of {', '.join(ROLES)}")
        if region not in self._settings.regions:
            raise invalid(f"region must be one of {', '.join(self._settings.regions)}")
        secret, wrapped, uri = self._new_totp(username, region)
        password_hash = await self._passwords.hash(password)
        async with self._engine.begin() as conn:
            staff_id = await store.insert_staff(
                conn,
                {
                    "username": username,
                    "password_hash": password_hash,
                    "totp_sealed": wrapped.blob,
                    "totp_kek_version": wrapped.kek_version,
                    "role": role,
                    "region": region,
                    "created_ms": now_ms(),
                },
            )
        if staff_id is None:
            raise conflict("a staff account of that name exists")
        return {
            "id": staff_id,
            "username": username,
            "role": role,
            "region": region,
            "totp_secret": secret,
            "otpauth_uri": uri,
        }

    def _new_totp(self, username: str, region: str) -> tuple[str, WrappedKey, str]:
        """A new TOTP secret, wrapped under the region's KEK, and its otpauth URI."""
        secret = pyotp.random_base32()
        wrapped = self._provider.wrap(region, secret.encode(), _totp_context(username))
        uri = pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name="Keyhold staff")
        return secret, wrapped, uri

    async def reset_totp(self, username: str) -> dict[str, Any]:
        """A new second factor for a staff member who lost theirs (an operator's act): the old
        codes stop working, open staff sessions end, the new secret is shown once."""
        async with self._engine.begin() as conn:
            row = await store.by_username(conn, username)
            if row is None:
                raise not_found("no such staff account")
            secret, wrapped, uri = self._new_totp(row.username, row.region)
            await store.update_staff(
                conn, row.id, totp_sealed=wrapped.blob, totp_kek_version=wrapped.kek_version, last_totp_step=0
            )
            ended = await store.revoke_sessions_of(conn, row.id)
        return {"username": row.username, "totp_secret": secret, "otpauth_uri": uri, "sessions_ended": ended}

    async def list_staff(self) -> list[dict[str, Any]]:
        async with self._engine.connect() as conn:
            rows = await store.list_staff(conn)
        return [
            {
                "id": r.id,
                "username": r.username,
                "role": r.role,
                "region": r.region,
                "created_at": iso(r.created_ms),
                "status": "disabled" if r.disabled else "active",
            }
            for r in rows
        ]

    async def acting_as(self, username: str) -> StaffMember | None:
        """An active staff member, for an operator's command in this process acting in their
        name (e.g. `legal export --as`); None if there is none."""
        async with self._engine.connect() as conn:
            row = await store.by_username(conn, username)
        if row is None or row.disabled:
            return None
        return StaffMember(row.id, row.username, row.role, row.region)

    def _totp(self, row: Any) -> pyotp.TOTP:
        secret = self._provider.unwrap(
            row.region, WrappedKey(row.totp_kek_version, row.totp_sealed), _totp_context(row.username)
        )
        return pyotp.TOTP(secret.decode())

    def _code_step(self, row: Any, code: str, now: int) -> int | None:
        """The time step `code` belongs to (one step of clock drift either way), or None."""
        totp = self._totp(row)
        step = totp.timecode(dt.datetime.fromtimestamp(now / 1000))
        for candidate in (step, step - 1, step + 1):
            if secrets.compare_digest(totp.generate_otp(candidate), code.strip()):
                return candidate
        return None

    async def login(self, username: str, password: str, code: str, address: str) -> dict[str, Any]:
        now = now_ms()
        self._passwords.check_capacity()  # a burst is turned away before it costs a write
        async with self._guard.attempt(address, "staff", username) as attempt:
            async with self._engine.connect() as conn:
                row = await store.by_username(conn, username)
            password_ok = await self._passwords.verify(row.password_hash if row else None, password)
            step = self._code_step(row, code, now) if row is not None and password_ok else None
            # A used step fails like a wrong code: each code signs in once.
            if row is None or step is None or step <= row.last_totp_step:
                attempt.fail()
                raise unauthorized("username, password or code is wrong")
            attempt.succeed()
        if row.disabled:
            raise forbidden("this staff account is disabled")
        token = STAFF_TOKEN_PREFIX + secrets.token_urlsafe(32)
        expires = now + self._settings.staff_session_seconds * 1000
        async with self._engine.begin() as conn:
            if not await store.use_totp_step(conn, row.id, step):  # a concurrent sign-in used it
                raise unauthorized("username, password or code is wrong")
            await store.insert_session(conn, token_digest(token), row.id, now, expires)
        return {
            "token": token,
            "username": row.username,
            "role": row.role,
            "region": row.region,
            "expires_at": iso(expires),
        }

    async def authenticate(self, token: str) -> StaffMember:
        if not token.startswith(STAFF_TOKEN_PREFIX):
            raise unauthorized("a staff token is required (sign in at /api/v1/staff/sessions)")
        async with self._engine.connect() as conn:
            row = await store.session_staff(conn, token_digest(token))
        if row is None or row.revoked:
            raise unauthorized("the staff token is unknown or was revoked")
        if row.expires_ms <= now_ms():
            raise unauthorized("the staff session has expired; sign in again")
        if row.disabled:
            raise forbidden("this staff account is disabled")
        return StaffMember(row.id, row.username, row.role, row.region)

    async def logout(self, token: str) -> None:
        async with self._engine.begin() as conn:
            await store.revoke_session(conn, token_digest(token))
