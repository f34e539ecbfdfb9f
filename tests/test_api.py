"""The HTTP surface of the foundation: health probes, OpenAPI, and problem+json errors."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.database import head_revision
from domain.actions import ActionKind, InvalidRecord, parse_record
from domain.fraud import TransitMode
from integrations.embedded_postgres import drop_database, ensure_database, with_database
from tests.helpers import app_settings as settings


@pytest.fixture(scope="module")
async def client(database_url: str) -> AsyncIterator[AsyncTestClient]:
    async with AsyncTestClient(app=create_app(settings(), database_url)) as client:
        yield client


async def test_live_and_ready(client: AsyncTestClient) -> None:
    assert (await client.get("/health/live")).json() == {"status": "ok"}
    ready = await client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["schema_revision"] == ready.json()["expected_revision"] == head_revision()
    assert ready.json()["pools"] == {"requests": "ok", "ledger": "ok"}


async def test_not_ready_on_an_unmigrated_database(server_url: str) -> None:
    name = f"carbon_empty_{uuid.uuid4().hex[:10]}"
    await ensure_database(server_url, name)
    try:
        async with AsyncTestClient(app=create_app(settings(), with_database(server_url, name))) as client:
            response = await client.get("/health/ready")
        assert response.status_code == 503
        assert response.headers["content-type"].startswith("application/problem+json")
        body = response.json()
        assert body["code"] == "database_not_ready"
        assert body["type"] == "urn:carbon-rewards:problem:database_not_ready"
        assert body["expected_revision"] == head_revision() and body["schema_revision"] is None
    finally:
        await drop_database(server_url, name)


async def test_unknown_route_is_a_problem_document(client: AsyncTestClient) -> None:
    response = await client.get("/no/such/thing")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json() == {
        "type": "urn:carbon-rewards:problem:not_found",
        "code": "not_found",
        "title": "Not found",
        "status": 404,
        "detail": "Not Found",
        "instance": "/no/such/thing",
        "request_id": response.headers["x-request-id"],
    }


async def test_wrong_method_is_a_problem_document(client: AsyncTestClient) -> None:
    response = await client.post("/health/live")
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"


async def test_openapi_schema_is_3_1_and_lists_the_probes(client: AsyncTestClient) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    assert schema["openapi"].startswith("3.1")
    assert {"/health/live", "/health/ready", "/v1/ledger/checkpoints/latest", "/v1/ledger/proofs/inclusion"} <= set(
        schema["paths"]
    )
    assert (await client.get("/schema")).status_code == 200


async def test_openapi_documents_sign_in_and_bearer_routes(client: AsyncTestClient) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    sign_in = {
        "/v1/auth/otp",
        "/v1/auth/otp/verify",
        "/v1/auth/exchange",
        "/v1/auth/token",
        "/v1/auth/refresh",
        "/v1/auth/operator/login",
        "/v1/auth/logout",
        "/.well-known/jwks.json",
    }
    assert sign_in <= set(schema["paths"])
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert schema["paths"]["/v1/me"]["get"]["security"] == [{"bearer": []}]
    assert "security" not in schema["paths"]["/v1/auth/otp"]["post"]


async def test_openapi_documents_the_push_body_the_route_reads_raw(client: AsyncTestClient) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    body = schema["paths"]["/v1/partner/actions:batch"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    records = body["properties"]["records"]
    assert body["required"] == ["records"] and (records["minItems"], records["maxItems"]) == (1, 1000)
    documented = {record["title"]: record for record in records["items"]["oneOf"]}
    assert set(documented) == {"Transit trip", "Recyclables drop-off", "Second-hand trade"}
    for title, kind in (
        ("Transit trip", ActionKind.TRANSIT),
        ("Recyclables drop-off", ActionKind.RECYCLING),
        ("Second-hand trade", ActionKind.SECOND_HAND),
    ):
        record = documented[title]
        valid = VALID_RECORDS[kind]
        parse_record(kind, valid)
        assert set(valid) <= set(record["properties"]), title
        # The parser demands exactly what the schema calls required, and reads every documented field.
        for name in record["properties"]:
            if name in record["required"]:
                with pytest.raises(InvalidRecord) as missing:
                    parse_record(kind, {key: value for key, value in valid.items() if key != name})
                assert missing.value.extra["field"] == name
            else:
                parse_record(kind, {key: value for key, value in valid.items() if key != name})
            with pytest.raises(InvalidRecord) as wrong:
                parse_record(kind, {**valid, name: [] if record["properties"][name]["type"] == "string" else "x"})
            assert wrong.value.extra["field"] == name
    assert documented["Transit trip"]["properties"]["mode"]["enum"] == [mode.value for mode in TransitMode]


#: One valid record of each kind, with every field the schema documents.
VALID_RECORDS: dict[ActionKind, dict[str, object]] = {
    ActionKind.TRANSIT: {
        "external_id": "t1",
        "account_ref": "a",
        "kind": "transit",
        "mode": "metro",
        "started_at": "2026-11-20T08:00:00+08:00",
        "ended_at": "2026-11-20T08:30:00+08:00",
        "distance_m": 10_000,
    },
    ActionKind.RECYCLING: {
        "external_id": "r1",
        "account_ref": "a",
        "kind": "recycling",
        "station_id": "S1",
        "occurred_at": "2026-11-20T08:00:00Z",
        "material": "glass",
        "weight_g": 1_234,
    },
    ActionKind.SECOND_HAND: {
        "external_id": "s1",
        "account_ref": "a",
        "kind": "second_hand",
        "occurred_at": "2026-11-20T08:00:00Z",
        "category": "books",
        "trade": "donated",
        "quantity": 3,
        "weight_g": 900,
    },
}


async def test_the_api_version_is_the_installed_packages(client: AsyncTestClient) -> None:
    """One version number for the project, kept in pyproject.toml."""
    from importlib.metadata import version

    schema = (await client.get("/schema/openapi.json")).json()
    assert schema["info"]["version"] == version("carbon-rewards")
