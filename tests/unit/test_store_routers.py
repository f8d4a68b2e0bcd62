"""presence-store's XCAP and admin routers, mounted as the service mounts them (their
context in the app's state), for what they answer before any table is read."""

from __future__ import annotations

import dataclasses
from unittest.mock import MagicMock

import httpx

from presence.runtime.health import make_health_app
from presence.settings import Settings
from presence_store import admin, xcap
from presence_store.context import STATE_NAME, StoreContext

ADMIN_TOKEN = "a-test-admin-token-0123456789"
XCAP_SECRET = "a-test-xcap-secret-0123456789"
RULES = "/xcap-root/pres-rules/users/sip:alice@example.com/index"
CAPS = "/xcap-root/xcap-caps/global/index"


def store(**settings: str) -> httpx.AsyncClient:
    """A client of the two routers, on settings with these changes."""
    context = StoreContext(
        dataclasses.replace(Settings(), **settings),
        pool=MagicMock(),
        locks=MagicMock(),
        producer=MagicMock(),
        cleaner=MagicMock(),
        xcap_writes=MagicMock(),
    )
    app = make_health_app("presence-store", {})
    setattr(app.state, STATE_NAME, context)
    app.include_router(xcap.router)
    app.include_router(admin.router)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://store")


async def test_the_admin_api_is_disabled_without_a_token() -> None:
    async with store() as api:
        answer = await api.get("/admin/presentities")
    assert answer.status_code == 503
    assert "PRESENCE_ADMIN_TOKEN" in answer.json()["error"]
    assert answer.headers["X-Correlation-Id"].startswith("admin")


async def test_the_admin_api_wants_the_configured_token() -> None:
    async with store(admin_token=ADMIN_TOKEN) as api:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            answer = await api.get("/admin/presentities", headers=headers)
            assert answer.status_code == 401
            assert answer.headers["WWW-Authenticate"] == "Bearer"


async def test_a_bad_admin_parameter_names_its_field() -> None:
    async with store(admin_token=ADMIN_TOKEN) as api:
        answer = await api.get(
            "/admin/presentities",
            params={"limit": 0},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
    assert answer.status_code == 400
    assert answer.json()["field"] == "limit"


async def test_xcap_is_disabled_without_a_secret() -> None:
    async with store() as api:
        assert (await api.get(RULES)).status_code == 503


async def test_xcap_caps_is_read_only_and_readable_by_anyone() -> None:
    async with store(xcap_secret=XCAP_SECRET) as api:
        assert (await api.get(CAPS)).status_code == 200
        refused = await api.put(CAPS, content=b"<x/>")
    assert (refused.status_code, refused.headers["Allow"]) == (405, "GET")


async def test_a_users_xcap_document_needs_their_credentials() -> None:
    async with store(xcap_secret=XCAP_SECRET) as api:
        answer = await api.get(RULES)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith("Basic ")
