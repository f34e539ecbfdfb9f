"""Every documented operation, called by the role it serves with input built to break it, answers a problem.

The inputs are the ones that once slipped past validation into queries and came back as 500s: text
with a NUL character (PostgreSQL cannot store it), integers past 64 bits, malformed JSON, and a body
of the wrong shape. The walk follows the OpenAPI schema, so a route added later is covered without
anyone remembering to.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient

from api.app import create_app
from integrations.simulators.partner import PartnerSimulator
from tests.helpers import bearer, identity_settings, register_partner, served, sign_in_operator, sign_in_resident

NUL_TEXT = "x\x00y"
#: 503 answers that say "retry shortly" (with Retry-After) when a worker is at capacity.
CAPACITY_CODES = {"long_reads_busy", "database_busy"}


def hostile_value(schema: dict[str, Any], spec: dict[str, Any], depth: int = 0) -> Any:
    """A value of the schema's shape that the database cannot take: NUL in text, 2**63 for integers."""
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    for union in ("oneOf", "anyOf"):
        if union in schema:
            return hostile_value(schema[union][0], spec, depth)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object" or "properties" in schema:
        if depth > 3:
            return {}
        return {name: hostile_value(sub, spec, depth + 1) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return [hostile_value(schema.get("items", {}), spec, depth + 1)]
    if kind == "integer":
        return 2**63
    if kind == "number":
        return 1e308
    return NUL_TEXT  # for text, and in place of a boolean


def role_for(path: str) -> str:
    for prefix, role in (
        ("/v1/me", "resident"),
        ("/v1/operator", "admin"),
        ("/v1/partner", "partner"),
        ("/v1/merchant", "merchant"),
        ("/v1/ledger", "admin"),
    ):
        if path.startswith(prefix):
            return role
    return "anonymous"


@pytest.fixture(scope="module")
async def callers(api: AsyncTestClient, sms_gateway: Any, database_url: str) -> Any:
    admin = bearer(await sign_in_operator(api, database_url, "admin"))
    merchant = (await api.post("/v1/operator/merchants", json={"name": "Hostile input shop"}, headers=admin)).json()
    credentials = merchant["credentials"]
    token = await api.post(
        "/v1/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": credentials["client_id"],
            "client_secret": credentials["client_secret"],
        },
    )
    with PartnerSimulator("transit") as simulator:
        partner = await register_partner(api, admin, simulator)
        yield {
            "anonymous": {},
            "resident": bearer(await sign_in_resident(api, sms_gateway)),
            "admin": admin,
            "partner": partner.headers,
            "merchant": bearer(token.json()),
        }


async def test_no_operation_answers_hostile_input_with_a_500(api: AsyncTestClient, callers: dict[str, Any]) -> None:
    spec = (await api.get("/schema/openapi.json")).json()
    failures = []
    calls = 0
    for template, operations in spec["paths"].items():
        for method, operation in operations.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            url = template
            query = {}
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path":
                    url = url.replace("{" + parameter["name"] + "}", "%00")
                elif parameter["in"] == "query":
                    query[parameter["name"]] = NUL_TEXT
            body_schema = (
                (operation.get("requestBody") or {}).get("content", {}).get("application/json", {}).get("schema")
            )
            bodies: list[bytes | None] = [None]
            if method in ("post", "put", "patch"):
                hostile = hostile_value(body_schema, spec) if body_schema else {"field": NUL_TEXT}
                bodies = [json.dumps(hostile).encode(), b'{"unterminated', b"[]"]
            for index, body in enumerate(bodies):
                headers = {
                    **callers[role_for(template)],
                    "Idempotency-Key": f"hostile-{method}-{template}-{index}",
                    "Content-Type": "application/json",
                }
                response = await api.request(method.upper(), url, params=query, content=body, headers=headers)
                calls += 1
                is_problem = response.headers.get("content-type", "").startswith("application/problem+json")
                at_capacity = (  # a documented "retry shortly", not a failure: the walk starts many long reads
                    response.status_code == 503
                    and is_problem
                    and response.json()["code"] in CAPACITY_CODES
                    and response.headers.get("retry-after")
                )
                if (response.status_code >= 500 and not at_capacity) or (
                    response.status_code >= 400 and not is_problem
                ):
                    failures.append((method.upper(), url, body, response.status_code, response.text[:200]))
    assert calls > 60  # the walk reached the routes (a broken schema would make this test pass vacuously)
    assert not failures, "\n".join(map(str, failures))


@pytest.mark.parametrize(
    ("content_type", "body", "authorization"),
    [
        ("application/x-www-form-urlencoded", b"grant_type=client_credentials&client_id=a%00b&client_secret=x", None),
        ("application/x-www-form-urlencoded", b"grant_type=client_credentials&client_id=%FF%FE&client_secret=x", None),
        ("multipart/form-data", b"grant_type=client_credentials", None),
        ("multipart/form-data; boundary=zz", b"--zz\r\nContent-Disposition: form-data\r\n\r\nx\r\n", None),
        ("application/x-www-form-urlencoded", b"grant_type=client_credentials", "Basic YQBiOng="),  # "a\0b:x"
        ("application/x-www-form-urlencoded", b"grant_type=client_credentials", "Basic //79"),  # not UTF-8
        ("application/x-www-form-urlencoded", b"grant_type=client_credentials", "Basic ***"),
    ],
)
async def test_the_token_endpoint_refuses_malformed_forms_and_credentials(
    api: AsyncTestClient, content_type: str, body: bytes, authorization: str | None
) -> None:
    headers = {"Content-Type": content_type, **({"Authorization": authorization} if authorization else {})}
    response = await api.post("/v1/auth/token", content=body, headers=headers)
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


def deeply_nested(levels: int = 1000) -> bytes:
    return b'{"phone": ' + b"[" * levels + b"]" * levels + b"}"


async def test_a_deeply_nested_body_is_a_400_on_every_route_that_reads_json(
    api: AsyncTestClient, callers: dict[str, Any]
) -> None:
    """Nesting past the decoder's recursion limit once escaped as an unauthenticated 500 with a traceback."""
    spec = (await api.get("/schema/openapi.json")).json()
    answers = {}
    for template, operations in spec["paths"].items():
        for method, operation in operations.items():
            if "application/json" not in (operation.get("requestBody") or {}).get("content", {}):
                continue
            url = template.replace("{", "").replace("}", "")  # a path segment of the wrong shape is fine here
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path":
                    url = template.replace("{" + parameter["name"] + "}", "00000000-0000-0000-0000-000000000000")
            headers = {**callers[role_for(template)], "Content-Type": "application/json"}
            response = await api.request(method.upper(), url, content=deeply_nested(), headers=headers)
            answers[(method, template)] = (response.status_code, response.headers.get("content-type", ""))
    assert len(answers) > 20
    wrong = {k: v for k, v in answers.items() if v[0] >= 500 or not v[1].startswith("application/problem+json")}
    assert not wrong, wrong
    # Anonymous routes decode before anything else, so their answer is the 400 itself.
    assert answers[("post", "/v1/auth/otp")][0] == 400


async def test_a_signature_time_with_a_digit_that_is_not_ascii_is_a_401(
    callers: dict[str, Any], database_url: str, sms_gateway: Any, city_idp: Any
) -> None:
    """Over a real socket: the byte 0xB2, which the server reads as "²" (header bytes are Latin-1)."""
    app = create_app(identity_settings(sms_gateway, city_idp), database_url)
    headers = {**callers["partner"], "Content-Type": "application/json", "X-Carbon-Signature": b"t=179604522\xb2,v1=00"}
    async with served(app) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.post("/v1/partner/actions:batch", content=b'{"records": [{}]}', headers=headers)
    assert response.status_code == 401 and response.json()["code"] == "signature_invalid", response.text


async def test_a_malformed_uuid_in_a_path_is_a_422_naming_it_not_a_404(
    api: AsyncTestClient, callers: dict[str, Any]
) -> None:
    resident = callers["resident"]
    for method, path, name in (
        ("GET", "/v1/me/actions/not-a-uuid", "action_id"),
        ("DELETE", "/v1/me/links/12345", "link_id"),
        ("GET", "/v1/operator/actions/xyz", "action_id"),
    ):
        headers = callers["admin"] if "operator" in path else resident
        response = await api.request(method, path, headers=headers)
        assert response.status_code == 422 and response.json()["code"] == "invalid_input", (path, response.text)
        assert name in response.text
    assert (
        await api.get("/v1/me/actions/" + "0" * 8 + "-0000-0000-0000-" + "0" * 12, headers=resident)
    ).status_code == 404
    assert (await api.get("/v1/no/such/thing")).status_code == 404


async def test_bad_json_is_a_400_on_every_route_alike(api: AsyncTestClient, callers: dict[str, Any]) -> None:
    spec = (await api.get("/schema/openapi.json")).json()
    answers = {}
    for template, operations in spec["paths"].items():
        for method, operation in operations.items():
            if "application/json" not in (operation.get("requestBody") or {}).get("content", {}):
                continue
            url = template
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path":
                    url = url.replace("{" + parameter["name"] + "}", "00000000-0000-0000-0000-000000000000")
            headers = {**callers[role_for(template)], "Content-Type": "application/json"}
            response = await api.request(method.upper(), url, content=b'{"unterminated', headers=headers)
            answers[(method, template)] = (response.status_code, response.json().get("code"))
    token = await api.post(
        "/v1/auth/token", content=b'{"grant_type": "client_', headers={"Content-Type": "application/json"}
    )
    answers[("post", "/v1/auth/token (JSON)")] = (token.status_code, token.json()["code"])
    wrong = {k: v for k, v in answers.items() if v != (400, "bad_request") and v[0] not in (401, 403)}
    assert len(answers) > 20 and not wrong, wrong
