"""One base model, many LoRA adapters, one generation thread that batches across adapters.

Requests wait in a queue for a few milliseconds so that concurrent ones share a forward pass; PEFT
routes each row of a mixed batch through its own adapter (``adapter_names=``, '__base__' for the plain
model). A per-row ``StoppingCriteria`` streams new tokens to each request and ends rows at their own
stop token or ``max_tokens``, so one long request does not hold the short ones' answers back.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from loraforge.serve.metrics import Metrics

BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ServeError(Exception):
    """A request the server refuses; ``status`` is the HTTP code, ``code`` the OpenAI-style error code."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid_request_error", param: str | None = None):
        super().__init__(message)
        self.status, self.code, self.param = status, code, param


def check_name(name: str) -> str:
    if not NAME_RE.match(name or "") or ".." in name:
        raise ServeError(f"invalid adapter name {name!r}: letters, digits, '.', '_', '-' (max 64), no '..'",
                         param="name")
    return name


@dataclass
class Request:
    adapter: str  # adapter name or BASE
    prompt_ids: list[int]
    max_tokens: int
    stop_ids: list[int]
    stop_strings: list[str] = field(default_factory=list)
    temperature: float = 0.0
    top_p: float = 1.0
    emit: object = None  # callable(kind, payload), called from the generation thread
    # filled in by the engine
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None
    enqueued: float = field(default_factory=time.perf_counter)


class _RowStopper(StoppingCriteria):
    """Called once per decoding step with the whole batch: streams each row's new token, ends rows."""

    def __init__(self, engine: "Engine", reqs: list[Request], prompt_len: int):
        self.engine, self.reqs, self.prompt_len = engine, reqs, prompt_len

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        last = input_ids[:, -1].tolist()
        for row, req in enumerate(self.reqs):
            if req.finish_reason is not None:
                done[row] = True
                continue
            self.engine.step_row(req, last[row])
            done[row] = req.finish_reason is not None
        return done


class Engine:
    """Owns the model; ``submit`` from any thread, generation happens on one worker thread."""

    def __init__(self, loaded, adapter_root: str | Path | None = None, max_batch: int = 16, batch_wait_ms: float = 5,
                 default_max_tokens: int = 256):
        self.loaded = loaded
        self.tokenizer = loaded.tokenizer
        self.model = loaded.model.eval()
        self.adapter_root = Path(adapter_root).resolve() if adapter_root else None
        self.adapters: dict[str, dict] = {}  # name -> {"path", "template", "system_prompt"}
        self.max_batch, self.batch_wait = max_batch, batch_wait_ms / 1000
        self.default_max_tokens = default_max_tokens
        self.context_length = int(getattr(self.model.config, "max_position_embeddings", 2048))
        self.metrics = Metrics()
        self.batches: deque[list[str]] = deque(maxlen=256)  # adapter names of recent batches (tests, debugging)
        self.queue: queue.Queue[Request | None] = queue.Queue()
        self.lock = threading.Lock()  # model mutation (add/remove adapter) vs. generation
        bos = self.tokenizer.bos_token_id
        self.bos = [bos] if bos is not None and self.tokenizer.encode("a")[:1] == [bos] else []
        self._thread = threading.Thread(target=self._loop, name="loraforge-generate", daemon=True)
        self._thread.start()

    # --- adapters ---------------------------------------------------------------------------

    def resolve_adapter_path(self, name: str, path: str | None) -> Path:
        """Runtime additions must stay inside ``adapter_root``: a name or path never escapes it."""
        check_name(name)
        if self.adapter_root is None:
            raise ServeError("this server was started without --adapter-dir: runtime adapter loading is off",
                             status=403, code="permission_denied")
        target = (self.adapter_root / (path or name)).resolve()
        if not target.is_relative_to(self.adapter_root):
            raise ServeError(f"adapter path {path!r} is outside the adapter directory", status=403,
                             code="permission_denied", param="path")
        return target

    def add_adapter(self, name: str, path: str | Path) -> dict:
        """Load a PEFT LoRA folder (or a run directory) under ``name``."""
        from loraforge.export.run import read_run

        check_name(name)
        if name in self.adapters:
            raise ServeError(f"adapter {name!r} is already loaded", status=409, code="conflict")
        try:
            info = read_run(path)
        except (FileNotFoundError, ValueError) as e:
            raise ServeError(str(e), status=404 if isinstance(e, FileNotFoundError) else 400) from None
        if info.peft_type != "LORA" or info.adapter_config.get("use_dora"):
            raise ServeError(f"{name}: only LoRA adapters can share batches (this one is {info.method})")
        meta = {"path": str(info.adapter_dir), "template": info.cfg.data.template if info.run_dir else "auto",
                "system_prompt": info.cfg.data.system_prompt if info.run_dir else None, "created": int(time.time())}
        with self.lock:
            from peft import PeftModel

            try:
                if isinstance(self.model, PeftModel):
                    self.model.load_adapter(str(info.adapter_dir), adapter_name=name)
                else:
                    self.model = PeftModel.from_pretrained(self.model, str(info.adapter_dir), adapter_name=name).eval()
            except (ValueError, RuntimeError, KeyError, OSError) as e:  # e.g. trained on another base model
                if isinstance(self.model, PeftModel) and name in self.model.peft_config:
                    self.model.delete_adapter(name)  # PEFT may have registered it half-way
                raise ServeError(f"adapter {name!r} does not fit the base model: {str(e)[:300]}") from None
            self.adapters[name] = meta
        self.metrics.set_gauge("loraforge_adapters_loaded", len(self.adapters))
        return meta

    def remove_adapter(self, name: str) -> None:
        if name not in self.adapters:
            raise ServeError(f"adapter {name!r} is not loaded", status=404, code="model_not_found")
        with self.lock:
            if len(self.adapters) == 1:  # PEFT keeps at least one adapter: unwrap to the plain base
                self.model = self.model.unload().eval()
            else:
                self.model.delete_adapter(name)
            del self.adapters[name]
        self.metrics.set_gauge("loraforge_adapters_loaded", len(self.adapters))

    # --- requests ---------------------------------------------------------------------------

    def encode(self, prompt: str) -> list[int]:
        ids = self.tokenizer.encode(prompt, add_special_tokens=False)
        return ids if self.bos and ids[:1] == self.bos else self.bos + ids

    def submit(self, req: Request) -> None:
        self.queue.put(req)
        self.metrics.set_gauge("loraforge_queue_depth", self.queue.qsize())

    def close(self) -> None:
        self.queue.put(None)
        self._thread.join(timeout=10)

    def step_row(self, req: Request, token: int) -> None:
        """Append one generated token to a request; decide whether it is finished."""
        if token in req.stop_ids:
            req.finish_reason = "stop"
            return
        req.tokens.append(token)
        text = self.tokenizer.decode(req.tokens, skip_special_tokens=True)
        for s in req.stop_strings:
            cut = text.find(s)
            if cut >= 0:
                text, req.finish_reason = text[:cut], "stop"
        if req.finish_reason is None and len(req.tokens) >= req.max_tokens:
            req.finish_reason = "length"
        if not text.endswith("\ufffd") or req.finish_reason:  # hold back half a UTF-8 character
            delta, req.text = text[len(req.text):], text
            if delta:
                req.emit("delta", delta)

    def _collect(self, first: Request) -> list[Request]:
        batch, deadline = [first], time.perf_counter() + self.batch_wait
        while len(batch) < self.max_batch:
            timeout = deadline - time.perf_counter()
            if timeout <= 0:
                break
            try:
                nxt = self.queue.get(timeout=timeout)
            except queue.Empty:
                break
            if nxt is None:
                self.queue.put(None)
                break
            batch.append(nxt)
        return batch

    def _loop(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            batch = self._collect(first)
            self.metrics.set_gauge("loraforge_queue_depth", self.queue.qsize())
            # rows with different sampling settings cannot share one generate() call
            groups: dict[tuple, list[Request]] = {}
            for r in batch:
                groups.setdefault((r.temperature, r.top_p), []).append(r)
            for reqs in groups.values():
                self._run(reqs)

    def _run(self, reqs: list[Request]) -> None:
        try:
            with self.lock:
                reqs = [r for r in reqs if self._still_valid(r)]
                if reqs:
                    self._generate(reqs)
        except Exception as e:  # a failing batch answers its requests with 500s; the server keeps serving
            for r in reqs:
                if r.finish_reason is None:
                    r.emit("error", ServeError(f"generation failed: {type(e).__name__}: {e}", 500, "server_error"))
            return
        for r in reqs:
            r.emit("done", None)

    def _still_valid(self, r: Request) -> bool:
        if r.adapter == BASE or r.adapter in self.adapters:
            return True
        r.emit("error", ServeError(f"model {r.adapter!r} was removed", 404, "model_not_found"))
        return False

    @torch.no_grad()
    def _generate(self, reqs: list[Request]) -> None:
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        width = max(len(r.prompt_ids) for r in reqs)
        device = next(self.model.parameters()).device
        ids = torch.full((len(reqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(reqs), width), dtype=torch.long)
        for i, r in enumerate(reqs):  # left padding: every row's next token at the same position
            ids[i, width - len(r.prompt_ids):] = torch.tensor(r.prompt_ids)
            mask[i, width - len(r.prompt_ids):] = 1
        kwargs = dict(max_new_tokens=max(r.max_tokens for r in reqs), pad_token_id=pad,
                      stopping_criteria=StoppingCriteriaList([_RowStopper(self, reqs, width)]))
        common = set.intersection(*(set(r.stop_ids) for r in reqs))
        kwargs["eos_token_id"] = sorted(common) or None  # only ids that end every row; the rest end per row
        if reqs[0].temperature > 0:
            kwargs.update(do_sample=True, temperature=reqs[0].temperature, top_p=reqs[0].top_p)
        else:
            kwargs.update(do_sample=False)
        if self.adapters:
            kwargs["adapter_names"] = [r.adapter for r in reqs]
        self.batches.append([r.adapter for r in reqs])
        self.metrics.observe("loraforge_batch_size", len(reqs))
        start = time.perf_counter()
        out = self.model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)
        for r in reqs:
            if r.finish_reason is None:  # generate() stopped on its own budget
                r.finish_reason = "length"
        new = int(sum(len(r.tokens) for r in reqs))
        self.metrics.inc("loraforge_generated_tokens_total", new)
        self.metrics.inc("loraforge_prompt_tokens_total", sum(len(r.prompt_ids) for r in reqs))
        self.metrics.observe("loraforge_batch_seconds", time.perf_counter() - start)
        del out

