"""Who may reach whom: the checks on starting a conversation, adding to a group and sending,
from blocks, each member's DM audience and message requests (`core.contact_actions` is what
members do about them).

This module gathers the facts (who blocks whom, who follows whom, each side's age band and
audience, whether a membership is still a request) and asks `ContactRules` to decide; the rules
themselves (the minors' policy, audiences, requests) are the safety package's, filled in at
wiring time (`safety.contacts`). Both models are covered: nothing here reads content, except
whether a `standard` text carries a link (an `e2ee` one cannot be read: see docs/safety.md).

What a block does: no new conversation, request or group add either way; in a direct
conversation no message either way; in a group the blocked member's messages are hidden for
the blocker from then on (recorded per message, so unblocking restores nothing), and the
blocker's receipts are not sent to the blocked. The blocker's profile is an unknown user to the
blocked.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from keyhold.core.accounts import Member
from keyhold.core.errors import Problem, forbidden, not_found, not_yours
from keyhold.store import contacts as store
from keyhold.store import conversations as conversation_store

AUDIENCES = ("everyone", "friends", "no_one")
Form = Literal["start", "add"]
# A link in a `standard` text: a scheme, a www. host, or a dotted name ending in a top-level
# domain link senders use. Generous on purpose: it only limits the sender of a request not
# accepted yet. Checked on the text with look-alike dots made dots and invisible characters gone.
LINK = re.compile(
    r"(?i)(?:\b[a-z][a-z0-9+.-]*://|\bwww\.)\S|\b[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:"
    r"com|net|org|info|biz|io|co|me|ly|gg|app|dev|ai|tv|to|cc|ws|su|xyz|ru|tk|ml|ga|cf|gq|cn|link|site|"
    r"online|top|click|shop|store|live|life|club|vip|win|bet|pro|page|icu|cam|onion|uk|de|fr|us|ca|au|nl|"
    r"be|ch|eu|es|it|pl|br|mx|jp|kr|in|id|ph|vn|ng|za|tr|ir|ua|kz|by"
    r")\b"
)
# Dots in disguise: fullwidth and ideographic full stops, "[.]", "(.)", "(dot)", "[dot]", " dot ".
DISGUISED_DOT = re.compile(r"(?i)\s*(?:\[\s*(?:\.|dot)\s*\]|\(\s*(?:\.|dot)\s*\)|\s+dot\s+)\s*|[\u3002\uff0e\uff61]")
INVISIBLE = re.compile("[\u00ad\u180e\u200b-\u200f\u2060-\u2064\ufeff]")
REQUEST_MESSAGES = 3  # a pending request's sender may send this many messages before acceptance


def has_link(text: str) -> bool:
    plain = DISGUISED_DOT.sub(".", INVISIBLE.sub("", unicodedata.normalize("NFKC", text)))
    return LINK.search(plain) is not None


def refuse_link_in_request_title(title: str, requests: Collection[int]) -> None:
    """A title reaches those a conversation is a request to, in their requests inbox, as a text
    would: no link in it until they accept."""
    if requests and has_link(title):
        raise forbidden("no links in the title of a conversation that is a message request, until it is accepted")


def strictest(audiences: Sequence[str]) -> str:
    """The most closed of several settings (no_one < friends < everyone)."""
    return max(audiences, key=AUDIENCES.index, default="everyone")


@dataclass(frozen=True)
class Party:
    """One side of a contact as the rules see it."""

    id: int
    username: str
    band: str  # young_teen | teen | adult (safety.policy.Band)
    audience: str = "everyone"  # in force: the stricter of their own (or their band's) and a guardian's
    region: str = ""


@dataclass(frozen=True)
class Between:
    """What holds between the one who acts and the one they reach."""

    friends: bool = False  # mutual follows
    target_follows_actor: bool = False
    actor_blocked_target: bool = False
    target_blocked_actor: bool = False


@dataclass(frozen=True)
class Reach:
    outcome: Literal["allow", "request", "refuse"]
    problem: Problem | None = None


@dataclass(frozen=True)
class SendFacts:
    """One send, as the rules see it."""

    sender: Party
    kind: str  # direct | group
    partner: Party | None  # a direct conversation's other member (None: a group, or they left)
    between: Between | None
    # "asking": the sender's request to the partner is not accepted yet; "asked": the sender has
    # not accepted the partner's request.
    request: Literal["none", "asking", "asked"] = "none"
    sent_so_far: int = 0
    attachment: bool = False
    link: bool | None = False  # None: e2ee content, which the service cannot read


class ContactRules(Protocol):
    def band(self, birthdate: str, region: str) -> str: ...

    def default_audience(self, band: str, region: str) -> str: ...

    def audience_choice(self, band: str, audience: str) -> Problem | None: ...

    def findable(self, viewer: Party, target: Party, between: Between) -> bool: ...

    def reach(self, actor: Party, target: Party, between: Between, form: Form) -> Reach: ...

    def send(self, facts: SendFacts) -> Problem | None: ...

    def together(self, member: Party, other: Party, between: Between) -> Problem | None:
        """Whether `member` may be in a group with `other` (a minor with an adult stranger may not)."""
        ...

    def in_group(
        self, sender: Party, member: Party, between: Between, attachment: bool, link: bool | None
    ) -> Problem | None:
        """Whether a group send reaches `member` (None: it does; else why not). Asked on every
        send: a band changes on a birthday, and a friendship can end after `together` was asked."""
        ...


class OpenRules:
    """Everyone reaches everyone: only for a core without its safety package (tests of core)."""

    def band(self, birthdate: str, region: str) -> str:
        return "adult"

    def default_audience(self, band: str, region: str) -> str:
        return "everyone"

    def audience_choice(self, band: str, audience: str) -> Problem | None:
        return None

    def findable(self, viewer: Party, target: Party, between: Between) -> bool:
        return not between.target_blocked_actor

    def reach(self, actor: Party, target: Party, between: Between, form: Form) -> Reach:
        return Reach("allow")

    def send(self, facts: SendFacts) -> Problem | None:
        return None

    def together(self, member: Party, other: Party, between: Between) -> Problem | None:
        return None

    def in_group(
        self, sender: Party, member: Party, between: Between, attachment: bool, link: bool | None
    ) -> Problem | None:
        return None


def _between(actor: int, target: int, edges: set[tuple[int, int]], blocked: set[tuple[int, int]]) -> Between:
    return Between(
        friends=(actor, target) in edges and (target, actor) in edges,
        target_follows_actor=(target, actor) in edges,
        actor_blocked_target=(actor, target) in blocked,
        target_blocked_actor=(target, actor) in blocked,
    )


@dataclass(frozen=True)
class SendCheck:
    """What the send gate needs of one queued send (see `MessageService._commit_sends`)."""

    sender_id: int
    conversation_id: int
    attachment: bool
    text: str | None  # None: e2ee content


# Per send: a refusal, or the members the message is hidden from (they block its sender).
GateAnswer = Problem | frozenset[int]
SendGate = Callable[[Connection, Sequence[SendCheck], Mapping[int, str], Mapping[int, Mapping[int, Any]]], list[GateAnswer]]
# Refuse (raise) what a send with or without an attachment would be refused: uploads, timer changes.
SendCheckGate = Callable[[AsyncConnection, int, int, bool], Awaitable[None]]
NO_ONE = frozenset[int]()
FACTS_KEPT = 100_000


def _link_in(check: SendCheck) -> bool | None:
    return None if check.text is None else has_link(check.text)


class ContactGate:
    """The checks, with the facts they need: at a start or an add (`check_reach`,
    `check_group`), on every batch of sends (`gate_sends`), on uploads and timer changes
    (`check_send`), and who may find whom (`findable`)."""

    def __init__(self, rules: ContactRules | None = None) -> None:
        self.rules: ContactRules = rules or OpenRules()
        # Rate limiting of new message requests (the safety package's): `n` requests, before
        # they are made.
        self.charge_requests: Callable[[Member, int], object] = lambda _member, _n: None
        # Birthdate and region never change for an account (deletion blanks them: the account is
        # gone); bounded so a long-running server does not keep every member it ever saw.
        self._facts: dict[int, tuple[str, str]] = {}

    # -- parties ---------------------------------------------------------------------------

    async def parties(self, conn: AsyncConnection, user_ids: Sequence[int]) -> dict[int, Party]:
        rows = await store.audience_rows(conn, user_ids)
        bands = {uid: self.rules.band(str(r.birthdate), str(r.region)) for uid, r in rows.items()}
        minors = [uid for uid, band in bands.items() if band != "adult"]
        guardians = await store.guardian_audiences(conn, minors)
        found = {}
        for uid, row in rows.items():
            own = row.dm_audience or self.rules.default_audience(bands[uid], str(row.region))
            audience = strictest([own, *guardians.get(uid, [])])
            found[uid] = Party(uid, str(row.username), bands[uid], audience, str(row.region))
        return found

    async def messaging_off(self, conn: AsyncConnection, user_ids: Collection[int]) -> dict[int, Problem]:
        """Those of `user_ids` who may message no one at all, with the rules' refusal of their
        every send (under the direct-messaging age): for channels beside conversations
        (to-device)."""
        parties = await self.parties(conn, list(user_ids))
        refusals = {uid: self.rules.send(SendFacts(p, "direct", None, None)) for uid, p in parties.items()}
        return {uid: problem for uid, problem in refusals.items() if problem is not None}

    async def findable(self, conn: AsyncConnection, viewer_id: int, row: Any) -> bool:
        """Whether `viewer_id` may find the member of `row` (profile, follow, start, add)."""
        if viewer_id == row.id:
            return True
        people = await self.parties(conn, [viewer_id, row.id])
        edges = await store.follow_edges(conn, viewer_id, [row.id])
        blocked = await store.blocks_between(conn, viewer_id, [row.id])
        return self.rules.findable(people[viewer_id], people[row.id], _between(viewer_id, row.id, edges, blocked))

    async def check_reach(
        self, conn: AsyncConnection, actor: Member, targets: Sequence[Any], form: Form, unknown: int = 0
    ) -> set[int]:
        """Refuse (the first refusal, as a Problem) unless the actor may reach every target;
        the ids reached only as a message request. `unknown`: how many other names given are no
        account; they and the hidden targets are counted together, in one answer."""
        ids = [t.id for t in targets]
        people = await self.parties(conn, [actor.id, *ids])
        edges = await store.follow_edges(conn, actor.id, ids)
        blocked = await store.blocks_between(conn, actor.id, ids)
        reaches = {
            target: self.rules.reach(people[actor.id], people[target], _between(actor.id, target, edges, blocked), form)
            for target in ids
        }
        hidden = [t for t, reach in reaches.items() if reach.outcome == "refuse" and reach.problem is None]
        if hidden or unknown:
            # Word for word what is said of names that are no account: a hidden member (a
            # minor, to a stranger; a blocker, to whom they block) is one.
            raise not_found(f"{len(hidden) + unknown} of the named members are not active users")
        for reach in reaches.values():
            if reach.problem is not None:
                raise reach.problem
        requests = {t for t, reach in reaches.items() if reach.outcome == "request"}
        if requests:
            self.charge_requests(actor, len(requests))
        return requests

    async def check_group(self, conn: AsyncConnection, joining: Sequence[int], staying: Sequence[int]) -> None:
        """Refuse a group that would put a minor with an adult who is not their friend (through
        a third member who is friends with both): each newcomer against everyone in it."""
        everyone = list(dict.fromkeys([*staying, *joining]))
        people = await self.parties(conn, everyone)
        if all(p.band == "adult" for p in people.values()):
            return
        edges = await conn.run_sync(store.follows_among, everyone)
        blocked: set[tuple[int, int]] = set()
        for new in joining:
            for other in everyone:
                if other != new:
                    problem = self.rules.together(people[new], people[other], _between(new, other, edges, blocked))
                    if problem is not None:
                        raise problem

    async def check_rename(self, conn: AsyncConnection, user_id: int, conversation_id: int, title: str) -> None:
        """A group's name reaches every member as a text would, and those who have not accepted
        it yet in their requests inbox: while any waits, only members who are friends of all who
        wait may change it; and a link in it needs a renamer who is friends with every member (a
        teen gets no link from a non-friend; asked in every group alike, so that the refusal
        tells no one's age)."""
        pending = await conn.run_sync(lambda sync: store.requests_in(sync, [conversation_id]))
        waiting = [uid for uid, r in pending.get(conversation_id, {}).items() if uid != user_id and not r.declined]
        link = has_link(title)
        if not waiting and not link:
            return
        everyone = [
            m.id for m in await conversation_store.member_rows(conn, [conversation_id]) if m.left_ms is None and m.id != user_id
        ]
        edges = await conn.run_sync(store.follows_among, [user_id, *everyone])
        if any(not _between(user_id, uid, edges, set()).friends for uid in waiting):
            raise forbidden("until everyone asked to join has accepted, only their friends can rename the group")
        if link and any(not _between(user_id, uid, edges, set()).friends for uid in everyone):
            raise forbidden("only a member who is friends with everyone here can put a link in the group's name")

    # -- the send path ---------------------------------------------------------------------

    def gate_sends(
        self,
        conn: Connection,
        checks: Sequence[SendCheck],
        kinds: Mapping[int, str],
        members: Mapping[int, Mapping[int, Any]],
    ) -> list[GateAnswer]:
        """The writer's check of a batch of sends (in its transaction, a few queries for the
        whole batch): blocks, requests and the rules' say on each. A refusal, or whom the
        message is hidden from: in a group, those who block its sender and those whose request
        from the sender is past its limits; in a direct conversation, a recipient who deleted
        the sender's request (the sender cannot tell)."""
        involved = {c.sender_id for c in checks} | {uid for c in checks for uid in members.get(c.conversation_id, {})}
        self._learn(conn, involved)
        blocked = store.blocks_among(conn, involved)
        requests = store.requests_in(conn, {c.conversation_id for c in checks})
        # Each member's band once a batch (a batch is mostly a few senders, many times each).
        party = functools.cache(self._party)
        # Friendships matter in a direct conversation, and in a group with a request waiting or
        # a minor in it; a group of adults who all accepted it (the common group) needs no query.
        edges = (
            store.follows_among(conn, involved)
            if any(k == "direct" for k in kinds.values())
            or any(kinds.get(c, "group") != "direct" for c in requests)
            or any(party(uid).band != "adult" for uid in involved)
            else set()
        )
        counted: dict[tuple[int, int], int] = {}

        def sent_so_far(conversation_id: int, sender_id: int) -> int:
            key = (conversation_id, sender_id)
            if key not in counted:
                counted[key] = store.sent_by(conn, conversation_id, sender_id, REQUEST_MESSAGES + 1)
            return counted[key]

        answers: list[GateAnswer] = []
        for check in checks:
            people = members.get(check.conversation_id, {})
            pending = requests.get(check.conversation_id, {})
            sender = party(check.sender_id)
            if check.sender_id in pending:
                declined = pending[check.sender_id].declined
                answers.append(not_yours("conversation") if declined else self.rules.send(
                    SendFacts(sender, "group", None, None, "asked")) or NO_ONE)
                continue
            if kinds.get(check.conversation_id, "group") != "direct":
                answers.append(
                    self._gate_group_send(check, people, pending, blocked, edges, sent_so_far, counted, party)
                )
                continue
            partner_id = next((uid for uid in people if uid != check.sender_id), None)
            partner = None if partner_id is None else party(partner_id)
            between = None if partner_id is None else _between(check.sender_id, partner_id, edges, blocked)
            request: Literal["none", "asking"] = "none"
            sent = 0
            hidden_from = NO_ONE
            if partner_id is not None and partner_id in pending and pending[partner_id].asker == check.sender_id:
                request = "asking"
                sent = sent_so_far(check.conversation_id, check.sender_id)
                if pending[partner_id].declined:
                    hidden_from = frozenset([partner_id])
            # Links matter only to a request's limits: the common send never looks for one.
            link = _link_in(check) if request == "asking" else False
            facts = SendFacts(sender, "direct", partner, between, request, sent, check.attachment, link)
            problem = self.rules.send(facts)
            if problem is None and request == "asking":
                counted[(check.conversation_id, check.sender_id)] = sent + 1
            answers.append(problem if problem is not None else hidden_from)
        return answers

    def _gate_group_send(
        self,
        check: SendCheck,
        people: Mapping[int, Any],
        pending: Mapping[int, store.Request],
        blocked: set[tuple[int, int]],
        edges: set[tuple[int, int]],
        sent_so_far: Callable[[int, int], int],
        counted: dict[tuple[int, int], int],
        party: Callable[[int], Party],
    ) -> GateAnswer:
        """One send to a group: refused, or whom it is hidden from. Those who block the sender;
        those who have not accepted the group and are no friend of the sender (whoever added
        them: the group's other members are strangers to them too) once the sender is past a
        request's limits; and those the rules keep it from (`ContactRules.in_group`: a minor
        from an adult stranger, say). Refused instead when it would reach no one else."""
        sender_id = check.sender_id
        others = [uid for uid in people if uid != sender_id]
        hidden = {uid for uid in others if (uid, sender_id) in blocked}
        asked = {uid for uid in pending if uid != sender_id and not _between(sender_id, uid, edges, blocked).friends}
        sent = sent_so_far(check.conversation_id, sender_id) if asked else 0
        minors = any(party(uid).band != "adult" for uid in others)
        link = _link_in(check) if asked or minors else False
        # A group of people who all have yet to accept the sender is a request like a direct
        # one; with others in it, what is past the request's limits still reaches them, not
        # those who were asked.
        alone = bool(asked) and asked >= set(others)
        facts = SendFacts(party(sender_id), "group", None, None, "asking" if alone else "none", sent, check.attachment, link)
        problem = self.rules.send(facts)
        if problem is not None:
            return problem
        if asked:
            # e2ee content (`link` None) cannot be read for links: held to the count, as in a
            # direct request.
            if sent >= REQUEST_MESSAGES or check.attachment or link is True:
                hidden.update(asked)
            counted[(check.conversation_id, sender_id)] = sent + 1
        if not minors:
            return frozenset(hidden)
        kept_from: dict[int, Problem] = {}
        for uid in others:
            why = self.rules.in_group(
                party(sender_id), party(uid), _between(sender_id, uid, edges, blocked), check.attachment, link
            )
            if why is not None:
                kept_from[uid] = why
        if kept_from and len(kept_from) == len(others):
            return next(iter(kept_from.values()))
        return frozenset(hidden | kept_from.keys())

    def _learn(self, conn: Connection, user_ids: set[int]) -> None:
        missing = [uid for uid in user_ids if uid not in self._facts]
        if not missing:
            return
        if len(self._facts) + len(missing) > FACTS_KEPT:
            self._facts.clear()
            missing = list(user_ids)
        self._facts.update(store.user_facts(conn, missing))

    def _party(self, user_id: int) -> Party:
        birthdate, region = self._facts.get(user_id, ("", ""))
        return Party(user_id, "", self.rules.band(birthdate, region))

    async def check_send(self, conn: AsyncConnection, user_id: int, conversation_id: int, attachment: bool) -> None:
        """Refuse what a send would be refused (an upload is the start of a send with an
        attachment; a timer change reaches the other members as a send does), before anything
        is stored. In both models: an e2ee upload is an attachment too."""
        row = await conversation_store.membership(conn, conversation_id, user_id)
        if row is None or row.left_ms is not None:
            return  # the caller's own membership check answers
        everyone = {m.id: None for m in await conversation_store.member_rows(conn, [conversation_id]) if m.left_ms is None}
        check = SendCheck(user_id, conversation_id, attachment, "")
        answer = await conn.run_sync(
            lambda sync: self.gate_sends(sync, [check], {conversation_id: row.kind}, {conversation_id: everyone})
        )
        if isinstance(answer[0], Problem):
            raise answer[0]
