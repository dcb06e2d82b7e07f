// Byte helpers only the e2ee code needs: Matrix's unpadded base64, Matrix's signing bytes,
// length prefixes. UTF-8, concatenation, hex, SHA-256, byte comparison and canonical JSON are
// ../verify/bytes.ts and ../verify/sth.ts (one implementation of each): import them from there.
// No crypto core here (WebCrypto only): this module is small and may be imported from anywhere
// without pulling in the wasm.

import { concat, toBase64, utf8 } from "../verify/bytes";
import { canonicalJson } from "../verify/sth";

/** Unpadded standard base64, as Matrix writes keys and signatures. */
export function toUnpaddedBase64(bytes: Uint8Array): string {
  return toBase64(bytes).replace(/=+$/, "");
}

/** Unpadded (or padded) standard base64; throws on anything else. */
export function fromBase64(text: string): Uint8Array<ArrayBuffer> {
  const stripped = text.replace(/=+$/, "");
  if (!/^[A-Za-z0-9+/]*$/.test(stripped) || stripped.length % 4 === 1) throw new Error("not base64");
  const binary = atob(stripped + "=".repeat((4 - (stripped.length % 4)) % 4));
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

/** The bytes a Matrix signature covers: canonical JSON without `signatures` and `unsigned`. */
export function signingBytes(object: Record<string, unknown>): Uint8Array<ArrayBuffer> {
  const rest: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(object)) {
    if (key !== "signatures" && key !== "unsigned") rest[key] = value;
  }
  return utf8(canonicalJson(rest));
}

/** Each part preceded by its length as a big-endian integer of `width` bytes (2 or 4). */
export function lengthPrefixed(width: 2 | 4, ...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const pieces: Uint8Array[] = [];
  for (const part of parts) {
    const length = new Uint8Array(width);
    const view = new DataView(length.buffer);
    if (width === 4) view.setUint32(0, part.length);
    else {
      if (part.length > 0xffff) throw new Error("too long for a 2-byte length");
      view.setUint16(0, part.length);
    }
    pieces.push(length, part);
  }
  return concat(...pieces);
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
