"""The command table: every ``loraforge`` command, its flags and the function it calls, in one list.

To add a command, add one ``Command`` row to ``COMMANDS`` (and its group's help to ``GROUPS`` when
it opens a new group). A flag's ``dest`` is the keyword of the function it feeds. Most rows call a
workflow or building-block function directly; the small handlers below exist only where a command
does more than one call (choosing a function, reading stdin, writing a file, checking a choice).
"""

from __future__ import annotations

import sys
from pathlib import Path

from loraforge.cli.spec import Command, UsageError, arg, call, resolve, show_json, show_lines, show_text


def _csv(text: str) -> list[str]:
    """A comma-separated flag value as a list (empty items dropped)."""
    return [item.strip() for item in text.split(",") if item.strip()]


def _warn(msg: str) -> None:
    print(f"loraforge: warning: {msg}", file=sys.stderr)


# --- handlers: where a command is more than one call ---------------------------------------------


def _eval(baseline: bool = False, **kw):
    """--baseline scores the rule-based PII masker on the same test split, the same way."""
    target = "loraforge.eval.pii_baseline:baseline_eval" if baseline else "loraforge.workflows:eval_run"
    return call(resolve(target), kw)


def read_texts(text: list[str], file: str | None) -> list[str]:
    """The texts to translate: arguments, a file, or stdin; empty input is an error before any model loads."""
    if text and file:
        raise UsageError("give the texts as arguments or with --file, not both")
    if text:
        return list(text)
    if file and file != "-":
        source, lines = file, Path(file).read_text(encoding="utf-8").splitlines()
    else:
        if sys.stdin.isatty():
            print("reading texts from stdin, one per line; end with Ctrl-D", file=sys.stderr)
        source, lines = "stdin", sys.stdin.read().splitlines()
    texts = [t for t in lines if t.strip()]
    if not texts:
        raise UsageError(f"nothing to translate: {source} has no text; give TEXT arguments, --file FILE or lines "
                         "on stdin")
    return texts


def _translate(text: list[str], file: str | None, max_new_tokens: int, **kw) -> list[str]:
    texts = read_texts(text, file)

    def on_cut(index: int, budget: int) -> None:  # index into texts, 0-based; budget in new tokens
        _warn(f"segment {index + 1} was cut at its budget of {budget} new tokens; raise --max-new-tokens "
              f"(now {max_new_tokens})")

    return call(resolve("loraforge.workflows:translate_texts"), kw, texts=texts, max_new_tokens=max_new_tokens,
                on_cut=on_cut)


def show_report(result) -> int:
    """``report`` says what it wrote. ``result``: the report.md path, or the run directory (any path-like)."""
    report = Path(result) / "report.md" if Path(result).is_dir() else Path(result)
    written = [p for p in (report, report.with_suffix(".html"), report.parent / "loss.png") if p.is_file()]
    print("wrote " + ", ".join(map(str, written)))
    return 0


def _data_stats(tokenizer: str | None = None, **kw) -> str:
    from loraforge.data.stats import data_stats, format_stats

    resolved = tokenizer
    if tokenizer:  # 'gemma3-270m' or a .gguf file -> the cached HF folder; folders and hub ids as is
        from loraforge.models.load import EMBEDDED_MODELS, resolve_model_path

        if tokenizer in EMBEDDED_MODELS or tokenizer.endswith(".gguf"):
            resolved = resolve_model_path(tokenizer)
    stats = call(data_stats, kw, tokenizer=resolved)
    if tokenizer:
        stats["unit"] = f"tokens ({tokenizer})"
    return format_stats(stats)


def _data_pii(n: int, seed: int, split: str, out: str | None, out_dir: str | None, n_dev: int, n_test: int,
              import_format: list[str] | None, language: str | None) -> dict:
    from loraforge.data import pii

    if import_format:
        from loraforge.data.pii_import import import_ai4privacy

        if import_format[0] != "ai4privacy" or not out:
            raise UsageError("usage: --import ai4privacy FILE --out OUT (ai4privacy is the supported format)")
        records, report = import_ai4privacy(import_format[1], split=split, language=language)
        pii.write_jsonl(records, out)
        return report
    if out_dir:
        return pii.build_packaged(out_dir, n, n_dev, n_test, seed)
    if out:
        records = pii.generate(n, seed, split)
        pii.write_jsonl(records, out)
        return {"records": len(records), "negatives": sum(not r["spans"] for r in records)}
    raise UsageError("give --out FILE (one split) or --out-dir DIR (train/dev/test)")


def _deploy_k8s(cfg, target: str, out: str | None, **kw) -> int:
    from loraforge.deploy.k8s import Options, render

    rendered = render(cfg, target, call(Options, kw))
    text = rendered.to_yaml()
    if out:
        from loraforge.deploy import atomic_write

        path = Path(out) if Path(out).suffix in (".yaml", ".yml") else Path(out) / f"{target}.yaml"
        atomic_write(path, text)
        print(f"wrote {path} (validated offline)")
    else:
        print(text, end="")
    if out or not sys.stdout.isatty():  # on a terminal the YAML's own NOTE lines are in view
        for note in rendered.notes:
            print(f"note: {note}", file=sys.stderr)
    return 0


def _deploy_validate(files: list[str]) -> list[str]:
    from loraforge.deploy.validate import validate_file

    return [line for path in files for line in validate_file(path)]


def _estimate(cfg, gpu_gb: float, check: str | None):
    from loraforge.deploy.estimate import compare_with_run, format_estimate

    if check:
        return show_json(compare_with_run(check))
    return show_text(format_estimate(cfg, gpu_gb))


def _compare(cfg, methods: str, lr: str | None):
    from loraforge.compare import compare_run, parse_lrs, parse_methods

    chosen = parse_methods(methods)
    return compare_run(cfg, chosen, parse_lrs(lr, chosen))


def show_bench_serve(results: dict) -> int:
    show_json(results)
    return 1 if results["failures"] else 0


def _bench_train(**kw) -> int:
    from loraforge.bench.train import BenchSpec, bench_train, jobs

    spec = call(BenchSpec, kw)
    try:  # check --jobs against this run's jobs before anything is measured
        call(jobs, kw, spec=spec)
    except ValueError as e:
        hint = "" if kw.get("ablation") else " (--ablation adds the ablation jobs)"
        raise UsageError(f"{e}{hint}") from None
    results = call(bench_train, kw, spec=spec)
    print(f"wrote {Path(kw['out']) / kw['name']}.json and {kw['name']}.md")
    if results["failed"]:
        print(f"failed jobs: {', '.join(results['failed'])}", file=sys.stderr)
        return 1
    return 0


def _bench_generate(**kw) -> int:
    from loraforge.bench.generate import GenerateSpec, bench_generate

    call(bench_generate, kw, spec=call(GenerateSpec, kw))
    print(f"wrote {Path(kw['out']) / 'generate.json'} and generate.md")
    return 0


def _deploy_targets() -> tuple[list[str], str]:
    """(choices, help) from deploy.k8s.TARGETS: a tuple of names, or a dict name -> one-line help."""
    from loraforge.deploy.k8s import TARGETS

    if isinstance(TARGETS, dict):
        return list(TARGETS), "what to render: " + "; ".join(f"{k}: {v}" for k, v in TARGETS.items())
    return list(TARGETS), "what to render: " + ", ".join(TARGETS)


# --- the table -----------------------------------------------------------------------------------

GROUPS = {
    ("data",): "build, inspect and check datasets",
    ("deploy",): "Dockerfiles and validated Kubernetes manifests",
    ("bench",): "benchmarks whose numbers the README publishes",
    ("tokenizer",): "train tokenizers",
    ("config",): "inspect configs",
}

DTYPES = ["auto", "bf16", "fp32", "fp16"]


def commands() -> list[Command]:
    """Every command, in the order ``loraforge --help`` lists them."""
    targets, target_help = _deploy_targets()
    return [
        Command(("train",), "fine-tune a model (LoRA and friends) and evaluate before/after",
                "loraforge.workflows:train_run", config="explicit", args=(
                    arg("--out", config_key="output.dir", help="run directory (sets output.dir)"),
                    arg("--resume", action="store_true", help="continue the run in the output directory"),
                    arg("--overwrite", action="store_true", config_key="output.overwrite",
                        help="replace an existing run directory (sets output.overwrite)"),
                )),
        Command(("eval",), "evaluate a base model or an adapter on the test split", _eval, config="optional",
                show=show_json, args=(
                    arg("--adapter", help="adapter directory (a run directory or its adapter/ folder)"),
                    arg("--metrics-out", dest="out_path", help="also write the metrics JSON to this file"),
                    arg("--show-examples", action="store_true", help="print sample outputs (PII: raw data!)"),
                    arg("--baseline", action="store_true",
                        help="score the rule-based PII masker instead of a model"),
                )),
        Command(("translate",), "translate text with a base model or an adapter", _translate, show=show_lines,
                args=(
                    arg("text", nargs="*", help="texts to translate (or use --file, or lines on stdin)"),
                    arg("--adapter", help="adapter folder or run directory"),
                    arg("--model", help="base model (default: the adapter's base, or the embedded Gemma 3 270M)"),
                    arg("--config", dest="config_path", help="config whose template/system prompt to use "
                        "(default: the adapter's run config)"),
                    arg("--file", help="one text per line ('-' for stdin); empty lines are skipped"),
                    arg("--batch-size", type=int, default=32, help="texts generated together"),
                    arg("--max-new-tokens", type=int, default=256,
                        help="most tokens generated per text; a text cut at this budget is warned about"),
                )),
        Command(("report",), "rebuild a finished run's report from its files", "loraforge.workflows:rebuild_report",
                show=show_report, args=(arg("run_dir", metavar="RUN", help="run directory"),)),
        Command(("data", "check"), "render examples with trained tokens highlighted; fail on silent bugs",
                "loraforge.workflows:check_data", config="optional",
                args=(arg("-n", type=int, default=3, help="examples to render"),)),
        Command(("data", "k8s"), "align English/translated pairs from a kubernetes/website checkout",
                "loraforge.data.k8s:build", show=lambda report: show_json(report.as_dict()), args=(
                    arg("--source", required=True, help="checkout (or snapshot) holding content/<lang>/<section>"),
                    arg("--out", required=True, help="output directory for train/dev/test.jsonl.gz"),
                    arg("--lang", default="zh-cn", help="localization to pair with English (zh-cn, ja, ko, ...)"),
                    arg("--section", default="docs", help="content section (docs, blog, ...)"),
                )),
        Command(("data", "stats"), "counts, length percentiles and problems of a dataset file", _data_stats,
                show=show_text, args=(
                    arg("path", metavar="FILE", help="jsonl/json/csv/parquet file or packaged split (k8s:train)"),
                    arg("--tokenizer", help="count tokens of this tokenizer: gemma3-270m, a .gguf file, an HF "
                        "name or folder (default: whitespace/character count)"),
                    arg("--source-field", help="column/field holding the source text (default: detected, e.g. "
                        "source/en/text)"),
                    arg("--target-field", help="column/field holding the target text (default: detected, e.g. "
                        "target/zh/masked)"),
                )),
        Command(("data", "pii"), "synthetic PII-masking records (text -> masked), or import ai4privacy files",
                _data_pii, show=show_json, args=(
                    arg("--n", type=int, default=1000, help="records (the train split with --out-dir)"),
                    arg("--seed", type=int, default=0, help="random seed: the same seed gives the same records"),
                    arg("--split", choices=["train", "test"], default="train", help="template family to draw from"),
                    arg("--out", help="output .jsonl or .jsonl.gz"),
                    arg("--out-dir", help="write train/dev/test.jsonl.gz here instead (test = held-out templates)"),
                    arg("--n-dev", type=int, default=200, help="dev records with --out-dir"),
                    arg("--n-test", type=int, default=400, help="test records with --out-dir"),
                    arg("--import", dest="import_format", nargs=2, metavar=("FORMAT", "FILE"),
                        help="convert a public dataset file: ai4privacy FILE (source_text + privacy_mask)"),
                    arg("--language", help="with --import: keep only rows of this language (e.g. en)"),
                )),
        Command(("export",), "export a run: PEFT adapter + card, merged model, GGUF, or OCI image",
                "loraforge.export.run:export_run", show=show_json, args=(
                    arg("run", help="run directory (or an adapter folder)"),
                    arg("--format", dest="fmt", required=True, choices=["adapter", "merged", "gguf", "oci"],
                        help="adapter: PEFT folder + model card; merged: full model; gguf: llama.cpp file; "
                             "oci: adapter as an OCI image"),
                    arg("--out", required=True, help="output directory"),
                    arg("--gguf-type", default="f16", choices=["f16", "bf16", "q8_0", "f32"],
                        help="gguf: weight type of the written file"),
                    arg("--push", metavar="REF", help="oci: push to REGISTRY/REPO[:TAG] and verify by pulling back"),
                    arg("--plain-http", action="store_true",
                        help="oci: talk HTTP to the registry (default for localhost)"),
                )),
        Command(("serve",), "OpenAI-compatible server for a base model and many LoRA adapters",
                "loraforge.serve.app:serve", args=(
                    arg("--base", default="gemma3-270m", help="base model (embedded name, .gguf, HF folder or hub id)"),
                    arg("--adapter", dest="adapters", action="append", default=[], metavar="NAME=DIR",
                        help="adapter to serve as model NAME (repeat the flag for more)"),
                    arg("--adapter-dir", help="directory the admin API may load adapters from at run time"),
                    arg("--admin-token", help="bearer token for /admin/adapters (admin API off without it)"),
                    arg("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)"),
                    arg("--port", type=int, default=8000, help="port to listen on"),
                    arg("--dtype", default="auto", choices=DTYPES,
                        help="weights' dtype; auto: bf16 where the hardware is fast at it, else fp32"),
                    arg("--max-batch", type=int, default=16, help="requests per batched generate() call"),
                    arg("--batch-wait-ms", type=float, default=5, help="how long to collect requests into a batch"),
                )),
        Command(("deploy", "docker"), "write Dockerfiles: train-cpu, train-cuda, serve",
                "loraforge.deploy.docker:write_dockerfiles", show=show_lines, args=(
                    arg("--out", dest="out_dir", default="docker",
                        help="directory for Dockerfile.* (build them from the repo root)"),
                )),
        Command(("deploy", "k8s"), "render a run config as Kubernetes resources (validated offline)", _deploy_k8s,
                config="optional", args=(
                    arg("--target", required=True, choices=targets, help=target_help),
                    arg("--nodes", type=int, default=1, help="pytorchjob/trainjob: nodes"),
                    arg("--procs", type=int, default=1, help="pytorchjob/trainjob: processes per node"),
                    arg("--gpus", type=int, default=0, help="GPUs per node (0 = CPU)"),
                    arg("--image", help="container image (default: the loraforge train/serve image)"),
                    arg("--name", help="resource name (default: loraforge-<output dir name>)"),
                    arg("--namespace", help="namespace of every resource (default: the kubectl context's)"),
                    arg("--storage", default="20Gi", help="size of the PersistentVolumeClaim for runs and cache"),
                    arg("--storage-class", help="PVC storage class (RWX for pytorchjob/trainjob)"),
                    arg("--kaito-preset", help="kaito: KAITO preset name of the base model"),
                    arg("--instance-type", dest="kaito_instance_type",
                        help="kaito: node SKU (default: from `loraforge estimate`)"),
                    arg("--adapter-image", help="kaito: image the tuning pushes and inference pulls"),
                    arg("--push-secret", help="kaito: imagePushSecret for --adapter-image"),
                    arg("--out", help="file (.yaml) or directory (writes <target>.yaml); default: stdout"),
                )),
        Command(("deploy", "validate"), "validate manifests offline (core kinds and KAITO/Kubeflow CRDs)",
                _deploy_validate, show=show_lines,
                args=(arg("files", nargs="+", metavar="FILE", help="YAML files (multi-document)"),)),
        Command(("estimate",), "parameters and memory of a config's training step; batch size, KAITO SKU",
                _estimate, config="optional", args=(
                    arg("--gpu-gb", type=float, default=24, help="GPU memory to fit a batch into"),
                    arg("--check", metavar="RUN_DIR", help="compare with the peak RSS a finished run measured"),
                )),
        Command(("compare",), "train every method on the same data and budget; write the method table", _compare,
                config="explicit", args=(
                    arg("--methods", default="lora,dora,ia3,prefix,prompt,adapter,full",
                        help="comma-separated adapter.method values"),
                    arg("--lr", help="per-method learning rates, e.g. full=5e-5,prompt=3e-2 (others: train.lr)"),
                )),
        Command(("tokenizer", "train"), "SentencePiece on a dataset's source+target text (Marian / mBART-50 layout)",
                "loraforge.data.tokenizer_train:train_tokenizer", show=show_text, args=(
                    arg("--data", default="k8s:train", help="file or packaged split"),
                    arg("--vocab-size", type=int, default=8000, help="tokens in the vocabulary"),
                    arg("--out", dest="out_dir", required=True, help="tokenizer folder to write"),
                    arg("--model-type", choices=["unigram", "bpe"], default="unigram",
                        help="SentencePiece model type"),
                    arg("--format", dest="fmt", choices=["marian", "mbart50"], default="marian",
                        help="marian: source.spm/target.spm/vocab.json; mbart50: tokenizer.json with language "
                             "codes"),
                    arg("--src-lang", default="en", help="source language code"),
                    arg("--tgt-lang", default="zh", help="target language code"),
                    arg("--max-examples", type=int, help="train on the first N pairs only (default: all)"),
                )),
        Command(("config", "show"), "every config key with its type, default and help; given a config, its "
                "resolved values", "loraforge.cli.config_show:show_config", config="optional", show=show_text),
        Command(("bench", "serve"), "bounded load test against a running server", "loraforge.bench.serve:bench_serve",
                show=show_bench_serve, args=(
                    arg("--url", default="http://127.0.0.1:8000", help="server to load"),
                    arg("--models", type=_csv, help="comma-separated model names to cycle (default: all the "
                        "server lists)"),
                    arg("--requests", type=int, default=200, help="requests in all"),
                    arg("--concurrency", type=int, default=16, help="requests in flight at once"),
                    arg("--max-tokens", type=int, default=64, help="max_tokens of each request"),
                    arg("--out", default="bench-serve.json", help="results JSON"),
                )),
        Command(("bench", "train"), "the same LoRA job with TRL SFTTrainer+PEFT and loraforge", _bench_train, args=(
            arg("--model", default="gemma3-270m", help="base model"),
            arg("--steps", type=int, default=20, help="optimizer steps per job (first 2 are warm-up)"),
            arg("--batch-size", type=int, default=8, help="examples per optimizer step"),
            arg("--max-length", type=int, default=256, help="longer examples are skipped, never truncated"),
            arg("--dev-examples", dest="n_dev", type=int, default=32, help="k8s:dev examples for the final dev loss"),
            arg("--matmul-size", type=int, default=2048, help="square matmul that measures the FLOP/s peak"),
            arg("--only", choices=["trl", "loraforge", "both"], default="both", help="which side to run"),
            arg("--ablation", action="store_true", help="also run loraforge with each speed lever off"),
            arg("--trl-bf16-steps", dest="bf16_steps", type=int, help="steps of the TRL bf16 job only (default: "
                "--steps; 0 skips it): for CPUs where bf16 is emulated and a step takes minutes"),
            arg("--jobs", dest="select", type=_csv, help="comma-separated job names to run (e.g. "
                "trl-bf16,loraforge; --ablation adds its jobs to the choice); default: all"),
            arg("--random-weights", action="store_true", help="build the model from its config.json, no weights "
                "(throughput and memory only: for a machine the weights cannot be copied to)"),
            arg("--out", default="bench/results", help="results directory"),
            arg("--name", default="train", help="file name of the results: NAME.json and NAME.md"),
        )),
        Command(("bench", "generate"), "batched eval generator vs a plain batch-1 generate loop", _bench_generate,
                args=(
                    arg("--model", default="gemma3-270m", help="base model"),
                    arg("--adapter", help="adapter or run directory to merge in"),
                    arg("--prompts", type=int, default=32, help="first N k8s:dev sources"),
                    arg("--max-new-tokens", type=int, default=128, help="most tokens generated per prompt"),
                    arg("--batch-size", type=int, default=32, help="prompts per batched generate call"),
                    arg("--dtype", default="fp32", choices=["auto", "bf16", "fp32"],
                        help="model weights (fp32 is what eval.exact generates in)"),
                    arg("--out", default="bench/results", help="directory for generate.json and generate.md"),
                )),
    ]
