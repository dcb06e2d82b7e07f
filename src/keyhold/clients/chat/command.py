"""`keyhold chat`: sign in, then read lines and run them in a `Chat`, with live events beside."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from keyhold.clients.chat.io import Lines, PipedLines, Screen, TerminalLines
from keyhold.clients.chat.session import Chat
from keyhold.clients.chat.text import DEFAULT_PAGE, detail, fatal
from keyhold.clients.terminal import ServerUrlOption, console, server_url
from keyhold.sdk import Client, KeyholdConnectionError, KeyholdError

STREAM_OPEN_TIMEOUT = 30.0


async def _stream_position(client: Client) -> int:
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
) -> int:
    loop = asyncio.get_running_loop()
    screen = Screen(interactive)
    lines: Lines = TerminalLines(loop, screen) if interactive else PipedLines(loop)
    if password is None:  # --password-stdin from a pipe: the first line
        password = await lines.read("")
        if password is None:
            fatal("no password on stdin (--password-stdin reads the first line)")
    if not password:
        fatal("the password is empty")
    try:
        client = await Client.login(url, username, password, verify=verify)
    except KeyholdConnectionError as exc:
        fatal(f"cannot reach {url}: {detail(exc)}")
    except KeyholdError as exc:
        fatal(f"cannot sign in as {username}: {detail(exc)}")
    del password
    chat = Chat(client, screen, page)
    listener: asyncio.Task[None] | None = None
    try:
        try:
            since = await _stream_position(client)
        except Exception as exc:
            chat.error(f"live updates unavailable: {exc}")
        else:
            listener = asyncio.create_task(chat.listen(since))
        screen.show(
            "signed in as ",
            (client.username, "bold"),
            f" on {client.base_url}" + (" — live updates on" if listener else ""),
            (". /help lists the commands.", "dim"),
        )
        await chat.handle("/list")
        while True:
            line = await lines.read(chat.prompt())
            if line is None or not await chat.handle(line):
                break
    finally:
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(BaseException):
                await listener
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
) -> None:
    """Chat in the terminal: sign in, list conversations, open one, read its
    history, send, and see new messages live.

    Asks for the password with hidden input, or reads it from the first line of
    stdin with --password-stdin. Line-oriented, so it also works in tmux or
    driven by a pipe:

    printf 'PW\\n/open bob\\nhi\\n/quit\\n' | keyhold chat -u alice --password-stdin
    """
    interactive = sys.stdin.isatty()
    if username is None:
        if not interactive:
            fatal("--username is required when stdin is not a terminal")
        username = input("username: ").strip()
    if not password_stdin and not interactive:
        fatal("stdin is not a terminal: pass --password-stdin and write the password as the first line")
    password: str | None = None
    if interactive:
        try:
            password = getpass.getpass("password: ")
        except (EOFError, KeyboardInterrupt):
            raise typer.Exit(1) from None
    verify: bool | str = False if insecure else (str(ca_file) if ca_file else True)
    state = _terminal_state() if interactive else None
    try:
        code = asyncio.run(run_chat(server_url(url), username, password, verify, interactive, history))
    except KeyboardInterrupt:
        console.print()
        code = 0
    finally:
        _restore_terminal(state)
    raise typer.Exit(code)
