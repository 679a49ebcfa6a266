"""The OpenAI-compatible HTTP server (``loraforge serve``): wiring of the engine, the routes and the limits.

Every refusal is a 4xx with OpenAI's error shape; the generation thread never sees a bad request.
Routes live in ``api.py`` (OpenAI endpoints), ``mask.py`` (PII masking) and ``admin.py`` (health,
metrics, adapter API); the generation engine in ``engine.py``. ``auth.py``: the optional API key of
the ``/v1`` routes.
"""

from __future__ import annotations

from fastapi import Depends, FastAPI, Request as HttpRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from loraforge.serve import admin, api, mask
from loraforge.serve.auth import api_key_from, require_api_key
from loraforge.serve.engine import Engine, ServeError
from loraforge.serve.limits import DEFAULT_MAX_BODY_BYTES, BodyLimit, BodyTooLarge
from loraforge.serve.text import Codec

CPU_MAX_PROMPT_TOKENS = 4096  # a 32k-token prefill would hold a CPU for minutes
SHUTDOWN_GRACE_S = 60  # after a signal, how long answers in flight may take to finish


def error_response(e: ServeError) -> JSONResponse:
    return JSONResponse({"error": {"message": str(e), "type": "invalid_request_error" if e.status < 500 else
                                   "server_error", "param": e.param, "code": e.code}}, status_code=e.status)


def _validation_error(e: RequestValidationError) -> ServeError:
    first = e.errors()[0] if e.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    if first.get("type") == "json_invalid":
        msg = "request body is not valid JSON"
    else:
        msg = f"{where}: {first.get('msg', 'invalid request')}" if where else first.get("msg", "invalid request")
    return ServeError(msg, 400, "invalid_request_error", where or None)


def _add_error_handlers(app: FastAPI) -> None:
    def counted(request: HttpRequest, e: ServeError) -> JSONResponse:
        app.state.server.engine.metrics.inc("loraforge_requests_total", endpoint=request.url.path, status=e.status)
        return error_response(e)

    @app.exception_handler(ServeError)
    async def _serve_error(request: HttpRequest, e: ServeError):
        return counted(request, e)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: HttpRequest, e: RequestValidationError):
        return counted(request, _validation_error(e))

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: HttpRequest, e: BodyTooLarge):
        return counted(request, ServeError(e.detail, 413, "request_too_large"))


def create_app(engine: Engine, base_name: str, admin_token: str | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, api_key: str | None = None) -> FastAPI:
    app = FastAPI(title="loraforge", version="1")
    app.state.engine = engine
    app.state.api_key = api_key
    app.state.server = api.Server(engine=engine, codec=Codec(engine.tokenizer), base_name=base_name,
                                  admin_token=admin_token)
    _add_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    keyed = [Depends(require_api_key)]
    app.include_router(api.router, dependencies=keyed)
    app.include_router(mask.router, dependencies=keyed)
    app.include_router(admin.router)
    return app


def serve(base: str, adapters: list[str], host: str = "127.0.0.1", port: int = 8000, admin_token: str | None = None,
          adapter_dir: str | None = None, dtype: str = "auto", max_batch: int = 16, batch_wait_ms: float = 5,
          max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, max_prompt_tokens: int | None = None,
          prefill_tokens: int = 2048, merge_lora: bool = True, int8_lm_head: bool = False,
          verified_lm_head: bool = True, api_key: str | None = None, int8: bool = False, prepack: bool = True) -> None:
    """Load the base model and the ``name=DIR`` adapters, then serve until SIGINT or SIGTERM (the engine
    options: see ``build_app``; ``api_key``: else ``$LORAFORGE_API_KEY``).

    Generation runs on the main thread and uvicorn on a second one (``Engine.run`` says why). A signal
    stops new connections; answers in flight finish, then the engine stops. A second signal stops now."""
    import signal
    import threading

    import uvicorn

    app = build_app(base, adapters, admin_token, adapter_dir, dtype, max_batch, batch_wait_ms, max_body_bytes,
                    max_prompt_tokens, prefill_tokens, merge_lora, int8_lm_head, verified_lm_head,
                    api_key_from(api_key), int8, prepack, own_thread=False)
    engine: Engine = app.state.engine
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info",
                                           timeout_graceful_shutdown=SHUTDOWN_GRACE_S))

    def http() -> None:
        try:
            server.run()
        finally:  # stopped, or never started (e.g. the port is taken): let the main thread return
            engine.close()

    def stop(signum, frame) -> None:
        if server.should_exit:
            raise KeyboardInterrupt
        server.should_exit = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    thread = threading.Thread(target=http, name="loraforge-http", daemon=True)
    thread.start()
    try:
        engine.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.should_exit = True
        thread.join(timeout=SHUTDOWN_GRACE_S + 5)
    if not server.started:
        raise SystemExit(f"serve: the HTTP server did not start on {host}:{port} (see the log above)")


def build_app(base: str, adapters: list[str], admin_token: str | None = None, adapter_dir: str | None = None,
              dtype: str = "auto", max_batch: int = 16, batch_wait_ms: float = 5,
              max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, max_prompt_tokens: int | None = None,
              prefill_tokens: int = 2048, merge_lora: bool = True, int8_lm_head: bool = False,
              verified_lm_head: bool = True, api_key: str | None = None, int8: bool = False,
              prepack: bool = True, own_thread: bool = True) -> FastAPI:
    """``max_prompt_tokens``: default 4096 on a CPU, the model's context on a GPU. ``prefill_tokens``:
    padded prompt tokens prefilled per engine iteration (bounds how long running rows wait for new
    ones). ``merge_lora``: merge the adapter into the weights while every running row uses it.
    ``int8_lm_head``: CPU only, the output layer in int8 (faster, slightly different logits; fp32 or bf16).
    ``verified_lm_head``: CPU fp32, int8 proposes and fp32 decides (same tokens as fp32; see ``head.py``).
    ``int8``: CPU only, every Linear layer in int8 with per-row activation scales (``quant.py``): ~2x the
    tokens/s of fp32 on an AVX2 CPU, like llama.cpp's Q8_0; greedy outputs may differ from fp32. Computes
    in fp32 (``auto`` then means fp32; bf16 is refused).
    ``prepack``: CPU bf16, Linear weights laid out once for oneDNN (same outputs, faster; a second copy
    of the weights in memory; ``models/prepack.py``).
    ``api_key``: required as a bearer token on every ``/v1`` route (None: open).
    ``own_thread``: the engine generates on a thread of its own; False: the caller runs ``Engine.run``."""
    import torch

    from loraforge.config import ConfigError
    from loraforge.models.load import load_model
    from loraforge.serve.quant import serving_dtype

    device = "cuda" if torch.cuda.is_available() else "cpu"
    loaded = load_model(base, dtype=serving_dtype(dtype, int8, device), device=device)
    if loaded.family != "causal":
        raise ConfigError(f"serve supports decoder-only models; {base!r} is {loaded.family}")
    if max_prompt_tokens is None and device == "cpu":
        max_prompt_tokens = CPU_MAX_PROMPT_TOKENS
    try:
        engine = Engine(loaded, adapter_root=adapter_dir, max_batch=max_batch, batch_wait_ms=batch_wait_ms,
                        max_prompt_tokens=max_prompt_tokens, prefill_tokens=prefill_tokens, merge_lora=merge_lora,
                        int8_lm_head=int8_lm_head, verified_lm_head=verified_lm_head, int8_weights=int8,
                        prepack=prepack, own_thread=own_thread)
    except ValueError as e:  # an attention layout the engine does not know; int8 weights on a bf16 model
        raise ConfigError(f"serve: {base!r}: {e}") from None
    for spec in adapters:
        name, sep, path = spec.partition("=")
        if not sep:
            raise ConfigError(f"--adapter {spec!r}: expected NAME=DIR")
        try:
            engine.add_adapter(name, path)
        except ServeError as e:
            raise ConfigError(f"--adapter {spec}: {e}") from None
    return create_app(engine, base_name=base, admin_token=admin_token, max_body_bytes=max_body_bytes,
                      api_key=api_key)
