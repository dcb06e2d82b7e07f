"""`keyhold demo …`: seed a data dir with people and conversations a newcomer can look around in.

Everything goes through the domain services in-process (the same code the API runs), so the
seeded data is exactly what real use would produce: passwords hashed, messages encrypted at
rest, events recorded for every member's stream. Running it again changes nothing and says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from keyhold.cli.common import HomeOption, console, ensure_initialized, fail, settings_for, with_service
from keyhold.clients.terminal import command_name

# The server's modules load only inside the commands that use them (see cli/common.py).
if TYPE_CHECKING:
    from keyhold.app import Keyhold
    from keyhold.core.accounts import Member

# Public by design: it is printed for newcomers. Never use the demo on a reachable server.
DEMO_PASSWORD = "keyhold-demo"  # noqa: S105


@dataclass(frozen=True)
class DemoUser:
    username: str
    display_name: str
    region: str
    birthdate: str


@dataclass(frozen=True)
class DemoConversation:
    key: str  # stable name: part of every message's idempotency key
    starter: str
    others: tuple[str, ...]
    title: str  # empty for a 1:1
    lines: tuple[tuple[str, str], ...]  # (sender, text)
    # (member, how many of the conversation's messages they have read, counted from the start)
    read: tuple[tuple[str, int], ...] = ()


USERS = (
    DemoUser("alice", "Alice Moreau", "us", "1991-04-12"),
    DemoUser("bob", "Bob Okafor", "us", "1988-09-30"),
    DemoUser("carol", "Carol Schmidt", "eu", "1995-01-23"),
    DemoUser("dave", "Dave Tanaka", "row", "1993-07-08"),
)

# Mutual follows make friends.
FRIENDS = (("alice", "bob"), ("alice", "carol"), ("bob", "carol"), ("bob", "dave"), ("carol", "dave"))

CONVERSATIONS = (
    DemoConversation(
        key="alice-bob",
        starter="alice",
        others=("bob",),
        title="",
        lines=(
            ("alice", "Hey Bob! Are we still on for climbing on Saturday?"),
            ("bob", "Yes! 10am at the gym on 5th?"),
            ("alice", "Perfect. I'll bring the spare harness for Carol."),
            ("bob", "Great. Coffee afterwards, my treat."),
            ("alice", "Deal ☕"),
        ),
        read=(("bob", 5), ("alice", 5)),
    ),
    DemoConversation(
        key="alice-carol",
        starter="carol",
        others=("alice",),
        title="",
        lines=(
            ("carol", "Hi Alice, I landed in Berlin. The conference starts tomorrow."),
            ("alice", "Welcome back! How was the flight?"),
            ("carol", "Long, but I finished the book you lent me."),
            ("carol", "Can you send me the slides from last week when you have a minute?"),
        ),
        # Alice has not read Carol's last two messages: her list shows them as unread.
        read=(("alice", 2), ("carol", 4)),
    ),
    DemoConversation(
        key="bob-dave",
        starter="dave",
        others=("bob",),
        title="",
        lines=(
            ("dave", "Bob, did the package arrive?"),
            ("bob", "It did this morning, thanks a lot!"),
            ("dave", "Good. Tell me if the size is wrong, I can exchange it."),
        ),
        read=(("bob", 3), ("dave", 3)),
    ),
    DemoConversation(
        key="book-club",
        starter="carol",
        others=("alice", "bob", "dave"),
        title="Book club",
        lines=(
            ("carol", "Next pick: 'The Left Hand of Darkness'. Objections?"),
            ("dave", "None from me, I've wanted to read it for years."),
            ("alice", "Love it. Meet on the 14th?"),
            ("bob", "The 14th works. My place this time?"),
            ("carol", "Bob's place on the 14th then. I'll bring snacks."),
            ("dave", "I'll join by video from Tokyo 👋"),
        ),
        read=(("carol", 6), ("dave", 6), ("alice", 4)),
    ),
    DemoConversation(
        key="climbing",
        starter="alice",
        others=("bob", "carol"),
        title="Saturday climbing",
        lines=(
            ("alice", "Group chat for Saturday so we don't lose track."),
            ("carol", "I'm back on Friday night, count me in."),
            ("bob", "I booked lane 3 from 10 to 12."),
        ),
        read=(("alice", 3), ("bob", 3)),
    ),
)


@dataclass
class SeedReport:
    users: list[tuple[str, str, str]] = field(default_factory=list)  # username, region, status
    conversations: list[tuple[str, str, str, str]] = field(default_factory=list)  # name, members, n, status
    notes: list[str] = field(default_factory=list)


async def _ensure_users(svc: Keyhold, password: str, report: SeedReport) -> dict[str, Member]:
    members: dict[str, Member] = {}
    regions = svc.settings.regions
    for user in USERS:
        existing = await svc.accounts.acting_as(user.username)
        taken = await svc.accounts.exists(user.username)
        if existing is not None:
            members[user.username] = existing
            report.users.append((user.username, existing.region, "exists, skipped"))
            continue
        if taken:
            report.users.append((user.username, "-", "disabled or deleted, left alone"))
            report.notes.append(f"{user.username} is disabled or deleted: its conversations were skipped")
            continue
        region = user.region if user.region in regions else svc.settings.default_region
        await svc.accounts.register(user.username, password, user.birthdate, region)
        member = await svc.accounts.acting_as(user.username)
        assert member is not None
        await svc.accounts.set_display_name(member, user.display_name)
        members[user.username] = member
        report.users.append((user.username, region, "created"))
    return members


async def _ensure_friends(svc: Keyhold, members: dict[str, Member]) -> int:
    made = 0
    for a, b in FRIENDS:
        if a in members and b in members:
            await svc.accounts.follow(members[a], b)  # idempotent
            await svc.accounts.follow(members[b], a)
            made += 1
    return made


async def _find_group(svc: Keyhold, member: Member, title: str, people: set[str]) -> int | None:
    before: int | None = None
    while True:
        page = await svc.conversations.list_mine(member, before, 200)
        for view in page["items"]:
            if view["kind"] == "group" and view["title"] == title and set(view["members"]) == people:
                return int(view["id"])
        before = page["next_before"]
        if before is None:
            return None


async def _ensure_conversation(
    svc: Keyhold, demo: DemoConversation, members: dict[str, Member], report: SeedReport
) -> int | None:
    from keyhold.core.messages import SendRequest

    people = (demo.starter, *demo.others)
    label = demo.title or " & ".join(people)
    missing = [p for p in people if p not in members]
    if missing:
        report.conversations.append((label, ", ".join(people), "-", f"skipped (no {', '.join(missing)})"))
        return None
    starter = members[demo.starter]
    if demo.title:
        found = await _find_group(svc, starter, demo.title, set(people))
        if found is not None:
            report.conversations.append((label, ", ".join(people), "-", "exists, skipped"))
            return found
        view, _ = await svc.conversations.start(starter, list(demo.others), "standard", demo.title, "group")
    else:
        view, created = await svc.conversations.start(starter, list(demo.others), "standard", "", "direct")
        if not created and view["last_message"] is not None:
            report.conversations.append((label, ", ".join(people), "-", "exists, skipped"))
            return int(view["id"])
    conversation_id = int(view["id"])
    ids: list[int] = []
    for i, (sender, text) in enumerate(demo.lines):
        who = members[sender]
        # A fixed idempotency key per line: an interrupted seed, run again, never duplicates.
        request = SendRequest(who.id, who.username, conversation_id, text, f"demo:{demo.key}:{i}")
        message = await svc.messages.send(request)
        ids.append(int(message["id"]))
    for reader, upto in demo.read:
        if upto > 0:
            await svc.conversations.receipt(members[reader], conversation_id, "read", ids[upto - 1])
    report.conversations.append((label, ", ".join(people), str(len(ids)), "created"))
    return conversation_id


async def seed(svc: Keyhold, password: str = DEMO_PASSWORD) -> SeedReport:
    from keyhold.cli.demo_governance import seed_governance

    """Create the demo users, friendships and conversations that do not exist yet."""
    report = SeedReport()
    members = await _ensure_users(svc, password, report)
    pairs = await _ensure_friends(svc, members)
    report.notes.append(f"{pairs} friendship(s) in place (mutual follows)")
    conversation_ids: dict[str, int] = {}
    for demo in CONVERSATIONS:
        found = await _ensure_conversation(svc, demo, members, report)
        if found is not None:
            conversation_ids[demo.key] = found
    await seed_governance(svc, members, conversation_ids, password, report.notes)
    return report


demo_app = typer.Typer(help="Demo data for a newcomer to look around in.", no_args_is_help=True)


@demo_app.command("seed")
def seed_command(
    home: HomeOption = None,
    password: Annotated[str, typer.Option(help="Password for the demo users created now.")] = DEMO_PASSWORD,
    init: Annotated[bool, typer.Option("--init", help="Make the data dir if there is none yet.")] = False,
) -> None:
    """Create demo users (alice, bob, carol, dave in regions us/eu/row), friendships, 1:1 and
    group conversations with messages and read receipts, and staff with cases. Safe to run
    again: whatever exists already is skipped. Run it before `serve`, or with the server stopped."""
    settings = settings_for(home)
    keyhold = command_name()
    if not (settings.home / "config.toml").exists():
        if not init:
            fail(
                f"there is no data dir at {settings.home}: give --home (or KEYHOLD_HOME) to your server's "
                f"(`make run` uses ./var), or add --init to make a new one there"
            )
        ensure_initialized(settings)
        console.print(f"initialized a new data dir at {settings.home}")
    report = with_service(settings, lambda svc: seed(svc, password), exclusive=True)

    users = Table("user", "region", "status", title="Users")
    for row in report.users:
        users.add_row(*row)
    console.print(users)
    conversations = Table("conversation", "members", "messages", "status", title="Conversations")
    for conv_row in report.conversations:
        conversations.add_row(*conv_row)
    console.print(conversations)
    for note in report.notes:
        console.print(f"  {note}")
    console.print(
        f"\nDemo password: [bold]{password}[/bold] (users that already existed keep theirs).\n"
        "Look around:\n"
        f"  {keyhold} serve --home {settings.home}\n"
        f"  {keyhold} chat --username alice    (in another terminal; or bob, carol, dave)\n"
        f"Staff (mia moderator, lee and lou legal, ada auditor) sign in with {password!r} and their TOTP;\n"
        f"  check the access log: {keyhold} audit verify --home {settings.home}"
    )
