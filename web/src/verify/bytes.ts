// Bytes helpers for the verifiers: hex as the API writes it (lowercase, even length), UTF-8,
// SHA-256 through WebCrypto. Nothing here trusts its input: parsers return null on anything odd.

export type Bytes = Uint8Array<ArrayBuffer>;

const HEX = /^(?:[0-9a-fA-F]{2})*$/;

/** Bytes of a hex string, or null if it is not hex (or not `length` bytes long when given). */
export function fromHex(value: unknown, length?: number): Bytes | null {
  if (typeof value !== "string" || !HEX.test(value)) return null;
  const out = new Uint8Array(value.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(value.slice(2 * i, 2 * i + 2), 16);
  if (length !== undefined && out.length !== length) return null;
  return out;
}

export function toHex(bytes: Uint8Array): string {
  let out = "";
  for (const b of bytes) out += b.toString(16).padStart(2, "0");
  return out;
}

const encoder = new TextEncoder();

export function utf8(text: string): Bytes {
  return encoder.encode(text) as Bytes;
}

export function concat(...parts: Uint8Array[]): Bytes {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

export async function sha256(data: Uint8Array): Promise<Bytes> {
  const copy = data.buffer instanceof ArrayBuffer ? (data as Bytes) : new Uint8Array(data);
  return new Uint8Array(await crypto.subtle.digest("SHA-256", copy));
}

/** An unsigned integer as 8 bytes, big-endian (sizes and timestamps in signed tree heads). */
export function uint64be(value: number): Bytes {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(value));
  return out;
}

/** A JSON number that is a non-negative safe integer (a JSON `true` is not a size). */
export function isIndex(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

/** Standard base64 of bytes (a legal document upload), chunked so large files do not overflow. */
export function toBase64(bytes: Uint8Array): string {
  let binary = "";
  const chunk = 0x8000;
  for (let i = 0; i < bytes.length; i += chunk) {
    binary += String.fromCharCode(...bytes.subarray(i, i + chunk));
  }
  return btoa(binary);
}
