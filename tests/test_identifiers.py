"""Identifiers and names (``domain.text``): external ids keep to a small alphabet, so ``.`` or ``..`` can
never change the path of a signed call to a partner, and no identifier or name holds characters that are
invisible or that turn the text around them (bidi overrides, zero-width characters, a BOM, U+FFFF)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from domain.text import id_problem, name_problem
from integrations.simulators.partner import PartnerSimulator
from tests.helpers import (
    PartnerHandle,
    bearer,
    push,
    register_partner,
    sign_in_operator,
    sign_in_resident,
    yesterday_at,
)
from tests.test_actions_ingest import trip

#: Characters that once passed as part of an id or a name.
INVISIBLE = ["\u202e", "\u2066", "\u200b", "\u200d", "\ufeff", "\uffff", "\u0085", "\u2028", "\U000e0041"]


@pytest.fixture(scope="module")
async def admin(api: AsyncTestClient, database_url: str) -> dict[str, str]:
    return bearer(await sign_in_operator(api, database_url, "admin"))


@pytest.fixture(scope="module")
async def partner(api: AsyncTestClient, admin: dict[str, str]) -> AsyncIterator[PartnerHandle]:
    with PartnerSimulator("transit") as sim:
        yield await register_partner(api, admin, sim)


def test_the_id_alphabet_and_the_names_rule() -> None:
    for fine in ("CARD-0042", "TR-9e2ed0fc-ACC-000001", "a", "x.y_z:1@b+c", "0" * 128):
        assert id_problem(fine) is None, fine
    for bad in (".", "..", "-lead", "a/b", "a b", "卡-1", "0" * 129, "", "a\x00"):
        assert id_problem(bad) is not None, bad
    assert name_problem("上海地铁 Metro") is None and name_problem("Café №5") is None
    for hidden in INVISIBLE:
        assert "invisible" in (name_problem(f"Metro{hidden}") or ""), repr(hidden)
        assert "invisible" in (id_problem(f"CARD{hidden}") or ""), repr(hidden)


@pytest.mark.parametrize("ref", [".", "..", "../records/x", "CARD\u202e42", "CARD\u200b", "\ufeffCARD"])
async def test_a_link_or_claim_naming_an_account_or_record_outside_the_alphabet_is_refused(
    api: AsyncTestClient, partner: PartnerHandle, sms_gateway: Any, ref: str
) -> None:
    resident = bearer(await sign_in_resident(api, sms_gateway))
    calls = partner.simulator.calls
    link = {"partner_id": partner.id, "partner_account_ref": ref, "link_code": "123456"}
    linked = await api.post("/v1/me/links", json=link, headers=resident)
    assert linked.status_code == 422 and linked.json()["code"] == "invalid_input", linked.text
    claim = {"partner_id": partner.id, "external_id": ref}
    claimed = await api.post("/v1/me/actions/claims", json=claim, headers=resident)
    assert claimed.status_code == 422 and claimed.json()["code"] == "invalid_input", claimed.text
    assert partner.simulator.calls == calls  # the partner was never called


async def test_pushed_records_with_such_ids_or_names_are_refused_one_by_one(
    api: AsyncTestClient, partner: PartnerHandle
) -> None:
    start = yesterday_at(3)
    records = [
        trip("..", start, 20, 5_000),
        trip("CARD-1", start, 20, 5_000, external_id=f"rec\u202e{uuid.uuid4().hex}"),
        trip("CARD-1", start, 20, 5_000, external_id=f"rec\ufeff{uuid.uuid4().hex}"),
        trip("CARD-1", start, 20, 5_000, external_id=f"rec{uuid.uuid4().hex}\uffff"),
        trip("CARD-1", start, 20, 5_000, mode="metro\u200b"),
    ]
    results = (await push(api, partner, records)).json()["results"]
    assert [(r["outcome"], r["reason"]) for r in results] == [("rejected", "invalid_record")] * len(records)
    assert "account_ref must be 1 to 128 ASCII letters" in results[0]["detail"]
    assert all("invisible" in r["detail"] for r in results[1:]), [r["detail"] for r in results]


@pytest.mark.parametrize("hidden", ["\u202e", "\u200b", "\ufeff", "\uffff"])
async def test_names_of_partners_merchants_offers_and_operators_refuse_invisible_characters(
    api: AsyncTestClient, admin: dict[str, str], hidden: str
) -> None:
    merchant = await api.post("/v1/operator/merchants", json={"name": f"Tea{hidden} house"}, headers=admin)
    partner = await api.post(
        "/v1/operator/partners",
        json={"name": f"Metro{hidden}", "kind": "transit", "api_base_url": "https://metro.example/api"},
        headers=admin,
    )
    login = await api.post("/v1/auth/operator/login", json={"username": f"ad{hidden}min", "password": "x" * 20})
    for response in (merchant, partner, login):
        assert response.status_code == 422 and response.json()["code"] == "invalid_input", response.text
        assert "invisible" in response.text

    shop = await api.post("/v1/operator/merchants", json={"name": f"Shop {uuid.uuid4().hex[:6]}"}, headers=admin)
    credentials = shop.json()["credentials"]
    token = await api.post(
        "/v1/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": credentials["client_id"],
            "client_secret": credentials["client_secret"],
        },
    )
    headers = bearer(token.json())
    offer = await api.post("/v1/merchant/offers", json={"title": f"Tea{hidden}", "points_price": 5}, headers=headers)
    assert offer.status_code == 422 and offer.json()["code"] == "invalid_input", offer.text
    good = await api.post("/v1/merchant/offers", json={"title": "茶 Tea", "points_price": 5}, headers=headers)
    assert good.status_code == 201, good.text
    renamed = await api.patch(f"/v1/merchant/offers/{good.json()['id']}", json={"title": f"x{hidden}"}, headers=headers)
    assert renamed.status_code == 422 and renamed.json()["code"] == "invalid_input", renamed.text


async def test_an_unknown_field_is_refused_and_named(
    api: AsyncTestClient, partner: PartnerHandle, admin: dict[str, str], sms_gateway: Any
) -> None:
    """Strict input: a field nobody defined is an error naming it, in request bodies and in partner records."""
    otp = await api.post("/v1/auth/otp", json={"phone": "+8613800138000", "phnoe": "x"})
    assert otp.status_code == 422 and otp.json()["code"] == "invalid_input" and "phnoe" in otp.text
    merchant = await api.post("/v1/operator/merchants", json={"name": "Shop", "nmae": "typo"}, headers=admin)
    assert merchant.status_code == 422 and "nmae" in merchant.text
    resident = bearer(await sign_in_resident(api, sms_gateway))
    link = {"partner_id": partner.id, "partner_account_ref": "CARD-1", "link_code": "123456", "extra": 1}
    linked = await api.post("/v1/me/links", json=link, headers=resident)
    assert linked.status_code == 422 and "extra" in linked.text

    record = {**trip("CARD-1", yesterday_at(4), 20, 5_000), "loyalty_tier": "gold"}
    [result] = (await push(api, partner, [record])).json()["results"]
    assert (result["outcome"], result["reason"]) == ("rejected", "invalid_record")
    assert "unknown field 'loyalty_tier'" in result["detail"]
