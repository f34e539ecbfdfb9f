"""The public tamper-evidence endpoints, checked the way an outside verifier would check them."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from litestar.testing import AsyncTestClient

from api.app import create_app
from ledger import merkle
from ledger.leaf import decode
from ledger.service import Ledger
from tests.helpers import app_settings as settings
from tests.helpers import make_account, make_issuance, transfer

b64 = base64.b64decode


@pytest.fixture(scope="module")
async def client(database_url: str) -> AsyncIterator[AsyncTestClient]:
    app = create_app(
        settings(public_inclusion_proofs=True, checkpoint_interval_s=0.1, seal_poll_interval_s=0.05), database_url
    )
    async with AsyncTestClient(app=app) as client:
        yield client


async def sealed_proof(client: AsyncTestClient, transfer_id: object) -> dict[str, Any]:
    """Wait for the app's own sealer to checkpoint the transfer, then fetch its inclusion proof."""
    for _ in range(300):
        latest = (await client.get("/v1/ledger/checkpoints/latest")).json()
        if "tree_size" in latest:
            params = {"transfer_id": str(transfer_id), "tree_size": latest["tree_size"]}
            response = await client.get("/v1/ledger/proofs/inclusion", params=params)
            if response.status_code == 200:
                return response.json()
            assert response.json()["code"] == "transfer_not_sealed"
        await asyncio.sleep(0.1)
    raise AssertionError("the transfer was never sealed")


def check_signature(checkpoint: dict[str, Any], keys: dict[str, Any]) -> None:
    """Rebuild the signed message from the checkpoint's fields (docs/ledger-verification.md) and verify it."""
    message = (
        f"carbon-rewards checkpoint v1\n{checkpoint['origin']}\n{checkpoint['tree_size']}\n"
        f"{checkpoint['root_hash']}\n{checkpoint['timestamp_ms']}\n"
    )
    assert message == checkpoint["signed_message"]
    key = next(k for k in keys["keys"] if k["key_id"] == checkpoint["key_id"])
    Ed25519PublicKey.from_public_bytes(b64(key["public_key"])).verify(b64(checkpoint["signature"]), message.encode())


async def test_inclusion_and_consistency_proofs_verify_outside_the_service(
    client: AsyncTestClient, ledger: Ledger
) -> None:
    # The test client runs the app on an event loop of its own: write through the test's own ledger.
    issuance, resident = await make_issuance(ledger), await make_account(ledger)
    first_transfer = transfer(issuance, resident, 7, reference="trip:1", metadata={"km": 3})
    await ledger.create_transfers([first_transfer])
    proof = await sealed_proof(client, first_transfer.id)
    keys = (await client.get("/v1/ledger/public-keys")).json()
    first = proof["checkpoint"]
    check_signature(first, keys)

    leaf_data = b64(proof["leaf_data"])
    fields = decode(leaf_data)
    assert (fields.id, fields.amount, fields.reference, fields.metadata_json) == (
        first_transfer.id, 7, "trip:1", '{"km": 3}'
    )
    assert merkle.leaf_hash(leaf_data) == b64(proof["leaf_hash"])
    assert merkle.verify_inclusion(
        proof["leaf_index"], first["tree_size"], b64(proof["leaf_hash"]), [b64(h) for h in proof["audit_path"]],
        b64(first["root_hash"]),
    )

    second_transfer = transfer(issuance, resident, 9)
    await ledger.create_transfers([second_transfer])
    second = (await sealed_proof(client, second_transfer.id))["checkpoint"]
    check_signature(second, keys)
    assert (await client.get(f"/v1/ledger/checkpoints/{second['tree_size']}")).json() == second
    response = await client.get(
        "/v1/ledger/proofs/consistency", params={"first": first["tree_size"], "second": second["tree_size"]}
    )
    assert response.status_code == 200
    path = [b64(h) for h in response.json()["consistency_path"]]
    assert merkle.verify_consistency(
        first["tree_size"], second["tree_size"], b64(first["root_hash"]), b64(second["root_hash"]), path
    )


@pytest.mark.parametrize(
    ("url", "params", "status", "code"),
    [
        ("/v1/ledger/checkpoints/999999999999", {}, 404, "tree_size_not_found"),
        ("/v1/ledger/proofs/consistency", {"first": 1, "second": 999999999999}, 404, "tree_size_not_found"),
        ("/v1/ledger/proofs/consistency", {"first": 5, "second": 2}, 422, "checkpoint_rejected"),
        ("/v1/ledger/proofs/consistency", {"first": -1, "second": 2}, 422, "invalid_input"),
        ("/v1/ledger/proofs/inclusion", {"transfer_id": "not-a-uuid", "tree_size": 1}, 422, "invalid_input"),
        (
            "/v1/ledger/proofs/inclusion",
            {"transfer_id": "00000000-0000-0000-0000-000000000001", "tree_size": 999999999999},
            404,
            "tree_size_not_found",
        ),
    ],
)
async def test_bad_requests_get_clear_problems(
    client: AsyncTestClient, url: str, params: dict[str, Any], status: int, code: str
) -> None:
    response = await client.get(url, params=params)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code


