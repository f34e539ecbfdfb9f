"""Public, read-only tamper evidence: signed checkpoints, public keys, inclusion and consistency proofs.

Hashes, keys and signatures are standard base64. The signed message of a checkpoint is returned
too, so a client can check the signature with any Ed25519 library (docs/ledger-verification.md).
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import PathParameter, QueryParameter
from msgspec import Struct

from api.guards import authenticate
from api.settings import Settings
from ledger import Checkpoint, LogReader, timestamp_millis


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class CheckpointOut(Struct):
    origin: str
    tree_size: int
    root_hash: str
    timestamp: datetime
    timestamp_ms: int
    key_id: str
    signature: str
    signed_message: str

    @classmethod
    def of(cls, cp: Checkpoint, origin: str) -> CheckpointOut:
        return cls(
            origin=origin,
            tree_size=cp.tree_size,
            root_hash=_b64(cp.root_hash),
            timestamp=cp.timestamp,
            timestamp_ms=timestamp_millis(cp.timestamp),
            key_id=cp.key_id,
            signature=_b64(cp.signature),
            signed_message=cp.signed_message(origin).decode(),
        )


class PublicKeyOut(Struct):
    key_id: str
    algorithm: str
    public_key: str


class PublicKeysOut(Struct):
    origin: str
    keys: list[PublicKeyOut]


class InclusionProofOut(Struct):
    checkpoint: CheckpointOut
    transfer_id: UUID
    leaf_index: int
    leaf_data: str
    leaf_hash: str
    audit_path: list[str]


class ConsistencyProofOut(Struct):
    first: CheckpointOut
    second: CheckpointOut
    consistency_path: list[str]


_SIZE = {"ge": 0, "le": 2**62, "description": "Number of leaves of a signed checkpoint"}
TreeSizeQuery = Annotated[int, QueryParameter(**_SIZE)]  # type: ignore[arg-type]
TreeSizePath = Annotated[int, PathParameter(**_SIZE)]  # type: ignore[arg-type]
TransferIdQuery = Annotated[UUID, QueryParameter(description="Id of the transfer to prove")]


class LedgerLogController(Controller):
    path = "/v1/ledger"
    tags = ["ledger transparency"]

    @get("/checkpoints/latest", summary="The most recent signed checkpoint")
    async def latest(self, log_reader: NamedDependency[LogReader]) -> CheckpointOut:
        return CheckpointOut.of(await log_reader.latest_checkpoint(), log_reader.origin)

    @get("/checkpoints/{tree_size:int}", summary="The signed checkpoint of a given tree size")
    async def by_size(self, log_reader: NamedDependency[LogReader], tree_size: TreeSizePath) -> CheckpointOut:
        return CheckpointOut.of(await log_reader.checkpoint(tree_size), log_reader.origin)

    @get("/public-keys", summary="Every key that has signed checkpoints, current and retired")
    async def public_keys(self, log_reader: NamedDependency[LogReader]) -> PublicKeysOut:
        keys = await log_reader.public_keys()
        return PublicKeysOut(
            origin=log_reader.origin,
            keys=[PublicKeyOut(k.key_id, k.algorithm, _b64(k.public_key)) for k in keys],
        )

    @get(
        "/proofs/inclusion",
        summary="Proof that a transfer is in the tree of a signed checkpoint",
        description="Needs a token unless CARBON_PUBLIC_INCLUSION_PROOFS is set: operators get any transfer; "
        "residents, merchants and partners only transfers on their own accounts (any other is 404, like a "
        "transfer that does not exist).",
    )
    async def inclusion(
        self,
        request: Request[Any, Any, Any],
        log_reader: NamedDependency[LogReader],
        settings: NamedDependency[Settings],
        transfer_id: TransferIdQuery,
        tree_size: TreeSizeQuery,
    ) -> InclusionProofOut:
        owner_ref = None
        if not settings.public_inclusion_proofs:
            principal = await authenticate(request)
            owner_ref = None if principal.is_operator else principal.owner_ref
        proof = await log_reader.inclusion_proof(transfer_id, tree_size, owner_ref=owner_ref)
        return InclusionProofOut(
            checkpoint=CheckpointOut.of(proof.checkpoint, log_reader.origin),
            transfer_id=transfer_id,
            leaf_index=proof.position,
            leaf_data=_b64(proof.leaf_data),
            leaf_hash=_b64(proof.leaf_hash),
            audit_path=[_b64(h) for h in proof.hashes],
        )

    @get("/proofs/consistency", summary="Proof that a later signed tree extends an earlier one")
    async def consistency(
        self,
        log_reader: NamedDependency[LogReader],
        first: TreeSizeQuery,
        second: TreeSizeQuery,
    ) -> ConsistencyProofOut:
        proof = await log_reader.consistency_proof(first, second)
        return ConsistencyProofOut(
            first=CheckpointOut.of(proof.first, log_reader.origin),
            second=CheckpointOut.of(proof.second, log_reader.origin),
            consistency_path=[_b64(h) for h in proof.hashes],
        )
