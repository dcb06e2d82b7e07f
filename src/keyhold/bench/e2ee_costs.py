"""What end-to-end encryption costs beyond the server, measured for `keyhold bench delivery
--encryption`: Olm session setups per second on one core (vodozemac), and one send to a
50-member group through the Python SDK, next to a `standard` send to the same group."""

from __future__ import annotations

import statistics
import time
from typing import Any

GROUP_SIZE = 50
GROUP_SENDS = 20


def olm_setups_per_second(setups: int = 1000) -> float:
    """Both ends of an Olm session per second: an outbound session from a claimed one-time
    key, a first (pre-key) message, the inbound session made from it. One core."""
    import vodozemac

    alice, bob = vodozemac.Account(), vodozemac.Account()
    keys: list[Any] = []
    while len(keys) < setups:  # an account holds at most 50 one-time keys at a time
        bob.generate_one_time_keys(50)
        keys += list(bob.one_time_keys.values())
        bob.mark_keys_as_published()
    started = time.perf_counter()
    for key in keys[:setups]:
        outbound = alice.create_outbound_session(bob.curve25519_key, key)
        pre_key = vodozemac.AnyOlmMessage.from_parts(*outbound.encrypt(b"a Megolm room key").to_parts()).to_pre_key()
        assert pre_key is not None  # a session's first message is a pre-key message
        bob.create_inbound_session(alice.curve25519_key, pre_key)
    return setups / (time.perf_counter() - started)


async def group_send_costs(url: str, prefix: str, password: str) -> dict[str, Any]:
    """Sends to a 50-member group from one SDK client, timed end to end (request to answer):
    `standard`, and e2ee (the first send shares the room key with every member's device over
    Olm; later ones are one Megolm encryption each), with the Megolm encryption alone."""
    import vodozemac

    from keyhold.sdk import Client

    members = [
        await Client.register(url, f"{prefix}_g{i}", password, birthdate="1990-01-01", region="us")
        for i in range(GROUP_SIZE)
    ]
    sender, others = members[0], [m.username for m in members[1:]]
    for member in members[1:]:  # friends of the sender: added to the group, not asked
        await member.follow(sender.username)
        await sender.follow(member.username)
    try:
        timings: dict[str, Any] = {"group_size": GROUP_SIZE, "sends": GROUP_SENDS}
        for model in ("standard", "e2ee"):
            group = await sender.start_conversation(others, encryption=model, kind="group")
            started = time.perf_counter()
            await sender.send(group.id, "the first message")
            first_ms = (time.perf_counter() - started) * 1000
            each = []
            for n in range(GROUP_SENDS):
                started = time.perf_counter()
                await sender.send(group.id, f"message {n} to fifty")
                each.append((time.perf_counter() - started) * 1000)
            timings[model] = {"first_send_ms": round(first_ms, 2), "send_ms_mean": round(statistics.mean(each), 2)}
        session = vodozemac.GroupSession()
        text = b'{"type":"m.room.message","content":{"msgtype":"m.text","body":"message to fifty"}}'
        started = time.perf_counter()
        for _ in range(1000):
            session.encrypt(text)
        timings["megolm_encrypt_us"] = round((time.perf_counter() - started) * 1000, 2)
        return timings
    finally:
        for member in members:
            await member.close()
