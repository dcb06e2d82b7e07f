"""Accounts: registration, sessions (opaque bearer tokens), profile, deletion, follows.

A session ends when it is revoked (logout, logout everywhere, a password change for every other
session, a ban, account deletion) or expires; the account may also stop acting (disabled,
suspended, banned, deleted). `session_refusal` is the one rule for both, used when a token is
presented and again, by `core.revocation`, for streams that are already open.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import string
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from keyhold.clock import iso, now_ms
from keyhold.config import Settings
from keyhold.core import matrix_ids
from keyhold.core.ages import MIN_AGE_YEARS, age_on
from keyhold.core.errors import Problem, conflict, forbidden, invalid, not_found, unauthorized
from keyhold.core.passwords import Passwords
from keyhold.core.signin import SignInGuard
from keyhold.crypto.tokens import new_token, token_digest
from keyhold.store import accounts as store
from keyhold.store import devices as device_store

USERNAME = re.compile(r"[a-z0-9_]{3,32}")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
# A ban is a suspension without end: the member can still sign in to appeal it, nothing else.
BANNED = 2**62


@dataclass(frozen=True, slots=True)
class Member:
    """The signed-in member a request acts for. `session` is the digest of the token it came
    with; an in-process actor (an operator's CLI command) has none, and no revocation concerns it."""

    id: int
    username: str
    region: str
    display_name: str
    session: bytes = b""
    session_expires_ms: int = 0
    device_id: str | None = None  # None: an in-process actor, or a token from before devices
    created_ms: int = 0  # when the account was made (rate limits are stricter for new ones)
    # The client address the request came from, as the API resolved it (None: in-process, or
    # not known where it is used): what per-address limits inside core count.
    address: str | None = None


# What a request needs of the account. `act`: anything that reaches others or changes state
# (sending, starting conversations, group changes, follows, uploads); `read`: reading what the
# member may see (history, attachments, the stream), which a suspension leaves open;
# `appeal`: appealing and seeing one's standing, which even a ban leaves open.
Need = Literal["act", "read", "appeal"]


def session_refusal(row: Any, now: int, need: Need = "act") -> Problem | None:
    """Why a session (a `store.accounts.session_user` row) may not do what it `need`s now, or
    None. What the account may no longer do (403) is said before what became of the session
    (401): a banned member's streams close with the ban as their reason, not just "revoked"."""
    if row is None:
        return unauthorized("the token is unknown or was revoked; log in again")
    if row.disabled or row.deleted_ms is not None:
        return forbidden("this account is disabled")
    banned = row.suspended_until_ms >= BANNED
    if row.suspended_until_ms > now and (need == "act" or (need == "read" and banned)):
        appeal = "a moderation decision can be appealed once"
        if banned:
            return forbidden(f"this account is suspended permanently (banned); {appeal}")
        until = iso(row.suspended_until_ms)
        return forbidden(f"this account is suspended until {until}: it can read but not send; {appeal}")
    if row.revoked_ms is not None:
        return unauthorized("the token is unknown or was revoked; log in again")
    if row.expires_ms <= now:
        return unauthorized("the token has expired; log in again")
    return None


async def require_live_session(conn: AsyncConnection, member: Member, need: Need = "act") -> None:
    """In a write's own transaction: refuse if the member's session ended since it was checked
    (a frame on a stream whose session was just revoked writes nothing), or if the account may
    no longer do what the write `need`s (a suspension since)."""
    if member.session:
        refusal = session_refusal(await store.session_user(conn, member.session), now_ms(), need)
        if refusal is not None:
            raise refusal


def check_username(username: str) -> None:
    if not USERNAME.fullmatch(username):
        raise invalid("username must be 3-32 characters of a-z, 0-9 and _")


def check_password(password: str) -> None:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise invalid(f"password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters")


def require_age(born: dt.date, min_age: int, today: dt.date | None = None) -> None:
    """Refuse an account younger than `min_age` (never less than the legal floor)."""
    floor = max(min_age, MIN_AGE_YEARS)
    if age_on(born, today or dt.date.today()) < floor:
        raise forbidden(f"Keyhold accounts need an age of at least {floor}")


def parse_birthdate(value: str, today: dt.date | None = None) -> dt.date:
    try:
        born = dt.date.fromisoformat(value)
    except ValueError as exc:
        raise invalid("birthdate must be a date written YYYY-MM-DD") from exc
    if len(value) != 10:
        raise invalid("birthdate must be a date written YYYY-MM-DD")
    today = today or dt.date.today()
    if born > today or born.year < 1900:
        raise invalid("birthdate must be a real date in the past")
    require_age(born, MIN_AGE_YEARS, today)
    return born


DEVICE_ID_LETTERS = string.ascii_uppercase


def new_device_id() -> str:
    """A device id for a client that did not choose one: ten capital letters, as Matrix
    servers make them (an identifier, not a secret)."""
    return "".join(secrets.choice(DEVICE_ID_LETTERS) for _ in range(10))


def public_profile(row: Any) -> dict[str, Any]:
    return {
        "username": row.username,
        "display_name": row.display_name,
        "region": row.region,
        "created_at": iso(row.created_ms),
    }


async def everyone_findable(_conn: AsyncConnection, _viewer_id: int, _row: Any) -> bool:
    return True


class AccountService:
    def __init__(
        self, engine: AsyncEngine, passwords: Passwords, guard: SignInGuard, settings: Settings
    ) -> None:
        self._engine = engine
        self._passwords = passwords
        self._guard = guard
        self._settings = settings
        # The minimum age of a region's members, and whether a member may find another (by
        # viewer id and the other's row): the safety policy fills them at wiring time.
        self.min_age: Callable[[str], int] = lambda _region: MIN_AGE_YEARS
        self.findable: Callable[[AsyncConnection, int, Any], Awaitable[bool]] = everyone_findable

    async def register(self, username: str, password: str, birthdate: str, region: str) -> dict[str, Any]:
        check_username(username)
        check_password(password)
        born = parse_birthdate(birthdate)  # its form, and the legal floor
        if region not in self._settings.regions:
            raise invalid(f"region must be one of {', '.join(self._settings.regions)}")
        require_age(born, self.min_age(region))  # the region's own minimum
        password_hash = await self._passwords.hash(password)
        async with self._engine.begin() as conn:
            user_id = await store.insert_user(
                conn,
                {
                    "username": username,
                    "password_hash": password_hash,
                    "display_name": username,
                    "birthdate": birthdate,
                    "region": region,
                    "created_ms": now_ms(),
                },
            )
            if user_id is None:
                raise conflict("that username is taken")
            row = await store.by_id(conn, user_id)
        return public_profile(row)

    async def login(
        self, username: str, password: str, address: str, device_id: str | None = None, device_name: str | None = None
    ) -> dict[str, Any]:
        """A new session on a device, for a sign-in from client `address` (throttled per address
        and name). `device_id` names a device of the member's to sign in on again (its earlier
        tokens end: a device holds one) or a new one; without it the server makes one up."""
        self._passwords.check_capacity()  # a burst is turned away before it costs a write
        async with self._guard.attempt(address, "member", username) as attempt:
            async with self._engine.connect() as conn:
                row = await store.by_username(conn, username)
            # An unknown name, or a deleted account (whose hash no password matches, at once),
            # is verified against a dummy hash: timing does not tell them from a real one.
            live = row is not None and row.deleted_ms is None
            ok = await self._passwords.verify(row.password_hash if live and row else None, password)
            if row is None or not live or not ok:
                attempt.fail()
                raise unauthorized("username or password is wrong")
            attempt.succeed()
        if row.disabled:
            raise forbidden("this account is disabled")
        token = new_token()
        now = now_ms()
        expires = now + self._settings.token_ttl_seconds * 1000
        device = device_id or new_device_id()
        async with self._engine.begin() as conn:
            if not await device_store.sign_in_on(conn, row.id, device, device_name, now):
                await device_store.revoke_sessions(conn, row.id, device)
            digest = token_digest(token)
            if not await store.insert_session(conn, digest, row.id, row.password_hash, now, expires, device):
                raise unauthorized("username or password is wrong")  # it changed while we checked
        return {
            "token": token,
            "username": row.username,
            "user_id": self.user_id(row.username),
            "device_id": device,
            "expires_at": iso(expires),
        }

    def user_id(self, username: str) -> str:
        """The member's full id, `@name:server_name`, as end-to-end encryption names people."""
        return matrix_ids.user_id(username, self._settings.server_name)

    async def authenticate(self, token: str, need: Need = "act") -> Member:
        """The member a token belongs to, if the account may do what the request `need`s: a
        suspended member's token reads and appeals, a banned member's only appeals."""
        session = token_digest(token)
        async with self._engine.connect() as conn:
            row = await store.session_user(conn, session)
        refusal = session_refusal(row, now_ms(), need)
        if refusal is not None or row is None:
            raise refusal or unauthorized()
        return Member(
            row.id, row.username, row.region, row.display_name, session, row.expires_ms, row.device_id, row.created_ms
        )

    async def logout(self, member: Member) -> None:
        async with self._engine.begin() as conn:
            await store.revoke_session(conn, member.session)

    async def logout_everywhere(self, member: Member) -> int:
        async with self._engine.begin() as conn:
            return await store.revoke_all_sessions(conn, member.id)

    async def profile(self, member: Member) -> dict[str, Any]:
        async with self._engine.connect() as conn:
            row = await store.by_id(conn, member.id)
        return {**public_profile(row), "id": member.id, "birthdate": row.birthdate if row else None}

    async def set_display_name(self, member: Member, display_name: str) -> dict[str, Any]:
        name = display_name.strip()
        if not 1 <= len(name) <= 64:
            raise invalid("display_name must be 1-64 characters")
        async with self._engine.begin() as conn:
            await store.update_user(conn, member.id, display_name=name)
        return await self.profile(member)

    async def change_password(self, member: Member, current: str, new: str) -> int:
        """Set a new password and end every other session of the member (this one goes on):
        whoever knew the old password may hold one. Returns how many sessions ended."""
        check_password(new)
        verified = await self._check_password(member, current)
        new_hash = await self._passwords.hash(new)
        async with self._engine.begin() as conn:
            await require_live_session(conn, member)
            if not await store.replace_password(conn, member.id, verified, new_hash):
                raise conflict("the password was changed meanwhile; sign in again")
            return await store.revoke_all_sessions(conn, member.id, keep=member.session or None)

    async def list_accounts(self, after_id: int, limit: int) -> list[dict[str, Any]]:
        """Accounts in id order, for operators: id, name, region, creation, status."""
        async with self._engine.connect() as conn:
            rows = await store.list_users(conn, after_id, limit)
        return [
            {
                "id": r.id,
                "username": r.username,
                "region": r.region,
                "created_at": iso(r.created_ms),
                "status": "deleted" if r.deleted_ms else "disabled" if r.disabled else "active",
            }
            for r in rows
        ]

    async def acting_as(self, username: str) -> Member | None:
        """An active member, for an operator's command acting in their name in this process
        (no session: no revocation concerns it); None if there is no such active account."""
        async with self._engine.connect() as conn:
            row = await store.by_username(conn, username)
        if row is None or row.deleted_ms is not None or row.disabled:
            return None
        return Member(row.id, row.username, row.region, row.display_name, created_ms=row.created_ms)

    async def exists(self, username: str) -> bool:
        async with self._engine.connect() as conn:
            return await store.by_username(conn, username) is not None

    async def disable(self, username: str) -> int:
        """An operator disables an account: it can no longer sign in, every session ends and
        its open streams close. Returns how many sessions ended."""
        async with self._engine.begin() as conn:
            row = await self.user(conn, username)
            await store.restrict_user(conn, row.id, disabled=True)
            return await store.revoke_all_sessions(conn, row.id)

    async def _check_password(self, member: Member, password: str) -> str:
        """The member's password hash, once `password` is verified against it."""
        async with self._engine.connect() as conn:
            row = await store.by_id(conn, member.id)
        if row is None or not await self._passwords.verify(row.password_hash, password):
            raise Problem(403, "wrong-password", "Wrong password", "the current password is wrong")
        return str(row.password_hash)

    async def verify_for_deletion(self, member: Member, password: str) -> None:
        await self._check_password(member, password)

    async def user(self, conn: AsyncConnection, username: str) -> Any:
        row = await store.by_username(conn, username)
        if row is None or row.deleted_ms is not None:
            raise not_found("no such user")
        return row

    async def findable_user(self, conn: AsyncConnection, viewer: Member, username: str) -> Any:
        """The member `username` as `viewer` may find them: someone the safety policy hides
        from the viewer (a minor, from a stranger) gets the unknown-user answer."""
        row = await self.user(conn, username)
        if row.id != viewer.id and not await self.findable(conn, viewer.id, row):
            raise not_found("no such user")
        return row

    async def public_profile_of(self, viewer: Member, username: str) -> dict[str, Any]:
        async with self._engine.connect() as conn:
            return public_profile(await self.findable_user(conn, viewer, username))

    async def follow(self, member: Member, username: str) -> None:
        async with self._engine.begin() as conn:
            target = await self.findable_user(conn, member, username)
            if target.id == member.id:
                raise invalid("you cannot follow yourself")
            await store.add_follow(conn, member.id, target.id, now_ms())

    async def unfollow(self, member: Member, username: str) -> None:
        # Done whether or not there was a follow, or an account of that name: unfollowing must
        # not tell a hidden member (a minor, a blocker) from a name nobody has.
        async with self._engine.begin() as conn:
            target = await store.by_username(conn, username)
            if target is not None:
                await store.remove_follow(conn, member.id, target.id)

    async def relations(self, member: Member) -> dict[str, list[str]]:
        async with self._engine.connect() as conn:
            return {
                "following": await store.following(conn, member.id),
                "followers": await store.followers(conn, member.id),
                "friends": await store.friends(conn, member.id),
            }
