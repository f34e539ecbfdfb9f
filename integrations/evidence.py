"""The evidence package of an exchange batch, for the third-party verifier (核证): its lines, and the
offline check ``carbon-rewards exchange verify FILE`` runs.

A package is JSON Lines, in this order:

* ``header``: the format, the log's origin, and the batch's summary (totals, per kind and per
  methodology version, adjustments, the Merkle root over its action ids);
* ``key``: every public key that signs checkpoints; ``checkpoint``: the signed checkpoint every proof
  is against;
* ``methodology``: each methodology version the batch uses, as published (factors, sources);
* ``reduction``: per action, in action-id order: what the partner reported (``activity``), the
  category, quantity, methodology version and the computed grams, and the ledger transfer that
  credited them (``leaf``, the exact bytes the Merkle log commits to) with its inclusion proof;
* ``adjustment``: per reversed action exported before, the grams taken back and the reversal's
  transfer with its proof;
* ``movement``: the batch's own transfers in the ``co2e_g`` ledger with their proofs: ``export``
  (its grams, from the carbon pool to the exchange account) and ``adjustment`` (the adjusted grams back);
* ``totals``.

The check recomputes every reduction from the methodology data with the service's own formula and
checks the factor each line names against it; checks that each ledger entry says what its line says
(the grams, ``action:<id>`` or ``exchange_batch:<id>``, the code and ledger), that each is in the
signed tree, that the checkpoint's signature verifies, and that the totals (also per kind and per
methodology version) and the Merkle root over the action ids are those of the lines. Every problem is
listed, the first first. The quantity is as the partner reported it (shown beside it as ``activity``).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from domain.methodologies import methodology_from_data
from ledger import (
    CheckpointRejected,
    MerkleRange,
    PublicKey,
    checkpoint_from_json,
    decode_leaf,
    leaf_fields_to_json,
    merkle_leaf_hash,
    verify_checkpoint_signature,
    verify_inclusion,
)

FORMAT = "carbon-rewards-exchange-evidence/1"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def line(line_type: str, /, **fields: Any) -> str:
    return json.dumps({"type": line_type, **fields}, ensure_ascii=False, default=str) + "\n"


def proof_fields(leaf: bytes, position: int, audit_path: Iterable[bytes]) -> dict[str, Any]:
    """A ledger entry as a package carries it: the leaf's bytes, what they say, where it sits and its proof."""
    return {
        "leaf": b64(leaf),
        "transfer": leaf_fields_to_json(decode_leaf(leaf)),
        "position": position,
        "audit_path": [b64(h) for h in audit_path],
    }


def action_ids_root(action_ids: Iterable[uuid.UUID]) -> bytes:
    """The Merkle root (RFC 9162 hashing) over action ids in ascending order: a batch's fingerprint."""
    tree = MerkleRange()
    for action_id in action_ids:
        tree.append(merkle_leaf_hash(action_id.bytes))
    return tree.root()


def _decimal(text: Any) -> Decimal | None:
    try:
        return Decimal(str(text))
    except InvalidOperation:
        return None


@dataclass
class EvidenceReport:
    reductions: int = 0
    adjustments: int = 0
    total_g: int = 0
    adjustment_g: int = 0
    #: The checkpoint the proofs are against, and the key that signed it: compare it with the key the
    #: programme publishes (``GET /v1/ledger/public-keys``), since the package carries its own keys.
    tree_size: int | None = None
    signed_by: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class _Check:
    """The checks, fed line by line."""

    def __init__(self) -> None:
        self.report = EvidenceReport()
        self.header: dict[str, Any] | None = None
        self.keys: dict[str, PublicKey] = {}
        self.checkpoint: Any = None
        self.methodologies: dict[tuple[str, int], Any] = {}
        self.ids: list[uuid.UUID] = []
        self.totals: dict[str, Any] | None = None
        self.movements: dict[str, tuple[str, dict[str, Any]]] = {}
        self.by_kind: dict[str, dict[str, int]] = {}
        self.by_methodology: dict[str, dict[str, int]] = {}

    def problem(self, where: str, what: str) -> None:
        self.report.problems.append(f"{where}: {what}")

    def entry(self, where: str, d: dict[str, Any], amount: int, code: str, reference: str) -> None:
        """The ledger entry of a line: it says what the line says, and it is in the signed tree."""
        try:
            leaf = base64.b64decode(d["leaf"])
            fields = decode_leaf(leaf)
        except (KeyError, ValueError) as exc:
            self.problem(where, f"the ledger entry cannot be read ({exc})")
            return
        if leaf_fields_to_json(fields) != d.get("transfer"):
            self.problem(where, "the transfer shown is not the one the leaf holds")
        if (fields.amount, fields.code, fields.ledger, fields.reference) != (amount, code, "co2e_g", reference):
            self.problem(
                where,
                f"the ledger entry says {fields.amount} g ({fields.code}, {fields.ledger}, {fields.reference}), "
                f"the line {amount} g ({code}, co2e_g, {reference})",
            )
        if self.checkpoint is None:
            return
        path = [base64.b64decode(h) for h in d.get("audit_path", [])]
        position, size = int(d.get("position", -1)), self.checkpoint.tree_size
        if not 0 <= position < size or not verify_inclusion(
            position, size, merkle_leaf_hash(leaf), path, self.checkpoint.root_hash
        ):
            self.problem(where, f"the inclusion proof of position {position} does not lead to the checkpoint's root")

    def feed(self, number: int, d: dict[str, Any]) -> None:
        kind, where = d.get("type"), f"line {number}"
        if number == 1:
            if kind != "header" or d.get("format") != FORMAT:
                self.problem(where, f"not a {FORMAT} file")
            self.header = d
        elif kind == "key":
            self.keys[d["key_id"]] = PublicKey(d["key_id"], base64.b64decode(d["public_key"]), d["algorithm"])
        elif kind == "checkpoint":
            self.checkpoint = checkpoint_from_json(d)
            self.report.tree_size, self.report.signed_by = self.checkpoint.tree_size, self.checkpoint.key_id
            try:
                verify_checkpoint_signature(self.checkpoint, (self.header or {}).get("origin", ""), self.keys)
            except CheckpointRejected as exc:
                self.problem(where, f"the checkpoint does not verify: {exc.detail}")
        elif kind == "methodology":
            data = d["data"]
            self.methodologies[(data["id"], int(data["version"]))] = methodology_from_data(data)
        elif kind == "reduction":
            self.reduction(where, d)
        elif kind == "adjustment":
            self.report.adjustments += 1
            self.report.adjustment_g += int(d["grams_co2e"])
            self.entry(where, d, int(d["grams_co2e"]), "reversal", f"action:{d['action_id']}")
        elif kind == "movement":
            self.movements[d["name"]] = (where, d)
        elif kind == "totals":
            self.totals = d

    def reduction(self, where: str, d: dict[str, Any]) -> None:
        action_id = d["action_id"]
        self.report.reductions += 1
        self.report.total_g += int(d["grams_co2e"])
        self.ids.append(uuid.UUID(action_id))
        grams = int(d["grams_co2e"])
        for groups, key in (
            (self.by_kind, d["kind"]),
            (self.by_methodology, f"{d['methodology_id']} v{d['methodology_version']}"),
        ):
            group = groups.setdefault(key, {"actions": 0, "grams_co2e": 0})
            group["actions"] += 1
            group["grams_co2e"] += grams
        methodology = self.methodologies.get((d["methodology_id"], int(d["methodology_version"])))
        if methodology is None:
            self.problem(where, f"action {action_id}: its methodology version is not in the package")
        else:
            factor = methodology.factors.get(d["category"])
            if factor is None or factor.value != _decimal(d.get("factor")):
                self.problem(
                    where,
                    f"action {action_id}: the factor of {d['category']} is "
                    f"{factor.value if factor else 'not'} in {methodology.id} v{methodology.version}, "
                    f"the line says {d.get('factor')}",
                )
            computed = methodology.reduction(d["category"], int(d["quantity"])).grams_co2e
            if computed != int(d["grams_co2e"]):
                self.problem(
                    where,
                    f"action {action_id}: {d['quantity']} of {d['category']} by {methodology.id} "
                    f"v{methodology.version} is {computed} g, the line says {d['grams_co2e']} g",
                )
        self.entry(where, d, grams, "action_credit", f"action:{action_id}")

    def finish(self) -> EvidenceReport:
        batch = (self.header or {}).get("batch", {})
        if self.checkpoint is None:
            self.problem("package", "no checkpoint: no proof can be checked")
        if self.ids != sorted(self.ids):
            self.problem("package", "the reductions are not in action-id order")
        expected = {
            "actions": self.report.reductions,
            "grams_co2e": self.report.total_g,
            "adjustments": self.report.adjustments,
            "adjustment_g": self.report.adjustment_g,
            "net_g": self.report.total_g - self.report.adjustment_g,
            "merkle_root": b64(action_ids_root(sorted(self.ids))),
        }
        for source, stated in (("header", batch), ("totals", self.totals or {})):
            for name, value in expected.items():
                if stated.get(name) != value:
                    self.problem(source, f"{name} is {stated.get(name)!r}, the lines give {value!r}")
        for name, groups in (("by_kind", self.by_kind), ("by_methodology", self.by_methodology)):
            if batch.get(name) != groups:
                self.problem("header", f"{name} is {batch.get(name)!r}, the lines give {groups!r}")
        self.movements_match(batch.get("batch_id", ""))
        return self.report

    def movements_match(self, batch_id: str) -> None:
        """The batch's own ledger movements: its grams went to the exchange, its adjustments came back."""
        for name, amount, code in (
            ("export", self.report.total_g, "export"),
            ("adjustment", self.report.adjustment_g, "adjustment"),
        ):
            if name not in self.movements:
                if amount:
                    self.problem("package", f"no {name} movement of {amount} g in the ledger")
                continue
            where, d = self.movements[name]
            self.entry(where, d, amount, code, f"exchange_batch:{batch_id}")


def verify_evidence(path: Path) -> EvidenceReport:
    """Check an evidence package offline (see the module's docstring); every problem is listed, first first."""
    check = _Check()
    with path.open(encoding="utf-8") as handle:
        for number, text in enumerate(handle, 1):
            try:
                check.feed(number, json.loads(text))
            except (ValueError, KeyError, TypeError) as exc:
                check.problem(f"line {number}", f"cannot be read ({type(exc).__name__}: {exc})")
    return check.finish()
