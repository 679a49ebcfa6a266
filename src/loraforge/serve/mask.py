"""``POST /v1/mask``: PII masking over HTTP, with the same body limit, error shape and API key as the rest.

    {"text": "Mail ann@example.com" | [...], "format": "both", "merge": "union", "bias": 2.0,
     "style": "numbered", "pseudonymize": false, "consistent_across_batch": false}
    -> {"object": "mask", "engine": "patterns" | "model" | "model+patterns", "model": NAME | null,
        "data": [{"index": 0, "masked": "Mail [EMAIL]", "spans": [{"type", "start", "end", ...}]}]}

Spans are in character offsets of each input text and never carry the values. ``engine`` says what
found them: the validated patterns only, or the served PII adapter's model (its run's ``data.task``
is ``pii``, or one of its ``data.tasks`` is, whose prompt it then uses; the first one, or the one
named in ``model``) with or without the patterns.

Why a model of its own: the engine's generation thread owns the served weights and swaps merged
LoRA weights in and out per batch, while copy-or-mask decoding (``pii.decode``) needs its own
constrained loop. So the first request that needs the model loads the base and the PII adapter a
second time (fp32, the engine's device), and every masking call runs in a worker thread under one
lock: requests to /v1/mask are served one at a time, and generation never waits for them. All
masking logic is ``loraforge.pii``'s; nothing here logs texts, spans' values or mappings.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Literal

from fastapi import APIRouter, Depends, Request as HttpRequest
from pydantic import BaseModel, ConfigDict, Field

from loraforge.serve.api import Server, get_server
from loraforge.serve.engine import ServeError

MAX_TEXTS = 256
"""Texts per request; their total size is bounded by --max-body-bytes."""
MAX_BIAS = 50.0


class MaskBody(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt option is a 400, not silently ignored
    text: str | list[str]
    format: Literal["text", "spans", "both"] = "both"
    merge: Literal["union", "model", "patterns"] | None = None
    """Default: union with a PII adapter served, else patterns."""
    bias: float | None = Field(None, ge=-MAX_BIAS, le=MAX_BIAS)
    """The model's recall knob (default ``pii.DEFAULT_BIAS``): higher masks more."""
    style: Literal["placeholder", "numbered", "pseudonym"] | None = None
    pseudonymize: bool = False
    """Shorthand for style "pseudonym": Faker values, consistent per identity."""
    consistent_across_batch: bool = False
    """Numbers and pseudonyms shared by all texts of this request (else per text)."""
    locale: str = "en_US"
    model: str | None = None
    """The PII adapter to use (default: the first one served)."""


def _bad(message: str, param: str) -> ServeError:
    return ServeError(message, 400, "invalid_value", param)


def _texts(body: MaskBody) -> list[str]:
    from loraforge.data.formats import DataError
    from loraforge.pii import check_text

    texts = [body.text] if isinstance(body.text, str) else body.text
    if not texts:
        raise _bad("text: give a string or a non-empty list of strings", "text")
    if len(texts) > MAX_TEXTS:
        raise _bad(f"text: {len(texts)} texts; at most {MAX_TEXTS} per request", "text")
    for i, t in enumerate(texts):
        try:
            check_text(t, "text" if isinstance(body.text, str) else f"text[{i}]")
        except DataError as e:  # names the position and the problem, never the content
            raise _bad(str(e), "text") from None
    return texts


def _style(body: MaskBody) -> str:
    if body.pseudonymize and body.style not in (None, "pseudonym"):
        raise _bad(f"pseudonymize: true conflicts with style {body.style!r}; give one of them", "pseudonymize")
    from faker.config import AVAILABLE_LOCALES

    if body.locale not in AVAILABLE_LOCALES:
        raise _bad(f"locale: {body.locale!r} is not a Faker locale (e.g. en_US, de_DE, fr_FR)", "locale")
    return "pseudonym" if body.pseudonymize else body.style or "placeholder"


class MaskService:
    """The served PII adapters' task lookup and the one loaded masking model (see the module docstring)."""

    def __init__(self, base_name: str, device):
        self.base_name, self.device = base_name, device
        self.lock = threading.Lock()
        self._configs: dict[str, object] = {}  # adapter path -> its run config (None: not a run)
        self._loaded: tuple[str, object] | None = None  # (adapter path, its span finder)

    def _config(self, path: str):
        if path not in self._configs:
            from loraforge.runs import resolve_adapter

            try:
                ref = resolve_adapter(path)
                self._configs[path] = ref.run.config() if ref.run else None
            except Exception:  # noqa: BLE001 - an unreadable run is simply not a PII adapter
                self._configs[path] = None
        return self._configs[path]

    def pii_adapter(self, adapters: dict[str, dict], wanted: str | None) -> tuple[str, str, object] | None:
        """(name, path, run config) of the PII adapter to use, or None when none is served."""
        def is_pii(name: str):
            """The run config narrowed to its PII task (a multi-task run's first), or None."""
            from loraforge.config import ConfigError
            from loraforge.eval.inference import task_run_config

            cfg = self._config(adapters[name]["path"])
            try:
                return None if cfg is None else task_run_config(cfg, cfg.data.task_config(kind="pii")[1])
            except ConfigError:  # no pii task
                return None

        if wanted is not None:
            if wanted not in adapters:
                raise ServeError(f"model {wanted!r} is not served; PII adapters: "
                                 f"{', '.join(n for n in adapters if is_pii(n)) or 'none'}", 404,
                                 "model_not_found", "model")
            cfg = is_pii(wanted)
            if cfg is None:
                raise _bad(f"model {wanted!r} is not a PII adapter (its run has no pii task)", "model")
            return wanted, adapters[wanted]["path"], cfg
        for name in list(adapters):
            cfg = is_pii(name)
            if cfg is not None:
                return name, adapters[name]["path"], cfg
        return None

    def finder(self, path: str, cfg):
        """The span finder (``pii.model_finder``) over the base + this adapter (loaded once; call under ``lock``)."""
        if self._loaded is None or self._loaded[0] != path:
            from loraforge.adapters import load_adapter
            from loraforge.models.load import load_model
            from loraforge.pii import model_finder

            self._loaded = None  # free the previous model before loading another
            try:
                loaded = load_model(self.base_name, dtype="fp32", device=str(self.device))
                model = load_adapter(loaded.model, path).eval()
            except Exception as e:  # noqa: BLE001 - the engine loaded them, so this is the server's fault
                raise ServeError(f"could not load the PII model ({type(e).__name__}: {str(e)[:200]})", 500,
                                 "server_error") from None
            if hasattr(model, "merge_and_unload"):  # folded in for good: this copy serves one adapter
                model = model.merge_and_unload()
            self._loaded = (path, model_finder(model, loaded.tokenizer, cfg.data))
        return self._loaded[1]

    def mask(self, texts: list[str], options, adapter: tuple[str, str, object] | None, bias: float | None,
             fmt: str) -> list[dict]:
        """Masked records per text (worker thread; one at a time)."""
        from loraforge.pii import Masker

        with self.lock:
            model = None
            if adapter is not None and options.merge != "patterns":
                model = self.finder(adapter[1], adapter[2])
                model.bias = model.default_bias if bias is None else bias
            results = Masker(model, options).mask(texts)
        out = []
        for i, r in enumerate(results):
            rec = {"index": i, **r.to_record()}
            if fmt == "spans":
                rec.pop("masked")
            elif fmt == "text":
                rec.pop("spans")
            out.append(rec)
        return out


def get_service(request: HttpRequest, server: Server = Depends(get_server)) -> MaskService:
    state = request.app.state
    if getattr(state, "pii_masker", None) is None:  # created on the event loop: no race
        state.pii_masker = MaskService(server.base_name, server.engine.device)
    return state.pii_masker


router = APIRouter()


@router.post("/v1/mask")
async def mask(body: MaskBody, server: Server = Depends(get_server), service: MaskService = Depends(get_service)):
    from loraforge.pii import MaskOptions

    texts = _texts(body)
    style = _style(body)
    adapter = service.pii_adapter(server.engine.adapters, body.model)
    merge = body.merge or ("union" if adapter else "patterns")
    if adapter is None and merge != "patterns":
        raise _bad(f"merge {merge!r} needs a PII model, and this server serves no PII adapter (start it with "
                   "--adapter NAME=RUN of a run whose data.task is pii); use merge 'patterns'", "merge")
    if body.bias is not None and merge == "patterns":
        raise _bad("bias tunes the model, which merge 'patterns' does not use", "bias")
    options = MaskOptions(merge=merge, style=style, locale=body.locale, across_batch=body.consistent_across_batch)
    data = await asyncio.to_thread(service.mask, texts, options, adapter, body.bias, body.format)
    server.engine.metrics.inc("loraforge_requests_total", endpoint="/v1/mask", status=200)
    engine = {"patterns": "patterns", "model": "model", "union": "model+patterns"}[merge]
    return {"object": "mask", "engine": engine, "model": adapter[0] if engine != "patterns" else None,
            "merge": merge, "style": style, "data": data}
