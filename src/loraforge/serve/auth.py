"""The API key of the OpenAI-compatible routes (``--api-key`` or ``LORAFORGE_API_KEY``), as vLLM's.

With a key set, every ``/v1/...`` route (completions, chat, models, mask) answers 401 unless the
request carries ``Authorization: Bearer KEY``; ``/health`` and ``/metrics`` stay open for probes and
scrapers, and ``/admin/...`` keeps its own token. Without a key the routes are open (loopback default).
"""

from __future__ import annotations

import hmac
import os

from fastapi import Request as HttpRequest

from loraforge.serve.engine import ServeError

API_KEY_ENV = "LORAFORGE_API_KEY"


def api_key_from(given: str | None) -> str | None:
    """The flag's value, else the environment's (a flag shows in ``ps``; the variable does not)."""
    return given or os.environ.get(API_KEY_ENV) or None


def require_api_key(request: HttpRequest) -> None:
    """A route dependency: 401 (OpenAI's ``invalid_api_key``) for a missing or wrong bearer key."""
    key = getattr(request.app.state, "api_key", None)
    if not key:
        return
    given = request.headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {key}".encode()):
        raise ServeError("missing or wrong API key (send 'Authorization: Bearer KEY'; the server's --api-key)",
                         401, "invalid_api_key")
