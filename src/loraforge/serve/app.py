"""OpenAI-compatible HTTP API over the batching engine (``loraforge serve``).

``model`` picks an adapter by name, or the base model by its name (or 'base'), like vLLM's
``--lora-modules``. Every refusal is a 4xx with OpenAI's error shape; the generation thread is never
touched by a bad request.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from typing import Literal

from fastapi import FastAPI, Request as HttpRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from loraforge.serve.engine import BASE, Engine, Request, ServeError

MAX_STOP = 4


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields we do not use (user, logprobs...)
    model: str
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float = Field(0.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1, le=1)
    stream: bool = False
    stop: str | list[str] | None = None


class CompletionBody(_Body):
    prompt: str


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatBody(_Body):
    messages: list[Message] = Field(min_length=1)


class AdapterBody(BaseModel):
    name: str
    path: str | None = None  # relative to --adapter-dir; default: the name


def _error(e: ServeError) -> JSONResponse:
    return JSONResponse({"error": {"message": str(e), "type": "invalid_request_error" if e.status < 500 else
                                   "server_error", "param": e.param, "code": e.code}}, status_code=e.status)


def create_app(engine: Engine, base_name: str, admin_token: str | None = None) -> FastAPI:
    app = FastAPI(title="loraforge", version="1")
    app.state.engine = engine
    metrics = engine.metrics

    @app.exception_handler(ServeError)
    async def _serve_error(request, e: ServeError):
        metrics.inc("loraforge_requests_total", endpoint=request.url.path, status=e.status)
        return _error(e)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        if first.get("type") == "json_invalid":
            msg = "request body is not valid JSON"
        else:
            msg = f"{where}: {first.get('msg', 'invalid request')}" if where else first.get("msg", "invalid request")
        metrics.inc("loraforge_requests_total", endpoint=request.url.path, status=400)
        return _error(ServeError(msg, 400, "invalid_request_error", where or None))

    def model_name(name: str) -> str:
        if name in (base_name, "base"):
            return BASE
        if name in engine.adapters:
            return name
        known = ", ".join([base_name, *engine.adapters])
        raise ServeError(f"model {name!r} does not exist; available: {known}", 404, "model_not_found", "model")

    def build(body: _Body, prompt: str, adapter: str) -> Request:
        ids = engine.encode(prompt)
        room = engine.context_length - len(ids)
        if room <= 0:
            raise ServeError(f"prompt is {len(ids)} tokens; the context length is {engine.context_length}",
                             400, "context_length_exceeded", "messages" if isinstance(body, ChatBody) else "prompt")
        max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        if max_tokens is None:
            max_tokens = min(engine.default_max_tokens, room)
        if max_tokens < 1 or max_tokens > room:
            raise ServeError(f"max_tokens={max_tokens} must be between 1 and {room} (context length "
                             f"{engine.context_length} minus {len(ids)} prompt tokens)", 400, "invalid_value",
                             "max_tokens")
        stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        if len(stops) > MAX_STOP or any(not s for s in stops):
            raise ServeError(f"stop: up to {MAX_STOP} non-empty strings", 400, "invalid_value", "stop")
        from loraforge.data.templates import stop_token_ids

        template = engine.adapters.get(adapter, {}).get("template", "auto")
        return Request(adapter=adapter, prompt_ids=ids, max_tokens=max_tokens,
                       stop_ids=stop_token_ids(engine.tokenizer, template), stop_strings=stops,
                       temperature=body.temperature, top_p=body.top_p)

    async def run(req: Request, endpoint: str, model: str, chat: bool, stream: bool):
        loop, events = asyncio.get_running_loop(), asyncio.Queue()
        req.emit = lambda kind, payload: loop.call_soon_threadsafe(events.put_nowait, (kind, payload))
        start = time.perf_counter()
        engine.submit(req)
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        created = int(time.time())

        def usage():
            return {"prompt_tokens": len(req.prompt_ids), "completion_tokens": len(req.tokens),
                    "total_tokens": len(req.prompt_ids) + len(req.tokens)}

        def finish(status: int):
            metrics.inc("loraforge_requests_total", endpoint=endpoint, model=model, status=status)
            metrics.observe("loraforge_request_seconds", time.perf_counter() - start)

        def chunk(delta: str | None, reason: str | None) -> str:
            if chat:
                d = {"content": delta} if delta is not None else {}
                choice = {"index": 0, "delta": d, "finish_reason": reason}
            else:
                choice = {"index": 0, "text": delta or "", "finish_reason": reason, "logprobs": None}
            obj = {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion", "created": created,
                   "model": model, "choices": [choice]}
            if reason is not None:
                obj["usage"] = usage()
            return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

        if stream:
            async def sse():
                if chat:
                    yield (f"data: {json.dumps({'id': rid, 'object': 'chat.completion.chunk', 'created': created, 'model': model, 'choices': [{'index': 0, 'delta': {'role': 'assistant', 'content': ''}, 'finish_reason': None}]})}\n\n")
                try:
                    while True:
                        kind, payload = await events.get()
                        if kind == "delta":
                            yield chunk(payload, None)
                        elif kind == "error":
                            finish(payload.status)
                            yield f"data: {json.dumps({'error': {'message': str(payload), 'code': payload.code}})}\n\n"
                            break
                        else:
                            finish(200)
                            yield chunk(None, req.finish_reason)
                            break
                    yield "data: [DONE]\n\n"
                finally:  # the client went away: its row stops at the next decoding step
                    if req.finish_reason is None:
                        req.finish_reason = "cancelled"

            return StreamingResponse(sse(), media_type="text/event-stream")
        while True:
            kind, payload = await events.get()
            if kind == "error":
                raise payload
            if kind == "done":
                break
        finish(200)
        if chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": req.text},
                      "finish_reason": req.finish_reason, "logprobs": None}
        else:
            choice = {"index": 0, "text": req.text, "finish_reason": req.finish_reason, "logprobs": None}
        return {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": created,
                "model": model, "choices": [choice], "usage": usage()}

    @app.post("/v1/completions")
    async def completions(body: CompletionBody):
        adapter = model_name(body.model)
        return await run(build(body, body.prompt, adapter), "/v1/completions", body.model, False, body.stream)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatBody):
        from loraforge.data.templates import chat_prompt

        adapter = model_name(body.model)
        meta = engine.adapters.get(adapter, {})
        messages = [m.model_dump() for m in body.messages]
        if meta.get("system_prompt") and not any(m["role"] == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": meta["system_prompt"]})  # as in training
        try:
            prompt = chat_prompt(engine.tokenizer, messages, meta.get("template", "auto"))
        except Exception as e:  # a model chat template may reject e.g. two user turns in a row
            raise ServeError(f"messages: {e}", 400, "invalid_value", "messages") from None
        return await run(build(body, prompt, adapter), "/v1/chat/completions", body.model, True, body.stream)

    @app.get("/v1/models")
    async def models():
        data = [{"id": base_name, "object": "model", "created": 0, "owned_by": "loraforge", "root": base_name,
                 "parent": None}]
        data += [{"id": n, "object": "model", "created": m["created"], "owned_by": "loraforge", "root": m["path"],
                  "parent": base_name} for n, m in engine.adapters.items()]
        return {"object": "list", "data": data}

    @app.get("/health")
    async def health():
        alive = engine._thread.is_alive()
        return JSONResponse({"status": "ok" if alive else "generation thread stopped", "adapters": len(engine.adapters),
                             "queue": engine.queue.qsize()}, status_code=200 if alive else 503)

    @app.get("/metrics")
    async def prometheus():
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    def authorize(request: HttpRequest) -> None:
        if not admin_token:
            raise ServeError("admin endpoints are disabled (start the server with --admin-token)", 403,
                             "permission_denied")
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {admin_token}".encode()):
            raise ServeError("missing or wrong admin bearer token", 401, "unauthorized")

    @app.post("/admin/adapters")
    async def add_adapter(body: AdapterBody, request: HttpRequest):
        authorize(request)
        path = engine.resolve_adapter_path(body.name, body.path)
        meta = await asyncio.to_thread(engine.add_adapter, body.name, path)
        return {"name": body.name, **meta}

    @app.delete("/admin/adapters/{name}")
    async def remove_adapter(name: str, request: HttpRequest):
        authorize(request)
        await asyncio.to_thread(engine.remove_adapter, name)
        return {"name": name, "removed": True}

    return app


def serve(base: str, adapters: list[str], host: str = "127.0.0.1", port: int = 8000, admin_token: str | None = None,
          adapter_dir: str | None = None, dtype: str = "auto", max_batch: int = 16, batch_wait_ms: float = 5) -> None:
    """Load the base model and the ``name=DIR`` adapters, then run uvicorn until interrupted."""
    import uvicorn

    app = build_app(base, adapters, admin_token, adapter_dir, dtype, max_batch, batch_wait_ms)
    uvicorn.run(app, host=host, port=port, log_level="info")


def build_app(base: str, adapters: list[str], admin_token: str | None = None, adapter_dir: str | None = None,
              dtype: str = "auto", max_batch: int = 16, batch_wait_ms: float = 5) -> FastAPI:
    from loraforge.config import ConfigError
    from loraforge.models.load import load_model

    import torch

    loaded = load_model(base, dtype=dtype, device="cuda" if torch.cuda.is_available() else "cpu")
    if loaded.family != "causal":
        raise ConfigError(f"serve supports decoder-only models; {base!r} is {loaded.family}")
    engine = Engine(loaded, adapter_root=adapter_dir, max_batch=max_batch, batch_wait_ms=batch_wait_ms)
    for spec in adapters:
        name, sep, path = spec.partition("=")
        if not sep:
            raise ConfigError(f"--adapter {spec!r}: expected NAME=DIR")
        try:
            engine.add_adapter(name, path)
        except ServeError as e:
            raise ConfigError(f"--adapter {spec}: {e}") from None
    return create_app(engine, base_name=base, admin_token=admin_token)
