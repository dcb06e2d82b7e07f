"""Accounts against a real server: registration, sessions (login, logout, logout everywhere,
expiry), password change, display name, account deletion, follows and friends."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator

import httpx
import pytest
import websockets

from conftest import PASSWORD, TLS, Server, new_member, start_server, stop_server, unique
from keyhold.sdk import Client, KeyholdError

API = "/api/v1"
PROBLEM_JSON = "application/problem+json"


def years_ago(years: int, today: dt.date | None = None) -> dt.date:
    today = today or dt.date.today()
    try:
        return today.replace(year=today.year - years)
    except ValueError:  # 29 February
        return today.replace(year=today.year - years, day=28)


def assert_problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    problem = response.json()
    assert problem["status"] == status
    assert isinstance(problem["title"], str) and problem["title"]
    assert isinstance(problem["detail"], str) and problem["detail"]
    return dict(problem)


async def register_raw(
    server: Server, username: str, birthdate: str = "1990-05-17", region: str = "us"
) -> httpx.Response:
    async with httpx.AsyncClient(verify=TLS, base_url=server.url + API) as http:
        body = {"username": username, "password": PASSWORD, "birthdate": birthdate, "region": region}
        return await http.post("/accounts", json=body)


async def login_raw(server: Server, username: str, password: str) -> httpx.Response:
    async with httpx.AsyncClient(verify=TLS, base_url=server.url + API) as http:
        return await http.post("/sessions", json={"username": username, "password": password})


async def get_with_token(server: Server, token: str, path: str = "/account") -> httpx.Response:
    async with httpx.AsyncClient(verify=TLS, base_url=server.url + API) as http:
        return await http.get(path, headers={"Authorization": f"Bearer {token}"})


async def stream_close_code(server: Server, token: str) -> int:
    """Open the stream with `token` and return the close code the server answers with."""
    url = "ws://" + server.url.removeprefix("http://") + API + "/stream"
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code is not None
    return ws.close_code


# -- registration --------------------------------------------------------------------------------


async def test_register_returns_201_profile_without_secrets(server: Server) -> None:
    name = unique()
    response = await register_raw(server, name, region="eu")
    assert response.status_code == 201, response.text
    profile = response.json()
    assert profile["username"] == name
    assert profile["region"] == "eu"
    assert profile["display_name"] == name
    assert profile["created_at"]
    text = response.text.lower()
    assert "password" not in text and "hash" not in text and PASSWORD not in response.text


async def test_duplicate_username_is_409(server: Server) -> None:
    name = unique()
    assert (await register_raw(server, name)).status_code == 201
    problem = assert_problem(await register_raw(server, name, region="eu"), 409)
    assert "taken" in str(problem["detail"]) and name not in str(problem["detail"])
    # The first account is untouched: its password still logs in, and its region is still us.
    client = await Client.login(server.url, name, PASSWORD)
    try:
        assert (await client.me())["region"] == "us"
    finally:
        await client.close()


async def test_bad_region_is_422_and_writes_nothing(server: Server) -> None:
    name = unique()
    problem = assert_problem(await register_raw(server, name, region="mars"), 422)
    assert "region" in str(problem["detail"])
    # Nothing was written: the username is still free and the login fails.
    assert_problem(await login_raw(server, name, PASSWORD), 401)
    assert (await register_raw(server, name, region="row")).status_code == 201


async def test_under_13_is_403_and_13_is_allowed(server: Server) -> None:
    name = unique()
    twelve = years_ago(12).isoformat()
    problem = assert_problem(await register_raw(server, name, birthdate=twelve), 403)
    assert "13" in str(problem["detail"])
    assert_problem(await login_raw(server, name, PASSWORD), 401)
    # Thirteen today (a day short would be twelve): allowed.
    assert (await register_raw(server, name, birthdate=years_ago(13).isoformat())).status_code == 201


@pytest.mark.parametrize(
    "birthdate", ["not-a-date", "1990-13-01", "1990-02-30", "17-05-1990", "3000-01-01", "19900517"]
)
async def test_bad_birthdate_is_422(server: Server, birthdate: str) -> None:
    assert_problem(await register_raw(server, unique(), birthdate=birthdate), 422)


# -- sessions ------------------------------------------------------------------------------------


async def test_login_returns_a_working_opaque_token(server: Server) -> None:
    name = unique()
    assert (await register_raw(server, name)).status_code == 201
    response = await login_raw(server, name, PASSWORD)
    assert response.status_code == 201, response.text
    data = response.json()
    assert data["username"] == name
    token = data["token"]
    assert isinstance(token, str) and len(token) >= 32
    assert name not in token and PASSWORD not in token
    expires = dt.datetime.fromisoformat(data["expires_at"].replace("Z", "+00:00"))
    assert expires > dt.datetime.now(dt.UTC)
    me = await get_with_token(server, token)
    assert me.status_code == 200
    assert me.json()["username"] == name
    # Two logins give two different tokens.
    again = (await login_raw(server, name, PASSWORD)).json()["token"]
    assert again != token


async def test_wrong_password_is_401_problem_json(server: Server) -> None:
    client = await new_member(server)
    try:
        wrong = "not the password at all"
        response = await login_raw(server, client.username, wrong)
        problem = assert_problem(response, 401)
        assert wrong not in response.text
        # An unknown user gets exactly the same answer (no username probing).
        unknown = await login_raw(server, unique("ghost"), wrong)
        assert assert_problem(unknown, 401)["detail"] == problem["detail"]
        with pytest.raises(KeyholdError) as info:
            await Client.login(server.url, client.username, wrong)
        assert info.value.status == 401
    finally:
        await client.close()


async def test_requests_without_or_with_a_bad_token_are_401(server: Server) -> None:
    async with httpx.AsyncClient(verify=TLS, base_url=server.url + API) as http:
        assert_problem(await http.get("/account"), 401)
        assert_problem(await http.get("/account", headers={"Authorization": "Bearer nonsense"}), 401)
        assert_problem(await http.get("/account", headers={"Authorization": "Basic dXNlcjpwYXNz"}), 401)
        assert_problem(await http.get("/conversations", headers={"Authorization": "Bearer"}), 401)


async def test_logout_revokes_only_that_token(server: Server) -> None:
    first = await new_member(server)
    second = await Client.login(server.url, first.username, PASSWORD)
    try:
        await first.logout()
        with pytest.raises(KeyholdError) as info:
            await first.me()
        assert info.value.status == 401
        assert "revoked" in info.value.problem["detail"] or "log in" in info.value.problem["detail"]
        assert (await second.me())["username"] == first.username
        assert await stream_close_code(server, first.token) == 4401
    finally:
        await first.close()
        await second.close()


async def test_logout_everywhere_revokes_every_token_of_the_user(server: Server) -> None:
    first = await new_member(server)
    second = await Client.login(server.url, first.username, PASSWORD)
    third = await Client.login(server.url, first.username, PASSWORD)
    bystander = await new_member(server)
    try:
        revoked = await second.logout_everywhere()
        assert revoked == 3
        for client in (first, second, third):
            with pytest.raises(KeyholdError) as info:
                await client.me()
            assert info.value.status == 401
        assert await stream_close_code(server, first.token) == 4401
        # Only that user's tokens: someone else's session lives on.
        assert (await bystander.me())["username"] == bystander.username
        # And the user can log in again.
        fresh = await Client.login(server.url, first.username, PASSWORD)
        assert (await fresh.me())["username"] == first.username
        await fresh.close()
    finally:
        for client in (first, second, third, bystander):
            await client.close()


@pytest.fixture(scope="module")
def short_token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("ttl") / "kh", env={"KEYHOLD_TOKEN_TTL_SECONDS": "2"})
    yield srv
    stop_server(srv)


async def test_token_expires(short_token_server: Server) -> None:
    server = short_token_server
    name = unique()
    assert (await register_raw(server, name)).status_code == 201
    response = await login_raw(server, name, PASSWORD)
    assert response.status_code == 201
    token = response.json()["token"]
    expires = dt.datetime.fromisoformat(response.json()["expires_at"].replace("Z", "+00:00"))
    remaining = (expires - dt.datetime.now(dt.UTC)).total_seconds()
    assert 0 < remaining <= 2.5, "the token must live for the configured 2 seconds"
    assert (await get_with_token(server, token)).status_code == 200
    # Nothing to await but the clock: wait until the stated expiry has passed.
    await asyncio.sleep(max(0.0, (expires - dt.datetime.now(dt.UTC)).total_seconds()) + 0.3)
    problem = assert_problem(await get_with_token(server, token), 401)
    assert "expired" in str(problem["detail"])
    assert await stream_close_code(server, token) == 4401
    # A fresh login works again.
    assert (await login_raw(server, name, PASSWORD)).status_code == 201


# -- password, profile ---------------------------------------------------------------------------


async def test_password_change(server: Server) -> None:
    client = await new_member(server)
    new_password = "a brand new passphrase"
    try:
        # The wrong current password changes nothing.
        with pytest.raises(KeyholdError) as info:
            await client.change_password("wrong current password", new_password)
        assert info.value.status == 403
        assert (await login_raw(server, client.username, PASSWORD)).status_code == 201
        # Too short a new password: 422, nothing changed.
        with pytest.raises(KeyholdError) as info:
            await client.change_password(PASSWORD, "short")
        assert info.value.status == 422
        assert (await login_raw(server, client.username, PASSWORD)).status_code == 201

        await client.change_password(PASSWORD, new_password)
        assert_problem(await login_raw(server, client.username, PASSWORD), 401)
        assert (await login_raw(server, client.username, new_password)).status_code == 201
    finally:
        await client.close()


async def test_display_name(server: Server) -> None:
    client = await new_member(server)
    other = await new_member(server)
    try:
        assert (await client.me())["display_name"] == client.username
        updated = await client.set_display_name("  Ada Lovelace ✨ ")
        assert updated["display_name"] == "Ada Lovelace ✨"
        assert (await client.me())["display_name"] == "Ada Lovelace ✨"
        # Others see it on the public profile, without the birthdate.
        public = await get_with_token(server, other.token, f"/users/{client.username}")
        assert public.status_code == 200
        assert public.json()["display_name"] == "Ada Lovelace ✨"
        assert "birthdate" not in public.json()
        for bad in ("", "   ", "x" * 65):
            with pytest.raises(KeyholdError) as info:
                await client.set_display_name(bad)
            assert info.value.status == 422
        assert (await client.me())["display_name"] == "Ada Lovelace ✨"
    finally:
        await client.close()
        await other.close()


# -- deletion ------------------------------------------------------------------------------------


async def test_account_deletion(server: Server) -> None:
    leaving = await new_member(server)
    staying = await new_member(server)
    try:
        conv = await leaving.start_conversation([staying.username])
        await staying.follow(leaving.username)
        await leaving.follow(staying.username)
        kept = await staying.send(conv.id, "this one stays")
        gone1 = await leaving.send(conv.id, "secret number one")
        attachment = await leaving.send_file(conv.id, b"attached bytes" * 50, "notes.bin")
        gone2 = await leaving.send(conv.id, "secret number two")

        # The wrong password deletes nothing.
        with pytest.raises(KeyholdError) as info:
            await leaving.delete_account("not my password")
        assert info.value.status == 403
        assert (await leaving.me())["username"] == leaving.username

        await leaving.delete_account(PASSWORD)

        history = {m.id: m for m in await staying.history(conv.id)}
        assert set(history) == {kept.id, gone1.id, attachment.id, gone2.id}
        assert history[kept.id].text == "this one stays"
        assert not history[kept.id].deleted
        for mid in (gone1.id, attachment.id, gone2.id):
            assert history[mid].deleted, mid
            assert history[mid].text is None
            assert history[mid].attachment is None
        assert attachment.attachment is not None
        with pytest.raises(KeyholdError) as info:
            await staying.download(attachment.attachment.id)
        assert info.value.status in (404, 410)

        # The conversation preview shows no destroyed text either.
        view = await staying.conversation(conv.id)
        assert leaving.username not in view.members
        assert view.last_message is not None
        assert view.last_message["id"] == gone2.id
        assert view.last_message["preview"] is None
        assert view.last_message["deleted"] is True
        assert "secret" not in str(await staying.conversations())

        # The account is gone: no login, no old token, not followable, not a friend any more.
        assert_problem(await login_raw(server, leaving.username, PASSWORD), 401)
        assert (await get_with_token(server, leaving.token)).status_code in (401, 403)
        with pytest.raises(KeyholdError) as info:
            await staying.follow(leaving.username)
        assert info.value.status == 404
        relations = await staying.relations()
        assert leaving.username not in relations["friends"]
        assert leaving.username not in relations["following"]
        assert leaving.username not in relations["followers"]
    finally:
        await leaving.close()
        await staying.close()


# -- follows and friends -------------------------------------------------------------------------


async def test_follow_unfollow_and_friends_are_mutual_follows(server: Server) -> None:
    a, b, c = await asyncio.gather(new_member(server), new_member(server), new_member(server))
    try:
        await a.follow(b.username)
        await a.follow(b.username)  # idempotent
        assert await a.relations() == {"following": [b.username], "followers": [], "friends": []}
        assert await b.relations() == {"following": [], "followers": [a.username], "friends": []}

        await b.follow(a.username)
        assert await a.friends() == [b.username]
        assert await b.friends() == [a.username]

        # c follows a, a does not follow back: a follower, not a friend.
        await c.follow(a.username)
        rel = await a.relations()
        assert sorted(rel["followers"]) == sorted([b.username, c.username])
        assert rel["friends"] == [b.username]
        assert await c.friends() == []

        await a.unfollow(b.username)
        assert await a.friends() == []
        assert await b.friends() == []
        assert await b.relations() == {"following": [a.username], "followers": [], "friends": []}
        await a.unfollow(b.username)  # unfollowing again is harmless

        with pytest.raises(KeyholdError) as info:
            await a.follow(a.username)
        assert info.value.status == 422
        with pytest.raises(KeyholdError) as info:
            await a.follow(unique("nobody"))
        assert info.value.status == 404
        rel = await a.relations()
        assert rel["following"] == [] and rel["friends"] == []
        assert sorted(rel["followers"]) == sorted([b.username, c.username])
    finally:
        for client in (a, b, c):
            await client.close()
