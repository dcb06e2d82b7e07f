"""Node devices for interoperability tests: `interop/device.mjs` (Matrix's OlmMachine from
@matrix-org/matrix-sdk-crypto-wasm) driven over JSON lines on its stdin and stdout, one
request and one answer a line. See the header of interop/device.mjs for the commands."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

INTEROP = Path(__file__).resolve().parent.parent / "interop"
DEVICE_SCRIPT = INTEROP / "device.mjs"
NODE_MAJOR = 20
STDERR_TAIL = 8000


class NodeDeviceError(AssertionError):
    """A request the Node device refused or failed, or the device process dying."""


def node_modules_ready() -> bool:
    """True when interop/node_modules is installed from the current package-lock.json.
    npm keeps its own copy of the lock in node_modules/.package-lock.json, rewritten on
    every install."""
    lock = INTEROP / "package-lock.json"
    installed = INTEROP / "node_modules" / ".package-lock.json"
    if not installed.exists():
        return False
    return installed.stat().st_mtime >= lock.stat().st_mtime


def ensure_node_modules() -> str:
    """Checks Node (major >= 20) and npm, runs `npm ci` in interop/ when node_modules is
    missing or older than package-lock.json, and returns the node executable. Raises
    RuntimeError with what is missing otherwise (the caller fails the test: not a skip)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        raise RuntimeError(
            f"Node.js {NODE_MAJOR}+ and npm are needed for the interop tests (node={node}, npm={npm})"
        )
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    match = re.match(r"v(\d+)\.", version.strip())
    if not match or int(match.group(1)) < NODE_MAJOR:
        raise RuntimeError(
            f"Node.js {NODE_MAJOR}+ is needed for the interop tests, found {version.strip()!r}"
        )
    if not node_modules_ready():
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=INTEROP,
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "npm_config_update_notifier": "false"},
        )
        if done.returncode != 0 or not node_modules_ready():
            raise RuntimeError(
                f"npm ci in {INTEROP} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
            )
    return node


class NodeDevice:
    """One member's device in a `node interop/device.mjs` process."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, timeout: float) -> None:
        self.name = name
        self.process = process
        self.timeout = timeout
        self.user_id: str | None = None
        self.device_id: str | None = None
        self._ids = 0
        self._stderr = bytearray()
        self._stderr_task = asyncio.create_task(self._drain_stderr())

    @classmethod
    async def start(cls, node: str, name: str, timeout: float = 30.0) -> NodeDevice:
        process = await asyncio.create_subprocess_exec(
            node,
            str(DEVICE_SCRIPT),
            cwd=INTEROP,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=16 * 1024 * 1024,  # a `read` answer is one line
        )
        device = cls(name, process, timeout)
        hello = await device._answer(None, "start")
        assert hello.get("ready") is True, hello
        return device

    async def _drain_stderr(self) -> None:
        assert self.process.stderr is not None
        while chunk := await self.process.stderr.read(4096):
            self._stderr += chunk
            if len(self._stderr) > 4 * STDERR_TAIL:
                del self._stderr[:-STDERR_TAIL]

    def stderr(self) -> str:
        return self._stderr[-STDERR_TAIL:].decode(errors="replace")

    async def _fail(self, message: str) -> NodeDeviceError:
        # Give the process a moment to finish writing why it died.
        if self.process.returncode is None:
            try:
                await asyncio.wait_for(self.process.wait(), 0.5)
            except TimeoutError:
                pass
        await asyncio.sleep(0.05)
        return NodeDeviceError(
            f"node device {self.name}: {message} (exit code {self.process.returncode})\n--- stderr ---\n{self.stderr()}"
        )

    async def _answer(
        self, request_id: int | None, what: str, timeout: float | None = None
    ) -> dict[str, Any]:
        assert self.process.stdout is not None
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), timeout or self.timeout)
        except TimeoutError:
            raise await self._fail(f"no answer to {what} within {timeout or self.timeout} s") from None
        if not line:
            raise await self._fail(f"exited while answering {what}")
        try:
            answer = json.loads(line)
        except json.JSONDecodeError:
            raise await self._fail(f"answered {what} with a line that is not JSON: {line[:300]!r}") from None
        if answer.get("id") != request_id:
            raise await self._fail(f"answered {what} out of turn: {answer}")
        if not answer.get("ok"):
            raise await self._fail(f"{what} failed: {answer.get('error')}")
        return dict(answer["result"])

    async def call(self, cmd: str, timeout: float | None = None, **args: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self._ids += 1
        if self.process.returncode is not None:
            raise await self._fail(f"is not running (before {cmd})")
        self.process.stdin.write((json.dumps({"id": self._ids, "cmd": cmd, **args}) + "\n").encode())
        try:
            await self.process.stdin.drain()
        except ConnectionError:
            raise await self._fail(f"closed its stdin (before {cmd})") from None
        return await self._answer(self._ids, cmd, timeout)

    async def login(
        self, server_url: str, username: str, password: str, device_id: str, trust: str = "untrusted"
    ) -> dict[str, Any]:
        result = await self.call(
            "login", server=server_url, username=username, password=password, device_id=device_id, trust=trust
        )
        self.user_id, self.device_id = result["user_id"], result["device_id"]
        return result

    async def sync(self) -> dict[str, Any]:
        return await self.call("sync")

    async def send(self, conversation_id: int, text: str) -> dict[str, Any]:
        return await self.call("send", conversation_id=conversation_id, text=text)

    async def read(self, conversation_id: int) -> list[dict[str, Any]]:
        return list((await self.call("read", conversation_id=conversation_id))["messages"])

    async def texts(self, conversation_id: int) -> list[tuple[str, str]]:
        """(sender's user id, plaintext) of every message, oldest first; any message this device
        cannot decrypt fails the test with the reason OlmMachine gave."""
        messages = await self.read(conversation_id)
        failed = [m for m in messages if m.get("error") or m.get("text") is None]
        if failed:
            raise NodeDeviceError(
                f"node device {self.name} cannot read {failed}\n--- stderr ---\n{self.stderr()}"
            )
        return [(m["sender"], m["text"]) for m in messages]

    async def close(self) -> None:
        """Asks the device to stop; kills it if it does not within a few seconds."""
        if self.process.returncode is None:
            try:
                await self.call("close", timeout=5)
                await asyncio.wait_for(self.process.wait(), 5)
            except (NodeDeviceError, TimeoutError):
                if self.process.returncode is None:
                    self.process.kill()
                    await self.process.wait()
        self._stderr_task.cancel()
        await asyncio.gather(self._stderr_task, return_exceptions=True)
