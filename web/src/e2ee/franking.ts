// Message franking, version 1 (docs/e2ee.md, "Verifiable reports"): the sender puts a fresh
// 32-byte key inside the encrypted content and an HMAC commitment beside the ciphertext; a
// recipient checks it when it decrypts, and a report reveals the content and the key.
//
//   commitment = HMAC-SHA256(kf, LP(canonical(content without kf)) || LP(room_id) || LP(sender) || LP(device_id))
//
// with LP(x) = x's UTF-8 bytes preceded by their length as 4 bytes, big-endian.

import { equal, utf8 } from "../verify/bytes";
import { canonicalJson } from "../verify/sth";
import { fromBase64, lengthPrefixed, toUnpaddedBase64 } from "./bytes";

export const FRANKING_VERSION = 1;
export const FRANKING_KEY_FIELD = "keyhold.franking_key";
const KEY_BYTES = 32;

export interface FrankingSent {
  version: number;
  commitment: string;
}

/** As the service delivers it with a message. */
export interface FrankingDelivered extends FrankingSent {
  key_id?: string;
  tag?: string;
  sender_device?: string;
}

function committed(content: Record<string, unknown>): Uint8Array<ArrayBuffer> {
  const rest: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(content)) if (key !== FRANKING_KEY_FIELD) rest[key] = value;
  return utf8(canonicalJson(rest));
}

export async function commitment(
  key: Uint8Array<ArrayBuffer>,
  content: Record<string, unknown>,
  roomId: string,
  sender: string,
  deviceId: string,
): Promise<Uint8Array<ArrayBuffer>> {
  if (key.length !== KEY_BYTES) throw new Error(`a franking key is ${KEY_BYTES} bytes`);
  const message = lengthPrefixed(4, committed(content), utf8(roomId), utf8(sender), utf8(deviceId));
  const hmacKey = await crypto.subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await crypto.subtle.sign("HMAC", hmacKey, message));
}

/** A fresh franking key, the content with it inside, and the commitment to send beside it. */
export async function frank(
  content: Record<string, unknown>,
  roomId: string,
  sender: string,
  deviceId: string,
): Promise<{ content: Record<string, unknown>; franking: FrankingSent }> {
  const key = crypto.getRandomValues(new Uint8Array(KEY_BYTES));
  const inside = { ...content, [FRANKING_KEY_FIELD]: toUnpaddedBase64(key) };
  const sealed = await commitment(key, inside, roomId, sender, deviceId);
  return { content: inside, franking: { version: FRANKING_VERSION, commitment: toUnpaddedBase64(sealed) } };
}

/**
 * Why a delivered franking does not open for this content, or null when it does: the key
 * inside must open the commitment for this conversation, the sender, and the device whose
 * room key opened the message, which must be the `sender_device` the service names.
 */
export async function frankingProblem(
  franked: FrankingDelivered,
  content: Record<string, unknown>,
  roomId: string,
  sender: string,
  senderDevice: string | null,
): Promise<string | null> {
  const claimed = franked.sender_device;
  if (senderDevice !== null && claimed !== senderDevice) return "franked for another device than the one that sent it";
  let key: Uint8Array<ArrayBuffer>;
  let expected: Uint8Array<ArrayBuffer>;
  try {
    key = fromBase64(String(content[FRANKING_KEY_FIELD]));
    expected = fromBase64(String(franked.commitment));
  } catch {
    return "its franking key or commitment is malformed";
  }
  try {
    const actual = await commitment(key, content, roomId, sender, String(claimed));
    if (equal(actual, expected)) return null;
  } catch {
    return "its franking key or content is malformed";
  }
  return "its franking commitment does not match what it says";
}
