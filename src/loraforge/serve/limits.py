"""Request bodies bounded before anything reads them: a declared or streamed body over the limit is a 413.

Why: a huge prompt is parsed and tokenized (seconds of CPU) before any other check can refuse it.
An ASGI middleware sees the ``Content-Length`` header first and counts the bytes of a chunked body as
they arrive, so neither JSON parsing nor tokenization ever starts on an oversized request.
"""

from __future__ import annotations

import json

from fastapi import HTTPException

DEFAULT_MAX_BODY_BYTES = 1 << 20


class BodyTooLarge(HTTPException):
    """Raised while a route reads a chunked body that passes the limit (FastAPI re-raises HTTPExceptions)."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body is larger than {limit} bytes (--max-body-bytes)")


def too_large_body(limit: int) -> bytes:
    return json.dumps({"error": {"message": f"request body is larger than {limit} bytes (--max-body-bytes)",
                                 "type": "invalid_request_error", "param": None,
                                 "code": "request_too_large"}}).encode()


class BodyLimit:
    """ASGI middleware: 413 for bodies over ``max_bytes``."""

    def __init__(self, app, max_bytes: int = DEFAULT_MAX_BODY_BYTES):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self.reject(send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        started = False

        async def tracked(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge:  # read outside a route (no exception handler caught it)
            if not started:
                await self.reject(send)

    async def reject(self, send) -> None:
        body = too_large_body(self.max_bytes)
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
