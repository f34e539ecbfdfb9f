"""RFC 9162 Merkle hashing and proofs against the Certificate Transparency test vectors, and at random.

The vectors are the reference leaves, roots and proofs published with the CT Merkle implementation
(transparency-dev/merkle, ``testonly/constants.go``), which every CT implementation tests against.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger import merkle

CT_LEAF_DATA = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_INCLUSION = [
    (0, 8, [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ]),
    (5, 8, [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ]),
]
CT_CONSISTENCY = [
    (2, 8, [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ]),
    (6, 8, [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ]),
    (2, 5, [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ]),
]

CT_LEAVES = [merkle.leaf_hash(bytes.fromhex(d)) for d in CT_LEAF_DATA]


def resolve(leaves: list[bytes], ranges: list[merkle.Range]) -> list[bytes]:
    """Hashes of proof ranges, computed the way storage does: from complete aligned subtrees."""

    def subtree(level: int, index: int) -> bytes:
        return merkle.root(leaves[index << level : (index + 1) << level])

    return [merkle.range_hash(start, end, subtree) for start, end in ranges]


def test_roots_match_the_ct_vectors() -> None:
    for size, expected in enumerate(CT_ROOTS):
        assert merkle.root(CT_LEAVES[:size]).hex() == expected
        compact = merkle.CompactRange()
        for leaf in CT_LEAVES[:size]:
            compact.append(leaf)
        assert compact.root().hex() == expected


@pytest.mark.parametrize(("index", "size", "expected"), CT_INCLUSION)
def test_inclusion_proofs_match_the_ct_vectors(index: int, size: int, expected: list[str]) -> None:
    proof = resolve(CT_LEAVES, merkle.inclusion_path(index, size))
    assert [h.hex() for h in proof] == expected
    assert merkle.verify_inclusion(index, size, CT_LEAVES[index], proof, bytes.fromhex(CT_ROOTS[size]))


@pytest.mark.parametrize(("first", "second", "expected"), CT_CONSISTENCY)
def test_consistency_proofs_match_the_ct_vectors(first: int, second: int, expected: list[str]) -> None:
    proof = resolve(CT_LEAVES, merkle.consistency_path(first, second))
    assert [h.hex() for h in proof] == expected
    assert merkle.verify_consistency(
        first, second, bytes.fromhex(CT_ROOTS[first]), bytes.fromhex(CT_ROOTS[second]), proof
    )


def flip_bit(data: bytes, bit: int) -> bytes:
    bit %= len(data) * 8
    return data[: bit // 8] + bytes([data[bit // 8] ^ (1 << bit % 8)]) + data[bit // 8 + 1 :]


def random_leaves(seed: int, size: int) -> list[bytes]:
    return [merkle.leaf_hash(hashlib.sha256(f"{seed}:{i}".encode()).digest()) for i in range(size)]


@given(seed=st.integers(0, 2**16), size=st.integers(1, 300), data=st.data())
def test_random_inclusion_proofs_verify_and_any_flipped_bit_fails(seed: int, size: int, data: st.DataObject) -> None:
    leaves = random_leaves(seed, size)
    index = data.draw(st.integers(0, size - 1))
    tree_root = merkle.root(leaves)
    proof = resolve(leaves, merkle.inclusion_path(index, size))
    assert merkle.verify_inclusion(index, size, leaves[index], proof, tree_root)
    bit = data.draw(st.integers(0, 255))
    assert not merkle.verify_inclusion(index, size, flip_bit(leaves[index], bit), proof, tree_root)
    assert not merkle.verify_inclusion(index, size, leaves[index], proof, flip_bit(tree_root, bit))
    if proof:
        which = data.draw(st.integers(0, len(proof) - 1))
        bad = proof[:which] + [flip_bit(proof[which], bit)] + proof[which + 1 :]
        assert not merkle.verify_inclusion(index, size, leaves[index], bad, tree_root)
        assert not merkle.verify_inclusion(index, size, leaves[index], proof[:-1], tree_root)
    assert not merkle.verify_inclusion(index, size, leaves[index], proof + [tree_root], tree_root)


@given(seed=st.integers(0, 2**16), second=st.integers(1, 300), data=st.data())
def test_random_consistency_proofs_verify_and_any_flipped_bit_fails(
    seed: int, second: int, data: st.DataObject
) -> None:
    leaves = random_leaves(seed, second)
    first = data.draw(st.integers(1, second))
    first_root, second_root = merkle.root(leaves[:first]), merkle.root(leaves)
    proof = resolve(leaves, merkle.consistency_path(first, second))
    assert merkle.verify_consistency(first, second, first_root, second_root, proof)
    bit = data.draw(st.integers(0, 255))
    assert not merkle.verify_consistency(first, second, flip_bit(first_root, bit), second_root, proof)
    assert not merkle.verify_consistency(first, second, first_root, flip_bit(second_root, bit), proof)
    if proof:
        which = data.draw(st.integers(0, len(proof) - 1))
        bad = proof[:which] + [flip_bit(proof[which], bit)] + proof[which + 1 :]
        assert not merkle.verify_consistency(first, second, first_root, second_root, bad)
        assert not merkle.verify_consistency(first, second, first_root, second_root, proof[:-1])


@given(seed=st.integers(0, 2**16), size=st.integers(0, 600))
def test_compact_range_agrees_with_the_recursive_definition(seed: int, size: int) -> None:
    leaves = random_leaves(seed, size)
    stored: dict[tuple[int, int], bytes] = {(0, i): leaf for i, leaf in enumerate(leaves)}
    compact = merkle.CompactRange()
    for leaf in leaves:
        compact.append(leaf, lambda level, index, h: stored.__setitem__((level, index), h))
    assert compact.root() == merkle.root(leaves)
    rebuilt = merkle.CompactRange.for_size(size, lambda level, index: stored[(level, index)])
    assert rebuilt.root() == compact.root()
    for level, index in stored:
        assert stored[(level, index)] == merkle.root(leaves[index << level : (index + 1) << level])


def test_malformed_requests_are_refused() -> None:
    with pytest.raises(ValueError):
        merkle.inclusion_path(8, 8)
    with pytest.raises(ValueError):
        merkle.consistency_path(5, 3)
    assert not merkle.verify_inclusion(8, 8, CT_LEAVES[0], [], bytes.fromhex(CT_ROOTS[8]))
    assert not merkle.verify_consistency(8, 6, bytes.fromhex(CT_ROOTS[8]), bytes.fromhex(CT_ROOTS[6]), [])
    assert merkle.verify_consistency(0, 8, merkle.EMPTY_ROOT, bytes.fromhex(CT_ROOTS[8]), [])
    assert not merkle.verify_consistency(6, 8, bytes.fromhex(CT_ROOTS[6]), bytes.fromhex(CT_ROOTS[8]), [])
