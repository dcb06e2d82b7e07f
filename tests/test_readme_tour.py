"""The README's two commands and quick tour, run as a newcomer would: `make run`, `demo seed`,
chat as alice, check the access log, write a transparency report, fetch the tree head and the
API docs, run the SDK example, in a fresh data dir on a port and home that are not the defaults.

The commands are the README's own text (each is checked to be there), run from another
directory with `.venv/bin/` made absolute; outputs go to pipes, so nothing may be wrapped.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path

import httpx

from conftest import TEST_ENV, TLS, free_port
from keyhold.sdk import Client

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
VENV_BIN = REPO / ".venv" / "bin"


def readme_command(command: str) -> list[str]:
    """A command the README shows (asserted), as argv with `.venv/bin/…` made absolute."""
    assert f"$ {command}" in README or f"`{command}" in README, f"the README no longer shows `{command}`"
    argv = shlex.split(command)
    if argv[0].startswith(".venv/bin/"):
        argv[0] = str(REPO / argv[0])
    return argv


def section(title: str) -> str:
    start = README.index(title)
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


class Tour:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.home = workdir / "my keyhold"  # not ./var, and with a space
        self.port = free_port()  # not 8000
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEYHOLD_") and k != "COLUMNS"}
        self.env = {**env, **TEST_ENV, "KEYHOLD_HOME": str(self.home), "KEYHOLD_PORT": str(self.port)}
        self.env["XDG_DATA_HOME"] = str(workdir / "data")  # the chat's e2ee device state, not in ~

    def run(
        self, command: str, *extra: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*readme_command(command), *extra], cwd=self.workdir, env=self.env, input=stdin,
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if check:
            assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        return result

    @contextmanager
    def make_run(self, log: Path) -> Iterator[None]:
        """`make run` in the foreground of its own terminal session, stopped with Ctrl-C."""
        assert "$ make run" in README
        with log.open("ab") as out:
            process = subprocess.Popen(
                ["make", "-C", str(REPO), "run"], cwd=self.workdir, env=self.env,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        try:
            deadline = time.monotonic() + 240  # the first run may install into .venv
            while True:
                assert process.poll() is None, log.read_text()
                try:
                    if httpx.get(self.url + "/api/v1/health", verify=TLS, timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            yield
        finally:
            os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C sends to the foreground group
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def expected_pattern(line: str) -> re.Pattern[str]:
    """A line of the README's sample output, with every number free (ids, times, seqs)."""
    return re.compile(re.sub(r"\d+", r"\\d+", re.escape(line)))


async def test_the_readme_quick_tour_works_on_another_port_and_home(tmp_path: Path) -> None:
    tour = Tour(tmp_path)
    log = tmp_path / "make-run.log"

    # Set up: the first `make run` initializes the data dir in $KEYHOLD_HOME.
    with tour.make_run(log):
        assert (tour.home / "keys.json").exists()
        busy = tour.run(".venv/bin/keyhold demo seed", check=False)
        assert busy.returncode == 1 and "stop it first" in busy.stderr, busy.stderr
    seeded = tour.run(".venv/bin/keyhold demo seed")
    assert "Demo password: keyhold-demo" in seeded.stdout
    assert not (tmp_path / "var").exists() and not (REPO / "var" / "my keyhold").exists()

    with tour.make_run(log):
        chat = tour.run(
            ".venv/bin/keyhold chat --username alice",
            "--password-stdin",  # the README's way for scripts: the password is the first line
            stdin="keyhold-demo\n/open bob\nsee you at 10\n/quit\n",
        )
        out = chat.stdout
        assert f"signed in as alice on {tour.url}" in out, out  # found on $KEYHOLD_PORT
        readable = "readable by: the participants; Keyhold staff only under an approved report or legal case"
        assert f"    {readable} in regions eu, us\n" in out  # one line, piped: nothing wrapped
        assert re.search(r"^#\d+ \d\d:\d\d alice: see you at 10$", out, re.MULTILINE), out
        bob = await Client.login(tour.url, "bob", "keyhold-demo")
        conversation = next(c for c in await bob.conversations() if c.members == ["alice", "bob"])
        assert (await bob.history(conversation.id))[-1].text == "see you at 10"
        await bob.close()

        verified = tour.run(".venv/bin/keyhold audit verify")
        assert "access log verified: " in verified.stdout
        today = dt.datetime.now(dt.UTC)
        period = f"{today.year}-H{1 if today.month <= 6 else 2}"
        readme_report = ".venv/bin/keyhold transparency report --period 2026-H2 --out report.html"
        readme_command(readme_report)
        tour.run(readme_report.replace("2026-H2", period))
        assert "<html" in (tmp_path / "report.html").read_text().lower()

        assert "$ curl -s http://127.0.0.1:8000/api/v1/transparency/sth" in README
        head = httpx.get(tour.url + "/api/v1/transparency/sth", verify=TLS).json()
        assert head["size"] >= 1 and head["signature"]

        # The API docs: served from here, nothing from a third party.
        docs = httpx.get(tour.url + "/api/v1/docs", verify=TLS)
        assert docs.status_code == 200 and "default-src 'none'" in docs.headers["content-security-policy"]
        links = Links()
        links.feed(docs.text)
        assert len(links.urls) >= 3 and "//" not in docs.text.replace("<!-- ", "")
        for url in links.urls:
            assert url.startswith("/api/v1/"), url
            assert httpx.get(tour.url + url, verify=TLS).status_code == 200, url
        assert httpx.get(tour.url + "/api/v1/openapi.json", verify=TLS).json()["info"]["title"] == "Keyhold"

        # The SDK example, as printed, against this server; its output as the README shows it.
        sdk = section("### The Python SDK")
        example = sdk.split("```python\n", 1)[1].split("```", 1)[0]
        (tmp_path / "example.py").write_text(example)
        shown = sdk.split("$ .venv/bin/python example.py\n", 1)[1].split("```", 1)[0].splitlines()
        ran = subprocess.run(
            [str(VENV_BIN / "python"), "example.py"], cwd=tmp_path, capture_output=True, text=True,
            env={**tour.env, "KEYHOLD_URL": tour.url}, timeout=120,
        )  # fmt: skip
        assert ran.returncode == 0, ran.stderr
        printed = ran.stdout.splitlines()
        assert len(printed) == len(shown), ran.stdout
        for line, sample in zip(printed, shown, strict=True):
            assert expected_pattern(sample).fullmatch(line), (line, sample)

    served = log.read_text()
    assert "Keyhold on " + tour.url in served
    # The default log level writes no line per WebSocket (the chat and the SDK opened some).
    assert "WebSocket" not in served and "connection open" not in served, served
    assert "Traceback" not in served
