"""Operations endpoints: health, Prometheus metrics, and the bearer-token adapter API."""

from __future__ import annotations

import asyncio
import hmac

from fastapi import APIRouter, Depends, Request as HttpRequest
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel

from loraforge.serve.api import Server, get_server
from loraforge.serve.engine import ServeError

router = APIRouter()


class AdapterBody(BaseModel):
    name: str
    path: str | None = None  # relative to --adapter-dir; default: the name


@router.get("/health")
async def health(server: Server = Depends(get_server)):
    engine = server.engine
    return JSONResponse({"status": "ok" if engine.alive else "generation thread stopped",
                         "adapters": len(engine.adapters), "queue": engine.queue_depth()},
                        status_code=200 if engine.alive else 503)


@router.get("/metrics")
async def prometheus(server: Server = Depends(get_server)):
    return PlainTextResponse(server.engine.metrics.render(), media_type="text/plain; version=0.0.4")


def authorize(request: HttpRequest, server: Server = Depends(get_server)) -> Server:
    if not server.admin_token:
        raise ServeError("admin endpoints are disabled (start the server with --admin-token)", 403,
                         "permission_denied")
    given = request.headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {server.admin_token}".encode()):
        raise ServeError("missing or wrong admin bearer token", 401, "unauthorized")
    return server


@router.post("/admin/adapters")
async def add_adapter(body: AdapterBody, server: Server = Depends(authorize)):
    path = server.engine.resolve_adapter_path(body.name, body.path)
    meta = await asyncio.to_thread(server.engine.add_adapter, body.name, path)
    return {"name": body.name, **meta}


@router.delete("/admin/adapters/{name}")
async def remove_adapter(name: str, server: Server = Depends(authorize)):
    await asyncio.to_thread(server.engine.remove_adapter, name)
    return {"name": name, "removed": True}
