"""Verifying the ledger's log: pure functions over records, whether read from the database or an export.

``verify_log`` recomputes every leaf from the transfer's fields, rebuilds the Merkle tree, and
checks each checkpoint's root and signature against it. It reports every problem it finds, and
``first_bad_position`` names the earliest log position that is wrong. An export file (JSON Lines,
see ``export_head_lines``/``read_export`` and docs/ledger-verification.md) carries exactly what
``verify_log`` needs, so an auditor can verify offline.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec

from ledger import merkle
from ledger.checkpoint import Checkpoint, PublicKey, check_progression, verify_signature
from ledger.errors import CheckpointRejected
from ledger.leaf import LeafFields, encode

EXPORT_FORMAT = "carbon-rewards-ledger-export/1"


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One log position: the stored leaf hash and the transfer it names (None if the transfer is gone)."""

    position: int
    transfer_id: UUID
    stored_leaf: bytes
    transfer: LeafFields | None


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str
    detail: str
    position: int | None = None


@dataclass
class VerifyReport:
    tree_size: int = 0
    checkpoints_checked: int = 0
    problems: list[Problem] = field(default_factory=list)
    #: Position ranges ``[start, end)`` whose root is wrong though every leaf matches its transfer (a leaf
    #: rewritten with its hash): the database audit narrows them down with the stored subtree hashes.
    rewritten_ranges: list[tuple[int, int]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad_position(self) -> int | None:
        positions = [p.position for p in self.problems if p.position is not None]
        return min(positions) if positions else None

    def add(self, kind: str, detail: str, position: int | None = None) -> None:
        self.problems.append(Problem(kind, detail, position))


class LogVerifier:
    """Incremental verifier: ``feed`` the log's records in position order, then ``finish``."""

    def __init__(
        self,
        checkpoints: Sequence[Checkpoint],
        keys: Mapping[str, PublicKey],
        origin: str,
        trusted: Checkpoint | None = None,
    ) -> None:
        self.report = VerifyReport()
        self._trusted = trusted
        self._edge = merkle.CompactRange()
        self._first_wrong_leaf: int | None = None
        self._last_good_size = 0
        self._stopped = False
        ordered = sorted(checkpoints, key=lambda c: c.tree_size)
        for older, newer in zip(ordered, ordered[1:], strict=False):
            try:
                check_progression(older, newer)
            except CheckpointRejected as exc:
                self.report.add(exc.reason, exc.detail)
        for cp in ordered:
            try:
                verify_signature(cp, origin, keys)
            except CheckpointRejected as exc:
                self.report.add(exc.reason, exc.detail)
        if trusted is not None:
            try:
                verify_signature(trusted, origin, keys)
            except CheckpointRejected as exc:
                self.report.add("trusted_checkpoint_rejected", f"the trusted checkpoint: {exc.detail}")
            if not any(c.tree_size == trusted.tree_size and c.root_hash == trusted.root_hash for c in ordered):
                self.report.add(
                    "checkpoint_deleted",
                    f"the trusted checkpoint of size {trusted.tree_size} is not among the stored checkpoints: "
                    "checkpoints were deleted or replaced",
                )
        self._pending = ordered
        self._check_due_checkpoints()

    def feed(self, record: LogRecord) -> None:
        if self._stopped:
            return
        position = self._edge.size
        if record.position != position:
            self.report.add(
                "position_gap",
                f"expected log position {position}, found {record.position}: positions are missing",
                position,
            )
            self._stopped = True
            return
        if record.transfer is None:
            self._wrong(
                position,
                "transfer_missing",
                f"position {position}: transfer {record.transfer_id} is no longer in the ledger",
            )
            leaf = record.stored_leaf
        else:
            leaf = merkle.leaf_hash(encode(record.transfer))
            if leaf != record.stored_leaf:
                self._wrong(
                    position,
                    "leaf_mismatch",
                    f"position {position}: transfer {record.transfer_id} no longer hashes to its sealed "
                    "leaf (a field was changed)",
                )
        self._edge.append(leaf)
        self._check_due_checkpoints()

    def _wrong(self, position: int, kind: str, detail: str) -> None:
        self.report.add(kind, detail, position)
        if self._first_wrong_leaf is None:
            self._first_wrong_leaf = position

    def _check_due_checkpoints(self) -> None:
        trusted = self._trusted
        if trusted is not None and trusted.tree_size == self._edge.size and self._edge.root() != trusted.root_hash:
            self.report.add(
                "trusted_root_mismatch",
                f"the log's root at size {trusted.tree_size} differs from the trusted checkpoint's: "
                "the log was rewritten, not extended",
                self._first_wrong_leaf if self._first_wrong_leaf is not None else self._last_good_size,
            )
        while self._pending and self._pending[0].tree_size == self._edge.size:
            cp = self._pending.pop(0)
            self.report.checkpoints_checked += 1
            if self._edge.root() == cp.root_hash:
                self._last_good_size = cp.tree_size
                continue
            if self._first_wrong_leaf is not None:
                position = self._first_wrong_leaf
                where = f"; the first changed leaf is position {position}"
            else:
                where = f"; a leaf in positions {self._last_good_size}..{cp.tree_size - 1} was rewritten with its hash"
                position = self._last_good_size
                self.report.rewritten_ranges.append((self._last_good_size, cp.tree_size))
            self.report.add(
                "root_mismatch",
                f"checkpoint of size {cp.tree_size}: the recomputed root differs from the signed one{where}",
                position,
            )

    def finish(self) -> VerifyReport:
        self.report.tree_size = self._edge.size
        if self._trusted is not None and self._edge.size < self._trusted.tree_size:
            self.report.add(
                "log_truncated",
                f"the log has {self._edge.size} leaves but the trusted checkpoint covers {self._trusted.tree_size}: "
                "its end was cut off",
                self._edge.size,
            )
        for cp in self._pending:
            self.report.add(
                "checkpoint_beyond_log",
                f"checkpoint of size {cp.tree_size} but the log has {self._edge.size} leaves",
                self._edge.size,
            )
        self._pending = []
        return self.report


def verify_log(
    records: Iterable[LogRecord],
    checkpoints: Sequence[Checkpoint],
    keys: Mapping[str, PublicKey],
    origin: str,
    trusted: Checkpoint | None = None,
) -> VerifyReport:
    """Check leaves, positions, checkpoint roots, signatures and the checkpoints' progression, and that the
    log extends ``trusted`` (a checkpoint kept outside the database), if given."""
    verifier = LogVerifier(checkpoints, keys, origin, trusted)
    for record in records:
        verifier.feed(record)
    return verifier.finish()


# ------------------------------------------------------------------------------------------ export


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def leaf_fields_to_json(f: LeafFields) -> dict[str, Any]:
    return {
        "id": str(f.id),
        "debit_account_id": str(f.debit_account_id),
        "credit_account_id": str(f.credit_account_id),
        "amount": f.amount,
        "ledger": f.ledger,
        "code": f.code,
        "pending": f.pending,
        "post_pending": f.post_pending,
        "void_pending": f.void_pending,
        "linked": f.linked,
        "pending_id": str(f.pending_id) if f.pending_id else None,
        "timeout_s": f.timeout_s,
        "timestamp": f.timestamp.isoformat(),
        "reference": f.reference,
        "metadata_json": f.metadata_json,
    }


def leaf_fields_from_json(d: Mapping[str, Any]) -> LeafFields:
    return LeafFields(
        id=UUID(d["id"]),
        debit_account_id=UUID(d["debit_account_id"]),
        credit_account_id=UUID(d["credit_account_id"]),
        amount=int(d["amount"]),
        ledger=d["ledger"],
        code=d["code"],
        pending=bool(d["pending"]),
        post_pending=bool(d["post_pending"]),
        void_pending=bool(d["void_pending"]),
        linked=bool(d["linked"]),
        pending_id=UUID(d["pending_id"]) if d.get("pending_id") else None,
        timeout_s=int(d["timeout_s"]),
        timestamp=datetime.fromisoformat(d["timestamp"]),
        reference=d.get("reference"),
        metadata_json=d.get("metadata_json"),
    )


def checkpoint_to_json(cp: Checkpoint) -> dict[str, Any]:
    return {
        "tree_size": cp.tree_size,
        "root_hash": _b64(cp.root_hash),
        "timestamp": cp.timestamp.isoformat(),
        "key_id": cp.key_id,
        "signature": _b64(cp.signature),
    }


def checkpoint_from_json(d: Mapping[str, Any]) -> Checkpoint:
    return Checkpoint(
        int(d["tree_size"]),
        base64.b64decode(d["root_hash"]),
        datetime.fromisoformat(d["timestamp"]),
        d["key_id"],
        base64.b64decode(d["signature"]),
    )


#: Export lines are JSON; msgspec writes them an order of magnitude faster than ``json`` (a million leaves).
_LINE_ENCODER = msgspec.json.Encoder()


def export_head_lines(origin: str, keys: Iterable[PublicKey], checkpoints: Iterable[Checkpoint]) -> Iterator[str]:
    """The first lines of an export: header, public keys, checkpoints (the leaves follow)."""
    yield json.dumps({"type": "header", "format": EXPORT_FORMAT, "origin": origin}) + "\n"
    for key in keys:
        yield (
            json.dumps(
                {"type": "key", "key_id": key.key_id, "algorithm": key.algorithm, "public_key": _b64(key.public_key)}
            )
            + "\n"
        )
    for cp in checkpoints:
        yield json.dumps({"type": "checkpoint", **checkpoint_to_json(cp)}) + "\n"


def export_record_line(r: LogRecord) -> str:
    line = {
        "type": "leaf",
        "position": r.position,
        "transfer_id": str(r.transfer_id),
        "leaf_hash": _b64(r.stored_leaf),
        "transfer": leaf_fields_to_json(r.transfer) if r.transfer else None,
    }
    return _LINE_ENCODER.encode(line).decode() + "\n"


@dataclass
class Export:
    origin: str
    keys: dict[str, PublicKey]
    checkpoints: list[Checkpoint]
    path: Path

    def records(self) -> Iterator[LogRecord]:
        with self.path.open(encoding="utf-8") as handle:
            for line in handle:
                d = json.loads(line)
                if d.get("type") == "leaf":
                    yield LogRecord(
                        int(d["position"]),
                        UUID(d["transfer_id"]),
                        base64.b64decode(d["leaf_hash"]),
                        leaf_fields_from_json(d["transfer"]) if d.get("transfer") else None,
                    )


class ExportFormatError(ValueError):
    pass


def read_export(path: Path) -> Export:
    """Read the header, keys and checkpoints of an export; its leaves are streamed by ``records()``."""
    keys: dict[str, PublicKey] = {}
    checkpoints: list[Checkpoint] = []
    origin = None
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            try:
                d = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ExportFormatError(f"{path}:{number}: not JSON ({exc})") from None
            kind = d.get("type")
            if number == 1:
                if kind != "header" or d.get("format") != EXPORT_FORMAT:
                    raise ExportFormatError(f"{path}: not a {EXPORT_FORMAT} file")
                origin = d["origin"]
            elif kind == "key":
                keys[d["key_id"]] = PublicKey(d["key_id"], base64.b64decode(d["public_key"]), d["algorithm"])
            elif kind == "checkpoint":
                checkpoints.append(checkpoint_from_json(d))
    if origin is None:
        raise ExportFormatError(f"{path}: empty file")
    return Export(origin, keys, checkpoints, path)
