// RFC 9162 (Certificate Transparency v2) Merkle tree hashing over SHA-256, as
// src/keyhold/crypto/merkle.py does it: leaf SHA-256(0x00 || entry), node
// SHA-256(0x01 || left || right); inclusion (§2.1.3.2) and consistency (§2.1.4.2) proofs, plus
// the trivial consistency cases the RFC leaves out (empty old tree, equal sizes), exactly as the
// Python verifier accepts them. Verifiers return false, never throw: their input comes from the
// server, which they do not trust. Index arithmetic uses plain numbers (exact up to 2^53), not
// 32-bit bitwise operators.

import { type Bytes, concat, equal, fromHex, sha256, utf8 } from "./bytes";

export const HASH_SIZE = 32;
export const BLOCK_PREFIX = utf8("keyhold-block/v1");
const LEAF = Uint8Array.of(0);
const NODE = Uint8Array.of(1);

export function leafHash(entry: Uint8Array): Promise<Bytes> {
  return sha256(concat(LEAF, entry));
}

export function nodeHash(left: Uint8Array, right: Uint8Array): Promise<Bytes> {
  return sha256(concat(NODE, left, right));
}

export const emptyRoot = (): Promise<Bytes> => sha256(new Uint8Array(0));

/** The commitment to a member block that its entry lists in `subjects` (hex, as in Python). */
export async function blockHash(block: Uint8Array): Promise<Bytes> {
  return leafHash(concat(BLOCK_PREFIX, block));
}

/** A proof as the API sends it (hex hashes), or null if any element is not a 32-byte hash. */
export function parseProof(proof: unknown): Bytes[] | null {
  if (!Array.isArray(proof)) return null;
  const out: Bytes[] = [];
  for (const p of proof) {
    const h = fromHex(p, HASH_SIZE);
    if (!h) return null;
    out.push(h);
  }
  return out;
}

function isHash(value: unknown): value is Uint8Array {
  return value instanceof Uint8Array && value.length === HASH_SIZE;
}

const odd = (n: number): boolean => n % 2 === 1;
const half = (n: number): number => Math.floor(n / 2);
const isSize = (n: unknown): n is number => typeof n === "number" && Number.isSafeInteger(n) && n >= 0;

function isPowerOfTwo(n: number): boolean {
  while (n > 1 && !odd(n)) n = half(n);
  return n === 1;
}

/** Whether `proof` shows `leaf` at `index` of the tree of `treeSize` leaves with `root`. */
export async function verifyInclusion(
  leaf: Uint8Array,
  index: number,
  treeSize: number,
  proof: readonly Uint8Array[],
  root: Uint8Array,
): Promise<boolean> {
  if (!isHash(leaf) || !isHash(root) || !proof.every(isHash)) return false;
  if (!isSize(index) || !isSize(treeSize) || index >= treeSize) return false;
  let fn = index;
  let sn = treeSize - 1;
  let r: Uint8Array = leaf;
  for (const p of proof) {
    if (sn === 0) return false;
    if (odd(fn) || fn === sn) {
      r = await nodeHash(p, r);
      // Skip levels where this node is a lone right-edge node with no sibling.
      while (fn !== 0 && !odd(fn)) {
        fn = half(fn);
        sn = half(sn);
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn = half(fn);
    sn = half(sn);
  }
  return sn === 0 && equal(r, root);
}

/** Whether the tree of `newSize` leaves (`newRoot`) extends the one of `oldSize` (`oldRoot`). */
export async function verifyConsistency(
  oldSize: number,
  newSize: number,
  oldRoot: Uint8Array,
  newRoot: Uint8Array,
  proof: readonly Uint8Array[],
): Promise<boolean> {
  if (!isHash(oldRoot) || !isHash(newRoot) || !proof.every(isHash)) return false;
  if (!isSize(oldSize) || !isSize(newSize) || oldSize > newSize) return false;
  if (oldSize === 0) {
    const empty = await emptyRoot();
    return proof.length === 0 && equal(oldRoot, empty) && (newSize > 0 || equal(newRoot, empty));
  }
  if (oldSize === newSize) return proof.length === 0 && equal(oldRoot, newRoot);
  if (proof.length === 0) return false;
  const path = [...proof];
  // A power-of-two old tree is a node of the new one, so the prover omits it.
  if (isPowerOfTwo(oldSize)) path.unshift(oldRoot);
  let fn = oldSize - 1;
  let sn = newSize - 1;
  while (odd(fn)) {
    fn = half(fn);
    sn = half(sn);
  }
  let fr: Uint8Array = path[0];
  let sr: Uint8Array = path[0];
  for (const c of path.slice(1)) {
    if (sn === 0) return false;
    if (odd(fn) || fn === sn) {
      fr = await nodeHash(c, fr);
      sr = await nodeHash(c, sr);
      while (fn !== 0 && !odd(fn)) {
        fn = half(fn);
        sn = half(sn);
      }
    } else {
      sr = await nodeHash(sr, c);
    }
    fn = half(fn);
    sn = half(sn);
  }
  return sn === 0 && equal(fr, oldRoot) && equal(sr, newRoot);
}

/**
 * An append-only tree that keeps only the roots of its full subtrees (a binary counter), enough
 * to give the root of every prefix it passes through: an auditor streams all entries through it
 * and checks each signed head's root on the way, in O(n) hashes and O(log n) memory.
 */
export class RootBuilder {
  // stack[i] is the root of a full subtree; sizes strictly decrease left to right.
  private stack: { size: number; hash: Bytes }[] = [];
  size = 0;

  async append(entry: Uint8Array): Promise<void> {
    await this.appendLeafHash(await leafHash(entry));
  }

  async appendLeafHash(hash: Bytes): Promise<void> {
    let node = { size: 1, hash };
    while (this.stack.length > 0 && this.stack[this.stack.length - 1].size === node.size) {
      const left = this.stack.pop()!;
      node = { size: left.size * 2, hash: await nodeHash(left.hash, node.hash) };
    }
    this.stack.push(node);
    this.size += 1;
  }

  /** Root of the leaves appended so far (RFC 9162 MTH: fold the full subtrees from the right). */
  async root(): Promise<Bytes> {
    if (this.stack.length === 0) return emptyRoot();
    let acc = this.stack[this.stack.length - 1].hash;
    for (let i = this.stack.length - 2; i >= 0; i--) acc = await nodeHash(this.stack[i].hash, acc);
    return acc;
  }
}
