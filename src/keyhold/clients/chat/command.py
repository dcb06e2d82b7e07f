"""`keyhold chat`: sign in, then read lines and run them in a `Chat`, with live events beside."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import re
import socket
import sys
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer

from keyhold.clients.chat.io import Lines, PipedLines, Screen, TerminalLines, visible
from keyhold.clients.chat.session import Chat
from keyhold.clients.chat.text import DEFAULT_PAGE, detail, fatal
from keyhold.clients.terminal import ServerUrlOption, console, server_url
from keyhold.sdk import Client, KeyholdConnectionError, KeyholdError
from keyhold.sdk.e2ee.state import StateError

STREAM_OPEN_TIMEOUT = 30.0
DEFAULT_PORTS = {"https": 443, "http": 80}


def default_state_path(url: str, username: str) -> Path:
    """Where this member's chat device keeps its e2ee state for this server:
    `$XDG_DATA_HOME/keyhold/<host>_<port>/<username>.e2ee` (`~/.local/share` without it).
    Only the lowercased host name and the port the URL reaches (443 or 80 when it names none)
    make the folder: never a user name or password written into the URL, and the same folder
    however the URL is spelled. ValueError for a URL whose host is not a name."""
    parts = urlsplit(url)
    host = (parts.hostname or "").rstrip(".")
    try:
        port = parts.port or DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:  # a port that is not one
        port = None
    if port is None or not re.fullmatch(r"[a-z0-9_:.-]+", host) or not host.strip("."):
        raise ValueError(
            f"cannot name a state file after {parts.scheme}://{host or '?'}: pass --e2ee-state FILE"
        )
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return (
        base
        / "keyhold"
        / f"{host.replace(':', '_')}_{port}"
        / f"{re.sub(r'[^A-Za-z0-9._-]', '_', username)}.e2ee"
    )


def make_state_folders(path: Path) -> None:
    """The folders of a state file, made private (0700) where this makes them: the file is
    written 0600, but its name says whose device it is and on which server."""
    missing = [folder for folder in [path.parent, *path.parent.parents] if not folder.exists()]
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
        folder.chmod(0o700)  # whatever the umask


def _state_failure(exc: StateError, separate_passphrase: bool) -> str:
    text = f"cannot use the end-to-end encryption state: {exc}"
    if "passphrase" in str(exc) and not separate_passphrase:
        text += (
            ". Its passphrase is your account password as it was when the file was made: if you "
            "changed your password since, add --e2ee-passphrase and type the old one"
        )
    elif "in use" in str(exc):
        text += " (another keyhold chat as you is running: quit it, or use --no-e2ee-state)"
    return text


async def stop(task: asyncio.Task[None]) -> None:
    """Cancel `task` and wait until it has ended. Python 3.11's `asyncio.wait_for` can swallow
    a cancellation that arrives just as what it waits for completes, and the task then carries
    on (waiting on the stream for good): so cancel again until it ends."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=1.0)
    if not task.cancelled():
        with contextlib.suppress(BaseException):
            task.result()  # seen: not reported as never retrieved


async def stream_position(client: Client) -> int:
    """The member's newest event seq, so that the live view starts now, not at the beginning."""
    stream = await client.connect(since="latest")
    try:
        await asyncio.wait_for(stream.ready.wait(), STREAM_OPEN_TIMEOUT)
        return stream.last_seq
    finally:
        await stream.close()


async def run_chat(
    url: str,
    username: str,
    password: str | None,
    verify: bool | str,
    interactive: bool,
    page: int = DEFAULT_PAGE,
    state_path: Path | None = None,
    passphrase: str | None = None,
    separate_passphrase: bool = False,
    device_name: str | None = None,
) -> int:
    """`state_path`: the device's e2ee state file (None: the device lives in memory). Its
    passphrase is `passphrase`, read from stdin after the password if None while
    `separate_passphrase`, and the account password otherwise."""
    loop = asyncio.get_running_loop()
    screen = Screen(interactive)
    lines: Lines = TerminalLines(loop, screen) if interactive else PipedLines(loop)
    if password is None:  # --password-stdin from a pipe: the first line
        password = await lines.read("")
        if password is None:
            fatal("no password on stdin (--password-stdin reads the first line)")
    if not password:
        fatal("the password is empty")
    if state_path is not None and separate_passphrase:
        if passphrase is None:
            passphrase = await lines.read("")  # --e2ee-passphrase from a pipe: the second line
            if passphrase is None:
                fatal("no e2ee passphrase on stdin (with --e2ee-passphrase it is the second line)")
        if not passphrase:  # never the account password instead, as if no passphrase was asked for
            fatal("the e2ee passphrase is empty: --e2ee-passphrase needs one of its own")
    if state_path is not None:
        try:
            make_state_folders(state_path)
        except OSError as exc:
            fatal(f"cannot make the folder of {state_path}: {exc.strerror or exc}")
    try:
        client = await Client.login(
            url,
            username,
            password,
            verify=verify,
            device_name=device_name or f"keyhold chat on {socket.gethostname()}",
            state_path=state_path,
            passphrase=None if state_path is None else passphrase if separate_passphrase else password,
        )
    except KeyholdConnectionError as exc:
        fatal(f"cannot reach {url}: {detail(exc)}")
    except KeyholdError as exc:
        fatal(f"cannot sign in as {username}: {detail(exc)}")
    except StateError as exc:
        fatal(_state_failure(exc, separate_passphrase))
    del password, passphrase

    async def ask(prompt: str, secret: bool) -> str | None:
        if interactive and secret:
            try:
                return await asyncio.to_thread(getpass.getpass, visible(prompt))
            except (EOFError, KeyboardInterrupt):
                return None
        if not interactive:
            screen.show(prompt.rstrip())  # a transcript shows what was asked
        return await lines.read(prompt, discard_typeahead=True)

    chat = Chat(client, screen, page, ask)
    listener: asyncio.Task[None] | None = None
    watcher: asyncio.Task[None] | None = None
    try:
        try:
            since = await stream_position(client)
        except Exception as exc:
            chat.error(f"live updates unavailable: {exc}")
        else:
            listener = asyncio.create_task(chat.listen(since))
            # Verification requests come over the stream, so only while it runs.
            watcher = asyncio.create_task(chat.verify.watch()) if client.crypto is not None else None
        screen.show(
            "signed in as ",
            (client.username, "bold"),
            f" on {client.base_url}" + (" — live updates on" if listener else ""),
            (". /help lists the commands.", "dim"),
        )
        if client.crypto is None:
            chat.error(f"no end-to-end encryption on this device: {client.e2ee_unavailable}")
        else:
            where = f"kept in {state_path}" if state_path is not None else "in memory: a new device each run"
            screen.show((f"device {client.device_id}, end-to-end encryption {where}", "dim"))
        await chat.handle("/list")
        while True:
            line = await lines.read(chat.prompt())
            if line is None or not await chat.handle(line):
                break
    finally:
        for task in (watcher, listener):
            if task is not None:
                await stop(task)
        await client.close()
    return 0


def _terminal_state() -> Any:
    with contextlib.suppress(Exception):
        import termios

        return termios.tcgetattr(sys.stdin.fileno())
    return None


def _restore_terminal(state: Any) -> None:
    if state is None:
        return
    with contextlib.suppress(Exception):
        import termios

        termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, state)


def chat(
    url: ServerUrlOption = None,
    username: Annotated[
        str | None,
        typer.Option("--username", "-u", help="Sign in as this member (asked for if omitted)."),
    ] = None,
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin",
            help="Read the password from the first line of stdin (for scripts); "
            "the following lines are commands.",
        ),
    ] = False,
    insecure: Annotated[
        bool,
        typer.Option("--insecure", help="Do not verify the server's TLS certificate (self-signed, testing)."),
    ] = False,
    ca_file: Annotated[
        Path | None,
        typer.Option("--ca-file", help="Verify the server's TLS certificate against this CA/cert (PEM)."),
    ] = None,
    history: Annotated[
        int, typer.Option(min=1, max=200, help="Messages shown when a conversation opens.")
    ] = DEFAULT_PAGE,
    e2ee_state: Annotated[
        Path | None,
        typer.Option(
            "--e2ee-state",
            help="This device's end-to-end encryption state file (keys and sessions, encrypted "
            "under the passphrase): the same file makes later runs the same device, which "
            "reads what was sent to it before. Default: "
            "$XDG_DATA_HOME/keyhold/HOST_PORT/USERNAME.e2ee (~/.local/share/...).",
            show_default=False,
        ),
    ] = None,
    no_e2ee_state: Annotated[
        bool,
        typer.Option(
            "--no-e2ee-state",
            help="Keep the device in memory: every run is a new device, which cannot read "
            "e2ee messages sent before it existed.",
        ),
    ] = False,
    e2ee_passphrase: Annotated[
        bool,
        typer.Option(
            "--e2ee-passphrase",
            help="Ask for a passphrase of the state file of its own (with --password-stdin: "
            "the second line of stdin). Without it the passphrase is the account password: "
            "anyone who learns the password and gets the file reads the device's keys, and "
            "after a password change the file still opens only with the old one.",
        ),
    ] = False,
    device_name: Annotated[
        str | None,
        typer.Option(
            "--device-name", help="The device's name in /devices (default: keyhold chat on HOSTNAME)."
        ),
    ] = None,
) -> None:
    """Chat in the terminal: sign in, list conversations, open one, read its
    history, send, and see new messages live.

    Asks for the password with hidden input, or reads it from the first line of
    stdin with --password-stdin. Line-oriented, so it also works in tmux or
    driven by a pipe:

    printf 'PW\\n/open bob\\nhi\\n/quit\\n' | keyhold chat -u alice --password-stdin

    Every run is an end-to-end encryption device of yours. Its state (keys, sessions) is kept
    in a file, encrypted under a passphrase (by default your account password; see
    --e2ee-passphrase), so the next run is the same device and reads e2ee messages sent to
    it meanwhile. One chat at a time may use a state file.
    """
    interactive = sys.stdin.isatty()
    if username is None:
        if not interactive:
            fatal("--username is required when stdin is not a terminal")
        username = input("username: ").strip()
    if not password_stdin and not interactive:
        fatal("stdin is not a terminal: pass --password-stdin and write the password as the first line")
    if no_e2ee_state and (e2ee_state is not None or e2ee_passphrase):
        fatal("--no-e2ee-state keeps no state file: drop --e2ee-state and --e2ee-passphrase")
    password: str | None = None
    passphrase: str | None = None
    base = server_url(url)
    try:
        state_path = None if no_e2ee_state else (e2ee_state or default_state_path(base, username))
    except ValueError as exc:
        fatal(str(exc))
    if interactive:
        try:
            password = getpass.getpass("password: ")
            if e2ee_passphrase and state_path is not None:
                passphrase = getpass.getpass("passphrase of this device's e2ee state: ")
                if not passphrase:
                    fatal("the e2ee passphrase is empty: --e2ee-passphrase needs one of its own")
                if not state_path.exists() and getpass.getpass("the same passphrase again: ") != passphrase:
                    fatal("the two passphrases differ; nothing was made")  # a typo would lock the file
        except (EOFError, KeyboardInterrupt):
            raise typer.Exit(1) from None
    verify: bool | str = False if insecure else (str(ca_file) if ca_file else True)
    state = _terminal_state() if interactive else None
    try:
        code = asyncio.run(
            run_chat(
                base,
                username,
                password,
                verify,
                interactive,
                history,
                state_path=state_path,
                passphrase=passphrase,
                separate_passphrase=e2ee_passphrase,
                device_name=device_name,
            )
        )
    except KeyboardInterrupt:
        console.print()
        code = 0
    finally:
        _restore_terminal(state)
    raise typer.Exit(code)
