// The browser's end-to-end-encryption device: Matrix's OlmMachine
// (@matrix-org/matrix-sdk-crypto-wasm, the crypto core of Element) for the signed-in member's
// device, kept in IndexedDB under a passphrase the member sets, talking to Keyhold's Matrix-shaped
// endpoints under /api/v1/e2ee/ (docs/e2ee.md, "For client authors"; interop/device.mjs is the
// same device in Node).
//
// This module imports the wasm bindings statically; it is itself only ever imported
// dynamically (runtime.ts), so the crypto core is its own chunk, fetched when a member first
// opens or starts an e2ee conversation.
//
// What Keyhold adds on top of the OlmMachine, before any key reaches it:
// - every keys/query answer is checked against the key-transparency log (keylog.ts). A key that
//   fails is taken out of the answer the OlmMachine sees (so it never encrypts to it nor trusts
//   room keys from it) and recorded: a send to a conversation with such a device is refused;
// - a contact's identity change (master key replaced, a known device's keys changed, a device
//   that went away and came back, a new unverified device of a verified contact) stops sends
//   to them until the member accepts it (trust on first use, as the Python SDK);
// - messages are franked (franking.ts); a delivered franking that does not open marks the
//   message "unverifiable" and its text is not shown.

import * as sdk from "@matrix-org/matrix-sdk-crypto-wasm";
import { api, ApiError } from "../api";
import { isRecord } from "./bytes";
import { decryptFile, encryptFile, PLAINTEXT_SHA256_FIELD } from "./files";
import { FRANKING_KEY_FIELD, frank, frankingProblem, type FrankingDelivered, type FrankingSent } from "./franking";
import { KeyLog, KeyTransparencyError, type KeyLogSaved } from "./keylog";
import { metaGet, metaSet } from "./meta-store";
import { safetyNumber, type SafetyNumber } from "./safety";
import { VerificationFlow } from "./verification";

export { KeyTransparencyError } from "./keylog";

export interface DeviceConfig {
  token: string;
  username: string;
  userId: string;
  deviceId: string;
  passphrase: string;
}

/** A message as the API delivers it (the fields the device reads). */
export interface WireMessage {
  id: number;
  conversation_id: number;
  sender: string;
  deleted: boolean;
  event?: Record<string, unknown> | null;
  franked?: boolean;
  franking?: unknown;
  attachment?: { id: string; size: number } | null;
}

export interface Opened {
  text: string | null;
  state: "ok" | "unverifiable" | "undecryptable";
  note?: string;
  file?: { filename: string; contentType: string; size?: number } | null;
}

export interface IdentityChange {
  userId: string;
  deviceId?: string;
  text: string;
}

export interface ReaderDevice {
  userId: string;
  user: string;
  deviceId: string;
  name: string | null;
  ed25519: string | null;
  verified: boolean;
  crossSigned: boolean;
  own: boolean;
  current: boolean;
  /** Why its keys failed the key-transparency log, if they did. */
  logProblem: string | null;
}

export interface ContactStatus {
  userId: string;
  verified: boolean;
  masterKey: string | null;
  changes: IdentityChange[];
  logProblems: string[];
}

export class WrongPassphrase extends Error {}
export class DeviceUnusable extends Error {}

export class IdentityChangedError extends Error {
  constructor(readonly changes: IdentityChange[]) {
    super(
      "not sent: " +
        changes.map((c) => c.text).join("; ") +
        ". Compare safety numbers or verify them, then accept the change.",
    );
    this.name = "IdentityChangedError";
  }
}

let wasm: Promise<void> | null = null;

/** Fetches and compiles the crypto core (once). */
export function loadWasm(): Promise<void> {
  if (!wasm) {
    wasm = sdk.initAsync().catch((error: unknown) => {
      wasm = null;
      throw error;
    });
  }
  return wasm;
}

export function storeName(userId: string, deviceId: string): string {
  return `keyhold-e2ee:${userId}:${deviceId}`;
}

/** Whether this browser holds an OlmMachine store for this device (a passphrase was set). */
export async function storeExists(userId: string, deviceId: string): Promise<boolean> {
  const marker = await metaGet<boolean>(`${userId}|${deviceId}|store`);
  if (marker) return true;
  if (typeof indexedDB.databases !== "function") return false;
  const prefix = storeName(userId, deviceId) + "::";
  return (await indexedDB.databases()).some((db) => db.name?.startsWith(prefix));
}

class Mutex {
  private tail: Promise<void> = Promise.resolve();
  run<T>(task: () => Promise<T>): Promise<T> {
    const result = this.tail.then(task);
    this.tail = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }
}

interface IdentitySnapshot {
  master: string | null;
  devices: Record<string, { ed25519: string; curve25519: string; crossSigned: boolean }>;
}

interface IdentityRecord {
  /** What the member accepted (first seen, or accepted after a change), per contact. */
  accepted: Record<string, IdentitySnapshot & { gone: string[] }>;
}

interface StreamEventLike {
  type: string;
  seq?: number;
  [field: string]: unknown;
}

type Listener = () => void;

function ownKeyOf(keys: unknown, prefix: string): string | null {
  if (!isRecord(keys)) return null;
  for (const [id, value] of Object.entries(keys)) if (id.startsWith(prefix) && typeof value === "string") return value;
  return null;
}

function masterOf(key: unknown): string | null {
  if (!isRecord(key)) return null;
  return ownKeyOf(key.keys, "ed25519:");
}

function isWasmTrap(error: unknown): boolean {
  return error instanceof WebAssembly.RuntimeError;
}

function describe(error: unknown): string {
  if (error instanceof Error) return error.message;
  if (isRecord(error) && typeof error.description === "string") return error.description;
  return String(error);
}

const DECRYPTION_NOTES: Record<number, string> = {
  [sdk.DecryptionErrorCode.MissingRoomKey]: "no room key for it reached this device (it may have been sent before this device existed)",
  [sdk.DecryptionErrorCode.UnknownMessageIndex]: "this device holds the room key only from a later message on",
  [sdk.DecryptionErrorCode.MismatchedIdentityKeys]: "its room key does not match the sender's device keys",
  [sdk.DecryptionErrorCode.UnknownSenderDevice]: "it comes from a device this browser does not know",
  [sdk.DecryptionErrorCode.UnsignedSenderDevice]: "it comes from a device its owner has not signed",
  [sdk.DecryptionErrorCode.SenderIdentityVerificationViolation]: "the sender's identity changed since you verified them",
  [sdk.DecryptionErrorCode.UnableToDecrypt]: "it does not decrypt",
  [sdk.DecryptionErrorCode.MismatchedSender]: "its room key came from someone other than its sender",
};

export class E2eeDevice {
  readonly userId: string;
  readonly deviceId: string;
  readonly serverName: string;
  username: string;
  token: string;
  keyLog!: KeyLog;
  /** Set once the crypto core trapped: the device must not be used again (reload the page). */
  broken: string | null = null;
  /** Whether this device holds the member's cross-signing keys (it was their first e2ee device). */
  crossSigning = false;

  private machine!: sdk.OlmMachine;
  private readonly lock = new Mutex();
  private readonly logProblems = new Map<string, Map<string, string>>();
  private readonly proven = new Map<string, { ed25519: string; curve25519: string }>();
  private readonly masterKeys = new Map<string, string>();
  private readonly latest = new Map<string, IdentitySnapshot>();
  private readonly changes = new Map<string, IdentityChange[]>();
  private identities: IdentityRecord = { accepted: {} };
  private readonly tracked = new Set<string>();
  private readonly evidence = new Map<number, { content: Record<string, unknown>; tag: string }>();
  private readonly fileKeys = new Map<number, { file: unknown; plaintextSha256: unknown; filename: string; contentType: string }>();
  private readonly listeners = new Set<Listener>();
  private readonly verificationListeners = new Set<(flow: VerificationFlow) => void>();
  private readonly flows = new Map<string, VerificationFlow>();
  private readonly roomKeyWaiters = new Map<string, Set<() => void>>();
  private inbox: StreamEventLike[] = [];
  private draining: Promise<void> | null = null;
  private readonly seen = new Set<string>();
  private release: (() => void) | null = null;
  private retryTimer = 0;
  /** Megolm sessions whose room key did not come while a message waited for it. */
  private readonly keyless = new Set<string>();
  private retryDelay = 0;

  private constructor(config: DeviceConfig) {
    this.userId = config.userId;
    this.deviceId = config.deviceId;
    this.username = config.username;
    this.token = config.token;
    this.serverName = config.userId.slice(config.userId.indexOf(":") + 1);
  }

  // ---- start -----------------------------------------------------------------------------

  /** Opens (or makes) the device's store with the passphrase, publishes its keys, and sets up
   * cross-signing on the member's first e2ee device. */
  static async open(config: DeviceConfig): Promise<E2eeDevice> {
    await loadWasm();
    const device = new E2eeDevice(config);
    await device.takeLock();
    try {
      await device.start(config.passphrase);
    } catch (error) {
      device.close();
      throw error;
    }
    return device;
  }

  private metaKey(what: string): string {
    return `${this.userId}|${this.deviceId}|${what}`;
  }

  /** One tab at a time per device: two copies of its sessions would reuse Megolm indices. */
  private async takeLock(): Promise<void> {
    if (!navigator.locks) return;
    await new Promise<void>((resolve, reject) => {
      void navigator.locks.request(`keyhold-e2ee:${this.userId}:${this.deviceId}`, { ifAvailable: true }, (lock) => {
        if (!lock) {
          reject(new DeviceUnusable("this device's end-to-end encryption is open in another tab: close it there first"));
          return undefined;
        }
        resolve();
        return new Promise<void>((done) => (this.release = done));
      });
    });
  }

  private async start(passphrase: string): Promise<void> {
    const existed = await storeExists(this.userId, this.deviceId);
    try {
      this.machine = await sdk.OlmMachine.initialize(
        new sdk.UserId(this.userId),
        new sdk.DeviceId(this.deviceId),
        storeName(this.userId, this.deviceId),
        passphrase,
      );
    } catch (error) {
      if (isWasmTrap(error)) throw error;
      if (existed) throw new WrongPassphrase("wrong passphrase: this browser's keys for this device did not open with it");
      throw new DeviceUnusable(`the e2ee store could not be opened: ${describe(error)}`);
    }
    await metaSet(this.metaKey("store"), true);
    this.identities = (await metaGet<IdentityRecord>(this.metaKey("identities"))) ?? { accepted: {} };
    const savedChanges = await metaGet<Record<string, IdentityChange[]>>(this.metaKey("changes"));
    for (const [user, list] of Object.entries(savedChanges ?? {})) this.changes.set(user, list);
    this.keyLog = KeyLog.restore(
      await metaGet<KeyLogSaved>(this.metaKey("keylog")),
      (from, to) => this.fetchConsistency(from, to),
      (saved) => void metaSet(this.metaKey("keylog"), saved),
    );
    this.machine.registerRoomKeyUpdatedCallback(async (infos) => {
      for (const info of infos) {
        this.keyless.delete(info.sessionId);
        const waiters = this.roomKeyWaiters.get(info.sessionId);
        if (waiters) for (const wake of waiters) wake();
      }
      this.changed();
    });
    this.machine.registerDevicesUpdatedCallback(async () => this.changed());
    this.machine.registerUserIdentityUpdatedCallback(async () => this.changed());
    await this.lock.run(async () => {
      try {
        await this.flushLocked(); // device keys, one-time keys, fallback key
      } catch (error) {
        if (error instanceof ApiError && error.status === 400) {
          throw new DeviceUnusable(
            "the server already holds other keys for this device: this browser lost them. Remove this device " +
              "(Settings → Devices) and sign in again to make a new one.",
          );
        }
        throw error;
      }
      // Device lists may have changed while the device was locked: ask again for everyone.
      await this.machine.markAllTrackedUsersAsDirty();
      await this.trackLocked([this.userId]);
      if (!this.proven.has(`${this.userId}|${this.deviceId}`)) {
        // The server has no keys for this device any more (it was removed, or the server's
        // data was reset): nobody can encrypt to it. Its keys are not published again.
        throw new DeviceUnusable(
          "the server no longer holds this device's keys (it was removed from your account): sign out and sign in " +
            "again, as a new device",
        );
      }
      await this.bootstrapCrossSigning();
    });
    const pending = (await metaGet<StreamEventLike[]>(this.metaKey("inbox"))) ?? [];
    if (pending.length) this.feed(pending);
    await this.drain();
    await metaSet(this.metaKey("inbox"), []);
  }

  /** The member's first e2ee device makes and publishes their cross-signing keys (no password
   * needed the first time); later devices find them published and make none. */
  private async bootstrapCrossSigning(): Promise<void> {
    const status = await this.machine.crossSigningStatus();
    if (status.hasMaster && status.hasSelfSigning && status.hasUserSigning) {
      this.crossSigning = true;
      return;
    }
    const own = await this.machine.getIdentity(new sdk.UserId(this.userId));
    if (own) return; // another device of the member holds them
    if (this.logProblems.get(this.userId)?.size) return; // our own keys did not check out: do not replace them
    const boot = await this.machine.bootstrapCrossSigning(true);
    if (boot.uploadKeysRequest) await this.sendRequest(boot.uploadKeysRequest);
    try {
      await this.http("POST", "/e2ee/keys/device_signing/upload", JSON.parse(boot.uploadSigningKeysRequest.body));
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) return; // published meanwhile by another device
      throw error;
    }
    await this.sendRequest(boot.uploadSignaturesRequest);
    await this.flushLocked();
    const after = await this.machine.crossSigningStatus();
    this.crossSigning = after.hasMaster && after.hasSelfSigning && after.hasUserSigning;
  }

  close(): void {
    window.clearTimeout(this.retryTimer);
    this.broken = this.broken ?? "this device was closed (signed out)";
    for (const flow of this.flows.values()) flow.dispose();
    this.flows.clear();
    try {
      this.machine?.close();
    } catch {
      // already closed
    }
    this.release?.();
    this.release = null;
    this.listeners.clear();
  }

  // ---- listeners ---------------------------------------------------------------------------

  /** Called when anything the UI shows may have changed (devices, identities, room keys). */
  subscribe(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  changed(): void {
    for (const listener of [...this.listeners]) {
      try {
        listener();
      } catch (error) {
        console.error(error);
      }
    }
  }

  // ---- HTTP and the OlmMachine's requests --------------------------------------------------

  private http<T = unknown>(method: string, path: string, body?: unknown): Promise<T> {
    return api<T>(method, path, { token: this.token, body });
  }

  private async fetchConsistency(from: number, to: number): Promise<unknown> {
    const answer = await this.http<{ proof?: unknown }>("GET", `/e2ee/transparency/consistency?from=${from}&to=${to}`);
    return answer?.proof ?? null;
  }

  private async sendRequest(
    request: { type: sdk.RequestType; id?: string; body: string; event_type?: string; txn_id?: string },
    dropRefused = false,
  ): Promise<void> {
    const T = sdk.RequestType;
    let answer: unknown;
    switch (request.type) {
      case T.KeysUpload:
        answer = await this.http("POST", "/e2ee/keys/upload", JSON.parse(request.body));
        break;
      case T.KeysQuery: {
        const body = JSON.parse(request.body) as Record<string, unknown>;
        const raw = await this.http<Record<string, unknown>>("POST", "/e2ee/keys/query", body);
        answer = await this.checkQueryAnswer(body, raw);
        break;
      }
      case T.KeysClaim:
        answer = await this.http("POST", "/e2ee/keys/claim", JSON.parse(request.body));
        break;
      case T.ToDevice:
        try {
          await this.checkRecipients(request.body, request.event_type ?? "");
        } catch (error) {
          if (!(error instanceof KeyTransparencyError) || !dropRefused) throw error;
          // Something the crypto core queued by itself (an Olm "dummy", a forwarded key) for a
          // device whose keys no longer check: it is not sent, and must not block the queue.
          console.warn(`e2ee: not sent: ${error.message}`);
          if (request.id) await this.machine.markRequestAsSent(request.id, request.type, "{}");
          return;
        }
        answer = await this.http(
          "PUT",
          `/e2ee/sendToDevice/${encodeURIComponent(request.event_type ?? "")}/${encodeURIComponent(request.txn_id ?? "")}`,
          JSON.parse(request.body),
        );
        break;
      case T.SignatureUpload:
        answer = await this.http("POST", "/e2ee/keys/signatures/upload", JSON.parse(request.body));
        break;
      default:
        throw new Error(`the crypto core asked for a request Keyhold does not serve (type ${request.type})`);
    }
    if (request.id) {
      try {
        await this.machine.markRequestAsSent(request.id, request.type, JSON.stringify(answer ?? {}));
      } catch (error) {
        if (isWasmTrap(error)) throw error;
        if (request.type !== T.ToDevice) throw error; // a verification message the machine does not track
      }
    }
  }

  /** Sends everything the OlmMachine asks for until it asks for nothing more. Call under the lock. */
  private async flushLocked(): Promise<void> {
    for (let round = 0; round < 20; round++) {
      const requests = await this.machine.outgoingRequests();
      if (requests.length === 0) return;
      for (const request of requests) await this.sendRequest(request as Parameters<E2eeDevice["sendRequest"]>[0], true);
    }
    throw new Error("the crypto core keeps asking for requests");
  }

  flush(): Promise<void> {
    return this.guard(() => this.lock.run(() => this.flushLocked()));
  }

  private async guard<T>(task: () => Promise<T>): Promise<T> {
    if (this.broken) throw new DeviceUnusable(this.broken);
    try {
      return await task();
    } catch (error) {
      if (isWasmTrap(error)) {
        this.broken = "the crypto core stopped on an internal error: reload the page to start it again";
        this.changed();
        throw new DeviceUnusable(this.broken);
      }
      throw error;
    }
  }

  // ---- key transparency and identities ------------------------------------------------------

  /** Checks a keys/query answer against the key log; what fails is recorded and taken out of
   * the answer the OlmMachine sees. Also notes identity changes (trust on first use). */
  private async checkQueryAnswer(request: Record<string, unknown>, answer: Record<string, unknown>): Promise<Record<string, unknown>> {
    const failures = await this.keyLog.checkAnswer(answer);
    const queried = new Set(Object.keys(isRecord(request.device_keys) ? request.device_keys : {}));
    const deviceKeys = isRecord(answer.device_keys) ? answer.device_keys : {};
    for (const user of Object.keys(deviceKeys)) queried.add(user);
    const before = this.shownState(queried);
    for (const user of queried) this.logProblems.set(user, new Map());
    for (const [id, reason] of failures) {
      const [user, slot] = id.split("\u0000") as [string, string];
      if (!this.logProblems.has(user)) this.logProblems.set(user, new Map());
      this.logProblems.get(user)!.set(slot, reason);
      if (slot.startsWith("device:")) {
        const deviceId = slot.slice("device:".length);
        if (user === this.userId && deviceId === this.deviceId) continue; // ourselves: keep, but sends stop
        const devices = deviceKeys[user];
        if (isRecord(devices)) delete devices[deviceId];
      } else if (user !== this.userId) {
        const keys = answer[`${slot}_keys`];
        if (isRecord(keys)) delete keys[user];
      }
    }
    for (const [user, devices] of Object.entries(deviceKeys)) {
      for (const [deviceId, key] of Object.entries(isRecord(devices) ? devices : {})) {
        if (!isRecord(key)) continue;
        const ed25519 = ownKeyOf(key.keys, `ed25519:${deviceId}`);
        const curve25519 = ownKeyOf(key.keys, `curve25519:${deviceId}`);
        if (ed25519 && curve25519) this.proven.set(`${user}|${deviceId}`, { ed25519, curve25519 });
      }
    }
    const masters = isRecord(answer.master_keys) ? answer.master_keys : {};
    for (const user of queried) {
      const master = masterOf(masters[user]);
      if (master) this.masterKeys.set(user, master);
      else this.masterKeys.delete(user);
    }
    await this.noteIdentities(answer, queried);
    // Only a change the UI shows is announced: the UI fetches keys again when told of one.
    if (this.shownState(queried) !== before) this.changed();
    return answer;
  }

  /** What the UI shows of these members' keys, as one comparable string. */
  private shownState(users: Set<string>): string {
    return JSON.stringify(
      [...users].sort().map((user) => [
        user,
        [...(this.logProblems.get(user) ?? new Map<string, string>())].sort(),
        this.masterKeys.get(user) ?? null,
        this.changes.get(user) ?? [],
        Object.entries(this.latest.get(user)?.devices ?? {}).sort(),
      ]),
    );
  }

  private async noteIdentities(answer: Record<string, unknown>, queried: Set<string>): Promise<void> {
    const deviceKeys = isRecord(answer.device_keys) ? answer.device_keys : {};
    const masters = isRecord(answer.master_keys) ? answer.master_keys : {};
    const selfSigning = isRecord(answer.self_signing_keys) ? answer.self_signing_keys : {};
    let dirty = false;
    for (const user of queried) {
      if (user === this.userId) continue; // this device's own member is never flagged (docs/e2ee.md)
      const devices = isRecord(deviceKeys[user]) ? (deviceKeys[user] as Record<string, unknown>) : {};
      const master = masterOf(masters[user]);
      const signer = masterOf(selfSigning[user]);
      const snapshot: IdentitySnapshot = { master, devices: {} };
      for (const [deviceId, key] of Object.entries(devices)) {
        if (!isRecord(key)) continue;
        const ed25519 = ownKeyOf(key.keys, `ed25519:${deviceId}`);
        const curve25519 = ownKeyOf(key.keys, `curve25519:${deviceId}`);
        if (!ed25519 || !curve25519) continue;
        const signatures = isRecord(key.signatures) && isRecord(key.signatures[user]) ? key.signatures[user] : {};
        const crossSigned = signer !== null && Object.keys(signatures as object).includes(`ed25519:${signer}`);
        snapshot.devices[deviceId] = { ed25519, curve25519, crossSigned };
      }
      this.latest.set(user, snapshot);
      const accepted = this.identities.accepted[user];
      if (!accepted) {
        if (Object.keys(snapshot.devices).length === 0 && !master) continue; // nothing to remember yet
        this.identities.accepted[user] = { ...snapshot, gone: [] };
        dirty = true;
        continue;
      }
      const verified = await this.isVerifiedLocked(user);
      const found: IdentityChange[] = [];
      const name = user.slice(1, user.indexOf(":"));
      if (accepted.master && master && accepted.master !== master) {
        found.push({ userId: user, text: `${name}'s identity (master key) changed` });
      } else if (accepted.master && !master && Object.keys(snapshot.devices).length > 0) {
        found.push({ userId: user, text: `${name}'s master key was removed` });
      }
      for (const [deviceId, keys] of Object.entries(snapshot.devices)) {
        const known = accepted.devices[deviceId];
        if (known && (known.ed25519 !== keys.ed25519 || known.curve25519 !== keys.curve25519)) {
          found.push({ userId: user, deviceId, text: `the keys of ${name}'s device ${deviceId} changed` });
        } else if (!known && accepted.gone.includes(deviceId)) {
          found.push({ userId: user, deviceId, text: `${name}'s device ${deviceId} went away and came back with keys` });
        } else if (!known && verified && !keys.crossSigned) {
          found.push({ userId: user, deviceId, text: `${name} has a new device ${deviceId}, which nobody verified` });
        }
      }
      if (found.length === 0) {
        // Nothing to warn about: remember new (cross-signed or unverified contact's) devices.
        const gone = new Set(accepted.gone);
        for (const deviceId of Object.keys(accepted.devices)) if (!snapshot.devices[deviceId]) gone.add(deviceId);
        for (const deviceId of Object.keys(snapshot.devices)) gone.delete(deviceId);
        const next = { master: master ?? accepted.master, devices: snapshot.devices, gone: [...gone] };
        if (JSON.stringify(next) !== JSON.stringify(accepted)) {
          this.identities.accepted[user] = next;
          dirty = true;
        }
        if (this.changes.has(user)) {
          this.changes.delete(user);
          dirty = true;
        }
      } else if (JSON.stringify(found) !== JSON.stringify(this.changes.get(user) ?? [])) {
        this.changes.set(user, found);
        dirty = true;
      }
    }
    if (dirty) await this.saveIdentities();
  }

  private async saveIdentities(): Promise<void> {
    await metaSet(this.metaKey("identities"), this.identities);
    await metaSet(this.metaKey("changes"), Object.fromEntries(this.changes));
  }

  /** Before a room key leaves for a device, its keys must be ones the key log proved. */
  private async checkRecipients(body: string, eventType: string): Promise<void> {
    if (eventType !== "m.room.encrypted") return; // verification steps travel in the clear (Matrix)
    const messages = (JSON.parse(body) as { messages?: Record<string, Record<string, unknown>> }).messages ?? {};
    for (const [user, devices] of Object.entries(messages)) {
      for (const deviceId of Object.keys(devices)) {
        const problem = this.logProblems.get(user)?.get(`device:${deviceId}`);
        if (problem) throw new KeyTransparencyError(`not sending: ${user}'s device ${deviceId}: ${problem}`);
        const proven = this.proven.get(`${user}|${deviceId}`);
        const device = await this.machine.getDevice(new sdk.UserId(user), new sdk.DeviceId(deviceId));
        if (!proven || !device || device.ed25519Key?.toBase64() !== proven.ed25519 || device.curve25519Key?.toBase64() !== proven.curve25519) {
          throw new KeyTransparencyError(`not sending: ${user}'s device ${deviceId} is not in the key-transparency log as this device knows it`);
        }
      }
    }
  }

  private async isVerifiedLocked(user: string): Promise<boolean> {
    const identity = await this.machine.getIdentity(new sdk.UserId(user));
    if (identity && identity.isVerified()) return true;
    if (identity) return false;
    // A contact without a master key: a SAS-verified device counts.
    const devices = (await this.machine.getUserDevices(new sdk.UserId(user))).devices();
    return devices.some((d) => d.isLocallyTrusted());
  }

  private transparencyProblems(users: string[]): string[] {
    const out: string[] = [];
    for (const user of users) {
      for (const [slot, reason] of this.logProblems.get(user) ?? []) {
        out.push(slot.startsWith("device:") ? `${user}'s device ${slot.slice(7)}: ${reason}` : `a key of ${user} (${slot}): ${reason}`);
      }
    }
    return out;
  }

  /** Pending identity changes of these members (the OlmMachine's own flags included). */
  private async identityChangesLocked(users: string[]): Promise<IdentityChange[]> {
    const out: IdentityChange[] = [];
    for (const user of users) {
      if (user === this.userId) continue;
      const mine = this.changes.get(user) ?? [];
      out.push(...mine);
      const identity = await this.machine.getIdentity(new sdk.UserId(user));
      if (identity instanceof sdk.OtherUserIdentity && !mine.some((c) => !c.deviceId)) {
        const name = user.slice(1, user.indexOf(":"));
        if (identity.hasVerificationViolation()) out.push({ userId: user, text: `${name}'s identity changed since you verified them` });
        else if (identity.identityNeedsUserApproval()) out.push({ userId: user, text: `${name}'s identity (master key) changed` });
      }
    }
    return out;
  }

  /** Accept a contact's changed keys after the member checked them. With `shown`, only if
   * those are still exactly the pending changes. Returns whether anything was accepted. */
  async acceptIdentity(username: string, shown?: IdentityChange[]): Promise<boolean> {
    const user = this.fullId(username);
    return this.guard(() =>
      this.lock.run(async () => {
        const pending = await this.identityChangesLocked([user]);
        if (pending.length === 0) return false;
        if (shown && JSON.stringify(shown) !== JSON.stringify(pending)) return false;
        const latest = this.latest.get(user);
        if (latest) {
          const before = this.identities.accepted[user];
          const gone = new Set(before?.gone ?? []);
          for (const deviceId of Object.keys(before?.devices ?? {})) if (!latest.devices[deviceId]) gone.add(deviceId);
          for (const deviceId of Object.keys(latest.devices)) gone.delete(deviceId);
          this.identities.accepted[user] = { ...latest, gone: [...gone] };
        }
        this.changes.delete(user);
        await this.saveIdentities();
        const identity = await this.machine.getIdentity(new sdk.UserId(user));
        if (identity instanceof sdk.OtherUserIdentity) {
          if (identity.hasVerificationViolation()) await identity.withdrawVerification();
          if (identity.identityNeedsUserApproval()) await identity.pinCurrentMasterKey();
        }
        this.changed();
        return true;
      }),
    );
  }

  // ---- members -----------------------------------------------------------------------------

  fullId(username: string): string {
    return username.startsWith("@") ? username : `@${username}:${this.serverName}`;
  }

  roomId(conversationId: number): string {
    return `!${conversationId}:${this.serverName}`;
  }

  async members(conversationId: number): Promise<string[]> {
    const conversation = await this.http<{ members?: unknown; encryption?: unknown }>("GET", `/conversations/${conversationId}`);
    if (!Array.isArray(conversation.members)) throw new Error("the conversation has no member list");
    if (conversation.encryption !== "e2ee") throw new Error("this conversation is not end-to-end encrypted");
    return conversation.members.map((m) => this.fullId(String(m)));
  }

  private userIds(users: string[]): sdk.UserId[] {
    return users.map((u) => new sdk.UserId(u)); // each call consumes its UserIds
  }

  /** Track these members and fetch their keys now (checked against the key log). Under the lock. */
  private async trackLocked(users: string[], fresh = true): Promise<void> {
    const unique = [...new Set(users)];
    await this.machine.updateTrackedUsers(this.userIds(unique));
    for (const user of unique) this.tracked.add(user);
    if (fresh) await this.sendRequest(this.machine.queryKeysForUsers(this.userIds(unique)));
    await this.flushLocked();
  }

  /** Track members whose keys this device has not fetched yet (for decryption shields and the banner). */
  async track(users: string[]): Promise<void> {
    const fresh = users.map((u) => this.fullId(u)).filter((u) => !this.tracked.has(u));
    if (fresh.length === 0) return;
    await this.guard(() => this.lock.run(() => this.trackLocked(fresh)));
  }

  // ---- sending -----------------------------------------------------------------------------

  /** Checks every member's keys (key log, identity changes), shares the room key with their
   * devices and encrypts `content`. Throws KeyTransparencyError or IdentityChangedError before
   * anything leaves. */
  private async encryptLocked(conversationId: number, body: Record<string, unknown>): Promise<{ encrypted: Record<string, unknown>; franking: FrankingSent }> {
    const members = await this.members(conversationId);
    if (!members.includes(this.userId)) members.push(this.userId);
    await this.trackLocked(members);
    const problems = this.transparencyProblems(members);
    if (problems.length) throw new KeyTransparencyError(`not sending: ${problems.join("; ")}`);
    const changes = await this.identityChangesLocked(members);
    if (changes.length) throw new IdentityChangedError(changes);
    const claim = await this.machine.getMissingSessions(this.userIds(members));
    if (claim) await this.sendRequest(claim);
    const room = new sdk.RoomId(this.roomId(conversationId));
    const settings = new sdk.EncryptionSettings();
    settings.sharingStrategy = sdk.CollectStrategy.allDevices();
    const shares = await this.machine.shareRoomKey(room, this.userIds(members), settings);
    try {
      for (const request of shares) await this.sendRequest(request);
    } catch (error) {
      // A room key that did not reach everyone must not be used for this message.
      await this.machine.invalidateGroupSession(new sdk.RoomId(this.roomId(conversationId)));
      throw error;
    }
    const roomId = this.roomId(conversationId);
    const { content, franking } = await frank(body, roomId, this.userId, this.deviceId);
    const encrypted = JSON.parse(
      await this.machine.encryptRoomEvent(new sdk.RoomId(roomId), "m.room.message", JSON.stringify(content)),
    ) as Record<string, unknown>;
    await this.flushLocked();
    return { encrypted, franking };
  }

  /** The send fields of a text message: `{encrypted, franking}`. */
  seal(conversationId: number, text: string): Promise<{ encrypted: Record<string, unknown>; franking: FrankingSent }> {
    return this.guard(() => this.lock.run(() => this.encryptLocked(conversationId, { msgtype: "m.text", body: text })));
  }

  /** Encrypts a file for upload; `seal(attachmentId)` then gives the send fields. Recipients'
   * keys are checked first, so a send that would be refused uploads nothing. */
  async sealFile(
    conversationId: number,
    data: Uint8Array<ArrayBuffer>,
    filename: string,
    contentType: string,
    caption: string,
  ): Promise<{ upload: Blob; seal(attachmentId: string): Promise<Record<string, unknown>> }> {
    await this.guard(() =>
      this.lock.run(async () => {
        const members = await this.members(conversationId);
        await this.trackLocked([...members, this.userId]);
            const problems = this.transparencyProblems(members);
        if (problems.length) throw new KeyTransparencyError(`not sending: ${problems.join("; ")}`);
        const changes = await this.identityChangesLocked(members);
        if (changes.length) throw new IdentityChangedError(changes);
      }),
    );
    const { ciphertext, file, plaintextSha256 } = await encryptFile(data);
    return {
      upload: new Blob([ciphertext], { type: "application/octet-stream" }),
      seal: async (attachmentId: string) => {
        const content = {
          msgtype: "m.file",
          body: caption || filename,
          filename,
          info: { mimetype: contentType || "application/octet-stream", size: data.length },
          file: { url: attachmentId, ...file },
          [PLAINTEXT_SHA256_FIELD]: plaintextSha256,
        };
        const sealed = await this.guard(() => this.lock.run(() => this.encryptLocked(conversationId, content)));
        return { ...sealed, attachment_id: attachmentId };
      },
    };
  }

  // ---- receiving ---------------------------------------------------------------------------

  /** Takes the stream's e2ee events (to-device messages, key counts, device-list changes) in order. */
  feed(events: StreamEventLike[]): void {
    for (const event of events) {
      if (!event.type.startsWith("e2ee.")) continue;
      // A replay after a reconnection must not be taken twice (key counts repeat on purpose).
      if (typeof event.seq === "number" && event.type !== "e2ee.key_counts") {
        const id = `${event.type}:${event.seq}`;
        if (this.seen.has(id)) continue;
        this.seen.add(id);
        if (this.seen.size > 5000) this.seen.delete(this.seen.values().next().value!);
      }
      this.inbox.push(event);
    }
    void this.drain().catch((error: unknown) => console.warn("e2ee: taking in stream events failed; trying again soon", error));
  }

  /** Resolves once every event fed so far was taken in. */
  drain(): Promise<void> {
    if (!this.draining) {
      this.draining = this.guard(() => this.lock.run(() => this.receiveLocked())).finally(() => {
        this.draining = null;
      });
      return this.draining.then(() => (this.inbox.length ? this.drain() : undefined));
    }
    return this.draining.then(() => (this.inbox.length ? this.drain() : undefined));
  }

  private async receiveLocked(): Promise<void> {
    while (this.inbox.length) {
      const batch = this.inbox.splice(0, 200);
      const toDevice: Record<string, unknown>[] = [];
      const changed = new Set<string>();
      const left = new Set<string>();
      let counts: StreamEventLike | null = null;
      for (const frame of batch) {
        if (frame.type === "e2ee.to_device" && isRecord(frame.event)) toDevice.push(frame.event);
        else if (frame.type === "e2ee.device_lists") {
          for (const id of Array.isArray(frame.changed) ? frame.changed : []) (changed.add(String(id)), left.delete(String(id)));
          for (const id of Array.isArray(frame.left) ? frame.left : []) (left.add(String(id)), changed.delete(String(id)));
        } else if (frame.type === "e2ee.key_counts") counts = frame;
      }
      // Know the senders' devices before taking in their room keys, so each Megolm session is
      // stored knowing which device of which identity sent it.
      const senders = [...new Set(toDevice.map((e) => String(e.sender)).filter((s) => s.startsWith("@") && !this.tracked.has(s)))];
      if (senders.length) {
        try {
          await this.trackLocked(senders);
        } catch (error) {
          // Nothing of the batch was taken in yet: it waits, and is tried again soon.
          this.inbox.unshift(...batch);
          this.retryLater();
          throw error;
        }
      }
      const lists = new sdk.DeviceLists(
        [...changed].map((id) => new sdk.UserId(id)),
        [...left].map((id) => new sdk.UserId(id)),
      );
      const settings = new sdk.DecryptionSettings(sdk.TrustRequirement.Untrusted);
      let processed: Awaited<ReturnType<sdk.OlmMachine["receiveSyncChanges"]>>;
      if (counts) {
        // Sync v2 semantics: an algorithm missing from the counts means zero keys left.
        const c = counts as { one_time_key_counts?: Record<string, number>; unused_fallback_key_types?: string[] };
        const otk = new Map(Object.entries(c.one_time_key_counts ?? {}));
        const fallback = new Set(c.unused_fallback_key_types ?? []);
        processed = await this.machine.receiveSyncChanges(JSON.stringify(toDevice), lists, otk, fallback, settings);
      } else {
        processed = await this.machine.receiveSyncChangesMsc4186(JSON.stringify(toDevice), lists, new Map(), undefined, settings);
      }
      const requests: { sender: string; transactionId: string }[] = [];
      for (const item of processed) {
        if (item.type === sdk.ProcessedToDeviceEventType.Decrypted || item.type === sdk.ProcessedToDeviceEventType.PlainText) {
          let event: Record<string, unknown>;
          try {
            event = JSON.parse(item.rawEvent) as Record<string, unknown>;
          } catch {
            continue;
          }
          if (item.type === sdk.ProcessedToDeviceEventType.PlainText && event.type === "m.key.verification.request" && isRecord(event.content)) {
            requests.push({ sender: String(event.sender), transactionId: String(event.content.transaction_id) });
          }
        } else if (item.type === sdk.ProcessedToDeviceEventType.UnableToDecrypt) {
          console.warn("e2ee: a to-device message this device cannot decrypt");
        }
      }
      this.retryDelay = 0;
      try {
        await this.flushLocked();
      } catch (error) {
        // The batch is taken in; what the crypto core still wants to send waits in it.
        this.retryLater();
        console.warn("e2ee: a request of the crypto core failed; trying again soon", error);
      }
      for (const { sender, transactionId } of requests) {
        const request = this.machine.getVerificationRequest(new sdk.UserId(sender), transactionId);
        if (request) this.adoptFlow(request);
      }
      for (const flow of this.flows.values()) flow.poke();
      this.changed();
    }
  }

  private retryLater(): void {
    if (this.retryTimer || this.broken) return;
    this.retryDelay = Math.min(Math.max(this.retryDelay * 2, 1000), 30_000);
    this.retryTimer = window.setTimeout(() => {
      this.retryTimer = 0;
      void this.drain()
        .then(() => this.flush())
        .catch(() => this.retryLater());
    }, this.retryDelay);
  }

  private waitForRoomKey(sessionId: string, ms: number): Promise<void> {
    return new Promise((resolve) => {
      const waiters = this.roomKeyWaiters.get(sessionId) ?? new Set();
      this.roomKeyWaiters.set(sessionId, waiters);
      const done = () => {
        clearTimeout(timer);
        waiters.delete(done);
        if (waiters.size === 0) this.roomKeyWaiters.delete(sessionId);
        resolve();
      };
      const timer = setTimeout(done, ms);
      waiters.add(done);
    });
  }

  private async decryptOnce(event: Record<string, unknown>, roomId: string): Promise<sdk.DecryptedRoomEvent> {
    return this.machine.decryptRoomEvent(JSON.stringify(event), new sdk.RoomId(roomId), new sdk.DecryptionSettings(sdk.TrustRequirement.Untrusted));
  }

  /** What a delivered message says, decrypted on this device. Never throws for what the
   * server or a sender made up: such a message is "undecryptable" or "unverifiable". */
  async open(message: WireMessage, waitForKeyMs = 4000): Promise<Opened> {
    if (message.deleted || !isRecord(message.event)) return { text: null, state: "ok" };
    const event = message.event;
    const roomId = typeof event.room_id === "string" ? event.room_id : this.roomId(message.conversation_id);
    if (roomId !== this.roomId(message.conversation_id)) {
      return { text: null, state: "undecryptable", note: "it was delivered in another conversation than it names" };
    }
    return this.guard(async () => {
      await this.drain(); // room keys that came before it on the stream
      if (typeof event.sender === "string") await this.track([event.sender]);
      let decrypted: sdk.DecryptedRoomEvent;
      try {
        try {
          decrypted = await this.decryptOnce(event, roomId);
        } catch (error) {
          const content = isRecord(event.content) ? event.content : {};
          // A room key may still be on its way (it travels beside the message, over the
          // stream): wait a little for a recent message's, once per Megolm session.
          const sent = typeof event.origin_server_ts === "number" ? event.origin_server_ts : 0;
          if (
            waitForKeyMs > 0 &&
            isRecord(error) &&
            (error as { code?: unknown }).code === sdk.DecryptionErrorCode.MissingRoomKey &&
            typeof content.session_id === "string" &&
            !this.keyless.has(content.session_id) &&
            Date.now() - sent < 120_000
          ) {
            await this.waitForRoomKey(content.session_id, waitForKeyMs);
            await this.drain();
            try {
              decrypted = await this.decryptOnce(event, roomId);
            } catch (again) {
              this.keyless.add(content.session_id);
              throw again;
            }
          } else throw error;
        }
      } catch (error) {
        if (isWasmTrap(error)) throw error;
        const code = isRecord(error) ? (error as { code?: number }).code : undefined;
        const note = (code !== undefined && DECRYPTION_NOTES[code]) || `it does not decrypt (${describe(error)})`;
        return { text: null, state: "undecryptable", note: `cannot decrypt: ${note}` };
      }
      return this.read(message, decrypted, roomId);
    });
  }

  private async read(message: WireMessage, decrypted: sdk.DecryptedRoomEvent, roomId: string): Promise<Opened> {
    let payload: Record<string, unknown>;
    try {
      payload = JSON.parse(decrypted.event) as Record<string, unknown>;
    } catch {
      return { text: null, state: "undecryptable", note: "cannot decrypt: its plaintext is not JSON" };
    }
    const content = isRecord(payload.content) ? payload.content : null;
    if (!content) return { text: null, state: "undecryptable", note: "cannot decrypt: it carries no content" };
    const sender = decrypted.sender.toString();
    const senderDevice = decrypted.senderDevice?.toString() ?? null;
    const body = typeof content.body === "string" ? content.body : null;
    if (isRecord(message.franking)) {
      const problem = await frankingProblem(message.franking as unknown as FrankingDelivered, content, roomId, sender, senderDevice);
      if (problem) return { text: null, state: "unverifiable", note: `unverifiable message: ${problem}` };
      const tag = (message.franking as unknown as FrankingDelivered).tag;
      if (typeof tag === "string" && typeof content[FRANKING_KEY_FIELD] === "string") this.evidence.set(message.id, { content, tag });
    }
    let file: Opened["file"] = null;
    const fileObject = content.file;
    if (message.attachment && isRecord(fileObject) && fileObject.url === message.attachment.id) {
      const info = isRecord(content.info) ? content.info : {};
      const filename = String(content.filename || content.body || "file");
      const contentType = String(info.mimetype || "application/octet-stream");
      this.fileKeys.set(message.id, { file: fileObject, plaintextSha256: content[PLAINTEXT_SHA256_FIELD], filename, contentType });
      file = { filename, contentType, size: typeof info.size === "number" ? info.size : message.attachment.size };
    }
    const notes: string[] = [];
    let state: Opened["state"] = "ok";
    const shield = decrypted.shieldState(false);
    if (shield.color === sdk.ShieldColor.Red) {
      state = "unverifiable";
      const code = shield.code;
      if (code === sdk.ShieldStateCode.MismatchedSender) {
        return { text: null, state: "unverifiable", note: "unverifiable message: its room key came from someone other than its sender" };
      }
      notes.push(
        code === sdk.ShieldStateCode.UnsignedDevice
          ? `sent from a device ${sender.slice(1, sender.indexOf(":"))} has not signed with their identity`
          : code === sdk.ShieldStateCode.UnknownDevice
            ? "sent from a device this browser does not know (or whose keys failed the key-transparency check)"
            : code === sdk.ShieldStateCode.VerificationViolation
              ? "the sender's identity changed since you verified them"
              : (shield.message ?? "its sender could not be verified"),
      );
    }
    const logProblem = senderDevice ? this.logProblems.get(sender)?.get(`device:${senderDevice}`) : undefined;
    if (logProblem) {
      state = "unverifiable";
      notes.push(`the sending device's keys failed the key-transparency check: ${logProblem}`);
    }
    if (sender !== this.userId && (this.changes.get(sender)?.length ?? 0) > 0) {
      state = "unverifiable";
      notes.push(`${sender.slice(1, sender.indexOf(":"))}'s keys changed since you last accepted them`);
    }
    return { text: body, state, note: notes.length ? notes.join("; ") : undefined, file };
  }

  /** Extra fields of a report of a franked message this device decrypted: `{franking}`. */
  reportFields(messageId: number): Record<string, unknown> {
    const evidence = this.evidence.get(messageId);
    if (!evidence) return {};
    return {
      franking: {
        message_id: messageId,
        content: evidence.content,
        franking_key: evidence.content[FRANKING_KEY_FIELD],
        tag: evidence.tag,
      },
    };
  }

  async openFile(messageId: number, data: Blob): Promise<{ blob: Blob; filename: string; contentType: string }> {
    const key = this.fileKeys.get(messageId);
    if (!key) throw new Error("this device has no key for that file (the message did not decrypt here)");
    const plain = await decryptFile(new Uint8Array(await data.arrayBuffer()), key.file, key.plaintextSha256);
    return { blob: new Blob([plain], { type: key.contentType }), filename: key.filename, contentType: key.contentType };
  }

  // ---- who can read, verification status, safety numbers ----------------------------------

  /** The devices that can read a conversation (every current member's devices with published
   * keys that passed the key log), as this device sees them now. */
  async readers(conversationId: number, fresh = false): Promise<ReaderDevice[]> {
    return this.guard(async () => {
      const members = await this.members(conversationId);
      await this.lock.run(() => this.trackLocked(members, fresh || members.some((m) => !this.tracked.has(m))));
      const out: ReaderDevice[] = [];
      for (const user of members) {
        const devices = (await this.machine.getUserDevices(new sdk.UserId(user))).devices();
        const seen = new Set<string>();
        for (const device of devices) {
          if (device.isDeleted()) continue;
          const deviceId = device.deviceId.toString();
          seen.add(deviceId);
          out.push({
            userId: user,
            user: user.slice(1, user.indexOf(":")),
            deviceId,
            name: device.displayName ?? null,
            ed25519: device.ed25519Key?.toBase64() ?? null,
            verified: device.isVerified(),
            crossSigned: device.isCrossSignedByOwner(),
            own: user === this.userId,
            current: user === this.userId && deviceId === this.deviceId,
            logProblem: this.logProblems.get(user)?.get(`device:${deviceId}`) ?? null,
          });
        }
        // Devices the server lists but whose keys failed the log: shown, flagged (they cannot read).
        for (const [slot, reason] of this.logProblems.get(user) ?? []) {
          const deviceId = slot.startsWith("device:") ? slot.slice(7) : null;
          if (!deviceId || seen.has(deviceId)) continue;
          out.push({
            userId: user,
            user: user.slice(1, user.indexOf(":")),
            deviceId,
            name: null,
            ed25519: null,
            verified: false,
            crossSigned: false,
            own: user === this.userId,
            current: false,
            logProblem: reason,
          });
        }
      }
      return out;
    });
  }

  /** One member's devices with published keys, as the key log proved them when fetched. */
  async devicesOf(username: string, fresh = false): Promise<ReaderDevice[]> {
    const user = this.fullId(username);
    return this.guard(async () => {
      await this.lock.run(() => this.trackLocked([user], fresh || !this.tracked.has(user)));
      const devices = (await this.machine.getUserDevices(new sdk.UserId(user))).devices();
      return devices
        .filter((device) => !device.isDeleted())
        .map((device) => {
          const deviceId = device.deviceId.toString();
          return {
            userId: user,
            user: user.slice(1, user.indexOf(":")),
            deviceId,
            name: device.displayName ?? null,
            ed25519: device.ed25519Key?.toBase64() ?? null,
            verified: device.isVerified(),
            crossSigned: device.isCrossSignedByOwner(),
            own: user === this.userId,
            current: user === this.userId && deviceId === this.deviceId,
            logProblem: this.logProblems.get(user)?.get(`device:${deviceId}`) ?? null,
          };
        });
    });
  }

  async contact(username: string): Promise<ContactStatus> {
    const user = this.fullId(username);
    await this.track([user]);
    return this.guard(() =>
      this.lock.run(async () => ({
        userId: user,
        verified: await this.isVerifiedLocked(user),
        masterKey: this.masterKeys.get(user) ?? null,
        changes: await this.identityChangesLocked([user]),
        logProblems: this.transparencyProblems([user]),
      })),
    );
  }

  /** The safety number of the member and `username`, from both master keys as the key log
   * proved them just now. Throws when either has no master key. */
  async safetyNumber(username: string): Promise<SafetyNumber> {
    const other = this.fullId(username);
    await this.guard(() => this.lock.run(() => this.trackLocked([this.userId, other])));
    const problems = this.transparencyProblems([this.userId, other]);
    if (problems.length) throw new KeyTransparencyError(problems.join("; "));
    const mine = this.masterKeys.get(this.userId);
    const theirs = this.masterKeys.get(other);
    if (!mine) throw new Error("you have no master key yet: your first e2ee device makes it");
    if (!theirs) throw new Error(`${username} has no master key (no e2ee device yet)`);
    return safetyNumber(this.userId, mine, other, theirs);
  }

  // ---- SAS verification --------------------------------------------------------------------

  /** Incoming verification requests are announced here. */
  onVerificationRequest(listener: (flow: VerificationFlow) => void): () => void {
    this.verificationListeners.add(listener);
    return () => this.verificationListeners.delete(listener);
  }

  /** Verification flows waiting for an answer or in progress. */
  verificationFlows(): VerificationFlow[] {
    return [...this.flows.values()].filter((flow) => !flow.finished());
  }

  private adoptFlow(request: sdk.VerificationRequest): VerificationFlow {
    const key = `${request.otherUserId.toString()}|${request.flowId}`;
    let flow = this.flows.get(key);
    if (!flow) {
      flow = new VerificationFlow(this.verificationHost(), request);
      this.flows.set(key, flow);
      if (!request.weStarted()) for (const listener of [...this.verificationListeners]) listener(flow);
    }
    return flow;
  }

  private verificationHost() {
    return {
      send: (request: { type: sdk.RequestType; id?: string; body: string; event_type?: string; txn_id?: string }) =>
        this.guard(() => this.lock.run(() => this.sendRequest(request))),
      flush: () => this.flush(),
      changed: () => this.changed(),
    };
  }

  /** Starts SAS with one device of `username` (its keys fetched and checked first). */
  async startVerification(username: string, deviceId: string): Promise<VerificationFlow> {
    const user = this.fullId(username);
    await this.guard(() => this.lock.run(() => this.trackLocked([user])));
    const problem = this.logProblems.get(user)?.get(`device:${deviceId}`);
    if (problem) throw new KeyTransparencyError(`${username}'s device ${deviceId}: ${problem}`);
    const device = await this.machine.getDevice(new sdk.UserId(user), new sdk.DeviceId(deviceId));
    if (!device) throw new Error(`${username} has no device ${deviceId} with published keys`);
    const [request, outgoing] = device.requestVerification([sdk.VerificationMethod.SasV1]);
    const flow = this.adoptFlow(request);
    await this.verificationHost().send(outgoing);
    return flow;
  }
}
