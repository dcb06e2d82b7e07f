#!/usr/bin/env node
// One member's end-to-end-encryption device, built on Matrix's OlmMachine
// (@matrix-org/matrix-sdk-crypto-wasm), talking to a Keyhold server over HTTP and WebSocket.
//
// Driven step by step over JSON lines (tests/test_interop_node.py):
//   stdin:  {"id": 1, "cmd": "login", ...}      one request per line
//   stdout: {"id": 1, "ok": true, "result": {...}}  or  {"id": 1, "ok": false, "error": "..."}
// Requests run one at a time, in order. Nothing else is ever written to stdout: logs and
// errors go to stderr. A failed request answers ok:false and the device stays usable; a
// WebAssembly trap (a panic inside the crypto core, which poisons it) or a broken protocol
// exits non-zero.
//
// Commands:
//   login {server, username, password, device_id, device_name?, trust?}
//       Signs in (POST /api/v1/sessions) on `device_id`, starts an in-memory OlmMachine and
//       publishes the device's keys. trust: "untrusted" (default) decrypts from any device and
//       shares room keys with every device; "cross-signed" also bootstraps cross-signing
//       (uploads master/self-signing/user-signing keys and the device's signature) and then
//       only decrypts from devices cross-signed by their owner (CrossSignedOrLegacy) and only
//       shares room keys with such devices (identityBasedStrategy).
//       -> {user_id, device_id, curve25519, ed25519, cross_signing}
//       Each "cross-signed" login makes a new identity (there is no secret storage to fetch
//       the private keys from), replacing the member's earlier one with the password: only a
//       member's last cross-signed device stays signed by the member's identity.
//   sync {timeout_ms?}
//       Connects to /api/v1/stream?since=<last seq>, takes every stored event up to `ready`
//       (and the `e2ee.key_counts` that follows it), feeds the E2EE ones to the OlmMachine,
//       disconnects, then sends whatever the OlmMachine asks for (key queries, uploads, ...).
//       Members of conversations that changed are tracked (GET /conversations/{id}: a
//       `created` event names none) and their keys fetched before room keys are taken in.
//       -> {seq, events, to_device, room_keys, to_device_problems, device_lists_changed, messages}
//   send {conversation_id, text, idempotency_key?}
//       Tracks the conversation's members, queries their keys, claims one-time keys for missing
//       Olm sessions, shares the Megolm room key (before every encrypt, see below), encrypts
//       an m.room.message and posts it.  -> {message_id, event_id, session_id, shared_with}
//   read {conversation_id, limit?}
//       Fetches the conversation's history and decrypts every e2ee message, oldest first.
//       -> {messages: [{id, event_id, sender, sender_device, text, shield} | {id, ..., error, code}]}
//   devices {user_id}  -> {identity: {verified} | null, devices: [{device_id, curve25519, ed25519,
//       cross_signed_by_owner, verified}]}: what this OlmMachine knows of a member's keys
//   status {}  -> {user_id, device_id, seq, tracked_users}
//   close {}   -> {} then exits 0 (also on end of stdin).
//
// Why shareRoomKey before every encryptRoomEvent: matrix-sdk-crypto-wasm 18.9 panics
// ("RuntimeError: unreachable", not catchable) on the 101st encrypt of a Megolm session
// unless shareRoomKey (which rotates the session when due) runs first; it is cheap otherwise.

import * as readline from "node:readline";
import { randomUUID } from "node:crypto";
import WebSocket from "ws";
import * as sdk from "@matrix-org/matrix-sdk-crypto-wasm";

// stdout carries the protocol only: anything a library logs goes to stderr.
for (const level of ["log", "info", "debug", "warn", "trace"]) {
    console[level] = (...args) => console.error(`[${level}]`, ...args);
}

const HTTP_TIMEOUT_MS = 30_000;
// KEYHOLD_INTEROP_TRACE=1 logs every HTTP request and stream frame to stderr; =2 adds bodies.
const TRACE = Number(process.env.KEYHOLD_INTEROP_TRACE || 0);

class HttpError extends Error {
    constructor(method, path, status, body) {
        super(`${method} ${path} -> ${status}: ${body}`);
        this.status = status;
        this.body = body;
    }
}

function label(value) {
    return typeof value === "string" ? value : JSON.stringify(value);
}

class Device {
    constructor() {
        this.machine = null;
        this.seq = 0;
        this.keysPublished = false;
        this.trust = "untrusted";
        this.knownConversations = new Set();
    }

    // ---- HTTP -------------------------------------------------------------------------------

    async http(method, path, body, { auth = true, raw = false } = {}) {
        const headers = { accept: "application/json" };
        if (auth) headers.authorization = `Bearer ${this.token}`;
        let payload;
        if (body !== undefined) {
            headers["content-type"] = "application/json";
            payload = typeof body === "string" ? body : JSON.stringify(body);
        }
        let response;
        try {
            response = await fetch(this.server + "/api/v1" + path, {
                method,
                headers,
                body: payload,
                signal: AbortSignal.timeout(HTTP_TIMEOUT_MS),
            });
        } catch (error) {
            const why = error?.cause?.message || error?.cause?.code || error?.message || String(error);
            throw new Error(`${method} ${this.server}/api/v1${path}: ${why}`);
        }
        const text = await response.text();
        if (TRACE) {
            const sent = payload === undefined ? "" : ` ${payload.length}B`;
            console.error(`[${this.deviceId || "-"}] ${method} ${path}${sent} -> ${response.status} ${text.length}B${TRACE > 1 ? ` ${text}` : ""}`);
        }
        if (!response.ok) throw new HttpError(method, path, response.status, text);
        return raw ? text : text ? JSON.parse(text) : null;
    }

    requireLogin() {
        if (!this.machine) throw new Error("not logged in: send a login command first");
    }

    // ---- OlmMachine requests ----------------------------------------------------------------

    // Sends one outgoing request to its Keyhold endpoint and marks it sent with the answer.
    async sendRequest(request) {
        const T = sdk.RequestType;
        let answer;
        switch (request.type) {
            case T.KeysUpload:
                answer = await this.http("POST", "/e2ee/keys/upload", request.body, { raw: true });
                this.keysPublished = true;
                break;
            case T.KeysQuery:
                answer = await this.http("POST", "/e2ee/keys/query", request.body, { raw: true });
                break;
            case T.KeysClaim:
                answer = await this.http("POST", "/e2ee/keys/claim", request.body, { raw: true });
                break;
            case T.ToDevice:
                answer = await this.http(
                    "PUT",
                    `/e2ee/sendToDevice/${encodeURIComponent(request.event_type)}/${encodeURIComponent(request.txn_id)}`,
                    request.body,
                    { raw: true },
                );
                break;
            case T.SignatureUpload:
                answer = await this.http("POST", "/e2ee/keys/signatures/upload", request.body, { raw: true });
                break;
            default:
                throw new Error(`OlmMachine asked for a request Keyhold does not serve (RequestType ${request.type})`);
        }
        if (request.id !== undefined) {
            await this.machine.markRequestAsSent(request.id, request.type, answer || "{}");
        }
        return answer;
    }

    // Sends everything the OlmMachine asks for until it asks for nothing more.
    async flush() {
        for (let round = 0; round < 20; round++) {
            const requests = await this.machine.outgoingRequests();
            if (requests.length === 0) return;
            for (const request of requests) await this.sendRequest(request);
        }
        throw new Error("OlmMachine keeps asking for requests after 20 rounds");
    }

    // ---- commands ---------------------------------------------------------------------------

    async login({ server, username, password, device_id, device_name, trust = "untrusted" }) {
        if (this.machine) throw new Error("already logged in");
        if (!server || !username || !password || !device_id) {
            throw new Error("login needs server, username, password and device_id");
        }
        if (trust !== "untrusted" && trust !== "cross-signed") {
            throw new Error(`trust must be "untrusted" or "cross-signed", not ${label(trust)}`);
        }
        this.server = server.replace(/\/+$/, "");
        this.trust = trust;
        const session = await this.http(
            "POST",
            "/sessions",
            { username, password, device_id, device_name: device_name || `node ${device_id}` },
            { auth: false },
        );
        this.token = session.token;
        this.userId = session.user_id;
        this.deviceId = session.device_id;
        if (!this.userId || !this.deviceId) {
            throw new Error(`POST /sessions answered no user_id/device_id: ${JSON.stringify(session)}`);
        }
        this.serverName = this.userId.slice(this.userId.indexOf(":") + 1);
        this.machine = await sdk.OlmMachine.initialize(new sdk.UserId(this.userId), new sdk.DeviceId(this.deviceId));
        await this.flush(); // device keys, one-time keys, fallback key
        if (!this.keysPublished) throw new Error("OlmMachine did not ask to upload the device keys");
        let crossSigning = false;
        if (trust === "cross-signed") {
            const boot = await this.machine.bootstrapCrossSigning(true);
            if (boot.uploadKeysRequest) await this.sendRequest(boot.uploadKeysRequest);
            // The first upload of cross-signing keys needs no user-interactive auth; send the
            // password anyway (m.login.password) in case the account already has keys.
            const signing = JSON.parse(boot.uploadSigningKeysRequest.body);
            try {
                await this.http("POST", "/e2ee/keys/device_signing/upload", signing);
            } catch (error) {
                if (!(error instanceof HttpError) || error.status !== 401) throw error;
                signing.auth = { type: "m.login.password", identifier: { type: "m.id.user", user: username }, password };
                await this.http("POST", "/e2ee/keys/device_signing/upload", signing);
            }
            await this.sendRequest(boot.uploadSignaturesRequest);
            await this.flush();
            const status = await this.machine.crossSigningStatus();
            crossSigning = status.hasMaster && status.hasSelfSigning && status.hasUserSigning;
            if (!crossSigning) throw new Error("cross-signing bootstrap left private keys missing");
        }
        const keys = this.machine.identityKeys;
        return {
            user_id: this.userId,
            device_id: this.deviceId,
            curve25519: keys.curve25519.toBase64(),
            ed25519: keys.ed25519.toBase64(),
            cross_signing: crossSigning,
        };
    }

    async sync({ timeout_ms = 15_000 } = {}) {
        this.requireLogin();
        const { frames, seq } = await this.drainStream(timeout_ms);
        const toDevice = [];
        const changed = new Set();
        const left = new Set();
        let counts = null;
        let messages = 0;
        const conversations = new Set();
        for (const frame of frames) {
            switch (frame.type) {
                case "e2ee.to_device":
                    toDevice.push(frame.event);
                    break;
                case "e2ee.device_lists":
                    for (const id of frame.changed || []) changed.add(id), left.delete(id);
                    for (const id of frame.left || []) left.add(id), changed.delete(id);
                    break;
                case "e2ee.key_counts":
                    counts = frame;
                    break;
                case "conversation.updated":
                    conversations.add(frame.conversation_id);
                    break;
                case "message.new":
                    messages++;
                    if (!this.knownConversations.has(frame.conversation_id)) conversations.add(frame.conversation_id);
                    break;
                default:
                    break;
            }
        }
        // Track the members of every conversation that changed (a `created` event names no
        // members: ask for them) and fetch their keys before taking in room keys, so that each
        // Megolm session is stored knowing which device, of which identity, sent it.
        const tracked = new Set();
        for (const id of conversations) {
            for (const member of await this.members(id, { missingOk: true })) tracked.add(member);
            this.knownConversations.add(id);
        }
        if (tracked.size) {
            await this.machine.updateTrackedUsers([...tracked].map((id) => new sdk.UserId(id)));
            await this.flush();
        }
        const lists = new sdk.DeviceLists(
            [...changed].map((id) => new sdk.UserId(id)),
            [...left].map((id) => new sdk.UserId(id)),
        );
        const settings = this.decryptionSettings();
        let processed;
        if (counts) {
            // Sync v2 semantics: an algorithm missing from the counts means zero keys left.
            const otk = new Map(Object.entries(counts.one_time_key_counts || {}));
            const fallback = new Set(counts.unused_fallback_key_types || []);
            processed = await this.machine.receiveSyncChanges(JSON.stringify(toDevice), lists, otk, fallback, settings);
        } else {
            // No counts in this batch: "missing means unchanged".
            processed = await this.machine.receiveSyncChangesMsc4186(JSON.stringify(toDevice), lists, new Map(), undefined, settings);
        }
        let roomKeys = 0;
        const problems = [];
        for (const item of processed) {
            if (item.type === sdk.ProcessedToDeviceEventType.Decrypted) {
                const event = JSON.parse(item.rawEvent);
                if (event.type === "m.room_key") roomKeys++;
            } else if (item.type === sdk.ProcessedToDeviceEventType.UnableToDecrypt) {
                problems.push(`undecryptable to-device event: ${item.rawEvent}`);
            } else if (item.type === sdk.ProcessedToDeviceEventType.Invalid) {
                problems.push(`invalid to-device event: ${item.rawEvent}`);
            }
        }
        for (const problem of problems) console.error(`[${this.deviceId}] ${problem}`);
        // Only now is everything up to `seq` handled: the next sync resumes after it (and the
        // server may then delete this device's events up to it).
        this.seq = seq;
        await this.flush();
        return {
            seq: this.seq,
            events: frames.length,
            to_device: toDevice.length,
            room_keys: roomKeys,
            to_device_problems: problems,
            device_lists_changed: [...changed],
            messages,
        };
    }

    // Every stored event after this.seq, up to `ready` and the `e2ee.key_counts` right after it
    // (and any live event in between): {frames, seq of the last of them}.
    drainStream(timeoutMs) {
        const wsUrl = this.server.replace(/^http/, "ws") + `/api/v1/stream?since=${this.seq}`;
        return new Promise((resolve, reject) => {
            const frames = [];
            let seq = this.seq;
            let ready = false;
            let done = false;
            let countsWait = null;
            const ws = new WebSocket(wsUrl, { headers: { authorization: `Bearer ${this.token}` } });
            const finish = (error) => {
                if (done) return;
                done = true;
                clearTimeout(timer);
                clearTimeout(countsWait);
                ws.removeAllListeners("close");
                ws.on("error", () => {});
                ws.close(1000);
                if (error) reject(error);
                else resolve({ frames, seq });
            };
            const timer = setTimeout(
                () => finish(new Error(`stream: no ready within ${timeoutMs} ms (since=${this.seq}, ${frames.length} frames)`)),
                timeoutMs,
            );
            ws.on("message", (data) => {
                if (done) return;
                let frame;
                try {
                    frame = JSON.parse(data.toString());
                } catch {
                    return finish(new Error(`stream: a frame that is not JSON: ${data.toString().slice(0, 200)}`));
                }
                if (TRACE) console.error(`[${this.deviceId}] stream: ${TRACE > 1 ? JSON.stringify(frame) : `${frame.type} ${frame.seq}`}`);
                if (frame.type === "error") {
                    return finish(new Error(`stream: error frame ${JSON.stringify(frame.problem || frame)}`));
                }
                if (frame.type === "ready") {
                    ready = true;
                    if (typeof frame.seq === "number") seq = Math.max(seq, frame.seq);
                    // A device that has published keys gets its key counts right after ready.
                    if (!this.keysPublished) return finish();
                    countsWait = setTimeout(() => {
                        console.error(`[${this.deviceId}] stream: no e2ee.key_counts after ready`);
                        finish();
                    }, 3_000);
                    return;
                }
                if (typeof frame.seq === "number") seq = Math.max(seq, frame.seq);
                frames.push(frame);
                if (ready && frame.type === "e2ee.key_counts") finish();
            });
            ws.on("unexpected-response", (_req, res) => {
                let body = "";
                res.on("data", (chunk) => (body += chunk));
                res.on("end", () => finish(new Error(`stream: HTTP ${res.statusCode} on upgrade: ${body}`)));
            });
            ws.on("error", (error) => finish(new Error(`stream: ${error.message}`)));
            ws.on("close", (code, reason) => finish(new Error(`stream closed before ready: ${code} ${reason}`)));
        });
    }

    memberId(name) {
        return name.startsWith("@") ? name : `@${name}:${this.serverName}`;
    }

    roomId(conversationId) {
        return `!${conversationId}:${this.serverName}`;
    }

    decryptionSettings() {
        return new sdk.DecryptionSettings(
            this.trust === "cross-signed" ? sdk.TrustRequirement.CrossSignedOrLegacy : sdk.TrustRequirement.Untrusted,
        );
    }

    async members(conversationId, { missingOk = false } = {}) {
        let conversation;
        try {
            conversation = await this.http("GET", `/conversations/${conversationId}`);
        } catch (error) {
            // A conversation left since (or gone): nobody of it to track.
            if (missingOk && error instanceof HttpError && (error.status === 403 || error.status === 404)) return [];
            throw error;
        }
        if (!Array.isArray(conversation.members)) {
            throw new Error(`GET /conversations/${conversationId} has no members list: ${JSON.stringify(conversation)}`);
        }
        if (conversation.encryption !== undefined && conversation.encryption !== "e2ee") {
            throw new Error(`conversation ${conversationId} is ${label(conversation.encryption)}, not e2ee`);
        }
        return conversation.members.map((m) => this.memberId(typeof m === "string" ? m : m.username));
    }

    async send({ conversation_id, text, idempotency_key }) {
        this.requireLogin();
        if (conversation_id === undefined || typeof text !== "string") throw new Error("send needs conversation_id and text");
        const members = await this.members(conversation_id);
        const userIds = () => members.map((id) => new sdk.UserId(id)); // each call consumes its UserIds
        await this.machine.updateTrackedUsers(userIds());
        await this.flush(); // keys/query for new or changed members
        const claim = await this.machine.getMissingSessions(userIds());
        if (claim) await this.sendRequest(claim);
        const room = new sdk.RoomId(this.roomId(conversation_id));
        const settings = new sdk.EncryptionSettings();
        settings.sharingStrategy =
            this.trust === "cross-signed" ? sdk.CollectStrategy.identityBasedStrategy() : sdk.CollectStrategy.allDevices();
        const shares = await this.machine.shareRoomKey(room, userIds(), settings);
        const sharedWith = new Set();
        for (const request of shares) {
            for (const [user, devices] of Object.entries(JSON.parse(request.body).messages || {})) {
                for (const device of Object.keys(devices)) sharedWith.add(`${user}/${device}`);
            }
            await this.sendRequest(request);
        }
        const content = JSON.parse(
            await this.machine.encryptRoomEvent(
                new sdk.RoomId(this.roomId(conversation_id)),
                "m.room.message",
                JSON.stringify({ msgtype: "m.text", body: text }),
            ),
        );
        const message = await this.http("POST", `/conversations/${conversation_id}/messages`, {
            encrypted: content,
            idempotency_key: idempotency_key || `node-${randomUUID()}`,
        });
        await this.flush();
        return {
            message_id: message.id,
            event_id: message.event?.event_id,
            session_id: content.session_id,
            shared_with: [...sharedWith].sort(),
        };
    }

    async read({ conversation_id, limit = 100 }) {
        this.requireLogin();
        if (conversation_id === undefined) throw new Error("read needs conversation_id");
        const page = await this.http("GET", `/conversations/${conversation_id}/messages?limit=${limit}`);
        const items = [...(page.items || [])].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
        const out = [];
        for (const item of items) {
            const base = { id: item.id, sender: item.sender, kind: item.kind };
            if (item.kind !== "e2ee" || !item.event) {
                out.push({ ...base, event_id: null, text: item.text ?? null, deleted: !!item.deleted });
                continue;
            }
            base.event_id = item.event.event_id;
            base.sender = item.event.sender; // the full id, as decrypted events give it
            try {
                const decrypted = await this.machine.decryptRoomEvent(
                    JSON.stringify(item.event),
                    new sdk.RoomId(item.event.room_id || this.roomId(conversation_id)),
                    this.decryptionSettings(),
                );
                const event = JSON.parse(decrypted.event);
                const shield = decrypted.shieldState(false);
                out.push({
                    ...base,
                    sender: decrypted.sender.toString(),
                    sender_device: decrypted.senderDevice?.toString() ?? null,
                    type: event.type,
                    text: event.content?.body ?? null,
                    shield: { color: sdk.ShieldColor[shield.color], code: shield.code === undefined ? null : sdk.ShieldStateCode[shield.code] },
                });
            } catch (error) {
                if (error instanceof WebAssembly.RuntimeError) throw error;
                const code = error?.code !== undefined ? sdk.DecryptionErrorCode[error.code] ?? error.code : null;
                out.push({ ...base, text: null, error: error?.description || String(error), code });
            }
        }
        return { messages: out };
    }

    async devices({ user_id }) {
        this.requireLogin();
        if (!user_id) throw new Error("devices needs user_id");
        const userId = this.memberId(user_id);
        const identity = await this.machine.getIdentity(new sdk.UserId(userId));
        const devices = (await this.machine.getUserDevices(new sdk.UserId(userId), 0)).devices();
        return {
            identity: identity ? { verified: identity.isVerified() } : null,
            devices: devices.map((d) => ({
                device_id: d.deviceId.toString(),
                curve25519: d.curve25519Key?.toBase64() ?? null,
                ed25519: d.ed25519Key?.toBase64() ?? null,
                cross_signed_by_owner: d.isCrossSignedByOwner(),
                verified: d.isVerified(),
            })),
        };
    }

    async status() {
        this.requireLogin();
        const tracked = await this.machine.trackedUsers();
        return {
            user_id: this.userId,
            device_id: this.deviceId,
            seq: this.seq,
            tracked_users: [...tracked].map((u) => u.toString()).sort(),
        };
    }

    close() {
        if (this.machine) this.machine.close();
        this.machine = null;
    }
}

function write(obj) {
    process.stdout.write(JSON.stringify(obj) + "\n");
}

function fatal(message, error) {
    console.error(`device.mjs: fatal: ${message}`);
    if (error) console.error(error?.stack || error);
    process.exit(70);
}

process.on("unhandledRejection", (error) => fatal("unhandled rejection", error));
process.on("uncaughtException", (error) => fatal("uncaught exception", error));

async function main() {
    await sdk.initAsync();
    const device = new Device();
    const commands = {
        login: (a) => device.login(a),
        sync: (a) => device.sync(a),
        send: (a) => device.send(a),
        read: (a) => device.read(a),
        devices: (a) => device.devices(a),
        status: () => device.status(),
        close: async () => ({}),
    };
    const versions = sdk.getVersions();
    write({
        id: null,
        ok: true,
        result: { ready: true, matrix_sdk_crypto: versions.matrix_sdk_crypto, vodozemac: versions.vodozemac },
    });
    const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
    for await (const line of lines) {
        if (!line.trim()) continue;
        let request;
        try {
            request = JSON.parse(line);
        } catch {
            fatal(`a request line that is not JSON: ${line.slice(0, 200)}`);
        }
        const { id = null, cmd, ...args } = request;
        const handler = commands[cmd];
        if (!handler) {
            write({ id, ok: false, error: `unknown command ${label(cmd)}` });
            continue;
        }
        try {
            const result = await handler(args);
            write({ id, ok: true, result });
        } catch (error) {
            if (error instanceof WebAssembly.RuntimeError) fatal(`the crypto core trapped during ${cmd}`, error);
            const message = error instanceof Error ? error.message : `${error?.description || error}`;
            console.error(`device.mjs: ${cmd} failed: ${message}`);
            if (error instanceof Error && !(error instanceof HttpError)) console.error(error.stack);
            write({ id, ok: false, error: message });
        }
        if (cmd === "close") break;
    }
    device.close();
    process.exit(0);
}

main().catch((error) => fatal("startup failed", error));
