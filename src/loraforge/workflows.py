"""The workflows the CLI wraps: train (with before/after evaluation), eval, translate, data check.

Each is a plain function of a ``RunConfig``; this is the Python API. They compose the building
blocks (data, models, adapters, train, eval) and own the run directory's layout:

    run_dir/config.yaml         the resolved config
    run_dir/adapter/            the trained adapter (PEFT format)
    run_dir/checkpoints/        resumable checkpoints
    run_dir/metrics.json        before/after metrics and training statistics
    run_dir/history.jsonl       one line per optimizer step
    run_dir/outputs_*.jsonl     test-set outputs of the base and tuned model
    run_dir/report.md|.html     the report, with loss.png
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from loraforge.config import RunConfig, load_config
from loraforge.data.formats import DataError, Example, load_examples
from loraforge.eval.report import atomic_write


@dataclass
class Datasets:
    train: list
    dev: list
    test: list[Example]
    dropped_too_long: dict[str, int]


def _examples(cfg: RunConfig, spec: str | None, limit: int | None = None) -> list[Example]:
    if not spec:
        return []
    d = cfg.data
    return load_examples(spec, d.source_field, d.target_field, d.src_lang, d.tgt_lang, limit=limit)


def prepare_datasets(cfg: RunConfig, tokenizer, family: str) -> Datasets:
    """Encode train/dev; examples over data.max_length are dropped (and counted), never truncated."""
    from loraforge.data.templates import encode_examples

    dropped = {}
    encoded = {}
    for split, spec, limit in (("train", cfg.data.train, cfg.data.max_train_examples),
                               ("dev", cfg.data.dev, cfg.data.max_dev_examples)):
        examples = _examples(cfg, spec, limit)
        enc = encode_examples(tokenizer, examples, cfg.data, family)
        encoded[split] = [e for e in enc if not e.too_long]
        dropped[split] = len(enc) - len(encoded[split])
    if not encoded["train"]:
        raise DataError(f"{cfg.data.train}: every example is longer than data.max_length={cfg.data.max_length}")
    test = _examples(cfg, cfg.data.test, cfg.eval.max_examples)
    return Datasets(encoded["train"], encoded["dev"], test, dropped)


def prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Never overwrite a run silently: an existing, non-empty directory needs --resume or --overwrite."""
    if resume:
        if not (run_dir / "checkpoints").is_dir() and not (run_dir / "config.yaml").is_file():
            raise FileNotFoundError(f"{run_dir}: nothing to resume (no checkpoints/ or config.yaml)")
        return
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{run_dir} already exists; use --resume to continue it, --overwrite to replace "
                                  "it, or another output.dir")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


def source_budgets(tokenizer, sources: list[str], cap: int) -> list[int]:
    """New-token budget per output. Translations and masked texts are about as long as their source
    (on k8s:dev every Chinese reference fits in 1.2x the English tokens + 16), so a model that never
    stops costs a bounded amount instead of ``eval.max_new_tokens`` on every row."""
    ids = tokenizer(sources, add_special_tokens=False)["input_ids"] if sources else []
    return [min(cap, int(1.25 * len(x)) + 16) for x in ids]


def evaluate(loaded, model, cfg: RunConfig, examples: list[Example], progress: bool = True) -> tuple[dict, list[str]]:
    """Generate on ``examples`` and score against their targets."""
    from loraforge.data.templates import prompt_text, stop_token_ids
    from loraforge.eval.generate import generate
    from loraforge.eval.metrics import task_metrics

    tok = loaded.tokenizer
    if loaded.family == "causal":
        prompts = [prompt_text(tok, e.source, cfg.data, e.system) for e in examples]
        stops = stop_token_ids(tok, cfg.data.template)
    else:
        prompts = [f"{cfg.data.task_prefix or ''}{e.source}" for e in examples]
        stops = None
    budgets = source_budgets(tok, [e.source for e in examples], cfg.eval.max_new_tokens)
    with prepared_for_generation(model, cfg.eval.exact) as tie_margin:
        hyps = generate(model, tok, prompts, cfg.eval.max_new_tokens, cfg.eval.batch_size, loaded.family,
                        stop_ids=stops, budgets=budgets, progress=progress, tie_margin=tie_margin,
                        **_seq2seq_kwargs(loaded, cfg))
    metrics = task_metrics(cfg.data.task, [e.source for e in examples], hyps, [e.target for e in examples],
                           cfg.data.tgt_lang)
    return metrics, hyps


@contextlib.contextmanager
def merged_for_inference(model):
    """LoRA/DoRA/IA3 weights folded into the base weights while generating: every decode step then
    runs one matmul per layer instead of three (PEFT's merge_adapter/unmerge_adapter)."""
    mergeable = hasattr(model, "merge_adapter") and not getattr(model, "active_peft_config", None) is None \
        and not getattr(model.active_peft_config, "is_prompt_learning", False)
    if mergeable:
        model.merge_adapter()
    try:
        yield model
    finally:
        if mergeable:
            model.unmerge_adapter()


@contextlib.contextmanager
def prepared_for_generation(model, exact: bool):
    """fp32 weights when ``exact`` (eval.exact), then the adapter merged (in that order, so the merge
    round-trips exactly); yields the ``tie_margin`` that ``generate`` should use."""
    from loraforge.eval.generate import full_precision

    with full_precision(model, exact), merged_for_inference(model):
        yield "auto" if exact else None


def _seq2seq_kwargs(loaded, cfg: RunConfig) -> dict:
    """mBART-50 needs the target language code as the first generated token (and the source code on
    the encoder side, which ``set_seq2seq_langs`` sets on the tokenizer)."""
    from loraforge.data.templates import set_seq2seq_langs

    if loaded.family != "seq2seq":
        return {}
    forced = set_seq2seq_langs(loaded.tokenizer, cfg.data)
    return {} if forced is None else {"forced_bos_token_id": forced}


def _write_outputs(path: Path, examples: list[Example], hyps: list[str]) -> None:
    lines = [json.dumps({"id": e.id, "output": h}, ensure_ascii=False) for e, h in zip(examples, hyps)]
    atomic_write(path, "\n".join(lines) + "\n")


def _log(msg: str) -> None:
    print(f"[loraforge] {msg}", file=sys.stderr, flush=True)


def train_run(cfg: RunConfig, resume: bool = False, progress: bool = True) -> Path:
    """Fine-tune, evaluate before and after, and write the run directory. Returns its path."""
    import torch

    from loraforge.adapters import apply_adapter, trainable_parameters
    from loraforge.adapters.build import save_adapter
    from loraforge.models.load import load_model
    from loraforge.train import distributed as dist
    from loraforge.train.loop import train

    run_dir = Path(cfg.output.dir)
    dist.init()
    is_main = dist.rank() == 0
    if is_main:
        prepare_run_dir(run_dir, resume, cfg.output.overwrite)
    dist.barrier()
    if resume and (run_dir / "config.yaml").is_file():
        saved = load_config(run_dir / "config.yaml")
        if saved.model_dump(exclude={"output"}) != cfg.model_dump(exclude={"output"}):
            _log("warning: the config differs from the run's config.yaml; resuming with the saved one")
        cfg = saved.model_copy(update={"output": cfg.output})
    if is_main:
        atomic_write(run_dir / "config.yaml", cfg.to_yaml())

    t_start = time.perf_counter()
    qlora = {"device": "cuda", "quantize": "nf4"} if cfg.adapter.method == "qlora" else {}  # CPU: a clear error
    loaded = load_model(cfg.model.name, cfg.model.dtype, cfg.model.family, **qlora)
    data = prepare_datasets(cfg, loaded.tokenizer, loaded.family)
    _log(f"model {cfg.model.name} ({loaded.family}, {next(loaded.model.parameters()).dtype}); "
         f"{len(data.train)} train / {len(data.dev)} dev examples, {len(data.test)} test; "
         f"dropped over max_length: {data.dropped_too_long}")

    before = None
    before_path = run_dir / "metrics_before.json"
    if cfg.eval.before and data.test and is_main:
        if before_path.is_file():
            before = json.loads(before_path.read_text())
        else:
            _log("evaluating the base model")
            before, hyps_before = evaluate(loaded, loaded.model, cfg, data.test, progress)
            _write_outputs(run_dir / "outputs_before.jsonl", data.test, hyps_before)
            atomic_write(before_path, json.dumps(before, indent=2))

    torch.manual_seed(cfg.train.seed)  # the adapter's initial weights depend on the seed only
    model = apply_adapter(loaded.model, cfg.adapter, loaded.family)
    n_trainable, n_total = trainable_parameters(model)
    _log(f"{cfg.adapter.method}: {n_trainable:,} trainable of {n_total:,} parameters "
         f"({100 * n_trainable / n_total:.3f}%)")
    result = train(model, data.train, data.dev, cfg.train, run_dir, loaded.tokenizer.pad_token_id,
                   loaded.family, resume=resume, progress=progress)
    identical = dist.same_on_all_ranks([p.detach() for p in model.parameters() if p.requires_grad])
    if not is_main:
        return run_dir
    save_adapter(model, run_dir / "adapter")
    atomic_write(run_dir / "history.jsonl", "".join(json.dumps(r) + "\n" for r in result.history))

    after, hyps_after = {}, []
    if data.test:
        _log("evaluating the tuned model")
        after, hyps_after = evaluate(loaded, model, cfg, data.test, progress)
        _write_outputs(run_dir / "outputs_after.jsonl", data.test, hyps_after)
    dev_losses = [r["dev_loss"] for r in result.history if "dev_loss" in r]
    train_stats = {
        "steps": result.steps, "seconds": round(result.train_seconds, 1),
        "tokens_per_s": round(result.tokens_per_second, 1),
        "target_tokens_per_s": round(result.target_tokens / max(result.train_seconds, 1e-9), 1),
        "final_dev_loss": dev_losses[-1] if dev_losses else None,
        "trainable_params": n_trainable, "total_params": n_total, "peak_rss_mb": round(result.peak_rss_mb),
        "dtype": str(next(loaded.model.parameters()).dtype).replace("torch.", ""),
        "world_size": dist.world_size(), "ranks_identical": identical,
    }
    metrics = {"task": cfg.data.task, "before": before, "after": after, "train": train_stats,
               "wall_seconds": round(time.perf_counter() - t_start, 1)}
    if cfg.data.task == "pii" and data.test:  # the bar to beat: regexes with checksums, same test rows
        from loraforge.eval.pii_baseline import baseline_eval

        metrics["baseline"] = baseline_eval(cfg)
    atomic_write(run_dir / "metrics.json", json.dumps(metrics, indent=2))
    _write_report(run_dir, cfg, metrics, data.test, hyps_after, result.history)
    _log(f"done: {run_dir}  " + "  ".join(f"{k}={v}" for k, v in after.items() if k != "n"))
    return run_dir


def _write_report(run_dir: Path, cfg: RunConfig, metrics: dict, test: list[Example], hyps_after: list[str],
                  history: list[dict]) -> None:
    from loraforge.eval.report import write_report

    before_out = {}
    if (run_dir / "outputs_before.jsonl").is_file():
        for line in (run_dir / "outputs_before.jsonl").read_text().splitlines():
            rec = json.loads(line)
            before_out[rec["id"]] = rec["output"]
    show = cfg.data.task != "pii"  # never print raw personal data into a report by default
    samples = []
    if show:
        for e, h in list(zip(test, hyps_after))[: cfg.eval.samples_in_report]:
            samples.append({"source": e.source, "reference": e.target, "base": before_out.get(e.id, ""), "tuned": h})
    t = metrics["train"]
    summary = {"model": cfg.model.name, "method": cfg.adapter.method, "data": cfg.data.train,
               "steps": t["steps"], "batch": f"{cfg.train.batch_size} x {cfg.train.grad_accum} accum",
               "trainable params": f"{t['trainable_params']:,} ({100 * t['trainable_params'] / t['total_params']:.3f}%)",
               "train time": f"{t['seconds']} s", "tokens/s": t["tokens_per_s"], "peak RSS": f"{t['peak_rss_mb']} MB",
               "dtype": t["dtype"]}
    write_report(run_dir, f"loraforge run: {run_dir.name}", summary, metrics["before"], metrics["after"], samples,
                 history, baseline=metrics.get("baseline"))


def rebuild_report(run_dir: str | Path) -> Path:
    """Re-write a finished run's report (and, for PII, its baseline column) from the run's own files."""
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.json").is_file():
        raise FileNotFoundError(f"{run_dir}: no metrics.json (not a finished run)")
    cfg = load_config(run_dir / "config.yaml")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    test = _examples(cfg, cfg.data.test, cfg.eval.max_examples)
    outputs = {}
    if (run_dir / "outputs_after.jsonl").is_file():
        outputs = {r["id"]: r["output"] for r in map(json.loads, (run_dir / "outputs_after.jsonl").read_text().splitlines())}
    if cfg.data.task == "pii" and test and "baseline" not in metrics:
        from loraforge.eval.pii_baseline import baseline_eval

        metrics["baseline"] = baseline_eval(cfg)
        atomic_write(run_dir / "metrics.json", json.dumps(metrics, indent=2))
    _write_report(run_dir, cfg, metrics, test, [outputs.get(e.id, "") for e in test], history)
    return run_dir / "report.md"


def _resolve_adapter_dir(adapter: str | Path) -> tuple[Path, Path | None]:
    """(adapter folder, its run directory if it came from one)."""
    path = Path(adapter)
    if (path / "adapter").is_dir():
        return path / "adapter", path
    if not path.is_dir():
        raise FileNotFoundError(f"adapter not found: {path}")
    parent = path.parent if (path.parent / "config.yaml").is_file() else None
    return path, parent


def load_for_inference(cfg: RunConfig, adapter: str | Path | None):
    """(loaded base, model to run): the adapter's own run config decides the template when present."""
    from loraforge.adapters import load_adapter
    from loraforge.models.load import load_model

    loaded = load_model(cfg.model.name, cfg.model.dtype, cfg.model.family)
    model = loaded.model if adapter is None else load_adapter(loaded.model, _resolve_adapter_dir(adapter)[0])
    return loaded, model


def eval_run(cfg: RunConfig, adapter: str | None = None, out_path: str | None = None,
             show_examples: bool = False) -> dict:
    """Evaluate the base model (or an adapter) on the config's test split."""
    test = _examples(cfg, cfg.data.test, cfg.eval.max_examples)
    if not test:
        raise DataError("data.test is not set: nothing to evaluate")
    loaded, model = load_for_inference(cfg, adapter)
    metrics, hyps = evaluate(loaded, model, cfg, test)
    if show_examples:
        for e, h in list(zip(test, hyps))[: cfg.eval.samples_in_report]:
            print(json.dumps({"source": e.source, "reference": e.target, "output": h}, ensure_ascii=False))
    if out_path:
        atomic_write(Path(out_path), json.dumps(metrics, indent=2))
    return metrics


def translate_texts(texts: list[str], adapter: str | None = None, model: str | None = None,
                    config_path: str | None = None, batch_size: int = 32, max_new_tokens: int = 256) -> list[str]:
    """Translate (or, for other tasks, transform) texts with the base model or a trained adapter."""
    from loraforge.data.templates import prompt_text, stop_token_ids
    from loraforge.eval.generate import generate

    if config_path:
        cfg = load_config(config_path)
    elif adapter and (run := _resolve_adapter_dir(adapter)[1]) is not None:
        cfg = load_config(run / "config.yaml")
    else:
        cfg = RunConfig()
    if model:
        cfg.model.name = model
    loaded, net = load_for_inference(cfg, adapter)
    tok = loaded.tokenizer
    if loaded.family == "causal":
        prompts = [prompt_text(tok, t, cfg.data) for t in texts]
        stops = stop_token_ids(tok, cfg.data.template)
    else:
        prompts, stops = [f"{cfg.data.task_prefix or ''}{t}" for t in texts], None
    budgets = source_budgets(tok, texts, max_new_tokens)
    with prepared_for_generation(net, cfg.eval.exact) as tie_margin:
        return generate(net, tok, prompts, max_new_tokens, batch_size, loaded.family, stop_ids=stops,
                        budgets=budgets, progress=len(texts) > batch_size, tie_margin=tie_margin,
                        **_seq2seq_kwargs(loaded, cfg))


def check_data(cfg: RunConfig, n: int = 3, out=None) -> bool:
    """Render ``n`` examples with the trained tokens highlighted; False when any example would train
    wrongly (no trained token, or an untrained end-of-turn). Examples over data.max_length are dropped
    by the trainer, never truncated: they are counted here, not failed."""
    from rich.console import Console
    from transformers import AutoConfig, AutoTokenizer

    from loraforge.data.templates import check_encoded, encode_examples
    from loraforge.models.load import detect_family, resolve_model_path

    path = resolve_model_path(cfg.model.name)  # the tokenizer is enough: no weights are loaded
    tok = AutoTokenizer.from_pretrained(path)
    family = detect_family(AutoConfig.from_pretrained(path))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    console = Console(file=out, highlight=False)
    ok = True
    for split, spec, limit in (("train", cfg.data.train, cfg.data.max_train_examples),
                               ("dev", cfg.data.dev, cfg.data.max_dev_examples)):
        if not spec:
            continue
        examples = _examples(cfg, spec, limit)
        bad = too_long = 0
        for i, (ex, enc) in enumerate(zip(examples, encode_examples(tok, examples, cfg.data, family))):
            problems = [p for p in check_encoded(tok, enc, cfg.data, family) if "max_length" not in p]
            too_long += enc.too_long
            bad += bool(problems)
            if i < n or (problems and bad <= 3):
                console.print(_render(tok, enc, family, f"{split} example {i} ({ex.id or 'no id'})"))
                for p in problems:
                    console.print(f"  [red]problem:[/red] {p}")
        ok = ok and bad == 0
        console.print(f"{split}: {len(examples)} examples, {bad} with problems, {too_long} over "
                      f"data.max_length={cfg.data.max_length} (dropped, not truncated)")
    console.print("[green]OK[/green]: trained tokens (green) are exactly the targets, ending with end-of-turn"
                  if ok else "[red]FAILED[/red]: see the problems above")
    return ok


def _render(tok, enc, family: str, title: str):
    from rich.text import Text

    from loraforge.data.templates import IGNORE

    text = Text(f"--- {title}: {len(enc.input_ids)} tokens\n")
    if family == "causal":
        for tid, label in zip(enc.input_ids, enc.labels):
            text.append(tok.decode([tid]), style="bold green" if label != IGNORE else "dim")
    else:
        text.append(tok.decode(enc.input_ids), style="dim")
        text.append("\n=> ")
        text.append(tok.decode([t for t in enc.labels if t != IGNORE]), style="bold green")
    return text
