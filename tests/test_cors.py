"""CORS for a browser console: off by default; with CARBON_CORS_ORIGINS, preflights of any route (even a
guarded one) get a proper answer, not 401, and only the listed origins are allowed."""

from __future__ import annotations

from typing import Any

from litestar.testing import AsyncTestClient

from api.app import create_app
from tests.helpers import identity_settings

CONSOLE = "https://console.example.org"
PREFLIGHT = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}


async def test_preflights_are_answered_for_the_listed_origins_only(
    database_url: str, sms_gateway: Any, city_idp: Any
) -> None:
    app = create_app(identity_settings(sms_gateway, city_idp, cors_origins=[CONSOLE]), database_url)
    async with AsyncTestClient(app=app) as client:
        allowed = await client.options("/v1/operator/audit-log", headers={"Origin": CONSOLE, **PREFLIGHT})
        assert allowed.status_code in (200, 204), allowed.text
        assert allowed.headers["access-control-allow-origin"] == CONSOLE
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
        stranger = await client.options(
            "/v1/operator/audit-log", headers={"Origin": "https://evil.example", **PREFLIGHT}
        )
        assert stranger.headers.get("access-control-allow-origin") != "https://evil.example"
        simple = await client.get("/v1/methodologies", headers={"Origin": CONSOLE})
        assert simple.status_code == 200 and simple.headers["access-control-allow-origin"] == CONSOLE


async def test_no_cross_origin_access_by_default(api: AsyncTestClient) -> None:
    response = await api.get("/v1/methodologies", headers={"Origin": CONSOLE})
    assert response.status_code == 200 and "access-control-allow-origin" not in response.headers
