// A disclosure package (POST /staff/legal/{id}/disclosure), checked as docs/governance.md's
// verify_package.py does: the SHA-256 of the canonical JSON of {manifest, data} is the one
// signed, the signature is the service key's (Ed25519 over the 32 digest bytes), and each data
// section hashes to the manifest's value for it.

import { fromHex, sha256, toHex, utf8 } from "./bytes";
import { type Check, canonicalJson, ed25519Verify, fail, OK } from "./sth";

export interface DisclosurePackage {
  manifest: Record<string, unknown> & { sections?: Record<string, string>; case?: number };
  data: Record<string, unknown>;
  signature: { algorithm: string; public_key: string; sha256: string; value: string; over?: string };
}

export async function checkPackage(pkg: DisclosurePackage, pinnedKey: string): Promise<Check> {
  const signature = pkg?.signature;
  if (!pkg || typeof pkg.manifest !== "object" || typeof pkg.data !== "object" || !signature) {
    return fail("the package is malformed (manifest, data or signature missing)");
  }
  if (signature.algorithm !== "Ed25519") return fail("the package is not signed with Ed25519");
  let digest: string;
  try {
    digest = toHex(await sha256(utf8(canonicalJson({ manifest: pkg.manifest, data: pkg.data }))));
  } catch (error) {
    return fail(`the package cannot be put in canonical form: ${(error as Error).message}`);
  }
  if (digest !== signature.sha256) return fail("the package content does not match its digest");
  if (signature.public_key?.toLowerCase() !== pinnedKey.toLowerCase()) return fail("the package is signed by another key than the service's");
  const key = fromHex(signature.public_key, 32);
  const value = fromHex(signature.value, 64);
  const signed = fromHex(digest, 32);
  if (!key || !value || !signed || !(await ed25519Verify(key, value, signed))) return fail("the package signature does not verify");
  const sections = pkg.manifest.sections ?? {};
  const names = Object.keys(pkg.data).sort();
  if (names.join() !== Object.keys(sections).sort().join()) return fail("the manifest does not list exactly the package's sections");
  for (const name of names) {
    const hash = toHex(await sha256(utf8(canonicalJson(pkg.data[name]))));
    if (hash !== sections[name]) return fail(`the section ${name} does not match the manifest`);
  }
  return OK;
}
