"""The browser presence client, served under /client/ of presence-store's HTTP(S)
ports: same origin as XCAP, so the page's XCAP requests need no CORS. The page is a
bundle built by scripts/webclient.sh (webclient/); it reaches sip-edge's WebSocket
listeners, whose URLs /client/config.json gives for the host the page came from."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)

from presence.settings import Settings

DEFAULT_DIR = Path(__file__).resolve().parents[3] / "webclient" / "dist"
# The bundle's own files only: one plain name, no path, no hidden files.
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# The page loads its script and styles from here and connects only here and to the
# WebSocket listeners: nothing from anywhere else.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self' ws: wss:; style-src 'self' 'unsafe-inline'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def webclient_router(settings: Settings) -> APIRouter:
    directory = Path(settings.webclient_dir) if settings.webclient_dir else DEFAULT_DIR
    router = APIRouter(prefix="/client", tags=["webclient"], include_in_schema=False)

    def file(name: str) -> Response:
        path = directory / name
        if not _FILE_NAME.fullmatch(name) or not path.is_file():
            if not (directory / "index.html").is_file():
                return PlainTextResponse(
                    f"the browser client is not built in {directory}: run scripts/webclient.sh",
                    status_code=404,
                )
            return PlainTextResponse("not found", status_code=404)
        return FileResponse(path, headers=_HEADERS)

    @router.get("")
    async def client_root() -> RedirectResponse:
        return RedirectResponse("/client/", status_code=308)

    @router.get("/")
    async def client_page() -> Response:
        return file("index.html")

    @router.get("/config.json")
    async def client_config(request: Request) -> JSONResponse:
        host = request.url.hostname or "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        ws = f"ws://{host}:{settings.sip_ws_port}" if settings.sip_ws_port else None
        wss_on = settings.sip_wss_port and settings.tls_enabled
        wss = f"wss://{host}:{settings.sip_wss_port}" if wss_on else None
        return JSONResponse({"ws": ws, "wss": wss}, headers=_HEADERS)

    @router.get("/{name}")
    async def client_file(name: str) -> Response:
        return file(name)

    return router
