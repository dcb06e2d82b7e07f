// Safety numbers (docs/e2ee.md, "Safety numbers"): Signal's numeric fingerprint over a member's
// Matrix user id and Ed25519 master key, the same 60 digits on both sides, and the binary QR
// payload the Python SDK's SafetyNumber.matches() reads. WebCrypto only (no wasm).
//
//   h_0     = 0x00 0x00 || K || UTF-8(user id)
//   h_(i+1) = SHA-512(h_i || K)                 for i = 0 .. 5199
//   half    = for j = 0..5: (h_5200[5j : 5j+5] as a 40-bit big-endian integer) mod 100000, 5 digits
//   number  = the two halves sorted as strings, concatenated
//   QR      = "KHSN" || 0x01 || LP2(U_A) || K_A || LP2(U_B) || K_B   (ordered by the UTF-8 of the ids)

import { concat, equal, utf8 } from "../verify/bytes";
import { fromBase64, lengthPrefixed } from "./bytes";

const ITERATIONS = 5200;
const QR_MAGIC = utf8("KHSN");
const QR_VERSION = 1;

function rawKey(masterKey: string): Uint8Array<ArrayBuffer> {
  const raw = fromBase64(masterKey);
  if (raw.length !== 32) throw new Error("an Ed25519 master key is 32 bytes");
  return raw;
}

export async function fingerprintHalf(userId: string, masterKey: string): Promise<string> {
  const key = rawKey(masterKey);
  let h: Uint8Array<ArrayBuffer> = concat(new Uint8Array([0, 0]), key, utf8(userId));
  for (let i = 0; i < ITERATIONS; i++) {
    h = new Uint8Array(await crypto.subtle.digest("SHA-512", concat(h, key)));
  }
  let out = "";
  for (let j = 0; j < 6; j++) {
    let value = 0;
    for (let b = 0; b < 5; b++) value = value * 256 + h[5 * j + b]!;
    out += String(value % 100000).padStart(5, "0");
  }
  return out;
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return a.length - b.length;
}

export function qrPayload(userA: string, keyA: string, userB: string, keyB: string): Uint8Array<ArrayBuffer> {
  const pair = [
    { user: utf8(userA), key: rawKey(keyA) },
    { user: utf8(userB), key: rawKey(keyB) },
  ].sort((x, y) => compareBytes(x.user, y.user) || compareBytes(x.key, y.key));
  return concat(
    QR_MAGIC,
    new Uint8Array([QR_VERSION]),
    ...pair.flatMap(({ user, key }) => [lengthPrefixed(2, user), key]),
  );
}

export interface SafetyNumber {
  userId: string;
  masterKey: string;
  otherUserId: string;
  otherMasterKey: string;
  /** 60 digits. */
  digits: string;
  /** 12 groups of 5 digits. */
  groups: string[];
  qrPayload: Uint8Array<ArrayBuffer>;
}

export async function safetyNumber(userId: string, masterKey: string, otherUserId: string, otherMasterKey: string): Promise<SafetyNumber> {
  const halves = [await fingerprintHalf(userId, masterKey), await fingerprintHalf(otherUserId, otherMasterKey)].sort();
  const digits = halves[0]! + halves[1]!;
  const groups: string[] = [];
  for (let i = 0; i < 60; i += 5) groups.push(digits.slice(i, i + 5));
  return { userId, masterKey, otherUserId, otherMasterKey, digits, groups, qrPayload: qrPayload(userId, masterKey, otherUserId, otherMasterKey) };
}

/** Whether a scanned QR payload names exactly these two members with these two master keys. */
export function qrMatches(number: SafetyNumber, scanned: Uint8Array): boolean {
  return equal(scanned, number.qrPayload);
}
