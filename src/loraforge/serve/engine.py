"""Continuous batching on one generation thread: token ids in, token ids out (text lives in ``text.py``).

Every iteration of the loop (1) applies model changes queued by the admin API, (2) frees the rows of
cancelled requests, (3) admits waiting requests into free slots: their prompts are prefilled (a few
at a time, up to ``prefill_tokens`` padded tokens per iteration, so running rows are never stalled
for long) straight into the slot KV cache, and (4) runs one decoding step for every live row. Rows
join and leave at every step; nobody waits for a batch to end. Per step, sampling and the stop and
length checks are single tensor operations over the batch; the only per-row Python is handing each
request its new token. LoRA: ``AdapterRouter`` merges the adapter when all live rows share it and
routes per row when they mix (see ``lora.py``); the KV layout is in ``kv.py``.
"""

from __future__ import annotations

import contextlib
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import torch

from loraforge.models.prepack import prepack_linears
from loraforge.runs import tagger_meta
from loraforge.serve.kv import SlotCache
from loraforge.serve.lora import BASE, AdapterRouter
from loraforge.serve.metrics import Metrics
from loraforge.serve.sampling import sample

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MERGE_MIN_STEPS = 16  # merging costs about one decoding step: only when the rows have this much left


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
    """One generation. ``emit(kind, payload)`` is called from the generation thread with
    ("token", id), then ("done", finish_reason) or ("error", ServeError)."""

    adapter: str  # adapter name or BASE
    prompt_ids: list[int]
    max_tokens: int
    stop_ids: list[int]
    stop_strings: list[str] = field(default_factory=list)  # for the text side (the engine sees ids only)
    temperature: float = 0.0
    top_p: float = 1.0
    emit: Callable[[str, object], None] | None = None
    cancelled: bool = False
    finish_reason: str | None = None
    enqueued: float = field(default_factory=time.perf_counter)


class _Task:
    """A model change (add/remove adapter) run by the generation thread between two steps."""

    def __init__(self, fn: Callable[[], object]):
        self.fn, self.future = fn, Future()


def _emit(req: Request, kind: str, payload: object) -> None:
    try:
        req.emit(kind, payload)
    except RuntimeError:  # the client's event loop is gone (server shutting down)
        pass


class Engine:
    """Owns the model; ``submit``/``cancel`` from any thread, generation happens on one worker thread."""

    def __init__(self, loaded, adapter_root: str | Path | None = None, max_batch: int = 16, batch_wait_ms: float = 5,
                 default_max_tokens: int = 256, max_prompt_tokens: int | None = None, prefill_tokens: int = 2048,
                 merge_lora: bool = True, kv_columns: int = 256, int8_lm_head: bool = False,
                 verified_lm_head: bool = True, int8_weights: bool | int = False, prepack: bool = True,
                 own_thread: bool = True):
        self.kv_columns = kv_columns  # initial KV capacity per slot; doubles when live rows need more
        self.tap, self.head = None, None  # the verified int8 head (``head.py``), where it applies
        self.int8_layers = 0  # Linear layers running in int8 (``quant.py``)
        if (int8_weights or int8_lm_head) and self._on_cpu(loaded.model):
            from loraforge.serve import quant

            if int8_weights:  # True: two activation levels, else the number given
                self.int8_layers = quant.int8_weights(loaded.model, 2 if int8_weights is True else int8_weights)
            else:
                self.int8_layers = int(quant.int8_lm_head(loaded.model))
        elif verified_lm_head and self._on_cpu(loaded.model):
            self._install_head(loaded.model)
        # bf16 Linear layers with oneDNN-packed weights: same bits, less time (``models/prepack.py``)
        self.prepacked = prepack_linears(loaded.model, max_batch) if prepack and self._on_cpu(loaded.model) else 0
        self.tokenizer = loaded.tokenizer
        self.config = loaded.model.config
        # merging writes fp32 weights the int8 copies do not follow: LoRA then runs beside the int8 layers
        self.router = AdapterRouter(loaded.model.eval(), merge=merge_lora and not (int8_weights and self.int8_layers))
        self.device = next(loaded.model.parameters()).device
        self.adapter_root = Path(adapter_root).resolve() if adapter_root else None
        self.adapters: dict[str, dict] = {}  # name -> {"path", "template", "system_prompt", "created"}
        self.max_batch, self.batch_wait = max_batch, batch_wait_ms / 1000
        self.default_max_tokens, self.prefill_tokens = default_max_tokens, prefill_tokens
        self.context_length = int(getattr(self.config, "max_position_embeddings", 2048))
        self.max_prompt_tokens = min(max_prompt_tokens or self.context_length, self.context_length - 1)
        self.metrics = Metrics()
        self.batches: deque[list[str]] = deque(maxlen=256)  # adapters of the running batch, at each change
        self.inbox: queue.Queue[Request | _Task | None] = queue.Queue()
        self.waiting: deque[Request] = deque()
        self._cancelled: deque[Request] = deque()
        self.rows: list[Request] = []  # live rows; rows[i] owns slot i
        self._reset_slots()
        self._stopped = False
        self._owns_thread = own_thread
        # the generating thread: our own, or (own_thread=False) the constructing one, once it calls ``run``;
        # until then, work from other threads queues in the inbox
        self._thread = threading.current_thread()
        if own_thread:
            self._thread = threading.Thread(target=self._loop, name="loraforge-generate", daemon=True)
            self._thread.start()

    def run(self) -> None:
        """Generate until ``close``, on the thread that made this engine with ``own_thread=False``.

        Why: ``loraforge serve`` gives the main thread to generation and runs HTTP beside it. The same
        decoding step took 1.6x as long on a second Python thread as on the main one on a 2-core CPU
        (``python -m loraforge.bench.generation_thread``; the cause was not pinned down), and behind HTTP
        that was the largest cost left."""
        if self._owns_thread or threading.current_thread() is not self._thread:
            raise RuntimeError("run() belongs to the thread that made the engine with own_thread=False")
        self._loop()

    def _install_head(self, model) -> None:
        """int8-proposed, fp32-decided output layer: same tokens as fp32, ~4x less head time on a CPU."""
        from loraforge.serve.head import TapHead, VerifiedHead

        if "fbgemm" not in torch.backends.quantized.supported_engines:
            return
        tap = TapHead.install(model)
        if tap is None:
            return
        head = VerifiedHead(tap.weight, cap=getattr(model.config, "final_logit_softcapping", None))
        if head.ok:
            self.tap, self.head = tap, head

    @staticmethod
    def _on_cpu(model) -> bool:
        return next(model.parameters()).device.type == "cpu"

    @property
    def model(self):
        return self.router.model

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stopped

    def queue_depth(self) -> int:
        return self.inbox.qsize() + len(self.waiting)

    # --- adapters (resolved on the caller's thread, applied on the generation thread) --------

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
        meta = {"path": str(info.adapter_dir), "template": info.data.template if info.run_dir else "auto",
                "system_prompt": info.data.system_prompt if info.run_dir else None, "created": int(time.time())}
        if tagger_meta(info.adapter_dir) is not None:  # a PII tagger writes no text: only /v1/mask loads it
            meta["tagger"] = True
            self._call(lambda: self._register(name, meta))
            return meta
        self._call(lambda: self._load(name, str(info.adapter_dir), meta))
        return meta

    def remove_adapter(self, name: str) -> None:
        if name not in self.adapters:
            raise ServeError(f"adapter {name!r} is not loaded", status=404, code="model_not_found")
        self._call(lambda: self._unload(name))

    def _load(self, name: str, adapter_dir: str, meta: dict) -> None:
        from peft import PeftModel

        self.router.unmerge()
        model = self.router.model
        try:
            if isinstance(model, PeftModel):
                model.load_adapter(adapter_dir, adapter_name=name)
            else:
                self.router.model = PeftModel.from_pretrained(model, adapter_dir, adapter_name=name).eval()
        except (ValueError, RuntimeError, KeyError, OSError) as e:  # e.g. trained on another base model
            if isinstance(model, PeftModel) and name in model.peft_config:
                model.delete_adapter(name)  # PEFT may have registered it half-way
            raise ServeError(f"adapter {name!r} does not fit the base model: {str(e)[:300]}") from None
        self._register(name, meta)

    def _register(self, name: str, meta: dict) -> None:
        self.adapters[name] = meta
        self.metrics.set_gauge("loraforge_adapters_loaded", len(self.adapters))

    def _unload(self, name: str) -> None:
        if name not in self.adapters:
            raise ServeError(f"adapter {name!r} is not loaded", status=404, code="model_not_found")
        gone = ServeError(f"model {name!r} was removed", 404, "model_not_found")
        self._release([i for i, r in enumerate(self.rows) if r.adapter == name], error=gone)
        for r in [r for r in self.waiting if r.adapter == name]:
            self.waiting.remove(r)
            _emit(r, "error", gone)
        if self.adapters[name].get("tagger"):  # never loaded into the generation model
            del self.adapters[name]
            self.metrics.set_gauge("loraforge_adapters_loaded", len(self.adapters))
            return
        self.router.unmerge()
        if sum(not m.get("tagger") for m in self.adapters.values()) == 1:  # PEFT keeps at least one adapter: unwrap to the plain base
            self.router.model = self.router.model.unload().eval()
        else:
            self.router.model.delete_adapter(name)
        del self.adapters[name]
        self.metrics.set_gauge("loraforge_adapters_loaded", len(self.adapters))

    def _call(self, fn: Callable[[], object]):
        """Run ``fn`` on the generation thread (model changes never race a forward) and wait for it."""
        if threading.current_thread() is self._thread:
            return fn()
        if not self.alive:
            raise ServeError("the generation thread has stopped", 503, "server_error")
        task = _Task(fn)
        self.inbox.put(task)
        return task.future.result()

    # --- requests ---------------------------------------------------------------------------

    def submit(self, req: Request) -> None:
        self.inbox.put(req)
        self.metrics.set_gauge("loraforge_queue_depth", self.queue_depth())

    def cancel(self, req: Request) -> None:
        """The client went away: its row is freed before the next decoding step."""
        if req.finish_reason is None:
            req.cancelled = True
            self._cancelled.append(req)

    def close(self) -> None:
        self.inbox.put(None)
        if self._owns_thread:
            self._thread.join(timeout=10)

    # --- the loop ---------------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            self._generate()
        finally:
            self._stopped = True

    def _generate(self) -> None:
        while True:
            if not self._drain(block=not self.rows and not self.waiting):
                return
            try:
                self.step()
            except Exception as e:  # a failing step answers its rows with 500s; the server keeps serving
                self.clear(ServeError(f"generation failed: {type(e).__name__}: {e}", 500, "server_error"))

    def step(self) -> bool:
        """One iteration of the loop: drop cancelled rows, admit waiting requests, decode one token for
        the running rows. True while work is left. The loop calls it; so do benchmarks and tests that
        drive a closed engine by hand, so they time and check exactly what serving runs."""
        self._apply_cancels()
        self._admit()
        if self.rows:
            self._decode()
        return bool(self.rows or self.waiting)

    def clear(self, error: ServeError | None = None) -> None:
        """Finish every running row (with ``error`` if given), undo a merged adapter, free all slots."""
        self._release(list(range(len(self.rows))), error=error)
        self.router.unmerge()
        self._reset_slots()

    def _drain(self, block: bool) -> bool:
        """Move the inbox into ``waiting`` and run queued tasks; False once closed. When idle, wait for
        work, then up to ``batch_wait`` more for requests that arrive together."""
        deadline = None
        while True:
            try:
                if block:
                    item = self.inbox.get() if deadline is None else self.inbox.get(
                        timeout=max(deadline - time.perf_counter(), 0))
                else:
                    item = self.inbox.get_nowait()
            except queue.Empty:
                return True
            if item is None:
                return False
            if isinstance(item, _Task):
                self._run_task(item)
                continue
            self.waiting.append(item)
            if block and deadline is None:
                deadline = time.perf_counter() + self.batch_wait
            if deadline is not None and (time.perf_counter() >= deadline or
                                         len(self.waiting) >= self.max_batch):
                block = False

    def _run_task(self, task: _Task) -> None:
        try:
            task.future.set_result(task.fn())
        except BaseException as e:  # noqa: BLE001 - handed to the waiting caller
            task.future.set_exception(e)

    def _apply_cancels(self) -> None:
        cancelled = set()
        while self._cancelled:
            cancelled.add(id(self._cancelled.popleft()))
        if cancelled:
            self.waiting = deque(r for r in self.waiting if id(r) not in cancelled)
            self._release([i for i, r in enumerate(self.rows) if id(r) in cancelled], reason="cancelled")

    # --- slots ------------------------------------------------------------------------------

    def _reset_slots(self) -> None:
        s = self.max_batch
        self.cache = SlotCache(self.config, slots=s, capacity=self.kv_columns, device=self.device)
        self.last = torch.zeros(s, dtype=torch.long, device=self.device)  # token each row feeds next
        self.pos = torch.zeros(s, dtype=torch.long, device=self.device)  # its position
        self.count = torch.zeros(s, dtype=torch.long, device=self.device)  # tokens generated
        self.budget = torch.zeros(s, dtype=torch.long, device=self.device)  # max_tokens
        self.temp = torch.zeros(s, device=self.device)
        self.top_p = torch.ones(s, device=self.device)
        self.stops = torch.full((s, 4), -1, dtype=torch.long, device=self.device)
        self.rows = []

    def _open(self, slot: int, req: Request) -> None:
        if len(req.stop_ids) > self.stops.shape[1]:
            extra = len(req.stop_ids) - self.stops.shape[1]
            self.stops = torch.nn.functional.pad(self.stops, (0, extra), value=-1)
        self.pos[slot], self.count[slot], self.budget[slot] = len(req.prompt_ids), 0, req.max_tokens
        self.temp[slot], self.top_p[slot] = req.temperature, req.top_p
        self.stops[slot] = -1
        self.stops[slot, :len(req.stop_ids)] = torch.tensor(req.stop_ids, dtype=torch.long)

    def _release(self, slots: list[int], reason: str | None = None, error: ServeError | None = None) -> None:
        """End rows (telling their requests) and swap the last live rows into the freed slots."""
        if not slots:
            return
        for i in slots:
            req = self.rows[i]
            req.finish_reason = req.finish_reason or reason or "error"
            _emit(req, "error", error) if error else _emit(req, "done", req.finish_reason)
        done, n = set(slots), len(self.rows)
        keep = n - len(done)
        holes = [i for i in sorted(done) if i < keep]
        movers = [i for i in range(keep, n) if i not in done]
        if holes:
            self.cache.move_rows(holes, movers)
            h, m = torch.tensor(holes, device=self.device), torch.tensor(movers, device=self.device)
            for t in (self.last, self.pos, self.count, self.budget, self.temp, self.top_p, self.stops):
                t[h] = t[m]
            for a, b in zip(holes, movers):
                self.rows[a] = self.rows[b]
        del self.rows[keep:]
        self._record_batch()

    def _record_batch(self) -> None:
        if self.rows:
            self.batches.append([r.adapter for r in self.rows])

    # --- admission and prefill ----------------------------------------------------------------

    def _admit(self) -> None:
        """Prefill waiting requests into free slots, shortest first, within this iteration's budget."""
        new: list[Request] = []
        while self.waiting and len(self.rows) + len(new) < self.max_batch:
            req = self.waiting.popleft()
            if req.cancelled:
                continue
            if req.adapter != BASE and req.adapter not in self.adapters:
                _emit(req, "error", ServeError(f"model {req.adapter!r} was removed", 404, "model_not_found"))
                continue
            new.append(req)
        if not new:
            return
        new.sort(key=lambda r: len(r.prompt_ids))
        spent, groups, group = 0, [], []  # padded prompt tokens; rows sorted, so the newest row is the widest
        for k, req in enumerate(new):
            n, before = len(req.prompt_ids), len(group[-1].prompt_ids) * len(group) if group else 0
            if spent - before + n * (len(group) + 1) <= self.prefill_tokens or not (groups or group):
                spent += n * (len(group) + 1) - before
                group.append(req)
            elif spent + n <= self.prefill_tokens:
                groups.append(group)
                group, spent = [req], spent + n
            else:  # next iteration, after a decoding step
                self.waiting.extendleft(reversed(new[k:]))
                break
        groups.append(group)
        adapters = [r.adapter for r in self.rows] + [r.adapter for g in groups for r in g]
        for group in groups:
            self._prefill(group, adapters)
        self._record_batch()

    @torch.no_grad()
    def _prefill(self, group: list[Request], adapters: list[str]) -> None:
        first, lengths = len(self.rows), [len(r.prompt_ids) for r in group]
        width = max(lengths)
        self.cache.make_room(width, first)
        mask = self.cache.prefill_view(first, lengths)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((len(group), width), pad, dtype=torch.long)
        for i, r in enumerate(group):
            ids[i, width - lengths[i]:] = torch.tensor(r.prompt_ids)
        shift = torch.tensor([width - n for n in lengths])[:, None]
        positions = (torch.arange(width)[None] - shift).clamp(min=0)
        for i, r in enumerate(group):
            self._open(first + i, r)
        self.rows.extend(group)
        ctx, kwargs = self.router.context([r.adapter for r in group], self._worth_merging(), running=adapters)
        with ctx, self._tapping() as tapped:
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask,
                                position_ids=positions.to(self.device), past_key_values=self.cache, use_cache=True,
                                logits_to_keep=1, **kwargs).logits
        self.metrics.inc("loraforge_prompt_tokens_total", sum(lengths))
        end = first + len(group)
        self._accept(first, end, self._next_tokens(logits, tapped, first, end))

    def _worth_merging(self) -> bool:
        n = len(self.rows)
        return n > 0 and int((self.budget[:n] - self.count[:n]).max()) >= MERGE_MIN_STEPS

    # --- decoding ---------------------------------------------------------------------------

    @torch.no_grad()
    def _decode(self) -> None:
        start, n = time.perf_counter(), len(self.rows)
        mask = self.cache.decode_view(n)
        ctx, kwargs = self.router.context([r.adapter for r in self.rows], self._worth_merging())
        with ctx, self._tapping() as tapped:
            logits = self.model(input_ids=self.last[:n, None], attention_mask=mask, position_ids=self.pos[:n, None],
                                past_key_values=self.cache, use_cache=True, **kwargs).logits
        self.cache.advance()
        self.pos[:n] += 1
        self._accept(0, n, self._next_tokens(logits, tapped, 0, n))
        self.metrics.observe("loraforge_batch_size", n)
        self.metrics.observe("loraforge_batch_seconds", time.perf_counter() - start)
        self.metrics.set_gauge("loraforge_queue_depth", self.queue_depth())

    @contextlib.contextmanager
    def _tapping(self):
        """Let the verified head replace the model's output layer for one forward, unless a LoRA wraps
        the head or changed its (tied) weight: then the model's own fp32 head runs."""
        tapped = self.tap is not None and not self.head.stale and self.model.get_output_embeddings() is self.tap
        if tapped:
            self.tap.tap = True
        try:
            yield tapped
        finally:
            if tapped:
                self.tap.tap = False

    def _next_tokens(self, logits: torch.Tensor, tapped: bool, first: int, end: int) -> torch.Tensor:
        temp, top_p = self.temp[first:end], self.top_p[first:end]
        if not tapped:
            return sample(logits[:, -1], temp, top_p)
        hidden, self.tap.hidden = self.tap.hidden[:, -1], None
        tokens, rows = self.head.next_tokens(hidden, temp, top_p)
        for kind, count in rows.items():
            if count:
                self.metrics.inc("loraforge_lm_head_rows_total", count, path=kind)
        return tokens

    def _accept(self, first: int, end: int, tokens: torch.Tensor) -> None:
        """Rows [first, end) got ``tokens``: stop and length checks over the batch at once, then hand
        each request its token and free the finished rows."""
        stop = (self.stops[first:end] == tokens[:, None]).any(1)
        self.count[first:end] += (~stop).long()
        full = self.count[first:end] >= self.budget[first:end]
        self.last[first:end] = tokens
        done = []
        for i, (tok, is_stop, is_full) in enumerate(zip(tokens.tolist(), stop.tolist(), full.tolist())):
            req = self.rows[first + i]
            if not is_stop:
                _emit(req, "token", tok)
            if is_stop or is_full:
                req.finish_reason = "stop" if is_stop else "length"
                done.append(first + i)
        self.metrics.inc("loraforge_generated_tokens_total", int((~stop).sum()))
        self._release(done)
