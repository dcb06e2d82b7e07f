"""The chat's words: the help, and how times, sizes and snippets are written."""

from __future__ import annotations

import datetime as dt
import shlex
from pathlib import Path
from typing import NoReturn

from rich.markup import escape

from keyhold.clients.chat.io import visible
from keyhold.clients.terminal import fail
from keyhold.sdk import KeyholdError

DEFAULT_PAGE = 20
REPORT_CATEGORIES = (
    "harassment", "hate", "child_sexual_content", "grooming", "sexual_extortion",
    "violent_threat", "self_harm", "scam", "spam", "other",
)  # fmt: skip

COMMANDS_HELP = """\
/list              conversations: number, title or members, unread count,
                   last message, and who can read it (readable by)
/open N            open conversation N of /list, show its recent messages
/open USER [--e2ee]
                   open your 1:1 with USER (@USER works too); if you have
                   none, your first message starts it. --e2ee: the end-to-end
                   encrypted one (only your devices and theirs can read it;
                   --standard: the other one)
/new U1 U2 [--e2ee] [--title T]
                   start a group with these members and open it (a title
                   of several words in quotes: --title "Trip planning")
/history [N]       N older messages of the open conversation (default 20)
/read              mark the open conversation read (opening and answering do)
/delete [N]        delete your message #N for everyone (a tombstone stays);
                   without N: your last message in the open conversation
/attach FILE [TEXT]
                   send a file, with an optional caption
/save N FILE       save the file of message #N to FILE
/report N [N...] CATEGORY [COMMENT]
                   report messages #N to the moderators; CATEGORY is one of
                   harassment, hate, child_sexual_content, grooming,
                   sexual_extortion, violent_threat, self_harm, scam, spam, other.
                   In an e2ee conversation each message is revealed to the
                   moderators (only it), and its franking proves who sent it:
                   the case is marked "verified sender"
/timer 1d|8h|30m|off
                   disappearing messages in the open conversation: messages
                   sent from now on are deleted that long after, for everyone
/devices           your devices; /devices rename ID NAME; /devices remove ID
                   (asks for your password: signs it out, deletes its keys)
/safety USER       the 60-digit safety number of you and USER: they see the
                   same digits if nobody is between you; compare them
/verify USER [DEVICE]
                   verify USER interactively: both of you compare 7 emoji and
                   3 numbers, then answer y or n; a ✓ then marks USER
/verify accept|reject
                   answer a verification request from someone else
/trust USER        accept USER's changed keys after a warning, so that sends
                   to them work again (not verified: /safety or /verify)
/appeal CASE TEXT  appeal a moderation decision about you (once)
/add U1 [U2...]    add members to the open group (its owner and admins)
/remove USER       remove a member from the open group (owner and admins)
/rename TITLE      rename the open group (owner and admins)
/promote USER      make a member of the open group an admin (owner and admins)
/leave             leave the open group
/whoami            who you are signed in as, where, and on which device
/help              this list
/quit              leave (Ctrl-D works too)
other text         is sent to the open conversation (// sends a leading /)
New messages arrive live: printed as they come in the open conversation,
and as a one-line notice for the others. Moderation outcomes and staff
access to your data are announced the same way. An e2ee message this
device cannot read is shown as such, with the reason ("unverifiable" when
its franking does not match what it says), never as text. If a contact's
identity keys change, nothing is sent to them until you /trust them."""


def number(token: str) -> int | None:
    """`token` as a number if it is one written in ASCII digits (`"²".isdigit()` is true, yet
    `int("²")` fails); None otherwise."""
    return int(token) if token.isascii() and token.isdecimal() else None


NEW_USAGE = "usage: /new USER1 USER2 ... [--e2ee] [--title TITLE] (a title of several words in quotes)"


def parse_new(args: str) -> tuple[list[str], str, str]:
    """The members, model and title of `/new`: flags anywhere, `--title` takes the next word
    (or `--title=WORD`; several words in quotes). ValueError with what is wrong."""
    try:
        words = shlex.split(args)
    except ValueError as exc:  # an unclosed quote
        raise ValueError(f"{exc}; {NEW_USAGE}") from None
    users: list[str] = []
    encryption, title = "standard", ""
    while words:
        word = words.pop(0)
        if word in ("--e2ee", "--standard"):
            encryption = word.removeprefix("--")
        elif word == "--title":
            if not words:
                raise ValueError(f"--title needs a title; {NEW_USAGE}")
            title = words.pop(0)
        elif word.startswith("--title="):
            title = word.removeprefix("--title=")
        elif word.startswith("--"):
            raise ValueError(f"unknown option {word}; {NEW_USAGE}")
        else:
            users.append(word.removeprefix("@"))
    if not users:
        raise ValueError(NEW_USAGE)
    return users, encryption, title


def detail(exc: KeyholdError) -> str:
    text = exc.problem.get("detail") or exc.problem.get("title")
    return str(text) if text else str(exc)


def fatal(message: str) -> NoReturn:
    """Stop the chat with `message`, whose parts may come from the server: shown as text."""
    fail(escape(visible(message)))


def when(sent_at: str) -> str:
    try:
        moment = dt.datetime.fromisoformat(sent_at.replace("Z", "+00:00")).astimezone()
    except ValueError:
        return sent_at
    today = dt.datetime.now().astimezone().date()
    return moment.strftime("%H:%M") if moment.date() == today else moment.strftime("%b %d %H:%M")


def size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    return f"{n / 1024:.1f} KiB" if n < 1024 * 1024 else f"{n / (1024 * 1024):.1f} MiB"


def save_new(target: Path, filename: str, data: bytes) -> Path:
    """Write `data` to `target` (into it, under `filename`, if it is a directory); never over
    an existing file."""
    path = target.expanduser()
    if path.is_dir():
        path = path / Path(filename).name
    with path.open("xb") as out:
        out.write(data)
    return path


def snippet(text: str, width: int = 60) -> str:
    one_line = text.replace("\n", " ")
    return one_line if len(one_line) <= width else one_line[: width - 1] + "…"
