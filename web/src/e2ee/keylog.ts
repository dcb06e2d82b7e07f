// Key transparency in the browser: what this device checks of every `keys/query` answer
// before it lets the OlmMachine see (and so encrypt to) a key. A port of the Python SDK's
// keyhold.sdk.e2ee.transparency (docs/e2ee.md, "Key transparency"):
//   1. the head's Ed25519 signature under the key-log prefix, by the service key this device
//      pinned the first time it saw a head;
//   2. the head and the newest head this device accepted before are one append-only log (a
//      consistency proof from /e2ee/transparency/consistency);
//   3. each key's entry is a `publish` of exactly that member and key, commits to the SHA-256
//      of the key object served, and is included under the head.
// Not ported: the heads Python SDK devices send each other inside Olm-encrypted room keys
// (`keyhold.key_log_head`, "Heads travel between members"). The OlmMachine neither lets a
// client add a field to the Olm payloads it encrypts nor hands back the fields it does not know
// of the ones it decrypts, so the browser neither sends its head nor checks others'.

import { checkConsistency } from "../verify/access";
import { fromHex, sha256, utf8 } from "../verify/bytes";
import { leafHash, parseProof, verifyInclusion } from "../verify/merkle";
import { canonicalJson, checkTreeHead, KEY_STH_PREFIX, parseHead } from "../verify/sth";
import { isRecord, signingBytes, toUnpaddedBase64 } from "./bytes";

/** A signed head of the key log as this device keeps it (hex, as the server sent it). */
export interface TreeHead {
  size: number;
  root: string;
  timestamp_ms: number;
  signature: string;
  public_key: string;
}

/** A head with exactly its five fields, well formed (../verify/sth.ts parseHead), or null. */
export function cleanHead(head: unknown): TreeHead | null {
  if (!parseHead(head)) return null;
  const h = head as Record<string, unknown> & TreeHead;
  return { size: h.size, root: h.root, timestamp_ms: h.timestamp_ms, signature: h.signature, public_key: h.public_key };
}

export const TRANSPARENCY_FIELD = "keyhold.transparency";

export class KeyTransparencyError extends Error {
  constructor(readonly reason: string) {
    super(reason);
    this.name = "KeyTransparencyError";
  }
}

/** (from size, to size) → the consistency proof (hex list), or null when none came. */
export type FetchConsistency = (from: number, to: number) => Promise<unknown | null>;

export interface KeyLogSaved {
  pinned_key: string | null;
  newest: TreeHead | null;
}

type Compared = ["same log" | "forked" | "unavailable", string];

/** `device:<id>`, `master`, `self_signing` or `user_signing`. */
export type Slot = string;

export async function keyDigest(key: Record<string, unknown>): Promise<string> {
  return toUnpaddedBase64(await sha256(signingBytes(key)));
}

/** One check at a time (two answers compared at once could each leave the smaller head newest). */
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

export class KeyLog {
  private readonly lock = new Mutex();
  private provenRoot = "";
  private proven = new Set<string>();

  constructor(
    public pinnedKey: string | null,
    public newest: TreeHead | null,
    private readonly fetchConsistency: FetchConsistency,
    private readonly onChange: (saved: KeyLogSaved) => void,
  ) {}

  static restore(saved: KeyLogSaved | undefined, fetchConsistency: FetchConsistency, onChange: (saved: KeyLogSaved) => void): KeyLog {
    return new KeyLog(
      typeof saved?.pinned_key === "string" ? saved.pinned_key : null,
      cleanHead(saved?.newest ?? null),
      fetchConsistency,
      onChange,
    );
  }

  export(): KeyLogSaved {
    return { pinned_key: this.pinnedKey, newest: this.newest };
  }

  private changed(): void {
    this.onChange(this.export());
  }

  /**
   * The keys of a `keys/query` answer that do not check out, by `user\u0000slot`, each with the
   * reason; a head that fails fails every key. A newer head that checks becomes the newest.
   */
  async checkAnswer(answer: Record<string, unknown>): Promise<Map<string, string>> {
    const keys = new Map<string, [string, Slot, unknown]>();
    const deviceKeys = isRecord(answer.device_keys) ? answer.device_keys : {};
    for (const [user, devices] of Object.entries(deviceKeys)) {
      for (const [deviceId, key] of Object.entries(isRecord(devices) ? devices : {})) {
        keys.set(`${user}\u0000device:${deviceId}`, [user, `device:${deviceId}`, key]);
      }
    }
    for (const usage of ["master", "self_signing", "user_signing"]) {
      const of = answer[`${usage}_keys`];
      for (const [user, key] of Object.entries(isRecord(of) ? of : {})) keys.set(`${user}\u0000${usage}`, [user, usage, key]);
    }
    const found = new Map<string, string>();
    if (keys.size === 0) return found;
    const transparency = answer[TRANSPARENCY_FIELD];
    const head = cleanHead(isRecord(transparency) ? transparency.tree_head : null);
    const problem = await this.lock.run(() => this.headProblem(head));
    if (problem !== null) {
      for (const id of keys.keys()) found.set(id, problem);
      return found;
    }
    const { size, root } = head!;
    if (root !== this.provenRoot) {
      this.provenRoot = root;
      this.proven = new Set();
    }
    const proofs = isRecord(transparency) && isRecord(transparency.proofs) ? transparency.proofs : {};
    for (const [id, [user, slot, key]] of keys) {
      const ofUser = proofs[user];
      const proof = isRecord(ofUser) ? ofUser[slot] : undefined;
      const reason = isRecord(key) ? await this.entryProblem(proof, user, slot, key, size, root) : "malformed";
      if (reason !== null) found.set(id, reason);
    }
    return found;
  }

  private async entryProblem(
    proof: unknown,
    user: string,
    slot: Slot,
    key: Record<string, unknown>,
    size: number,
    root: string,
  ): Promise<string | null> {
    if (!isRecord(proof)) return "it is not in the key-transparency log (no inclusion proof)";
    const { index, entry: entryText } = proof;
    const path = parseProof(proof.inclusion_proof);
    if (typeof index !== "number" || !Number.isSafeInteger(index) || typeof entryText !== "string" || !path) {
      return "its key-transparency proof is malformed";
    }
    let entry: unknown;
    let digest: string;
    try {
      entry = JSON.parse(entryText);
      digest = await keyDigest(key);
    } catch {
      return "its key-transparency entry or the key is malformed";
    }
    let canonical: string | null = null;
    try {
      canonical = isRecord(entry) ? canonicalJson(entry) : null;
    } catch {
      canonical = null;
    }
    // Only the canonical form: bytes different readers could parse differently are no entry.
    if (!isRecord(entry) || canonical !== entryText) return "its key-transparency entry is malformed";
    if (entry.op !== "publish" || entry.user_id !== user || entry.key !== slot || entry.idx !== index) {
      return `the key-transparency entry ${index} is not the publication of this key`;
    }
    if (entry.sha256 !== digest) {
      return "it is not the key the key-transparency log shows for this device (a substituted key)";
    }
    const proven = `${index}\u0000${entryText}`;
    if (this.proven.has(proven)) return null;
    if (!(await verifyInclusion(await leafHash(utf8(entryText)), index, size, path, fromHex(root, 32)!))) {
      return `the key-transparency entry ${index} is not in the log under its signed head`;
    }
    this.proven.add(proven);
    return null;
  }

  private async headProblem(head: TreeHead | null): Promise<string | null> {
    if (!head) return "the server sent no signed head of the key-transparency log";
    if (!(await checkTreeHead(head, this.pinnedKey, KEY_STH_PREFIX)).ok) {
      if (this.pinnedKey !== null && head.public_key.toLowerCase() !== this.pinnedKey.toLowerCase()) {
        return "the key-transparency log is signed by another key than the one this device pinned";
      }
      return "the key-transparency log's head carries no valid signature";
    }
    const [status, message] = await this.compare(head);
    if (status === "forked") return `the key-transparency log forked: ${message}`;
    if (status === "unavailable") return `the server gave no proof that its key-transparency log only grew (${message})`;
    return null;
  }

  /** Whether a head (signature checked) and this device's newest are one log. */
  private async compare(head: TreeHead): Promise<Compared> {
    const newest = this.newest;
    if (!newest) {
      this.pinnedKey = head.public_key;
      this.newest = head;
      this.changed();
      return ["same log", ""];
    }
    const where =
      `its head of size ${head.size} (root ${head.root.slice(0, 16)}…) and the head of size ` +
      `${newest.size} (root ${newest.root.slice(0, 16)}…) this device accepted`;
    if (head.size === newest.size) {
      return head.root.toLowerCase() === newest.root.toLowerCase() ? ["same log", ""] : ["forked", `${where} differ`];
    }
    const [older, newer] = head.size > newest.size ? [newest, head] : [head, newest];
    let proof: unknown;
    try {
      proof = await this.fetchConsistency(older.size, newer.size);
    } catch (error) {
      return ["unavailable", error instanceof Error ? error.message : String(error)];
    }
    if (proof === null || proof === undefined) return ["unavailable", "no consistency proof came"];
    if (!(await checkConsistency(older, newer, proof, KEY_STH_PREFIX)).ok) {
      return ["forked", `no consistency proof joins ${where}`];
    }
    if (newer === head) {
      this.newest = head;
      this.changed();
    }
    return ["same log", ""];
  }
}
