// Signed tree heads (src/keyhold/crypto/merkle.py: sth_message, head_signature_valid) and the
// service key, checked with Ed25519 through WebCrypto; canonical JSON as the server signs
// disclosure packages (orjson with sorted keys: no whitespace, UTF-8, no escapes beyond JSON's).
//
// A head signs `"keyhold-sth/v1" || size (8 bytes BE) || root (32) || timestamp_ms (8 bytes BE)`:
// bytes, not JSON. Canonical JSON matters for packages (and for the Matrix-style signed JSON of
// src/keyhold/crypto/signed_json.py, the same sorted, compact form).

import { api } from "../api";
import { type Bytes, concat, fromHex, isIndex, uint64be, utf8 } from "./bytes";
import { HASH_SIZE } from "./merkle";

export const STH_PREFIX = utf8("keyhold-sth/v1");
export const KEY_STH_PREFIX = utf8("keyhold-key-sth/v1");

/** A tree head as `GET /transparency/sth` returns it. */
export interface TreeHeadJson {
  size: number;
  root: string | null;
  timestamp_ms?: number;
  signature?: string;
  public_key: string;
}

export interface ParsedHead {
  size: number;
  root: Bytes;
  timestampMs: number;
  signature: Bytes;
  publicKey: Bytes;
}

export type Check = { ok: true } | { ok: false; reason: string };
export const OK: Check = { ok: true };
export const fail = (reason: string): Check => ({ ok: false, reason });

export function sthMessage(size: number, root: Uint8Array, timestampMs: number, prefix = STH_PREFIX): Bytes {
  return concat(prefix, uint64be(size), root, uint64be(timestampMs));
}

/** (size, root, timestamp, signature, key) of a head, or null if any is missing or malformed. */
export function parseHead(head: unknown): ParsedHead | null {
  if (!head || typeof head !== "object") return null;
  const h = head as Record<string, unknown>;
  const root = fromHex(h.root, HASH_SIZE);
  const signature = fromHex(h.signature, 64);
  const publicKey = fromHex(h.public_key, 32);
  if (!isIndex(h.size) || !isIndex(h.timestamp_ms) || !root || !signature || !publicKey) return null;
  return { size: h.size, root, timestampMs: h.timestamp_ms, signature, publicKey };
}

export async function ed25519Verify(publicKey: Bytes, signature: Bytes, message: Bytes): Promise<boolean> {
  try {
    const key = await crypto.subtle.importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
    return await crypto.subtle.verify({ name: "Ed25519" }, key, signature, message);
  } catch {
    return false; // not a valid Ed25519 key, or the browser has no Ed25519
  }
}

/**
 * Whether a head carries a valid Ed25519 signature by its key and, when `pinnedKey` (hex) is
 * given, that key is the pinned one. An empty log's head (size 0, unsigned) does not verify:
 * there is nothing signed to trust. As keyhold.sdk.verify.verify_tree_head, with the reason.
 */
export async function checkTreeHead(head: unknown, pinnedKey?: string | null, prefix = STH_PREFIX): Promise<Check> {
  if (head && typeof head === "object" && (head as TreeHeadJson).size === 0 && !(head as TreeHeadJson).root) {
    return fail("the log is empty: there is no signed tree head yet");
  }
  const parsed = parseHead(head);
  if (!parsed) return fail("the signed tree head is malformed (a size, root, time, signature or key is missing)");
  if (pinnedKey !== undefined && pinnedKey !== null) {
    const pinned = fromHex(pinnedKey, 32);
    if (!pinned || pinnedKey.toLowerCase() !== (head as TreeHeadJson).public_key.toLowerCase()) {
      return fail("the signed tree head is signed by a key other than the service's published key");
    }
  }
  const message = sthMessage(parsed.size, parsed.root, parsed.timestampMs, prefix);
  if (!(await ed25519Verify(parsed.publicKey, parsed.signature, message))) {
    return fail("the signature of the signed tree head does not verify");
  }
  return OK;
}

/** The service's Ed25519 public key (hex) from `GET /transparency/key`. */
export async function fetchServiceKey(): Promise<string> {
  const key = await api<{ algorithm: string; public_key: string }>("GET", "/transparency/key");
  if (key.algorithm !== "Ed25519" || !fromHex(key.public_key, 32)) {
    throw new Error("the service key is not an Ed25519 public key");
  }
  return key.public_key.toLowerCase();
}

export async function fetchHead(): Promise<TreeHeadJson> {
  return api<TreeHeadJson>("GET", "/transparency/sth");
}

// -- canonical JSON -------------------------------------------------------------------------------

const LONE_SURROGATE = /\p{Cs}/u;

/** Code point order, as Python sorts `str` keys (UTF-16 order differs above U+FFFF). */
function compareKeys(a: string, b: string): number {
  const ca = Array.from(a);
  const cb = Array.from(b);
  for (let i = 0; i < Math.min(ca.length, cb.length); i++) {
    const d = ca[i].codePointAt(0)! - cb[i].codePointAt(0)!;
    if (d !== 0) return d;
  }
  return ca.length - cb.length;
}

/**
 * Canonical JSON text: keys sorted, no whitespace, strings as JSON.stringify writes them (the
 * same escapes as orjson and canonicaljson for valid Unicode). Numbers must be safe integers:
 * a float has no single canonical form shared by Python and JavaScript, so it is refused.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value === "boolean") return JSON.stringify(value);
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value)) throw new Error("canonical JSON here holds integers only");
    return String(value);
  }
  if (typeof value === "string") {
    if (LONE_SURROGATE.test(value)) throw new Error("a string is not valid Unicode");
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (typeof value === "object") {
    const keys = Object.keys(value as object).sort(compareKeys);
    const record = value as Record<string, unknown>;
    // Keys too must be valid Unicode (canonicalJson, not JSON.stringify: a lone surrogate is refused).
    return `{${keys.map((k) => `${canonicalJson(k)}:${canonicalJson(record[k])}`).join(",")}}`;
  }
  throw new Error(`canonical JSON cannot hold a ${typeof value}`);
}
