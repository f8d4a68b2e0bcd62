"""The HTTP face every service shares: /health/live, /health/ready and /metrics (FastAPI)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from presence.runtime import metrics
from presence.runtime.http_limits import DEFAULT_MAX_BODY

ReadinessCheck = Callable[[], Awaitable[bool]]


def make_health_app(service: str, checks: dict[str, ReadinessCheck]) -> FastAPI:
    """An app whose /health/ready is 200 only while every dependency check passes."""
    # OpenAPI at /openapi.json, browsable at /docs (the store's XCAP API is there).
    # Every route's request body is bounded; a router may set its own limit (XCAP).
    app = FastAPI(title=service, max_body_size=DEFAULT_MAX_BODY)

    @app.get("/health/live")
    async def live() -> dict[str, str]:
        return {"service": service, "status": "live"}

    @app.get("/health/ready")
    async def ready() -> JSONResponse:
        names = list(checks)
        results = await asyncio.gather(*(_safe(checks[name]) for name in names))
        report = {name: "ok" if ok else "down" for name, ok in zip(names, results, strict=True)}
        status = 200 if all(results) else 503
        return JSONResponse({"service": service, "ready": status == 200, "checks": report}, status)

    @app.get("/metrics", response_class=Response)
    async def prometheus_metrics() -> Response:
        """Prometheus text exposition (presence.runtime.metrics lists what is measured)."""
        body, content_type = await metrics.exposition()
        return Response(body, media_type=content_type)

    return app


async def _safe(check: ReadinessCheck) -> bool:
    try:
        return await asyncio.wait_for(check(), 3.0)
    except Exception:
        return False
