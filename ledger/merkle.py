"""Merkle tree hashing and proofs exactly as RFC 9162 §2.1 defines them (the Certificate Transparency log).

Pure functions, no I/O, so that the same code builds proofs in the service, checks them in the
verifier, and can be read by an auditor next to the RFC. Hashes are 32-byte SHA-256 digests:

- leaf hash ``SHA-256(0x00 || leaf data)``, interior node ``SHA-256(0x01 || left || right)``;
- the tree of ``n`` leaves splits at ``k``, the largest power of two smaller than ``n``.

Proof *generation* works on ranges of leaves, not on leaf hashes: ``inclusion_path`` and
``consistency_path`` return the ``(start, end)`` leaf ranges whose tree hashes form the proof. The
caller resolves each range with :func:`range_hash` (every range splits into at most ``log2 n``
complete, aligned subtrees, which storage can keep precomputed). Verification follows RFC 9162
§2.1.3.2 and §2.1.4.2 step by step.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

Hash = bytes
Range = tuple[int, int]


def leaf_hash(data: bytes) -> Hash:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: Hash, right: Hash) -> Hash:
    return hashlib.sha256(b"\x01" + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n`` ≥ 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def aligned_pieces(start: int, end: int) -> list[tuple[int, int]]:
    """Split a subtree range ``[start, end)`` of the RFC tree into complete aligned subtrees.

    Returns ``(level, index)`` pairs, left to right: the subtree of ``2**level`` leaves starting at
    leaf ``index * 2**level``. Every range that RFC 9162's recursion produces starts at a multiple
    of a power of two at least as large as itself, so its pieces follow the binary digits of its size.
    """
    pieces = []
    size = end - start
    position = start
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            pieces.append((level, position >> level))
            position += 1 << level
    return pieces


def fold_pieces(hashes: Sequence[Hash]) -> Hash:
    """The tree hash of a range from its aligned pieces' hashes (the right-most pieces join first)."""
    result = hashes[-1]
    for h in reversed(hashes[:-1]):
        result = node_hash(h, result)
    return result


def range_hash(start: int, end: int, subtree: Callable[[int, int], Hash]) -> Hash:
    """Tree hash of leaves ``[start, end)`` given ``subtree(level, index)`` for complete aligned subtrees."""
    if end <= start:
        return EMPTY_ROOT
    return fold_pieces([subtree(level, index) for level, index in aligned_pieces(start, end)])


def root(leaves: Sequence[Hash]) -> Hash:
    """MTH of a list of leaf hashes (recursive definition of RFC 9162 §2.1.1)."""
    n = len(leaves)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaves[0]
    k = split_point(n)
    return node_hash(root(leaves[:k]), root(leaves[k:]))


def inclusion_path(index: int, size: int) -> list[Range]:
    """Leaf ranges of PATH(index, D[0:size]) (RFC 9162 §2.1.3.1), leaf-side first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    path: list[Range] = []
    start, end = 0, size
    while end - start > 1:
        k = split_point(end - start)
        if index < start + k:
            path.append((start + k, end))
            end = start + k
        else:
            path.append((start, start + k))
            start += k
    path.reverse()
    return path


def consistency_path(first: int, second: int) -> list[Range]:
    """Leaf ranges of PROOF(first, D[0:second]) (RFC 9162 §2.1.4.1)."""
    if not 0 <= first <= second:
        raise ValueError(f"no consistency proof from size {first} to size {second}")
    if first == 0 or first == second:
        return []
    return _subproof(first, 0, second, True)


def _subproof(m: int, start: int, end: int, whole: bool) -> list[Range]:
    n = end - start
    if m == n:
        return [] if whole else [(start, end)]
    k = split_point(n)
    if m <= k:
        return _subproof(m, start, start + k, whole) + [(start + k, end)]
    return _subproof(m - k, start + k, end, False) + [(start, start + k)]


def root_from_inclusion(index: int, size: int, leaf: Hash, proof: Sequence[Hash]) -> Hash:
    """The root that an inclusion proof implies (RFC 9162 §2.1.3.2); raises ValueError if malformed."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            raise ValueError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ValueError("inclusion proof is too short")
    return r


def verify_inclusion(index: int, size: int, leaf: Hash, proof: Sequence[Hash], expected_root: Hash) -> bool:
    try:
        return root_from_inclusion(index, size, leaf, proof) == expected_root
    except ValueError:
        return False


def verify_consistency(
    first: int, second: int, first_root: Hash, second_root: Hash, proof: Sequence[Hash]
) -> bool:
    """RFC 9162 §2.1.4.2: does the tree of size ``second`` extend the tree of size ``first``?"""
    if not 0 <= first <= second:
        return False
    if first == second:
        return not proof and first_root == second_root
    if first == 0:
        return not proof and first_root == EMPTY_ROOT
    if not proof:
        return False
    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
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
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == first_root and sr == second_root and sn == 0


class CompactRange:
    """The right edge of a growing tree: hashes of the complete subtrees covering leaves ``[0, size)``.

    Appending a leaf merges equal-height subtrees, reporting each completed subtree to ``on_node``
    so storage can keep it; the root of the current size folds the edge from the right.
    """

    def __init__(self, size: int = 0, edge: Sequence[tuple[int, Hash]] = ()) -> None:
        self.size = size
        self.edge: list[tuple[int, Hash]] = list(edge)

    @classmethod
    def for_size(cls, size: int, subtree: Callable[[int, int], Hash]) -> CompactRange:
        """Rebuild the edge of a tree of ``size`` leaves from stored subtree hashes."""
        return cls(size, [(level, subtree(level, index)) for level, index in aligned_pieces(0, size)])

    def append(self, leaf: Hash, on_node: Callable[[int, int, Hash], None] | None = None) -> None:
        position = self.size
        level, h = 0, leaf
        while self.edge and self.edge[-1][0] == level:
            _, left = self.edge.pop()
            level, h = level + 1, node_hash(left, h)
            if on_node is not None:
                on_node(level, position >> level, h)
        self.edge.append((level, h))
        self.size += 1

    def root(self) -> Hash:
        if not self.edge:
            return EMPTY_ROOT
        return fold_pieces([h for _, h in self.edge])
