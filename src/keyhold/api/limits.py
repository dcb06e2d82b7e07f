"""Rate limits on the routes: dependencies that take a token before the handler runs.

A route names its member as `MessageSender`, `ConversationStarter`, `Follower`, `Reporter` or
`DeviceMessenger` instead of `CurrentMember`: the token is taken once the member is known and before the body is
validated or anything is read or written, so a refused request (429, Retry-After) costs the
check and nothing more. Other callers (the WebSocket, message requests) use `take` directly.
A refusal is answered after a short pause (`PAUSE_AFTER_REFUSAL_S`), and a WebSocket whose send
was refused is not read for as long (`Backoff`): a client that ignores Retry-After and loops
cannot make the server spend a core on refusing it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from keyhold.api.deps import CurrentMember, Service, Services, client_address
from keyhold.core.accounts import Member
from keyhold.core.errors import Problem
from keyhold.safety.limiter import Charge
from keyhold.safety.rate_limits import Kind

_CHARGE = "keyhold_rate_charge"
# How long a WebSocket is not read after one of its sends was refused for its rate (and a REST
# refusal is held before it is answered): a client that keeps sending past its limit is slowed
# to a few refusals a second per socket or request in flight (TCP holds back the rest, and the
# server spends nothing on them), while one that waits the Retry-After never notices.
PAUSE_AFTER_REFUSAL_S = 0.25


def take(svc: Services, kind: Kind | str, member: Member, connection: HTTPConnection) -> Charge:
    """Take a `kind` token for `member` from the client of `connection`, or raise the 429."""
    return svc.limits.take(kind, member, client_address(connection))


def refund(svc: Services, connection: HTTPConnection) -> None:
    """Give back the token a route's dependency took (the action did not count after all)."""
    charge = getattr(connection.state, _CHARGE, None)
    if charge is not None:
        svc.limits.refund(charge)


def _charging(kind: Kind) -> Callable[[HTTPConnection, Member, Services], Awaitable[Member]]:
    async def dependency(request: HTTPConnection, member: CurrentMember, svc: Service) -> Member:
        try:
            setattr(request.state, _CHARGE, take(svc, kind, member, request))
        except Problem:
            # The refusal is answered after the same pause as on a WebSocket: a client that
            # loops on 429s with a few requests in flight is slowed to a few a second each.
            await asyncio.sleep(PAUSE_AFTER_REFUSAL_S)
            raise
        return member

    return dependency


MessageSender = Annotated[Member, Depends(_charging(Kind.MESSAGES))]
ConversationStarter = Annotated[Member, Depends(_charging(Kind.CONVERSATIONS))]
Follower = Annotated[Member, Depends(_charging(Kind.FOLLOWS))]
Reporter = Annotated[Member, Depends(_charging(Kind.REPORTS))]
DeviceMessenger = Annotated[Member, Depends(_charging(Kind.TO_DEVICE))]


class Backoff:
    """The pause of one WebSocket after a rate-limit refusal (`PAUSE_AFTER_REFUSAL_S`)."""

    def __init__(self) -> None:
        self._until = 0.0

    def refused(self, problem: Problem) -> None:
        if problem.status == 429:
            self._until = time.monotonic() + PAUSE_AFTER_REFUSAL_S

    async def wait(self) -> None:
        delay = self._until - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
