"""presence-store's /client/ routes (presence_store.webclient) on an in-memory app: the
bundle's own files with a strict Content-Security-Policy, nothing outside its directory,
a 404 that says how to build a missing bundle, and the WebSocket URLs for the page."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from presence import settings as settings_module
from presence_store.webclient import webclient_router


def client_for(directory: Path, **env: str) -> httpx.AsyncClient:
    settings = settings_module.load(
        {"PRESENCE_AUTH": "none", "PRESENCE_WEBCLIENT_DIR": str(directory), **env}
    )
    app = FastAPI()
    app.include_router(webclient_router(settings))
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://presence.example:8080")


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    directory = tmp_path / "dist"
    directory.mkdir()
    (directory / "index.html").write_text("<!doctype html><title>Presence</title>")
    (directory / "client.js").write_text("export {};")
    (directory / ".sources.sha256").write_text("0" * 64)
    (tmp_path / "secret.txt").write_text("not for the browser")
    return directory


async def test_the_page_and_its_script_come_with_a_same_origin_policy(bundle: Path) -> None:
    client = client_for(bundle)
    page = await client.get("/client/")
    assert page.status_code == 200
    assert page.text.startswith("<!doctype html>")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "connect-src 'self' ws: wss:" in policy
    script = await client.get("/client/client.js")
    assert script.status_code == 200
    assert script.headers["content-type"].split(";")[0] in (
        "text/javascript",
        "application/javascript",
    )
    assert script.headers["x-content-type-options"] == "nosniff"
    redirect = await client.get("/client", follow_redirects=False)
    assert redirect.status_code == 308 and redirect.headers["location"] == "/client/"


@pytest.mark.parametrize(
    "path",
    [
        "/client/.sources.sha256",  # hidden files stay on the server
        "/client/..%2Fsecret.txt",
        "/client/%2E%2E/secret.txt",
        "/client/..",
        "/client/missing.js",
        "/client/index.html%00.js",
    ],
)
async def test_nothing_but_the_bundle_files_is_served(bundle: Path, path: str) -> None:
    answer = await client_for(bundle).get(path)
    assert answer.status_code == 404
    assert "not for the browser" not in answer.text


async def test_a_missing_bundle_is_a_404_saying_how_to_build_it(tmp_path: Path) -> None:
    answer = await client_for(tmp_path / "nothing-built").get("/client/")
    assert answer.status_code == 404
    assert "run scripts/webclient.sh" in answer.text


async def test_the_config_names_the_websocket_listeners_on_the_page_host(bundle: Path) -> None:
    plain = client_for(bundle, PRESENCE_SIP_WS_PORT="5066", PRESENCE_SIP_WSS_PORT="7443")
    # No certificate: no WSS listener, so no wss URL.
    assert (await plain.get("/client/config.json")).json() == {
        "ws": "ws://presence.example:5066",
        "wss": None,
    }
    secure = client_for(
        bundle,
        PRESENCE_SIP_WS_PORT="0",
        PRESENCE_TLS_CERT="/etc/presence/cert.pem",
        PRESENCE_TLS_KEY="/etc/presence/key.pem",
    )
    assert (await secure.get("/client/config.json")).json() == {
        "ws": None,
        "wss": "wss://presence.example:7443",
    }
