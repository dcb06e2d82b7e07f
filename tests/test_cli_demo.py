"""`keyhold demo seed`: a fresh data dir, seeded twice (idempotent), then looked at over the API."""

from __future__ import annotations

from pathlib import Path

from conftest import keyhold_cli, start_server, stop_server
from keyhold.cli.demo import CONVERSATIONS, DEMO_PASSWORD, USERS
from keyhold.sdk import Client

COLUMNS = {"COLUMNS": "200"}


async def test_demo_seed_is_idempotent_and_gives_alice_conversations(tmp_path: Path) -> None:
    home = tmp_path / "demo"
    refused = keyhold_cli("demo", "seed", "--home", str(home), env=COLUMNS, check=False)
    assert refused.returncode == 1 and "no data dir" in refused.stderr and not home.exists(), refused.stderr
    first = keyhold_cli("demo", "seed", "--init", "--home", str(home), env=COLUMNS)
    assert "initialized a new data dir" in first.stdout
    for user in USERS:
        assert f"{user.username} " in first.stdout
    assert first.stdout.count("created") == len(USERS) + len(CONVERSATIONS)
    assert DEMO_PASSWORD in first.stdout
    # The hints name the program as it was run (here `python -m keyhold`): they work when pasted.
    assert "-m keyhold chat --username alice" in first.stdout

    second = keyhold_cli("demo", "seed", "--home", str(home), env=COLUMNS)
    assert second.returncode == 0
    assert "initialized a new data dir" not in second.stdout
    assert second.stdout.count("exists, skipped") == len(USERS) + len(CONVERSATIONS)
    assert "created" not in second.stdout

    server = start_server(home)
    try:
        alice = await Client.login(server.url, "alice", DEMO_PASSWORD)
        try:
            expected = {
                demo.title or next(p for p in (demo.starter, *demo.others) if p != "alice"): demo
                for demo in CONVERSATIONS
                if "alice" in (demo.starter, *demo.others)
            }
            conversations = await alice.conversations()
            by_label = {c.title or next(m for m in c.members if m != "alice"): c for c in conversations}
            assert set(by_label) == set(expected)  # seeded once, not twice
            for label, demo in expected.items():
                conv = by_label[label]
                assert sorted(conv.members) == sorted((demo.starter, *demo.others))
                assert conv.encryption == "standard"
                assert conv.readable_by.startswith(
                    "the participants; Keyhold staff only under an approved report or legal case"
                )
                history = await alice.history(conv.id)
                # Exactly the seeded lines, in order: a second seed duplicated nothing.
                assert [(m.sender, m.text) for m in history] == list(demo.lines)
                assert conv.last_message is not None
                assert conv.last_message["preview"] == demo.lines[-1][1]
                read = dict(demo.read).get("alice", 0)
                unread = sum(1 for sender, _ in demo.lines[read:] if sender != "alice")
                assert conv.unread == unread, label

            assert by_label["Book club"].readable_by.endswith("in regions eu, row, us")
            assert by_label["bob"].readable_by.endswith("in region us")
            assert by_label["carol"].unread == 2
            assert sorted(await alice.friends()) == ["bob", "carol"]
            me = await alice.me()
            assert me["region"] == "us" and me["display_name"] == "Alice Moreau"
        finally:
            await alice.close()

        # Every demo user can sign in with the demo password; regions as promised.
        for user in USERS:
            client = await Client.login(server.url, user.username, DEMO_PASSWORD)
            try:
                assert (await client.me())["region"] == user.region
                assert await client.conversations()
            finally:
                await client.close()
    finally:
        stop_server(server)
