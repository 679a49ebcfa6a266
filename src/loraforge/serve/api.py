"""The OpenAI-compatible endpoints: /v1/completions, /v1/chat/completions, /v1/models.

``model`` picks an adapter by name, or the base model by its name (or 'base'), like vLLM's
``--lora-modules``. Requests are checked completely (model, lengths, stops) before the engine sees them.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

from fastapi import APIRouter, Depends, Request as HttpRequest
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from loraforge.serve.engine import BASE, Engine, Request, ServeError
from loraforge.serve.text import Codec

MAX_STOP = 4


@dataclass
class Server:
    """What every route needs, stored once on ``app.state.server``."""

    engine: Engine
    codec: Codec
    base_name: str
    admin_token: str | None = None


def get_server(request: HttpRequest) -> Server:
    return request.app.state.server


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


def resolve_model(server: Server, name: str) -> str:
    if name in (server.base_name, "base"):
        return BASE
    if name in server.engine.adapters:
        if server.engine.adapters[name].get("tagger"):
            raise ServeError(f"model {name!r} is a PII tagger: it writes no text; POST /v1/mask with it instead",
                             400, "invalid_request_error", "model")
        return name
    known = ", ".join([server.base_name, *server.engine.adapters])
    raise ServeError(f"model {name!r} does not exist; available: {known}", 404, "model_not_found", "model")


def _stops(body: _Body) -> list[str]:
    stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stops) > MAX_STOP or any(not s for s in stops):
        raise ServeError(f"stop: up to {MAX_STOP} non-empty strings", 400, "invalid_value", "stop")
    return stops


def _max_tokens(body: _Body, engine: Engine, prompt_len: int) -> int:
    room = engine.context_length - prompt_len
    max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    if max_tokens is None:
        max_tokens = min(engine.default_max_tokens, room)
    if max_tokens < 1 or max_tokens > room:
        raise ServeError(f"max_tokens={max_tokens} must be between 1 and {room} (context length "
                         f"{engine.context_length} minus {prompt_len} prompt tokens)", 400, "invalid_value",
                         "max_tokens")
    return max_tokens


def build_request(server: Server, body: _Body, prompt: str, adapter: str) -> Request:
    from loraforge.data.templates import stop_token_ids

    engine = server.engine
    stops = _stops(body)
    ids = server.codec.encode(prompt)
    if len(ids) > engine.max_prompt_tokens:
        raise ServeError(f"prompt is {len(ids)} tokens; this server accepts at most {engine.max_prompt_tokens} "
                         f"(--max-prompt-tokens; context length {engine.context_length})", 400,
                         "context_length_exceeded", "messages" if isinstance(body, ChatBody) else "prompt")
    template = engine.adapters.get(adapter, {}).get("template", "auto")
    return Request(adapter=adapter, prompt_ids=ids, max_tokens=_max_tokens(body, engine, len(ids)),
                   stop_ids=stop_token_ids(engine.tokenizer, template), stop_strings=stops,
                   temperature=body.temperature, top_p=body.top_p)


class Generation:
    """One request between the generation thread and its HTTP response: token ids in, text out."""

    def __init__(self, server: Server, req: Request, endpoint: str, model: str, chat: bool):
        self.engine, self.req, self.endpoint, self.model, self.chat = server.engine, req, endpoint, model, chat
        self.text = server.codec.stream(req.stop_strings)
        self.events: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        req.emit = lambda kind, payload: loop.call_soon_threadsafe(self.events.put_nowait, (kind, payload))
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        self.created, self.start = int(time.time()), time.perf_counter()
        self.finish_reason: str | None = None

    async def deltas(self) -> AsyncIterator[str]:
        """Text deltas until the answer ends (``finish_reason`` set); raises the engine's ServeError."""
        self.engine.submit(self.req)
        while True:
            kind, payload = await self.events.get()
            if kind == "error":
                self.finish_reason = "error"
                raise payload
            delta = self.text.push(payload) if kind == "token" else self.text.finish()
            if kind == "done":
                self.finish_reason = payload
            elif self.text.stopped:
                self.finish_reason = "stop"
                self.engine.cancel(self.req)  # a stop string frees the row at the next step
            if delta:
                yield delta
            if self.finish_reason is not None:
                return

    def abandon(self) -> None:
        """The client left before the end: free its row."""
        if self.finish_reason is None:
            self.finish_reason = "cancelled"
            self.engine.cancel(self.req)

    def usage(self) -> dict:
        done = len(self.text.tokens)
        return {"prompt_tokens": len(self.req.prompt_ids), "completion_tokens": done,
                "total_tokens": len(self.req.prompt_ids) + done}

    def record(self, status: int) -> None:
        self.engine.metrics.inc("loraforge_requests_total", endpoint=self.endpoint, model=self.model, status=status)
        self.engine.metrics.observe("loraforge_request_seconds", time.perf_counter() - self.start)

    def _object(self, kind: str, choice: dict, usage: bool) -> dict:
        obj = {"id": self.id, "object": kind, "created": self.created, "model": self.model, "choices": [choice]}
        return {**obj, "usage": self.usage()} if usage else obj

    def chunk(self, delta: str | None, reason: str | None) -> str:
        if self.chat:
            choice = {"index": 0, "delta": {"content": delta} if delta is not None else {}, "finish_reason": reason}
        else:
            choice = {"index": 0, "text": delta or "", "finish_reason": reason, "logprobs": None}
        obj = self._object("chat.completion.chunk" if self.chat else "text_completion", choice, reason is not None)
        return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

    async def sse(self) -> AsyncIterator[str]:
        if self.chat:
            first = {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
            yield f"data: {json.dumps(self._object('chat.completion.chunk', first, False))}\n\n"
        try:
            try:
                async for delta in self.deltas():
                    yield self.chunk(delta, None)
            except ServeError as e:
                self.record(e.status)
                yield f"data: {json.dumps({'error': {'message': str(e), 'code': e.code}})}\n\n"
            else:
                self.record(200)
                yield self.chunk(None, self.finish_reason)
            yield "data: [DONE]\n\n"
        finally:
            self.abandon()

    async def whole(self) -> dict:
        try:
            text = "".join([d async for d in self.deltas()])
        finally:
            self.abandon()
        self.record(200)
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text},
                      "finish_reason": self.finish_reason, "logprobs": None}
        else:
            choice = {"index": 0, "text": text, "finish_reason": self.finish_reason, "logprobs": None}
        return self._object("chat.completion" if self.chat else "text_completion", choice, True)


async def _respond(server: Server, body: _Body, prompt: str, adapter: str, endpoint: str, chat: bool):
    gen = Generation(server, build_request(server, body, prompt, adapter), endpoint, body.model, chat)
    if body.stream:
        return StreamingResponse(gen.sse(), media_type="text/event-stream")
    return await gen.whole()


router = APIRouter()


@router.post("/v1/completions")
async def completions(body: CompletionBody, server: Server = Depends(get_server)):
    adapter = resolve_model(server, body.model)
    return await _respond(server, body, body.prompt, adapter, "/v1/completions", False)


def chat_prompt_for(server: Server, body: ChatBody, adapter: str) -> str:
    """The adapter's template and system prompt, as in training."""
    from loraforge.data.templates import chat_prompt

    meta = server.engine.adapters.get(adapter, {})
    messages = [m.model_dump() for m in body.messages]
    if meta.get("system_prompt") and not any(m["role"] == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": meta["system_prompt"]})
    try:
        return chat_prompt(server.engine.tokenizer, messages, meta.get("template", "auto"))
    except Exception as e:  # a model chat template may reject e.g. two user turns in a row
        raise ServeError(f"messages: {e}", 400, "invalid_value", "messages") from None


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatBody, server: Server = Depends(get_server)):
    adapter = resolve_model(server, body.model)
    prompt = chat_prompt_for(server, body, adapter)
    return await _respond(server, body, prompt, adapter, "/v1/chat/completions", True)


@router.get("/v1/models")
async def models(server: Server = Depends(get_server)):
    base = server.base_name
    data = [{"id": base, "object": "model", "created": 0, "owned_by": "loraforge", "root": base, "parent": None}]
    data += [{"id": n, "object": "model", "created": m["created"], "owned_by": "loraforge", "root": m["path"],
              "parent": base} for n, m in server.engine.adapters.items()]
    return {"object": "list", "data": data}
