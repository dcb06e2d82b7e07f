// Files in e2ee conversations, in Matrix's encrypted-attachment format (`v2`), as the Python
// SDK writes them (keyhold.crypto.encrypted_file): AES-256-CTR with a fresh key, a random 64-bit
// nonce and a zero 64-bit counter; only the ciphertext is uploaded; key, IV and the ciphertext's
// SHA-256 travel inside the encrypted message, with the plaintext's SHA-256
// (`keyhold.plaintext_sha256`, which the franking commitment covers). WebCrypto only.

import { concat, equal, sha256 } from "../verify/bytes";
import { fromBase64, isRecord, toUnpaddedBase64 } from "./bytes";

export const PLAINTEXT_SHA256_FIELD = "keyhold.plaintext_sha256";

function toBase64Url(bytes: Uint8Array): string {
  return toUnpaddedBase64(bytes).replace(/\+/g, "-").replace(/\//g, "_");
}

function fromBase64Url(text: string): Uint8Array<ArrayBuffer> {
  return fromBase64(text.replace(/-/g, "+").replace(/_/g, "/"));
}

async function aesCtr(key: Uint8Array<ArrayBuffer>, iv: Uint8Array<ArrayBuffer>, data: Uint8Array<ArrayBuffer>): Promise<Uint8Array<ArrayBuffer>> {
  const cryptoKey = await crypto.subtle.importKey("raw", key, { name: "AES-CTR" }, false, ["encrypt"]);
  return new Uint8Array(await crypto.subtle.encrypt({ name: "AES-CTR", counter: iv, length: 64 }, cryptoKey, data));
}

export interface EncryptedFile {
  ciphertext: Uint8Array<ArrayBuffer>;
  /** The `file` object of the message, without `url`. */
  file: Record<string, unknown>;
  plaintextSha256: string;
}

export async function encryptFile(data: Uint8Array<ArrayBuffer>): Promise<EncryptedFile> {
  const key = crypto.getRandomValues(new Uint8Array(32));
  const iv = concat(crypto.getRandomValues(new Uint8Array(8)), new Uint8Array(8));
  const ciphertext = await aesCtr(key, iv, data);
  return {
    ciphertext,
    file: {
      v: "v2",
      key: { kty: "oct", key_ops: ["encrypt", "decrypt"], alg: "A256CTR", k: toBase64Url(key), ext: true },
      iv: toUnpaddedBase64(iv),
      hashes: { sha256: toUnpaddedBase64(await sha256(ciphertext)) },
    },
    plaintextSha256: toUnpaddedBase64(await sha256(data)),
  };
}

/** The file, once its ciphertext's SHA-256 (and the plaintext's, if named) check; throws otherwise. */
export async function decryptFile(
  ciphertext: Uint8Array<ArrayBuffer>,
  file: unknown,
  plaintextSha256: unknown,
): Promise<Uint8Array<ArrayBuffer>> {
  if (!isRecord(file) || file.v !== "v2" || !isRecord(file.key) || !isRecord(file.hashes)) {
    throw new Error("the message's file object is malformed");
  }
  if (file.key.alg !== "A256CTR" || file.key.kty !== "oct") throw new Error("not an AES-256-CTR key");
  let key: Uint8Array<ArrayBuffer>;
  let iv: Uint8Array<ArrayBuffer>;
  let expected: Uint8Array<ArrayBuffer>;
  try {
    key = fromBase64Url(String(file.key.k));
    iv = fromBase64(String(file.iv));
    expected = fromBase64(String(file.hashes.sha256));
  } catch {
    throw new Error("the message's file object is malformed");
  }
  if (key.length !== 32 || iv.length !== 16) throw new Error("the file's key or IV has the wrong length");
  if (!equal(await sha256(ciphertext), expected)) throw new Error("the file is not the one the message names (its hash differs)");
  const data = await aesCtr(key, iv, ciphertext);
  if (typeof plaintextSha256 === "string" && toUnpaddedBase64(await sha256(data)) !== plaintextSha256.replace(/=+$/, "")) {
    throw new Error("the decrypted file is not the one its sender committed to");
  }
  return data;
}
