"""RFC 9162 Merkle tree: public CT vectors plus property tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyhold.crypto import merkle
from keyhold.crypto.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)

VECTORS_PATH = Path(__file__).resolve().parents[2] / "shared" / "vectors" / "rfc9162-merkle.json"
VECTORS: dict[str, Any] = json.loads(VECTORS_PATH.read_text())
LEAVES = [leaf_hash(bytes.fromhex(h)) for h in VECTORS["leaves_hex"]]


def _hexes(proof: list[bytes]) -> list[str]:
    return [p.hex() for p in proof]


def _flip(proof: list[bytes], i: int) -> list[bytes]:
    tampered = list(proof)
    tampered[i] = bytes([tampered[i][0] ^ 0x01]) + tampered[i][1:]
    return tampered


# ---------------------------------------------------------------- public vectors


def test_empty_root() -> None:
    assert EMPTY_ROOT.hex() == VECTORS["empty_root"]
    assert root_from_leaf_hashes([]).hex() == VECTORS["empty_root"]
    assert MerkleTree().root().hex() == VECTORS["empty_root"]


@pytest.mark.parametrize("size", sorted(int(s) for s in VECTORS["roots_by_size"]))
def test_vector_roots(size: int) -> None:
    expected = VECTORS["roots_by_size"][str(size)]
    assert root_from_leaf_hashes(LEAVES[:size]).hex() == expected
    assert MerkleTree.from_leaf_hashes(LEAVES[:size]).root().hex() == expected
    assert MerkleTree.from_leaf_hashes(LEAVES).root(size).hex() == expected


@pytest.mark.parametrize("vec", VECTORS["inclusion"], ids=lambda v: f"{v['index']}@{v['size']}")
def test_vector_inclusion(vec: dict[str, Any]) -> None:
    index, size = vec["index"], vec["size"]
    root = bytes.fromhex(VECTORS["roots_by_size"][str(size)])
    assert _hexes(inclusion_proof(LEAVES[:size], index)) == vec["proof"]
    assert _hexes(MerkleTree.from_leaf_hashes(LEAVES).inclusion_proof(index, size)) == vec["proof"]
    proof = [bytes.fromhex(p) for p in vec["proof"]]
    assert verify_inclusion(LEAVES[index], index, size, proof, root)
    assert not verify_inclusion(LEAVES[index], index, size, _flip(proof, 0), root)


@pytest.mark.parametrize("vec", VECTORS["consistency"], ids=lambda v: f"{v['size1']}->{v['size2']}")
def test_vector_consistency(vec: dict[str, Any]) -> None:
    old, new = vec["size1"], vec["size2"]
    old_root = bytes.fromhex(VECTORS["roots_by_size"][str(old)])
    new_root = bytes.fromhex(VECTORS["roots_by_size"][str(new)])
    assert _hexes(consistency_proof(LEAVES[:new], old)) == vec["proof"]
    assert _hexes(MerkleTree.from_leaf_hashes(LEAVES).consistency_proof(old, new)) == vec["proof"]
    proof = [bytes.fromhex(p) for p in vec["proof"]]
    assert verify_consistency(old, new, old_root, new_root, proof)
    assert not verify_consistency(old, new, old_root, new_root, _flip(proof, -1))


# ---------------------------------------------------------------- properties

entries_st = st.lists(st.binary(max_size=12), min_size=1, max_size=48, unique=True)


def _path_shape(index: int, size: int) -> tuple[bool, ...]:
    """Which side each sibling sits on, leaf first: all a proof says about the size."""
    shape: list[bool] = []
    start, end = 0, size
    while end - start > 1:
        mid = start + (1 << ((end - start - 1).bit_length() - 1))
        shape.append(index >= mid)
        start, end = (mid, end) if index >= mid else (start, mid)
    return tuple(reversed(shape))


@given(entries=entries_st, data=st.data())
def test_inclusion_proofs_verify_and_resist_tampering(entries: list[bytes], data: st.DataObject) -> None:
    leaves = [leaf_hash(e) for e in entries]
    n = len(leaves)
    root = root_from_leaf_hashes(leaves)
    index = data.draw(st.integers(0, n - 1), label="index")
    proof = inclusion_proof(leaves, index)
    assert verify_inclusion(leaves[index], index, n, proof, root)

    for i in range(len(proof)):
        assert not verify_inclusion(leaves[index], index, n, _flip(proof, i), root)
    assert not verify_inclusion(leaves[index], index, n, proof, _flip([root], 0)[0])
    assert not verify_inclusion(leaves[index], index, n, [*proof, root], root)
    if proof:
        assert not verify_inclusion(leaves[index], index, n, proof[:-1], root)

    other = data.draw(st.integers(0, n - 1).filter(lambda j: j != index), label="other") if n > 1 else None
    if other is not None:
        assert not verify_inclusion(leaves[index], other, n, proof, root)
        assert not verify_inclusion(leaves[other], index, n, proof, root)

    # The RFC proof carries only a path shape, so a wrong size is caught exactly when
    # its shape differs; signed tree heads are what bind size to root.
    wrong_size = data.draw(st.integers(index + 1, 2 * n + 2).filter(lambda s: s != n), label="size")
    expect = _path_shape(index, wrong_size) == _path_shape(index, n)
    assert verify_inclusion(leaves[index], index, wrong_size, proof, root) is expect


@given(entries=entries_st, data=st.data())
def test_consistency_proofs_verify_and_resist_tampering(entries: list[bytes], data: st.DataObject) -> None:
    leaves = [leaf_hash(e) for e in entries]
    new = data.draw(st.integers(1, len(leaves)), label="new")
    old = data.draw(st.integers(0, new), label="old")
    old_root, new_root = root_from_leaf_hashes(leaves[:old]), root_from_leaf_hashes(leaves[:new])
    proof = consistency_proof(leaves[:new], old)
    assert verify_consistency(old, new, old_root, new_root, proof)

    bad_old, bad_new = _flip([old_root], 0)[0], _flip([new_root], 0)[0]
    assert not verify_consistency(old, new, bad_old, new_root, proof)
    if old:  # anything extends the empty tree, so only then is new_root constrained
        assert not verify_consistency(old, new, old_root, bad_new, proof)
    for i in range(len(proof)):
        assert not verify_consistency(old, new, old_root, new_root, _flip(proof, i))
    assert not verify_consistency(old, new, old_root, new_root, [*proof, new_root])
    if proof:
        assert not verify_consistency(old, new, old_root, new_root, proof[:-1])
        assert not verify_consistency(old, new, old_root, new_root, [])
    if old < new:
        assert not verify_consistency(new, old, new_root, old_root, proof)
    # A different old tree of the same size must not pass as a prefix of the new one.
    if 0 < old < new:
        forged = root_from_leaf_hashes([*leaves[: old - 1], leaf_hash(b"forged" + entries[old - 1])])
        assert not verify_consistency(old, new, forged, new_root, proof)


@settings(max_examples=50)
@given(entries=entries_st, data=st.data())
def test_cached_tree_matches_pure_functions(entries: list[bytes], data: st.DataObject) -> None:
    tree = MerkleTree()
    leaves: list[bytes] = []
    for i, entry in enumerate(entries):
        assert tree.append(entry) == i
        leaves.append(leaf_hash(entry))
        assert tree.size == i + 1
        assert tree.root() == root_from_leaf_hashes(leaves)
    for _ in range(5):
        size = data.draw(st.integers(1, len(leaves)), label="size")
        index = data.draw(st.integers(0, size - 1), label="index")
        old = data.draw(st.integers(0, size), label="old")
        assert tree.root(size) == root_from_leaf_hashes(leaves[:size])
        assert tree.inclusion_proof(index, size) == inclusion_proof(leaves[:size], index)
        assert tree.consistency_proof(old, size) == consistency_proof(leaves[:size], old)
    assert tree.inclusion_proof(0) == inclusion_proof(leaves, 0)
    assert tree.consistency_proof(1) == consistency_proof(leaves, 1)


# ---------------------------------------------------------------- edges and cost


def test_trivial_consistency_cases() -> None:
    root3 = root_from_leaf_hashes(LEAVES[:3])
    assert consistency_proof(LEAVES[:3], 3) == []
    assert consistency_proof(LEAVES[:3], 0) == []
    assert verify_consistency(3, 3, root3, root3, [])
    assert not verify_consistency(3, 3, root3, EMPTY_ROOT, [])
    assert not verify_consistency(3, 3, root3, root3, [root3])
    assert verify_consistency(0, 3, EMPTY_ROOT, root3, [])
    assert not verify_consistency(0, 3, root3, root3, [])
    assert verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    assert verify_inclusion(LEAVES[0], 0, 1, [], LEAVES[0])


def test_invalid_arguments_raise() -> None:
    with pytest.raises(ValueError, match="out of range"):
        inclusion_proof(LEAVES, 8)
    with pytest.raises(ValueError, match="out of range"):
        inclusion_proof(LEAVES, -1)
    with pytest.raises(ValueError, match="out of range"):
        inclusion_proof([], 0)
    with pytest.raises(ValueError, match="out of range"):
        consistency_proof(LEAVES[:3], 4)
    with pytest.raises(ValueError, match="out of range"):
        consistency_proof(LEAVES[:3], -1)
    with pytest.raises(ValueError, match="32-byte"):
        root_from_leaf_hashes([b"short"])
    tree = MerkleTree.from_leaf_hashes(LEAVES[:3])
    with pytest.raises(ValueError, match="out of range"):
        tree.root(4)
    with pytest.raises(ValueError, match="out of range"):
        tree.inclusion_proof(3)
    with pytest.raises(ValueError, match="out of range"):
        tree.consistency_proof(2, 4)
    with pytest.raises(ValueError, match="32-byte"):
        tree.append_leaf_hash(b"\x00" * 31)


def test_verifiers_reject_malformed_input_without_raising() -> None:
    root = root_from_leaf_hashes(LEAVES)
    proof = inclusion_proof(LEAVES, 3)
    bad: Any = "not bytes"
    for idx, size, prf, rt in [
        (3, 8, [*proof[:-1], proof[-1][:31]], root),
        (3, 8, [*proof[:-1], bad], root),
        (3, 8, proof, root[:16]),
        (8, 8, proof, root),
        (-1, 8, proof, root),
        (0, 0, [], EMPTY_ROOT),
        (3, -8, proof, root),
        (bad, 8, proof, root),
        (3, 1 << 80, proof, root),
    ]:
        assert verify_inclusion(LEAVES[3], idx, size, prf, rt) is False
    assert verify_inclusion(b"", 3, 8, proof, root) is False

    old_root = root_from_leaf_hashes(LEAVES[:5])
    cproof = consistency_proof(LEAVES, 5)
    for old, new, prf in [
        (5, 8, [cproof[0][:31], *cproof[1:]]),
        (5, 8, [bad, *cproof[1:]]),
        (-1, 8, cproof),
        (5, 4, cproof),
        (bad, 8, cproof),
        (5, 1 << 80, cproof),
    ]:
        assert verify_consistency(old, new, old_root, root, prf) is False
    assert verify_consistency(5, 8, old_root[:5], root, cproof) is False


def test_cached_tree_uses_logarithmic_node_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    tree = MerkleTree()
    for i in range(100_000):
        tree.append(i.to_bytes(4, "big"))
    calls = 0
    real: Callable[[bytes, bytes], bytes] = node_hash

    def counting(left: bytes, right: bytes) -> bytes:
        nonlocal calls
        calls += 1
        return real(left, right)

    monkeypatch.setattr(merkle, "node_hash", counting)
    depth = tree.size.bit_length()
    for op in (
        tree.root,
        lambda: tree.root(77_777),
        lambda: tree.inclusion_proof(0),
        lambda: tree.inclusion_proof(99_999),
        lambda: tree.inclusion_proof(12_345, 54_321),
        lambda: tree.consistency_proof(1),
        lambda: tree.consistency_proof(65_537),
        lambda: tree.consistency_proof(33_333, 99_998),
    ):
        calls = 0
        op()
        assert calls <= depth, f"{calls} node hashes for a {depth}-level tree"

    monkeypatch.undo()
    root = tree.root()
    index = 54_321
    proof = tree.inclusion_proof(index)
    assert verify_inclusion(leaf_hash(index.to_bytes(4, "big")), index, tree.size, proof, root)
    assert verify_consistency(65_537, tree.size, tree.root(65_537), root, tree.consistency_proof(65_537))
