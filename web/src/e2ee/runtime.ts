// The light side of the browser's e2ee: what the rest of the app may import statically. It
// never imports the crypto core: `openDevice` loads machine.ts (and with it the wasm) with a
// dynamic import, the first time a member opens or starts an e2ee conversation.
//
// - `feedStreamEvent(event)`: the stream hands every event to it (it keeps the `e2ee.*` ones).
//   Until the device is unlocked, to-device messages wait here, and in IndexedDB (they are
//   Olm ciphertext or verification steps the server saw anyway): a reconnection past them
//   deletes them on the server, and a room key lost is a message that never opens.
// - `openDevice(session)`: the running device, once the member typed (or set) the passphrase
//   of this browser's keys. The prompt is <PassphrasePrompt/> if the app mounts one, else a
//   dialog this module mounts itself.
// - `e2eeStatus`: what the UI shows (locked, asking for the passphrase, ready, failed).

import type { Session } from "../session";
import { memberSession } from "../session";
import type { E2eeDevice } from "./machine";
import { forgetBrowserDeviceId } from "./device-id";
import { metaDeletePrefix, metaGet, metaSet } from "./meta-store";

export type E2eeStatus =
  | { phase: "idle" }
  | { phase: "loading" }
  | { phase: "passphrase"; isNew: boolean; error: string | null; username: string; deviceId: string }
  | { phase: "starting" }
  | { phase: "ready"; userId: string; deviceId: string; crossSigning: boolean }
  | { phase: "failed"; error: string };

type StatusListener = (status: E2eeStatus) => void;

let status: E2eeStatus = { phase: "idle" };
const statusListeners = new Set<StatusListener>();

function setStatus(next: E2eeStatus): void {
  status = next;
  for (const listener of [...statusListeners]) listener(status);
}

export const e2eeStatus = {
  get: (): E2eeStatus => status,
  subscribe(listener: StatusListener): () => void {
    statusListeners.add(listener);
    return () => statusListeners.delete(listener);
  },
};

interface StreamEventLike {
  type: string;
  seq?: number;
  [field: string]: unknown;
}

let device: E2eeDevice | null = null;
let opening: Promise<E2eeDevice> | null = null;
let openingFor = "";
const early: StreamEventLike[] = [];
const MAX_EARLY = 5000;
let persistChain: Promise<void> = Promise.resolve();

function sessionKey(session: Session | null): string {
  return session?.userId && session.deviceId ? `${session.userId}|${session.deviceId}` : "";
}

/** Hand every stream event here (the member app's stream, from sign-in on): the e2ee ones are
 * taken in by the device, or kept until it is unlocked. Cheap for every other event. */
export function feedStreamEvent(event: StreamEventLike): void {
  if (typeof event?.type !== "string" || !event.type.startsWith("e2ee.")) return;
  if (device) {
    device.feed([event]);
    return;
  }
  if (early.length >= MAX_EARLY) early.shift();
  early.push(event);
  const key = sessionKey(memberSession.get());
  if (key && event.type === "e2ee.to_device") {
    // Kept across a reload too (the server deletes what a reconnection passed).
    persistChain = persistChain
      .then(async () => {
        const inbox = (await metaGet<StreamEventLike[]>(`${key}|inbox`)) ?? [];
        if (inbox.some((e) => e.seq !== undefined && e.seq === event.seq && e.type === event.type)) return;
        inbox.push(event);
        await metaSet(`${key}|inbox`, inbox.slice(-MAX_EARLY));
      })
      .catch(() => undefined);
  }
}

/** The running device, if the member unlocked it already (no prompt, no loading). */
export function currentDevice(): E2eeDevice | null {
  return device;
}

// ---- the passphrase ----------------------------------------------------------------------

let answer: { resolve(passphrase: string): void; reject(error: Error): void } | null = null;
let inlinePrompts = 0;
let dialogMounted = false;

export class PassphraseCancelled extends Error {}

/** <PassphrasePrompt/> registers itself while mounted, so that no dialog is mounted beside it. */
export function registerInlinePrompt(): () => void {
  inlinePrompts += 1;
  return () => {
    inlinePrompts -= 1;
  };
}

export function inlinePromptMounted(): boolean {
  return inlinePrompts > 0;
}

export function submitPassphrase(passphrase: string): void {
  const pending = answer;
  answer = null;
  pending?.resolve(passphrase);
}

export function cancelPassphrase(): void {
  const pending = answer;
  answer = null;
  pending?.reject(new PassphraseCancelled("end-to-end encryption stays locked: no passphrase was given"));
}

async function mountDialog(): Promise<void> {
  if (dialogMounted || inlinePrompts > 0) return;
  dialogMounted = true;
  const [{ render, h }, { PassphraseDialog }] = await Promise.all([import("preact"), import("./PassphrasePrompt")]);
  const host = document.createElement("div");
  host.className = "e2ee-dialog-host";
  document.body.appendChild(host);
  render(h(PassphraseDialog, {}), host);
}

function askPassphrase(isNew: boolean, error: string | null, username: string, deviceId: string): Promise<string> {
  setStatus({ phase: "passphrase", isNew, error, username, deviceId });
  void mountDialog();
  return new Promise((resolve, reject) => {
    answer = { resolve, reject };
  });
}

// ---- opening the device -------------------------------------------------------------------

/** The member's e2ee device in this browser, unlocked with the passphrase the member types (or
 * sets, the first time). Loads the crypto core on first use. */
export function openDevice(session: Session): Promise<E2eeDevice> {
  const key = sessionKey(session);
  if (!key) {
    return Promise.reject(new Error("this session does not say which device it is on: sign in again"));
  }
  if (device && openingFor === key) {
    device.token = session.token;
    return Promise.resolve(device);
  }
  if (opening && openingFor === key) return opening;
  closeDevice();
  openingFor = key;
  opening = start(session).finally(() => {
    opening = null;
  });
  return opening;
}

async function start(session: Session): Promise<E2eeDevice> {
  const userId = session.userId!;
  const deviceId = session.deviceId!;
  setStatus({ phase: "loading" });
  let module: typeof import("./machine");
  try {
    module = await import("./machine");
    await module.loadWasm();
  } catch (error) {
    const message = `the end-to-end encryption core could not be loaded: ${error instanceof Error ? error.message : String(error)}`;
    setStatus({ phase: "failed", error: message });
    openingFor = "";
    throw new Error(message);
  }
  const isNew = !(await module.storeExists(userId, deviceId));
  let error: string | null = null;
  for (;;) {
    let passphrase: string;
    try {
      passphrase = await askPassphrase(isNew, error, session.username, deviceId);
    } catch (cancelled) {
      setStatus({ phase: "idle" });
      openingFor = "";
      throw cancelled;
    }
    setStatus({ phase: "starting" });
    try {
      const opened = await module.E2eeDevice.open({
        token: memberSession.get()?.token ?? session.token,
        username: session.username,
        userId,
        deviceId,
        passphrase,
      });
      if (openingFor !== `${userId}|${deviceId}`) {
        opened.close(); // signed out meanwhile
        throw new Error("signed out");
      }
      device = opened;
      const waiting = early.splice(0);
      if (waiting.length) opened.feed(waiting);
      // What waited in IndexedDB was taken in by open(); what came meanwhile, just now.
      const key = `${userId}|${deviceId}|inbox`;
      persistChain = persistChain.then(() => metaSet(key, [])).catch(() => undefined);
      setStatus({ phase: "ready", userId, deviceId, crossSigning: opened.crossSigning });
      return opened;
    } catch (failure) {
      if (failure instanceof module.WrongPassphrase) {
        error = failure.message;
        continue;
      }
      const message = failure instanceof Error ? failure.message : String(failure);
      setStatus({ phase: "failed", error: message });
      openingFor = "";
      throw failure;
    }
  }
}

/** Let go of the device (sign-out, or another member signed in). */
export function closeDevice(): void {
  if (answer) cancelPassphrase();
  device?.close();
  device = null;
  openingFor = "";
  early.length = 0;
  if (status.phase !== "idle") setStatus({ phase: "idle" });
}

memberSession.subscribe((session) => {
  const key = sessionKey(session);
  if (!openingFor) return;
  if (key !== openingFor) closeDevice();
  else if (device && session) device.token = session.token;
});

// ---- account deletion ---------------------------------------------------------------------

/** The OlmMachine stores' names start with this (machine.ts storeName(), kept in step: this
 * module must not import machine.ts). */
function storePrefix(userId: string): string {
  return `keyhold-e2ee:${userId}:`;
}

function deleteDatabase(name: string): Promise<void> {
  return new Promise((resolve) => {
    let request: IDBOpenDBRequest;
    try {
      request = indexedDB.deleteDatabase(name);
    } catch {
      resolve();
      return;
    }
    // A connection still open delays it ("blocked"); it completes when that one closes.
    const timer = window.setTimeout(resolve, 5000);
    request.onsuccess = request.onerror = () => {
      window.clearTimeout(timer);
      resolve();
    };
  });
}

/** After the account was deleted: remove what this browser keeps for the member's e2ee
 * devices (the OlmMachine stores in IndexedDB, this module's keys in the meta store) and the
 * remembered device id. Log out does not call it: the device may come back. */
export async function forgetE2eeStore(session: Session): Promise<void> {
  const userId = session.userId;
  if (openingFor && userId && openingFor.startsWith(`${userId}|`)) closeDevice();
  forgetBrowserDeviceId(session.username);
  if (!userId || typeof indexedDB === "undefined") return;
  await persistChain.catch(() => undefined);
  let names: string[] = [];
  try {
    if (typeof indexedDB.databases === "function") {
      names = (await indexedDB.databases()).map((db) => db.name ?? "").filter((name) => name.startsWith(storePrefix(userId)));
    }
  } catch {
    names = [];
  }
  if (session.deviceId) {
    // Without databases() (or besides it): the names the crypto core gives this device's store.
    const base = `${storePrefix(userId)}${session.deviceId}::`;
    for (const suffix of ["matrix-sdk-crypto", "matrix-sdk-crypto-meta"]) if (!names.includes(base + suffix)) names.push(base + suffix);
  }
  await Promise.all(names.map(deleteDatabase));
  await metaDeletePrefix(`${userId}|`).catch(() => undefined);
}
