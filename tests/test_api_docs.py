"""The API docs work with no internet: the page at /schema loads its scripts and styles from the service."""

from __future__ import annotations

import re
from typing import Any

from litestar.testing import AsyncTestClient

from tests.helpers import bearer, sign_in_resident


async def test_the_docs_page_loads_its_assets_from_the_service(api: AsyncTestClient) -> None:
    page = await api.get("/schema")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert len(assets) >= 3, page.text[:500]
    external = [url for url in assets if url.startswith(("http:", "https:", "//"))]
    assert not external, external
    for url in assets:
        response = await api.get(url)
        assert response.status_code == 200 and len(response.content) > 1000, url
    assert (await api.get("/schema/openapi.json")).json()["openapi"].startswith("3.")


AUDIENCES = {"resident", "merchant", "partner", "operator", "auth", "ledger transparency", "methodologies", "health"}


async def test_every_operation_has_one_tag_naming_its_audience(api: AsyncTestClient) -> None:
    spec = (await api.get("/schema/openapi.json")).json()
    tags = {
        (method, path): operation.get("tags", [])
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
        if method in ("get", "post", "put", "patch", "delete")
    }
    wrong = {key: value for key, value in tags.items() if len(value) != 1 or value[0] not in AUDIENCES}
    assert len(tags) > 40 and not wrong, wrong


def _documented(spec: dict[str, Any], method: str, path: str, status: int) -> list[str]:
    """The problem codes the schema documents for ``method path`` at ``status``."""
    templates = [
        p
        for p, operations in spec["paths"].items()
        if method.lower() in operations and re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", p), path)
    ]
    template = min(templates, key=lambda p: p.count("{"))  # a literal segment wins, as in routing
    response = spec["paths"][template][method.lower()]["responses"].get(str(status))
    if response is None:
        return []
    schema = response["content"]["application/problem+json"]["schema"]
    [extension] = [part for part in schema["allOf"] if "properties" in part]
    codes = extension["properties"]["code"]["enum"]
    assert extension["properties"]["type"]["enum"] == [f"urn:carbon-rewards:problem:{c}" for c in codes]
    return codes  # type: ignore[no-any-return]


async def test_every_error_response_is_documented_with_its_problem_types(
    api: AsyncTestClient, sms_gateway: Any
) -> None:
    spec = (await api.get("/schema/openapi.json")).json()
    assert set(spec["components"]["schemas"]["Problem"]["required"]) >= {"type", "code", "status", "detail"}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            errors = {s: r for s, r in operation["responses"].items() if s[0] in "45"}
            assert "500" in errors and "422" in errors or path == "/health/live", (method, path)
            for status, response in errors.items():
                assert list(response["content"]) == ["application/problem+json"], (method, path, status)
                assert _documented(spec, method, path.replace("{", "").replace("}", ""), int(status))

    # Errors really answered are documented under their operation, status and code.
    unknown = "00000000-0000-4000-8000-000000000000"
    resident = bearer(await sign_in_resident(api, sms_gateway))
    answered = [
        await api.get("/v1/me"),
        await api.get("/v1/me", headers={"Authorization": "Bearer not.a.jwt"}),
        await api.get("/v1/operator/actions", headers=resident),
        await api.get(f"/v1/me/actions/{unknown}", headers=resident),
        await api.get("/v1/me/actions/not-a-uuid", headers=resident),
        await api.post(
            "/v1/me/links", json={"partner_id": unknown, "partner_account_ref": "x", "link_code": "1"}, headers=resident
        ),
        await api.post("/v1/me/links", content=b"{not json", headers={**resident, "Content-Type": "application/json"}),
        await api.post("/v1/me/links", json={"partner_id": unknown, "surprise": 1}, headers=resident),
        await api.post("/v1/partner/actions:batch", content=b"[]", headers=resident),
        await api.get(f"/v1/offers/{unknown}", headers=resident),
        await api.get("/v1/ledger/checkpoints/999999999"),
        await api.get("/v1/methodologies/no-such/1"),
    ]
    for response in answered:
        problem = response.json()
        assert response.headers["content-type"] == "application/problem+json", response.text
        request = response.request
        documented = _documented(spec, request.method, request.url.path, response.status_code)
        assert problem["code"] in documented, (request.method, request.url.path, response.status_code, problem)
