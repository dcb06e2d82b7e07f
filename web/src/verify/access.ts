// A member's access events (`GET /account/access-events`), checked as keyhold.sdk.verify does
// (verify_access_event), in the same order, but saying which check failed:
// - the tree head is signed by the service's published key;
// - the member block is committed to by the entry (its hash is one of the entry's subjects),
//   names the same index and this member;
// - the convenience fields (type, messages) are what the signed bytes say;
// - the entry is leaf `index` of the signed tree (RFC 9162 inclusion proof).

import { api } from "../api";
import { isIndex, toHex, utf8 } from "./bytes";
import { blockHash, leafHash, parseProof, verifyConsistency, verifyInclusion } from "./merkle";
import { type Check, checkTreeHead, fail, OK, parseHead, STH_PREFIX, type TreeHeadJson } from "./sth";

export interface AccessEventItem {
  index: number;
  entry: string;
  block: string;
  type: string;
  time: string;
  case: { id: number; kind: string } | null;
  messages: number[];
  inclusion_proof: string[];
}

export interface AccessEvents {
  tree_head: TreeHeadJson | null;
  items: AccessEventItem[];
}

export const MISMATCH = "inclusion proof does not match the signed tree head";

function parseObject(text: string): Record<string, unknown> | null {
  try {
    const value: unknown = JSON.parse(text);
    return value && typeof value === "object" && !Array.isArray(value) ? (value as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

const sameJson = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);

/**
 * One item against a head whose signature was already checked (`checkTreeHead`); `userId` is
 * the member the block must name (null: any member).
 */
export async function checkAccessEvent(item: unknown, head: TreeHeadJson, userId: number | null): Promise<Check> {
  const parsedHead = parseHead(head);
  if (!parsedHead) return fail("the signed tree head is malformed");
  if (!item || typeof item !== "object") return fail("the event is malformed");
  const it = item as Record<string, unknown>;
  const index = it.index;
  if (typeof it.entry !== "string" || typeof it.block !== "string" || !isIndex(index)) {
    return fail("the event is missing its entry, its member block or its index");
  }
  const entryBytes = utf8(it.entry);
  const blockBytes = utf8(it.block);
  const entry = parseObject(it.entry);
  if (!entry) return fail("the log entry is not a JSON object");
  const block = parseObject(it.block);
  if (!block) return fail("your member block is not a JSON object");
  const subjects = entry.subjects;
  if (!Array.isArray(subjects) || !subjects.includes(toHex(await blockHash(blockBytes)))) {
    return fail("your member block is not committed to by the log entry (its hash is not among the entry's subjects)");
  }
  if (entry.idx !== index) return fail(`the log entry says it is entry ${String(entry.idx)}, not ${index}`);
  if (block.idx !== index) return fail(`your member block belongs to entry ${String(block.idx)}, not ${index}`);
  if (!isIndex(block.user) || (userId !== null && block.user !== userId)) {
    return fail("the member block names another member, not you");
  }
  if ("type" in it && it.type !== entry.type) return fail("the event's type is not the one in the signed entry");
  if ("messages" in it && !sameJson(it.messages, block.messages)) {
    return fail("the messages listed are not the ones in your member block");
  }
  const proof = parseProof(it.inclusion_proof);
  if (!proof) return fail("the inclusion proof is malformed (not a list of 32-byte hex hashes)");
  if (!(await verifyInclusion(await leafHash(entryBytes), index, parsedHead.size, proof, parsedHead.root))) {
    return fail(MISMATCH);
  }
  return OK;
}

export interface CheckedEvents {
  head: TreeHeadJson | null;
  headCheck: Check;
  items: { item: AccessEventItem; check: Check }[];
}

/** Every item of the response, each with its own result (a failed head fails them all). */
export async function checkAccessEvents(data: AccessEvents, userId: number | null, pinnedKey: string | null): Promise<CheckedEvents> {
  const items = Array.isArray(data?.items) ? data.items : [];
  const head = data?.tree_head ?? null;
  if (items.length === 0) return { head, headCheck: head ? await checkTreeHead(head, pinnedKey) : OK, items: [] };
  const headCheck = await checkTreeHead(head, pinnedKey);
  const checked = [];
  for (const item of items) {
    const check = headCheck.ok ? await checkAccessEvent(item, head!, userId) : fail(headCheck.reason);
    checked.push({ item, check });
  }
  return { head, headCheck, items: checked };
}

/**
 * Whether `newer` extends `older` (the log only grew): both signed by the same key, and the
 * server's consistency proof between their sizes verifies. As verify_consistency_between.
 * `prefix` is the log's head prefix (the access log's, or KEY_STH_PREFIX for the e2ee key log).
 */
export async function checkConsistency(older: TreeHeadJson, newer: TreeHeadJson, proofHex: unknown, prefix = STH_PREFIX): Promise<Check> {
  const a = parseHead(older);
  const b = parseHead(newer);
  if (!a || !b) return fail("a signed tree head is malformed");
  if (older.public_key.toLowerCase() !== newer.public_key.toLowerCase()) return fail("the two heads are signed by different keys");
  const [ca, cb] = [await checkTreeHead(older, null, prefix), await checkTreeHead(newer, null, prefix)];
  if (!ca.ok) return fail(`the older head: ${ca.reason}`);
  if (!cb.ok) return fail(`the newer head: ${cb.reason}`);
  if (a.size > b.size) return fail("the newer head is smaller than the older one: the log shrank");
  const proof = parseProof(proofHex);
  if (!proof) return fail("the consistency proof is malformed (not a list of 32-byte hex hashes)");
  if (!(await verifyConsistency(a.size, b.size, a.root, b.root, proof))) {
    return fail(`consistency proof does not show that the tree of ${b.size} entries extends the one of ${a.size}: the log was rewritten`);
  }
  return OK;
}

/** Fetch the consistency proof between two heads and check it. */
export async function fetchAndCheckConsistency(older: TreeHeadJson, newer: TreeHeadJson): Promise<Check> {
  const [first, second] = older.size <= newer.size ? [older, newer] : [newer, older];
  const proof = await api<{ proof: string[] }>("GET", "/transparency/proof/consistency", {
    query: { first: first.size, second: second.size },
  });
  return checkConsistency(first, second, proof.proof);
}
