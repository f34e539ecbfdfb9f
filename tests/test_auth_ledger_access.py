"""Who may fetch an inclusion proof (which shows a transfer's fields) when proofs are not public."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
from litestar.testing import AsyncTestClient

from api.app import create_app
from ledger.service import Ledger
from tests.helpers import (
    bearer,
    identity_settings,
    make_account,
    make_issuance,
    sign_in_operator,
    sign_in_resident,
    transfer,
)


@pytest.fixture(scope="module")
async def client(database_url: str, sms_gateway: Any, city_idp: Any) -> AsyncIterator[AsyncTestClient]:
    settings = identity_settings(sms_gateway, city_idp, checkpoint_interval_s=0.1, seal_poll_interval_s=0.05)
    async with AsyncTestClient(app=create_app(settings, database_url)) as client:
        yield client


async def resident_with_credit(
    client: AsyncTestClient, sms_gateway: Any, ledger: Ledger
) -> tuple[dict[str, str], uuid.UUID]:
    """A signed-in resident, an account they own, and a sealed transfer crediting it."""
    tokens = await sign_in_resident(client, sms_gateway)
    subject = jwt.decode(tokens["access_token"], options={"verify_signature": False})["sub"]
    account = await make_account(ledger, owner_ref=f"resident:{subject}")
    credit = transfer(await make_issuance(ledger), account, 10)
    [outcome] = await ledger.create_transfers([credit])
    assert outcome.applied
    return bearer(tokens), credit.id


async def proof(client: AsyncTestClient, transfer_id: uuid.UUID, headers: dict[str, str]) -> Any:
    """The inclusion proof of a transfer at the latest checkpoint, as the caller ``headers`` names."""
    latest = (await client.get("/v1/ledger/checkpoints/latest")).json()
    params = {"transfer_id": str(transfer_id), "tree_size": latest.get("tree_size", 0)}
    return await client.get("/v1/ledger/proofs/inclusion", params=params, headers=headers)


async def test_owners_and_operators_get_proofs_others_get_404(
    client: AsyncTestClient, sms_gateway: Any, ledger: Ledger, database_url: str
) -> None:
    owner, transfer_id = await resident_with_credit(client, sms_gateway, ledger)
    operator = bearer(await sign_in_operator(client, database_url, "auditor"))
    # Wait until the operator sees it sealed: from then on every answer below is about access, not timing.
    by_operator = None
    for _ in range(300):
        by_operator = await proof(client, transfer_id, operator)
        if by_operator.status_code == 200:
            break
        await asyncio.sleep(0.1)
    assert by_operator is not None and by_operator.status_code == 200, by_operator.text
    tree_size = by_operator.json()["checkpoint"]["tree_size"]
    params = {"transfer_id": str(transfer_id), "tree_size": tree_size}

    mine = await client.get("/v1/ledger/proofs/inclusion", params=params, headers=owner)
    assert mine.status_code == 200 and mine.json()["leaf_hash"] == by_operator.json()["leaf_hash"]

    anonymous = await client.get("/v1/ledger/proofs/inclusion", params=params)
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "token_invalid"

    other_resident = bearer(await sign_in_resident(client, sms_gateway))
    theirs = await client.get("/v1/ledger/proofs/inclusion", params=params, headers=other_resident)
    nonexistent = await client.get(
        "/v1/ledger/proofs/inclusion", params={**params, "transfer_id": str(uuid.uuid4())}, headers=other_resident
    )
    assert theirs.status_code == nonexistent.status_code == 404
    assert theirs.json()["code"] == nonexistent.json()["code"] == "transfer_not_sealed"
