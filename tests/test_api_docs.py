"""The API docs work with no internet: the page at /schema loads its scripts and styles from the service."""

from __future__ import annotations

import re

from litestar.testing import AsyncTestClient


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
