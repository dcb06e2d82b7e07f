"""Bad input gets a clear 4xx problem+json, leaks no password and writes nothing (invariant 4).

One row per malformed request, run against a real server on both backends. Each request goes
over a raw socket so that the bytes on the wire are exactly the ones in the table (invalid
UTF-8, unnormalized paths, chunked bodies without Content-Length, garbage headers). Around every
request the test snapshots every table of the database (row count and a hash of all rows, read
directly with sqlite3 / asyncpg, not through the server) and the blob store, and asserts that
nothing changed.
"""

from __future__ import annotations

import json
import secrets
import select
import socket
import string
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from conftest import PASSWORD, TLS, Server
from db_snapshot import snapshot

API = "/api/v1"


# -- secrets that must never come back in a response (or reach the log) -----------------------


def _letters(n: int) -> str:
    return "".join(secrets.choice(string.ascii_letters) for _ in range(n))


SECRET_PW = "Pw-" + _letters(29)  # a plausible password, 32 characters
LONG_PW = "Lp-" + _letters(1100)  # over the 1,024-character limit
WRONG_PW = "Wr-" + _letters(29)  # a wrong current password
SECRETS = (SECRET_PW, LONG_PW, WRONG_PW, PASSWORD)


# -- the table --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ref:
    """A value known only once the module's fixture data exists (ids of the conversation...)."""

    name: str


CID, MID, ATT, ME, OTHER = Ref("cid"), Ref("mid"), Ref("att"), Ref("me"), Ref("other")


@dataclass(frozen=True)
class Chunked:
    """A body sent with Transfer-Encoding: chunked (no Content-Length)."""

    data: bytes


NOBODY = object()
MEMBER = "member"  # the default Authorization: the bearer token of the signed-in member


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str  # relative to /api/v1 unless it starts with "!" (then taken as the raw target)
    body: Any = NOBODY  # dict/list/str/int/None -> JSON; bytes -> raw; Chunked -> chunked
    status: int | tuple[int, ...] = 422
    auth: str | bytes | None = MEMBER
    content_type: str | None = "application/json"
    headers: tuple[tuple[str, bytes | str], ...] = field(default=())
    # A wrong password is a sign-in attempt: counting it (the throttle) is its only write.
    counted: tuple[str, ...] = ()


def fresh() -> str:
    return "bi_" + uuid.uuid4().hex[:12]


def reg(drop: tuple[str, ...] = (), **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "username": fresh(),
        "password": SECRET_PW,
        "birthdate": "1990-05-17",
        "region": "us",
    }
    body.update(changes)
    for name in drop:
        del body[name]
    return body


def utf8_bad_register() -> bytes:
    name = fresh().encode()
    return (
        b'{"username": "'
        + name
        + b'\xff\xfe", "password": "'
        + SECRET_PW.encode()
        + b'", "birthdate": "1990-05-17", "region": "us"}'
    )


BIG_TEXT = {"text": "a" * 70_000, "idempotency_key": "big"}  # > 64 KiB once encoded
BIG_TEXT_BYTES = json.dumps(BIG_TEXT).encode()
TEN_MIB = 10 * 1024 * 1024
MSGS = "/conversations/{cid}/messages"
BAD = (400, 422)  # either is a fine answer to a body that is not JSON at all

CASES = [
    # ---- the body is not a JSON object ------------------------------------------------------
    Case("json-malformed", "POST", "/accounts", b'{"username": "x", "password":', BAD),
    Case("json-trailing-garbage", "POST", MSGS, b'{"text": "hi"} xx', BAD),
    Case("json-invalid-utf8", "POST", "/accounts", utf8_bad_register(), BAD),
    Case("json-invalid-utf8-text", "POST", MSGS, b'{"text": "h\xc3\x28i"}', BAD),
    Case("json-array", "POST", "/accounts", [SECRET_PW, "1990-05-17"]),
    Case("json-string", "POST", MSGS, "just a string"),
    Case("json-number", "POST", MSGS, 42),
    Case("json-null", "POST", MSGS, None),
    Case("json-empty-body", "POST", MSGS, b"", BAD),
    Case("content-type-text", "POST", MSGS, b'{"text": "hi"}', BAD, content_type="text/plain"),
    # ---- registration: unknown / missing fields, wrong types, lengths, formats -----------------
    Case("register-unknown-field", "POST", "/accounts", reg(is_admin=True)),
    Case("register-missing-password", "POST", "/accounts", reg(drop=("password",))),
    Case("register-missing-username", "POST", "/accounts", reg(drop=("username",))),
    Case("register-missing-region", "POST", "/accounts", reg(drop=("region",))),
    Case("register-username-int", "POST", "/accounts", reg(username=12345)),
    Case("register-username-null", "POST", "/accounts", reg(username=None)),
    Case("register-username-list", "POST", "/accounts", reg(username=["a", "b"])),
    Case("register-password-bool", "POST", "/accounts", reg(password=True)),
    Case("register-password-int", "POST", "/accounts", reg(password=12345678)),
    Case("register-username-65", "POST", "/accounts", reg(username="u" * 65)),
    Case("register-username-33", "POST", "/accounts", reg(username="u" * 33)),
    Case("register-username-chars", "POST", "/accounts", reg(username="Bad Name!")),
    Case("register-password-too-long", "POST", "/accounts", reg(password=LONG_PW)),
    Case("register-password-too-short", "POST", "/accounts", reg(password="short")),
    Case("birthdate-dmy", "POST", "/accounts", reg(birthdate="17/05/1990")),
    Case("birthdate-unpadded", "POST", "/accounts", reg(birthdate="1990-5-17")),
    Case("birthdate-feb-30", "POST", "/accounts", reg(birthdate="1990-02-30")),
    Case("birthdate-future", "POST", "/accounts", reg(birthdate="2999-01-01")),
    Case("birthdate-with-time", "POST", "/accounts", reg(birthdate="1990-05-17T00:00:00")),
    Case("birthdate-int", "POST", "/accounts", reg(birthdate=19900517)),
    Case("birthdate-empty", "POST", "/accounts", reg(birthdate="")),
    Case("region-unknown", "POST", "/accounts", reg(region="mars")),
    Case("region-null", "POST", "/accounts", reg(region=None)),
    Case("region-too-long", "POST", "/accounts", reg(region="r" * 17)),
    # ---- sessions and account -----------------------------------------------------------------
    Case("login-password-int", "POST", "/sessions", {"username": ME, "password": 12345678}),
    Case("login-password-too-long", "POST", "/sessions", {"username": ME, "password": LONG_PW}),
    Case(
        "login-wrong-password", "POST", "/sessions", {"username": ME, "password": WRONG_PW}, 401,
        counted=("signin_throttle",),
    ),
    Case("login-unknown-field", "POST", "/sessions", {"username": ME, "password": PASSWORD, "otp": "1"}),
    Case("login-device-id-nul", "POST", "/sessions", {"username": ME, "password": PASSWORD, "device_id": "a\u0000b"}),
    Case("device-rename-unknown", "PATCH", "/devices/NOSUCHDEVICE", {"display_name": "x"}, 404),
    Case("device-rename-nul", "PATCH", "/devices/NOSUCHDEVICE", {"display_name": "a\u0000"}),
    Case("device-id-path-nul", "PATCH", "/devices/a%00b", {"display_name": "x"}),
    Case("device-remove-wrong-password", "DELETE", "/devices/NOSUCHDEVICE", {"password": WRONG_PW}, 403),
    Case(
        "password-change-wrong-current",
        "PUT",
        "/account/password",
        {"current_password": WRONG_PW, "new_password": SECRET_PW},
        403,
    ),
    Case(
        "password-change-new-too-long",
        "PUT",
        "/account/password",
        {"current_password": PASSWORD, "new_password": LONG_PW},
    ),
    Case(
        "password-change-new-too-short",
        "PUT",
        "/account/password",
        {"current_password": PASSWORD, "new_password": "short"},
    ),
    Case("delete-account-wrong-password", "POST", "/account/delete", {"password": WRONG_PW}, 403),
    Case("delete-account-no-password", "POST", "/account/delete", {}),
    Case("display-name-too-long", "PATCH", "/account", {"display_name": "d" * 65}),
    Case("display-name-blank", "PATCH", "/account", {"display_name": "   "}),
    Case("display-name-int", "PATCH", "/account", {"display_name": 7}),
    Case("follow-self", "PUT", "/following/{me}", status=422),
    Case("follow-unknown-user", "PUT", "/following/nobody_" + uuid.uuid4().hex[:8], status=404),
    # ---- blocks, DM audience, requests, guardian links ------------------------------------------
    Case("block-self", "PUT", "/blocks/{me}", status=422),
    Case("block-unknown-user", "PUT", "/blocks/nobody_" + uuid.uuid4().hex[:8], status=404),
    Case("block-name-nul", "PUT", "/blocks/a%00b", status=422),
    Case("block-name-65", "PUT", "/blocks/" + "b" * 65, status=422),
    Case("unblock-not-blocked", "DELETE", "/blocks/{other}", status=404),
    Case("messaging-bad-value", "PUT", "/account/messaging", {"dm_audience": "anyone"}),
    Case("messaging-nul", "PUT", "/account/messaging", {"dm_audience": "friends\u0000"}),
    Case("messaging-int", "PUT", "/account/messaging", {"dm_audience": 1}),
    Case("messaging-unknown-field", "PUT", "/account/messaging", {"dm_audience": "friends", "x": 1}),
    Case("request-accept-not-a-request", "POST", "/requests/{cid}/accept", status=404),
    Case("request-accept-unknown", "POST", "/requests/999999999/accept", status=404),
    Case("request-accept-non-numeric", "POST", "/requests/abc/accept", status=422),
    Case("request-delete-not-a-request", "DELETE", "/requests/{cid}", status=404),
    Case("request-block-negative", "POST", "/requests/-1/block", status=422),
    Case("guardian-link-two-adults", "PUT", "/guardian/links/{other}", status=409),
    Case("guardian-link-self", "PUT", "/guardian/links/{me}", status=409),
    Case("guardian-unlink-none", "DELETE", "/guardian/links/{other}", status=404),
    Case("guardian-teen-not-linked", "GET", "/guardian/teens/{other}", status=404),
    Case("guardian-set-everyone", "PUT", "/guardian/teens/{other}/messaging", {"dm_audience": "everyone"}),
    Case("follow-username-65", "PUT", "/following/" + "u" * 65, status=422),
    # ---- conversations ------------------------------------------------------------------------
    Case("start-encryption-bad", "POST", "/conversations", {"members": [OTHER], "encryption": "rot13"}),
    Case("start-members-empty", "POST", "/conversations", {"members": []}),
    Case("start-members-string", "POST", "/conversations", {"members": OTHER}),
    Case("start-members-only-me", "POST", "/conversations", {"members": [ME]}),
    Case("start-member-unknown", "POST", "/conversations", {"members": ["nobody_" + uuid.uuid4().hex[:8]]}, 404),
    Case("start-title-too-long", "POST", "/conversations", {"members": [OTHER], "title": "t" * 101}),
    Case("start-kind-bad", "POST", "/conversations", {"members": [OTHER], "kind": "channel"}),
    Case("start-unknown-field", "POST", "/conversations", {"members": [OTHER], "public": True}),
    Case("add-members-to-direct", "POST", "/conversations/{cid}/members", {"members": [fresh()]}, (404, 422)),
    # ---- sending ------------------------------------------------------------------------------
    Case("send-text-too-long", "POST", MSGS, {"text": "x" * 4001}),
    Case("send-text-too-long-multibyte", "POST", MSGS, {"text": "é" * 4001}),
    Case("send-text-empty", "POST", MSGS, {"text": ""}),
    Case("send-text-blank", "POST", MSGS, {"text": " \n\t "}),
    Case("send-no-fields", "POST", MSGS, {}),
    Case("send-text-int", "POST", MSGS, {"text": 5}),
    Case("send-text-null", "POST", MSGS, {"text": None}),
    Case("send-text-bool", "POST", MSGS, {"text": True}),
    Case("send-text-object", "POST", MSGS, {"text": {"a": 1}}),
    Case("send-unknown-field", "POST", MSGS, {"text": "hi", "sender": "someone_else"}),
    Case(
        "send-encrypted-to-standard",
        "POST",
        MSGS,
        {"encrypted": {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AAAA", "session_id": "s"}},
    ),
    Case("send-encrypted-string", "POST", MSGS, {"encrypted": "AAAA"}),
    Case("send-encrypted-nul-key", "POST", MSGS, {"encrypted": {"a\u0000": 1}}),
    # ---- end-to-end encryption's key directory ------------------------------------------------
    Case("e2ee-upload-foreign-device-keys", "POST", "/e2ee/keys/upload", {"device_keys": {"user_id": "@x:keyhold.local"}}, 400),
    Case("e2ee-upload-otks-before-device-keys", "POST", "/e2ee/keys/upload", {"one_time_keys": {"signed_curve25519:AA": {"key": "AAAA"}}}, 400),
    Case("e2ee-query-not-a-map", "POST", "/e2ee/keys/query", {"device_keys": ["@x:keyhold.local"]}),
    Case("e2ee-query-bad-user-id", "POST", "/e2ee/keys/query", {"device_keys": {"x": []}}),
    Case("e2ee-claim-nul-device", "POST", "/e2ee/keys/claim", {"one_time_keys": {"@x:keyhold.local": {"D\u0000": "signed_curve25519"}}}),
    Case("e2ee-cross-signing-empty", "POST", "/e2ee/keys/device_signing/upload", {}, 400),
    Case("e2ee-to-device-bad-txn", "PUT", "/e2ee/sendToDevice/m.x/a%20b", {"messages": {}}),
    Case("e2ee-to-device-not-object", "PUT", "/e2ee/sendToDevice/m.x/t1", {"messages": {"@x:keyhold.local": {"*": 1}}}),
    Case("send-idempotency-key-65", "POST", MSGS, {"text": "hi", "idempotency_key": "k" * 65}),
    Case("send-idempotency-key-empty", "POST", MSGS, {"text": "hi", "idempotency_key": ""}),
    Case("send-idempotency-key-int", "POST", MSGS, {"text": "hi", "idempotency_key": 12}),
    Case("send-unknown-conversation", "POST", "/conversations/999999999/messages", {"text": "hi"}, 404),
    Case("send-attachment-traversal", "POST", MSGS, {"text": "", "attachment_id": "../x"}, (404, 422)),
    Case("send-attachment-unknown", "POST", MSGS, {"text": "hi", "attachment_id": "a_nope"}, 404),
    Case("send-attachment-reused", "POST", MSGS, {"text": "again", "attachment_id": ATT}, 409),
    Case("send-attachment-id-41", "POST", MSGS, {"text": "hi", "attachment_id": "a" * 41}),
    Case("send-oversize-content-length", "POST", MSGS, BIG_TEXT_BYTES, 413),
    Case("send-oversize-chunked", "POST", MSGS, Chunked(BIG_TEXT_BYTES), 413),
    Case("send-content-length-declares-oversize", "POST", MSGS, b'{"text": "hi"}', 413, headers=(("Content-Length", "70000"),)),
    # ---- path ids -----------------------------------------------------------------------------
    Case("cid-non-numeric", "GET", "/conversations/abc/messages"),
    Case("cid-float", "GET", "/conversations/1.5/messages"),
    Case("cid-negative", "GET", "/conversations/-1/messages"),
    Case("cid-zero", "GET", "/conversations/0/messages"),
    Case("cid-over-2^53", "GET", f"/conversations/{2**53}/messages"),
    Case("cid-over-2^64", "GET", f"/conversations/{2**64 + 1}/messages"),
    Case("cid-huge-digits", "GET", "/conversations/" + "9" * 400 + "/messages"),
    Case("cid-unknown", "GET", "/conversations/999999999", status=404),
    Case("send-cid-over-2^64", "POST", f"/conversations/{2**64}/messages", {"text": "hi"}),
    Case("delete-message-id-abc", "DELETE", "/messages/abc"),
    Case("delete-message-id-zero", "DELETE", "/messages/0"),
    Case("delete-message-id-over-2^64", "DELETE", f"/messages/{2**64}"),
    Case("delete-message-unknown", "DELETE", "/messages/999999999", status=404),
    # ---- query parameters ---------------------------------------------------------------------
    Case("history-limit-0", "GET", MSGS + "?limit=0"),
    Case("history-limit-abc", "GET", MSGS + "?limit=abc"),
    Case("history-limit-201", "GET", MSGS + "?limit=201"),
    Case("history-before-negative", "GET", MSGS + "?before=-1"),
    Case("history-after-over-2^64", "GET", MSGS + f"?after={2**64}"),
    Case("history-before-and-after", "GET", MSGS + "?before={mid}&after=1"),
    Case("conversations-limit-abc", "GET", "/conversations?limit=abc"),
    Case("conversations-before-negative", "GET", "/conversations?before=-1"),
    # ---- receipts -----------------------------------------------------------------------------
    Case("receipt-type-bad", "POST", "/conversations/{cid}/receipts", {"type": "seen", "message_id": MID}),
    Case("receipt-message-id-string", "POST", "/conversations/{cid}/receipts", {"type": "read", "message_id": "5"}),
    Case("receipt-message-id-zero", "POST", "/conversations/{cid}/receipts", {"type": "read", "message_id": 0}),
    Case("receipt-message-id-float", "POST", "/conversations/{cid}/receipts", {"type": "read", "message_id": 1.5}),
    Case("receipt-message-id-over-2^64", "POST", "/conversations/{cid}/receipts", {"type": "read", "message_id": 2**64}),
    Case("receipt-message-unknown", "POST", "/conversations/{cid}/receipts", {"type": "read", "message_id": 999999999}, 404),
    Case("receipt-missing-type", "POST", "/conversations/{cid}/receipts", {"message_id": MID}),
    # ---- attachments --------------------------------------------------------------------------
    Case("upload-over-limit-content-length", "POST", "/conversations/{cid}/attachments", b"\0" * (TEN_MIB + 1), 413, content_type="application/octet-stream", headers=(("Keyhold-Filename", "big.bin"),)),
    Case("upload-over-limit-chunked", "POST", "/conversations/{cid}/attachments", Chunked(b"\0" * (TEN_MIB + 1)), 413, content_type="application/octet-stream", headers=(("Keyhold-Filename", "big.bin"),)),
    Case("upload-empty", "POST", "/conversations/{cid}/attachments", b"", content_type="application/octet-stream", headers=(("Keyhold-Filename", "e.bin"),)),
    Case("upload-no-filename", "POST", "/conversations/{cid}/attachments", b"data", content_type="application/octet-stream"),
    Case("upload-filename-201", "POST", "/conversations/{cid}/attachments", b"data", content_type="application/octet-stream", headers=(("Keyhold-Filename", "f" * 201),)),
    Case("upload-filename-201-encoded", "POST", "/conversations/{cid}/attachments", b"data", content_type="application/octet-stream", headers=(("Keyhold-Filename", "%C3%A9" * 201),)),
    Case("upload-filename-not-utf8", "POST", "/conversations/{cid}/attachments", b"data", content_type="application/octet-stream", headers=(("Keyhold-Filename", "caf%E9.txt"),)),
    Case("upload-filename-raw-utf8", "POST", "/conversations/{cid}/attachments", b"data", content_type="application/octet-stream", headers=(("Keyhold-Filename", "caf\u00e9.txt".encode()),)),
    Case("upload-filename-in-query", "POST", "/conversations/{cid}/attachments?filename=x.bin", b"data", content_type="application/octet-stream"),
    Case("upload-filename-in-query-and-header", "POST", "/conversations/{cid}/attachments?filename=x.bin", b"data", content_type="application/octet-stream", headers=(("Keyhold-Filename", "x.bin"),)),
    Case("upload-unknown-conversation", "POST", "/conversations/999999999/attachments", b"data", 404, content_type="application/octet-stream", headers=(("Keyhold-Filename", "x.bin"),)),
    Case("download-traversal-literal", "GET", "!" + API + "/attachments/../x", status=(404, 422)),
    Case("download-traversal-encoded", "GET", "/attachments/..%2Fx", status=(404, 422)),
    Case("download-traversal-keys", "GET", "/attachments/..%2F..%2Fkeys.json", status=(404, 422)),
    Case("download-id-dots", "GET", "/attachments/..", status=(404, 422)),
    Case("download-id-bad-chars", "GET", "/attachments/a.b$c"),
    Case("download-id-41", "GET", "/attachments/" + "a" * 41),
    Case("download-unknown", "GET", "/attachments/a_nope", status=404),
    # ---- authentication -----------------------------------------------------------------------
    Case("auth-missing", "GET", "/conversations", status=401, auth=None),
    Case("auth-basic", "GET", "/conversations", status=401, auth="Basic dXNlcjpwYXNz"),
    Case("auth-bearer-empty", "GET", "/conversations", status=401, auth="Bearer "),
    Case("auth-bearer-garbage", "GET", "/conversations", status=401, auth="Bearer !!not-a-token!!"),
    Case("auth-bearer-huge", "GET", "/conversations", status=401, auth="Bearer " + "t" * 4000),
    Case("auth-bearer-non-ascii", "GET", "/conversations", status=401, auth=b"Bearer \xff\xfe\xfd"),
    Case("auth-missing-on-send", "POST", MSGS, {"text": "hi"}, 401, auth=None),
    Case("auth-garbage-on-upload", "POST", "/conversations/{cid}/attachments", b"data", 401, auth="Bearer nope", content_type="application/octet-stream", headers=(("Keyhold-Filename", "x.bin"),)),
    # ---- routes and methods -------------------------------------------------------------------
    Case("wrong-method-put-messages", "PUT", MSGS, {"text": "hi"}, 405),
    Case("wrong-method-delete-accounts", "DELETE", "/accounts", status=405),
    Case("wrong-method-post-health", "POST", "/health", {}, 405),
    Case("unknown-route", "GET", "/nope", status=404),
    Case("unknown-route-post", "POST", "/conversations/{cid}/nope", {"text": "hi"}, 404),
    # Outside /api every page path is the web app's (client-side routes): a missing asset is a 404.
    Case("unknown-asset-outside-api", "GET", "!/assets/definitely-not-here.js", status=404),
]  # fmt: skip


# -- raw HTTP over a socket ---------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return bytes(out)


def _readable(sock: socket.socket, wait: float) -> bool:
    return bool(select.select([sock], [], [], wait)[0])


def raw_request(
    url: str, method: str, target: str, headers: list[tuple[str, bytes]], body: bytes | Chunked | None
) -> Reply:
    """One HTTP/1.1 request on a fresh connection. Stops sending the body as soon as the
    server has answered (an early 413), then reads the reply to EOF."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    lines = [f"{method} {target} HTTP/1.1".encode(), f"Host: {host}:{port}".encode(), b"Connection: close"]
    lines += [name.encode() + b": " + value for name, value in headers]
    names = {name.lower() for name, _ in headers}
    if isinstance(body, Chunked):
        lines.append(b"Transfer-Encoding: chunked")
        payload = body.data
        pieces = [
            b"%x\r\n" % len(payload[i : i + 65536]) + payload[i : i + 65536] + b"\r\n"
            for i in range(0, len(payload), 65536)
        ] + [b"0\r\n\r\n"]
    elif body is not None:
        if "content-length" not in names:
            lines.append(b"Content-Length: %d" % len(body))
        pieces = [body[i : i + 65536] for i in range(0, len(body), 65536)]
    else:
        pieces = []
    with socket.create_connection((host, port), timeout=60) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n")
        try:
            # Give a server that answers from the headers alone the chance to do so first.
            if pieces and not _readable(sock, 0.2):
                for piece in pieces:
                    if _readable(sock, 0):
                        break
                    sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = bytearray()
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            if not data:
                raise
    head, _, payload_out = bytes(data).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    reply_headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        reply_headers[name.strip().lower()] = value.strip()
    if reply_headers.get("transfer-encoding", "").lower() == "chunked":
        payload_out = _dechunk(payload_out)
    elif "content-length" in reply_headers:
        payload_out = payload_out[: int(reply_headers["content-length"])]
    return Reply(int(status_line.split()[1]), reply_headers, payload_out)


# -- fixture data ---------------------------------------------------------------------------------


@dataclass
class World:
    token: str
    values: dict[str, Any]


@pytest.fixture(scope="module")
def world(server: Server) -> Iterator[World]:
    me, other = fresh(), fresh()
    with httpx.Client(verify=TLS, base_url=server.url + API, timeout=60) as http:
        for name, region in ((me, "us"), (other, "eu")):
            body = {"username": name, "password": PASSWORD, "birthdate": "1990-05-17", "region": region}
            http.post("/accounts", json=body).raise_for_status()
        login = http.post("/sessions", json={"username": me, "password": PASSWORD})
        login.raise_for_status()
        token = login.json()["token"]
        auth = {"Authorization": f"Bearer {token}"}
        conv = http.post("/conversations", json={"members": [other]}, headers=auth)
        conv.raise_for_status()
        cid = conv.json()["id"]
        sent = http.post(f"/conversations/{cid}/messages", json={"text": "hello"}, headers=auth)
        sent.raise_for_status()
        upload = http.post(
            f"/conversations/{cid}/attachments",
            content=b"attachment bytes",
            headers={**auth, "Content-Type": "text/plain", "Keyhold-Filename": "a.txt"},
        )
        upload.raise_for_status()
        att = upload.json()["id"]
        http.post(
            f"/conversations/{cid}/messages", json={"text": "", "attachment_id": att}, headers=auth
        ).raise_for_status()
    yield World(token, {"cid": cid, "mid": sent.json()["id"], "att": att, "me": me, "other": other})


def _resolve(value: Any, values: dict[str, Any]) -> Any:
    if isinstance(value, Ref):
        return values[value.name]
    if isinstance(value, dict):
        return {k: _resolve(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, values) for v in value]
    return value


def _request_for(case: Case, world: World) -> tuple[str, list[tuple[str, bytes]], bytes | Chunked | None]:
    path = case.path.format(**world.values)
    target = path[1:] if path.startswith("!") else API + path
    headers: list[tuple[str, bytes]] = []
    if case.auth == MEMBER:
        headers.append(("Authorization", f"Bearer {world.token}".encode()))
    elif case.auth is not None:
        headers.append(("Authorization", case.auth if isinstance(case.auth, bytes) else case.auth.encode()))
    body: bytes | Chunked | None
    if case.body is NOBODY:
        body = None
    elif isinstance(case.body, bytes | Chunked):
        body = case.body
    else:
        body = json.dumps(_resolve(case.body, world.values)).encode()
    if body is not None and case.content_type:
        headers.append(("Content-Type", case.content_type.encode()))
    headers += [(k, v if isinstance(v, bytes) else v.encode()) for k, v in case.headers]
    return target, headers, body


# -- the tests ------------------------------------------------------------------------------------


def test_table_is_big_enough() -> None:
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(server: Server, world: World, case: Case) -> None:
    target, headers, body = _request_for(case, world)
    before = snapshot(server)
    reply = raw_request(server.url, case.method, target, headers, body)
    after = snapshot(server)

    assert 400 <= reply.status < 500, f"{case.id}: {reply.status} {reply.text[:500]}"
    expected = case.status if isinstance(case.status, tuple) else (case.status,)
    assert reply.status in expected, f"{case.id}: expected {expected}, got {reply.status}: {reply.text[:500]}"
    assert reply.headers.get("content-type", "").split(";")[0].strip() == "application/problem+json", (
        f"{case.id}: content-type {reply.headers.get('content-type')!r}: {reply.text[:300]}"
    )
    problem = json.loads(reply.body)
    assert isinstance(problem, dict)
    for key in ("type", "title", "status", "detail"):
        assert key in problem, f"{case.id}: problem lacks {key}: {problem}"
    assert problem["status"] == reply.status
    assert isinstance(problem["type"], str) and problem["type"]
    assert isinstance(problem["title"], str) and problem["title"].strip()
    assert isinstance(problem["detail"], str) and problem["detail"].strip(), f"{case.id}: empty detail"
    for secret in SECRETS:
        assert secret not in reply.text, f"{case.id}: the response echoes a submitted password"
        assert secret[:24] not in reply.text, f"{case.id}: the response echoes part of a password"

    assert after["blobs"] == before["blobs"], f"{case.id}: the blob store changed"
    changed = {
        name: (before["tables"].get(name), after["tables"].get(name))
        for name in set(before["tables"]) | set(after["tables"])
        if before["tables"].get(name) != after["tables"].get(name) and name not in case.counted
    }
    assert not changed, f"{case.id}: the database changed: {changed}"


def test_server_still_healthy_and_log_has_no_secrets(server: Server, world: World) -> None:
    """After the whole table: the server answers, logged no 5xx, and never logged a password."""
    reply = raw_request(server.url, "GET", API + "/health", [], None)
    assert reply.status == 200
    log = server.log()
    for secret in SECRETS:
        assert secret[:24] not in log, "a submitted password reached the server log"
    assert "unhandled" not in log, f"the server logged an unhandled error:\n{log[-3000:]}"
    assert "Traceback" not in log, f"the server logged a traceback:\n{log[-3000:]}"
