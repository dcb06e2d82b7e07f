"""RFC 9162 (Certificate Transparency v2) Merkle tree over SHA-256, signed tree heads and
member-block commitments; pure, no storage, no keys held. The server (governance) builds the
access log with it and the SDK verifies what the server shows with the same code.

Proof generators raise ``ValueError`` (bad arguments are a caller bug); verifiers
only return ``False``, since their input usually comes from an untrusted peer.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence

from cryptography.hazmat.primitives import hashes

from keyhold.crypto.signing import verify_signature

HASH_SIZE = 32
_SHA256 = hashes.SHA256()

# Hash of the leaves [start, end) of some tree; lets one implementation of the
# RFC recursions serve both the naive pure functions and the cached tree.
_SubtreeHash = Callable[[int, int], bytes]


def _sha256(data: bytes) -> bytes:
    digest = hashes.Hash(_SHA256)
    digest.update(data)
    return digest.finalize()


EMPTY_ROOT = _sha256(b"")


def leaf_hash(entry: bytes) -> bytes:
    # The 0x00 / 0x01 prefixes keep a leaf from ever being passed off as an inner node.
    return _sha256(b"\x00" + entry)


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right)


def _split(n: int) -> int:
    # The RFC's k: largest power of two strictly less than n (n >= 2).
    return 1 << ((n - 1).bit_length() - 1)


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == HASH_SIZE


def _check_leaf_hashes(leaf_hashes: Sequence[bytes]) -> None:
    for i, h in enumerate(leaf_hashes):
        if not _is_hash(h):
            raise ValueError(f"leaf hash {i} is not a {HASH_SIZE}-byte value")


def _naive_subtree(leaf_hashes: Sequence[bytes]) -> _SubtreeHash:
    def mth(start: int, end: int) -> bytes:
        if end - start == 1:
            return leaf_hashes[start]
        mid = start + _split(end - start)
        return node_hash(mth(start, mid), mth(mid, end))

    return mth


def _path(subtree: _SubtreeHash, index: int, size: int) -> list[bytes]:
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} out of range for tree size {size}")
    # Walk down from the root; the RFC lists siblings leaf-first, so reverse at the end.
    siblings: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        mid = start + _split(end - start)
        if index < mid:
            siblings.append(subtree(mid, end))
            end = mid
        else:
            siblings.append(subtree(start, mid))
            start = mid
    siblings.reverse()
    return siblings


def _proof(subtree: _SubtreeHash, old_size: int, size: int) -> list[bytes]:
    if not 0 <= old_size <= size:
        raise ValueError(f"old size {old_size} out of range for tree size {size}")
    # RFC 9162 defines proofs only for 0 < m < n; the trivial cases get an empty
    # proof, which verify_consistency accepts for exactly these cases.
    if old_size in (0, size):
        return []
    siblings: list[bytes] = []
    start, end = 0, size
    # Once the walk leaves the left spine the old root is no longer a node the
    # verifier already knows, so the final subtree hash must be sent (SUBPROOF b=false).
    on_left_spine = True
    while True:
        if old_size == end:
            if not on_left_spine:
                siblings.append(subtree(start, end))
            break
        mid = start + _split(end - start)
        if old_size <= mid:
            siblings.append(subtree(mid, end))
            end = mid
        else:
            siblings.append(subtree(start, mid))
            start = mid
            on_left_spine = False
    siblings.reverse()
    return siblings


def root_from_leaf_hashes(leaf_hashes: Sequence[bytes]) -> bytes:
    _check_leaf_hashes(leaf_hashes)
    if not leaf_hashes:
        return EMPTY_ROOT
    return _naive_subtree(leaf_hashes)(0, len(leaf_hashes))


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    _check_leaf_hashes(leaf_hashes)
    return _path(_naive_subtree(leaf_hashes), index, len(leaf_hashes))


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    _check_leaf_hashes(leaf_hashes)
    return _proof(_naive_subtree(leaf_hashes), old_size, len(leaf_hashes))


def verify_inclusion(
    leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    # RFC 9162 §2.1.3.2. The proof alone does not commit to tree_size (any size with
    # the same path shape passes): bind size to root, e.g. in a signed tree head.
    if not (_is_hash(leaf_hash) and _is_hash(root) and all(_is_hash(p) for p in proof)):
        return False
    if not (isinstance(index, int) and isinstance(tree_size, int) and 0 <= index < tree_size):
        return False
    fn, sn = index, tree_size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            # Skip levels where this node is a lone right-edge node with no sibling.
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    # RFC 9162 §2.1.4.2, plus the trivial cases it leaves out (empty proof): an empty
    # old tree is consistent with anything, equal sizes need equal roots.
    if not (_is_hash(old_root) and _is_hash(new_root) and all(_is_hash(p) for p in proof)):
        return False
    if not (isinstance(old_size, int) and isinstance(new_size, int) and 0 <= old_size <= new_size):
        return False
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT and (new_size > 0 or new_root == EMPTY_ROOT)
    if old_size == new_size:
        return not proof and old_root == new_root
    if not proof:
        return False
    path = list(proof)
    # A power-of-two old tree is a node of the new one, so the prover omits it.
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


class MerkleTree:
    """Append-only in-memory tree; root and proofs cost O(log n) node hashes."""

    # _levels[h][i] hashes leaves [i * 2**h, (i + 1) * 2**h). A full subtree never
    # changes, so this cache needs no invalidation, and every subtree the RFC
    # recursions ask for (at any earlier size too) splits into O(log n) of them.

    def __init__(self) -> None:
        self._levels: list[list[bytes]] = [[]]

    @classmethod
    def from_leaf_hashes(cls, leaf_hashes: Iterable[bytes]) -> MerkleTree:
        tree = cls()
        for h in leaf_hashes:
            tree.append_leaf_hash(h)
        return tree

    @property
    def size(self) -> int:
        return len(self._levels[0])

    def append(self, entry: bytes) -> int:
        return self.append_leaf_hash(leaf_hash(entry))

    def append_leaf_hash(self, h: bytes) -> int:
        if not _is_hash(h):
            raise ValueError(f"leaf hash is not a {HASH_SIZE}-byte value")
        index = self.size
        self._levels[0].append(h)
        level = 0
        # An even count at a level means its last two nodes just became a full pair.
        while len(self._levels[level]) % 2 == 0:
            row = self._levels[level]
            if level + 1 == len(self._levels):
                self._levels.append([])
            self._levels[level + 1].append(node_hash(row[-2], row[-1]))
            level += 1
        return index

    def truncate(self, size: int) -> None:
        """Drop the leaves after ``size`` (undo appends whose storage transaction failed)."""
        size = self._check_size(size)
        for height, row in enumerate(self._levels):
            del row[size >> height :]

    def _subtree(self, start: int, end: int) -> bytes:
        n = end - start
        if n & (n - 1) == 0 and start % n == 0:
            height = n.bit_length() - 1
            return self._levels[height][start >> height]
        mid = start + _split(n)
        return node_hash(self._subtree(start, mid), self._subtree(mid, end))

    def _check_size(self, tree_size: int | None) -> int:
        if tree_size is None:
            return self.size
        if not 0 <= tree_size <= self.size:
            raise ValueError(f"tree size {tree_size} out of range for a tree of {self.size} leaves")
        return tree_size

    def root(self, tree_size: int | None = None) -> bytes:
        """Root of the whole tree, or of its first ``tree_size`` leaves."""
        size = self._check_size(tree_size)
        return self._subtree(0, size) if size else EMPTY_ROOT

    def inclusion_proof(self, index: int, tree_size: int | None = None) -> list[bytes]:
        return _path(self._subtree, index, self._check_size(tree_size))

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        return _proof(self._subtree, old_size, self._check_size(new_size))


# -- what signed tree heads and member blocks commit to (shared by the server and the SDK) ------

# One service key signs the heads of two logs; the prefix says which log a head belongs to, so
# a head of one can never be passed off as a head of the other.
STH_PREFIX = b"keyhold-sth/v1"  # the access log
KEY_STH_PREFIX = b"keyhold-key-sth/v1"  # the key-transparency log of e2ee keys
BLOCK_PREFIX = b"keyhold-block/v1"


def sth_message(size: int, root: bytes, timestamp_ms: int, prefix: bytes = STH_PREFIX) -> bytes:
    """The bytes a signed tree head signs: prefix, size and timestamp as 8-byte big-endian."""
    return prefix + struct.pack(">Q", size) + root + struct.pack(">Q", timestamp_ms)


def head_signature_valid(
    public_key: bytes, signature: bytes, size: int, root: bytes, timestamp_ms: int, prefix: bytes = STH_PREFIX
) -> bool:
    """Whether `signature` is the Ed25519 signature of that tree head by `public_key`."""
    return verify_signature(public_key, signature, sth_message(size, root, timestamp_ms, prefix))


def block_hash(block: bytes) -> str:
    """The commitment to a member block that its entry lists in `subjects` (hex)."""
    return leaf_hash(BLOCK_PREFIX + block).hex()
