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
from loraforge.pii.defaults import DEFAULT_BIAS, DEFAULT_LONE_MIN_SCORE, DEFAULT_TAG_BIAS

_DEFAULT_BIASES = f"default {DEFAULT_BIAS:g}, tagger {DEFAULT_TAG_BIAS:g}"


def _csv(text: str) -> list[str]:
    """A comma-separated flag value as a list (empty items dropped)."""
    return [item.strip() for item in text.split(",") if item.strip()]


def _warn(msg: str) -> None:
    print(f"loraforge: warning: {msg}", file=sys.stderr)


# --- handlers: where a command is more than one call ---------------------------------------------


def _biases(text: str) -> list[float]:
    """--pii-curve's value: comma-separated finite numbers."""
    import argparse
    import math

    try:
        values = [float(v) for v in _csv(text)]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of biases; give numbers, e.g. --pii-curve=-2,0,2,4")
    return values


def _eval(baseline: bool = False, **kw):
    """--baseline scores the rule-based PII masker on the same test split, the same way."""
    if baseline and (kw.get("pii_curve") is not None or kw.get("bias") is not None):
        raise UsageError("--pii-curve and --bias act on a tuned model's decoding, not on --baseline")
    target = "loraforge.eval.pii_baseline:baseline_eval" if baseline else "loraforge.workflows:eval_run"
    return call(resolve(target), kw)


def show_eval(result: dict) -> int:
    """The metrics as JSON; for a PII adapter, the maskers' side-by-side table and the recall knob's
    curve first (on stderr, so stdout stays one JSON document)."""
    if isinstance(result, dict) and result.get("pii_compare"):
        from loraforge.eval.report import comparison_markdown
        from loraforge.runs import PiiComparison

        print(comparison_markdown(PiiComparison.model_validate(result["pii_compare"])), file=sys.stderr)
    if isinstance(result, dict) and result.get("pii_curve"):
        from loraforge.eval.report import curve_markdown
        from loraforge.runs.metrics import PiiCurve

        cmp = result.get("pii_compare") or {}
        print(curve_markdown(PiiCurve.model_validate(result["pii_curve"]), cmp.get("bias")), file=sys.stderr)
    return show_json(result)


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
              import_format: list[str] | None, language: str | None, records_share: float | None = None,
              generations: int | None = None) -> dict:
    from loraforge.data import pii

    if import_format:
        from loraforge.data.pii_import import import_ai4privacy

        if import_format[0] != "ai4privacy" or not out:
            raise UsageError("usage: --import ai4privacy FILE --out OUT (ai4privacy is the supported format)")
        records, report = import_ai4privacy(import_format[1], split=split, language=language)
        pii.write_jsonl(records, out)
        return report
    records_share = pii.PACKAGED_RECORDS_SHARE if records_share is None else records_share
    generations = pii.GENERATIONS if generations is None else generations
    if out_dir:
        return pii.build_packaged(out_dir, n, n_dev, n_test, seed, records_share=records_share, generations=generations)
    if out:
        records = pii.generate(n, seed, split, records_share=records_share, generations=generations)
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
        for line in rendered.terminal_notes():
            print(line, file=sys.stderr)
    return 0


def _deploy_validate(files: list[str]) -> list[str]:
    from loraforge.deploy.validate import validate_file

    return [line for path in files for line in validate_file(path)]


def _estimate(cfg, gpu_gb: float, check: str | None):
    from loraforge.deploy.estimate import format_check, format_estimate

    if check:
        return show_text(format_check(check))
    return show_text(format_estimate(cfg, gpu_gb))


def _compare(cfg, methods: str, lr: str | None):
    from loraforge.workflows.compare import compare_run, parse_lrs, parse_methods

    chosen = parse_methods(methods)
    return compare_run(cfg, chosen, parse_lrs(lr, chosen))


def show_pages(result: dict) -> int:
    """translate-page: the counts; exit 2 when a page failed (it was reported, not written)."""
    show_json(result)
    return 2 if result.get("failed") else 0


def show_stream(items) -> int:
    """Outputs as they come (a large jsonl is masked in bounded memory); no newline added twice."""
    for item in items:
        sys.stdout.write(item if item.endswith("\n") else item + "\n")
        sys.stdout.flush()
    return 0


def show_unmasked(text: str) -> int:
    sys.stdout.write(text)
    return 0


def _bench_serve(compare_gguf: str | None = None, soak: int = 0, base: str = "gemma3-270m",
                 llama_threads: int | None = None, out_dir: str = "bench/results/serve-compare",
                 adapter: str | None = None, int8: bool = False, int8_lm_head: bool = False,
                 loraforge_only: bool = False, **kw):
    """Against a running server (--url), or, with --compare-gguf, loraforge serve and llama.cpp's server
    started one after the other on this machine with the same requests."""
    serve_args = ["--int8"] * int8 + ["--int8-lm-head"] * int8_lm_head
    if compare_gguf:
        from loraforge.bench.serve_compare import side_by_side

        return side_by_side(compare_gguf, base, requests=kw["requests"], concurrency=kw["concurrency"],
                            max_tokens=kw["max_tokens"], soak=soak, out=out_dir, threads=llama_threads,
                            adapter=adapter, serve_args=serve_args or None, loraforge_only=loraforge_only)
    if adapter or serve_args or loraforge_only:
        raise UsageError("--adapter, --int8, --int8-lm-head and --loraforge-only go with --compare-gguf (a running "
                         "server has its own settings)")
    return call(resolve("loraforge.bench.serve:bench_serve"), kw)


def show_bench_serve(results: dict) -> int:
    show_json(results)
    failures = results.get("failures")
    if failures is None:  # side by side: one entry per engine
        failures = sum(e.get("failures", 0) or 0 for e in results.get("engines", []))
    return 1 if failures else 0


def _bench_train(**kw) -> int:
    from loraforge.bench.train import BenchSpec, bench_train, jobs

    spec = call(BenchSpec, kw)
    call(jobs, kw, spec=spec)  # an unknown --jobs name is a ConfigError naming the valid ones, before any job runs
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
                show=show_eval, args=(
                    arg("--adapter", help="adapter directory (a run directory or its adapter/ folder)"),
                    arg("--metrics-out", dest="out_path", help="also write the metrics JSON to this file"),
                    arg("--outputs-dir", help="also keep every output (jsonl, as a run names them) in this new folder "
                        "(PII: the texts hold personal data)"),
                    arg("--show-examples", action="store_true", help="print sample outputs (PII: raw data!)"),
                    arg("--worst", type=int, default=0, metavar="N",
                        help="print the N translated segments with the lowest sentence chrF, worst first"),
                    arg("--baseline", action="store_true",
                        help="score the rule-based PII masker instead of a model"),
                    arg("--pii-curve", type=_biases, metavar="B1,B2,...",
                        help="PII adapter: leak rate vs over-masking at these biases on the dev split, stored "
                             "in the run with pii_curve.png (write it with '=': --pii-curve=-2,0,2,4)"),
                    arg("--bias", type=float, help="PII adapter: the operating point of the side-by-side table "
                                                   "(logits added to starting a placeholder, or taken from a "
                                                   f"tagger's 'not PII' logit; {_DEFAULT_BIASES})"),
                )),
        Command(("translate",), "translate text with a base model or an adapter", _translate, show=show_lines,
                args=(
                    arg("text", nargs="*", help="texts to translate (or use --file, or lines on stdin)"),
                    arg("--adapter", help="adapter folder or run directory"),
                    arg("--model", help="base model (default: the adapter's base, or the embedded Gemma 3 270M)"),
                    arg("--config", dest="config_path", help="config whose template/system prompt to use "
                        "(default: the adapter's run config)"),
                    arg("--task", help="multi-task run (data.tasks): the task to run, by name (default: its "
                        "first translate task)"),
                    arg("--file", help="one text per line ('-' for stdin); empty lines are skipped"),
                    arg("--batch-size", type=int, default=32, help="texts generated together"),
                    arg("--max-new-tokens", type=int, default=256,
                        help="most tokens generated per text; a text cut at this budget is warned about"),
                )),
        Command(("translate-page",), "translate English Markdown/Hugo doc pages into zh-cn pages, as the "
                "localization team ships them", "loraforge.workflows.localize:translate_page_run", show=show_pages,
                args=(
                    arg("src", help="an English page (.md) or a folder of pages"),
                    arg("out", help="the zh-cn page (for a page) or folder (for a folder)"),
                    arg("--adapter", help="tuned translation run or adapter folder"),
                    arg("--model", help="base model (default: the adapter's base, or the embedded Gemma 3 270M)"),
                    arg("--config", dest="config_path", help="config whose template/system prompt to use"),
                    arg("--previous", help="update mode: the existing zh-cn page/folder; blocks whose English is "
                        "unchanged are reused"),
                    arg("--overwrite", action="store_true", help="replace existing output pages"),
                    arg("--no-comments", dest="comments", action="store_false",
                        help="do not keep the English of each block above it as an HTML comment"),
                    arg("--code-comments", action="store_true", help="also translate '#' comments in code blocks"),
                    arg("--glossary", help="tsv/yaml glossary (en -> zh, keep-English terms); default: the one "
                        "built from the docs' glossary pages"),
                    arg("--fragment", action="store_true", help="accept pages without front matter (includes)"),
                    arg("--batch-size", type=int, default=32, help="segments generated together"),
                    arg("--max-new-tokens", type=int, default=256, help="most tokens generated per segment"),
                )),
        Command(("eval-pages",), "translate the test-split doc pages and score them against the real zh-cn pages",
                "loraforge.workflows.localize:eval_pages_run", show=show_json, args=(
                    arg("--data", required=True, help="folder holding content/en and content/zh-cn "
                        "(e.g. ../shared/data/k8s-zh-cn or a kubernetes/website checkout)"),
                    arg("--adapter", help="tuned translation run or adapter folder"),
                    arg("--model", help="base model (default: the adapter's base, or the embedded Gemma 3 270M)"),
                    arg("--config", dest="config_path", help="config whose template/system prompt to use"),
                    arg("--split", default="test", choices=["train", "dev", "test"], help="which documents"),
                    arg("--limit", type=int, help="first N pages only (default: all)"),
                    arg("--hugo", action="store_true", help="also build the pages with Hugo and compare code "
                        "blocks and links with the English pages"),
                    arg("--glossary", help="glossary for term accuracy (default: the docs' own)"),
                    arg("--out", help="also write per-page results (JSON) here"),
                    arg("--batch-size", type=int, default=32, help="segments generated together"),
                    arg("--max-new-tokens", type=int, default=256, help="most tokens generated per segment"),
                )),
        Command(("mask",), "mask personal data in texts, files, folders or jsonl (patterns, or a tuned PII run)",
                "loraforge.workflows.mask:mask_run", show=show_stream, args=(
                    arg("text", nargs="*", help="texts to mask (or --file, --jsonl, --folder, or stdin)"),
                    arg("--file", help="a text file, masked whole ('-': stdin)"),
                    arg("--jsonl", help="a .jsonl(.gz) file: each record's --field is masked, streamed"),
                    arg("--folder", help="every text file under this folder, written to --out"),
                    arg("--out", help="with --folder: output folder"),
                    arg("--field", default="text", help="with --jsonl: the field holding the text"),
                    arg("--format", dest="fmt", default="text", choices=["text", "spans", "both"],
                        help="text: the masked text; spans: jsonl with type/start/end; both"),
                    arg("--adapter", help="a tuned PII run (default: validated patterns only)"),
                    arg("--merge", choices=["union", "model", "patterns"],
                        help="how model and pattern spans combine (default: union with --adapter, else patterns)"),
                    arg("--style", default="placeholder", choices=["placeholder", "numbered", "pseudonym"],
                        help="[NAME], [NAME_1] per identity, or realistic fake values"),
                    arg("--bias", type=float, help="recall knob: added to the model's log-odds of starting a "
                        "placeholder, or of tagging a token for a tagger (higher: fewer leaks, more over-masking; "
                        f"{_DEFAULT_BIASES})"),
                    arg("--lone-min-score", type=float, default=DEFAULT_LONE_MIN_SCORE, help="a text's only model find, "
                        "a name or a login, is masked from this probability, or where a pattern finds it too "
                        f"(default {DEFAULT_LONE_MIN_SCORE:g}; 0: always)"),
                    arg("--locale", default="en_US", help="pseudonym locale (Faker)"),
                    arg("--across-batch", action="store_true", help="same numbers/pseudonyms across all texts"),
                    arg("--mapping", help="write the reversible mapping here (0600; it is personal data!)"),
                )),
        Command(("unmask",), "restore the original text from a masked text and its mapping",
                "loraforge.workflows.mask:unmask_run", show=show_unmasked, args=(
                    arg("file", help="the masked text file ('-': stdin)"),
                    arg("--mapping", required=True, help="the mapping `loraforge mask --mapping` wrote"),
                    arg("--derived", action="store_true", help="the text was derived from the masked text "
                        "(e.g. an LLM reply): replace placeholders wherever they occur"),
                )),
        Command(("report",), "rebuild a finished run's report from its files", "loraforge.workflows:rebuild_report",
                show=show_report, args=(arg("run_dir", metavar="RUN", help="run directory"),)),
        Command(("data", "check"), "render examples with trained tokens highlighted; fail on silent bugs",
                "loraforge.workflows:check_data", config="optional",
                args=(arg("-n", type=int, default=3, help="examples to render"),)),
        Command(("data", "augment"), "write the augmented training set (data.augment) for inspection, or the "
                "back-translation cache", "loraforge.workflows.augment:augment_run", config="optional",
                show=show_json, args=(
                    arg("--out", required=True, help="output .jsonl(.gz): the augmented set, or with --back-translate "
                        "the synthetic pair cache (data.augment.back_translation.file)"),
                    arg("--epoch", type=int, default=0, help="the epoch whose source noise to write"),
                    arg("--back-translate", dest="back_translate", metavar="REVERSE_RUN",
                        help="a run translating the other way (e.g. zh->en): translate --mono with it"),
                    arg("--mono", help="with --back-translate: target-language texts (.txt lines, or records with "
                        "a field named by the target language or 'text')"),
                    arg("--sampling", dest="sampling", action="store_true", default=True,
                        help="back-translate by sampling with --temperature and --top-p (the default)"),
                    arg("--greedy", dest="sampling", action="store_false", help="back-translate greedily instead"),
                    arg("--temperature", type=float, default=1.0, help="sampling temperature"),
                    arg("--top-p", dest="top_p", type=float, default=0.95, help="nucleus sampling mass"),
                    arg("--limit", type=int, help="first N monolingual texts only"),
                    arg("--task", help="multi-task config: the translate task the pairs are for"),
                )),
        Command(("data", "k8s"), "align English/translated pairs from a kubernetes/website checkout",
                "loraforge.data.k8s_build:build_command", show=lambda report: show_json(report.as_dict()), args=(
                    arg("--source", required=True, help="checkout (or snapshot) holding content/<lang>/<section>"),
                    arg("--out", required=True, help="output directory for train/dev/test.jsonl.gz"),
                    arg("--lang", default="zh-cn", help="localization to pair with English (zh-cn, ja, ko, ...)"),
                    arg("--section", default="docs", help="content section (docs, blog, ...)"),
                    arg("--align", default="comments", choices=["comments", "structure"],
                        help="comments: the English kept in <!-- --> before each block (zh-cn); structure: pair "
                        "with content/en by headings, code and block order (ja, ko)"),
                    arg("--mono", action="store_true", help="also write mono-<lang> and mono-en.jsonl.gz: "
                        "blocks no pair holds, from train-split pages only (for back-translation)"),
                    arg("--no-holdout", dest="holdout", action="store_false", help="with --align structure: do "
                        "not drop train pairs whose English is in the packaged k8s-en-zh dev/test"),
                    arg("--holdout-section", dest="holdout_section", metavar="PREFIX", help="also write the pairs "
                        "of the pages under PREFIX (e.g. docs/tutorials/) from every split as <last part>.jsonl.gz, "
                        "minus English seen on other train pages: a held-out set for data.exclude_sources"),
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
                    arg("--n-test", type=int, default=400, help="test records with --out-dir (0: keep the test file there as it is)"),
                    arg("--import", dest="import_format", nargs=2, metavar=("FORMAT", "FILE"),
                        help="convert a public dataset file: ai4privacy FILE (source_text + privacy_mask)"),
                    arg("--language", help="with --import: keep only rows of this language (e.g. en)"),
                    arg("--records-share", type=float, help="train family: share of structured records (forms, CSV, "
                        "JSON, SQL... from random field schemas in ten languages; default: the packaged splits' 0.25)"),
                    arg("--generations", type=int, help="train family: draw from template generations up to N "
                        "(default 1; 2 adds 25 more kinds of text, not adopted: see docs/benchmarks.md)"),
                )),
        Command(("export",), "export a run: PEFT adapter + card, merged model, GGUF, or OCI image",
                "loraforge.export.run:export_run", show=show_json, args=(
                    arg("run", help="run directory (or an adapter folder)"),
                    arg("--format", dest="fmt", required=True,
                        choices=["adapter", "merged", "gguf", "gguf-lora", "oci", "docker-model"],
                        help="adapter: PEFT folder + model card; merged: full model; gguf: llama.cpp file; "
                             "gguf-lora: the adapter alone for llama.cpp --lora / Ollama ADAPTER (+ Modelfile); "
                             "oci: adapter as KAITO's OCI image; docker-model: the GGUF as a Docker Model Runner "
                             "artifact"),
                    arg("--out", required=True, help="output directory"),
                    arg("--gguf-type", default="f16", choices=["f16", "bf16", "q8_0", "f32"],
                        help="gguf: weight type of the written file"),
                    arg("--push", metavar="REF", help="oci, docker-model: push to REGISTRY/REPO[:TAG] and verify by pulling "
                        "back"),
                    arg("--plain-http", action="store_true",
                        help="oci, docker-model: talk HTTP to the registry (default for localhost)"),
                    arg("--dtype", choices=["bf16", "fp16", "fp32"],
                        help="merged: dtype of the saved weights (default: the dtype the run trained in)"),
                )),
        Command(("serve",), "OpenAI-compatible server for a base model and many LoRA adapters",
                "loraforge.serve.app:serve", args=(
                    arg("--base", default="gemma3-270m", help="base model (embedded name, .gguf, HF folder or hub id)"),
                    arg("--adapter", dest="adapters", action="append", default=[], metavar="NAME=DIR",
                        help="adapter to serve as model NAME (repeat the flag for more)"),
                    arg("--adapter-dir", help="directory the admin API may load adapters from at run time"),
                    arg("--admin-token", help="bearer token for /admin/adapters (admin API off without it)"),
                    arg("--api-key", help="bearer key every /v1 route requires (default: $LORAFORGE_API_KEY; "
                        "none: open)"),
                    arg("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)"),
                    arg("--port", type=int, default=8000, help="port to listen on"),
                    arg("--dtype", default="auto", choices=DTYPES,
                        help="weights' dtype; auto: bf16 where the hardware is fast at it, else fp32"),
                    arg("--max-batch", type=int, default=16, help="rows decoded together at most (continuous batch)"),
                    arg("--batch-wait-ms", type=float, default=5, help="how long to collect requests into a batch"),
                    arg("--max-body-bytes", type=int, default=1 << 20,
                        help="larger request bodies get 413 before any parsing"),
                    arg("--max-prompt-tokens", type=int,
                        help="longer prompts get 400 before any model work (default: 4096 on a CPU, the model's "
                             "context on a GPU)"),
                    arg("--prefill-tokens", type=int, default=2048,
                        help="padded prompt tokens prefilled per engine step (how long running rows wait)"),
                    arg("--no-merge-lora", dest="merge_lora", action="store_false",
                        help="never merge an adapter into the weights, even when every running row uses it"),
                    arg("--int8-lm-head", action="store_true",
                        help="output layer in int8 (fp32 or bf16 models): faster per step on a CPU, but greedy "
                        "outputs may change"),
                    arg("--int8", action="store_true",
                        help="every Linear layer in int8 (CPU, like llama.cpp's Q8_0): ~1.7x fp32's decoding "
                             "tokens/s on an AVX2 CPU at the same chrF; greedy outputs may differ from fp32's"),
                    arg("--no-verified-lm-head", dest="verified_lm_head", action="store_false",
                        help="plain fp32 output layer (default on a CPU in fp32: int8 proposes candidate tokens, "
                             "fp32 decides among them, same tokens as fp32)"),
                    arg("--no-prepack", dest="prepack", action="store_false",
                        help="plain bf16 Linear layers (default on a CPU in bf16: weights laid out once for "
                             "oneDNN, same outputs, faster, one more copy of the weights in memory)"),
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
                    arg("--adapter-image", help="kaito: image the tuning pushes and inference pulls; vllm: adapter OCI "
                        "image to serve (default: the adapter on the PVC)"),
                    arg("--push-secret", help="kaito: imagePushSecret for --adapter-image"),
                    arg("--int8", action="store_true", help="serve: `loraforge serve --int8` (int8 weights on the "
                        "CPU, about 1.7x the decoding speed on AVX2; answers may differ from fp32's)"),
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
        Command(("ablate",), "train rows of recipes x seeds on one budget; write the mean ± sd table",
                "loraforge.workflows.ablate:ablate", args=(
                    arg("spec_path", metavar="SPEC", help="ablation spec (see configs/ablations/k8s-en-zh.yaml)"),
                    arg("--out", help="where the runs and ablation.md go (default: runs/ablation-<spec name>)"),
                    arg("--rows", help="comma-separated rows of the spec to run (default: all)"),
                    arg("--seeds", help="comma-separated seeds (default: the spec's)"),
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
        Command(("bench", "serve"), "bounded load test against a running server, or side by side with llama.cpp",
                _bench_serve, show=show_bench_serve, args=(
                    arg("--url", default="http://127.0.0.1:8000", help="server to load"),
                    arg("--models", type=_csv, help="comma-separated model names to cycle (default: all the "
                        "server lists)"),
                    arg("--requests", type=int, default=200, help="requests in all"),
                    arg("--concurrency", type=int, default=16, help="requests in flight at once"),
                    arg("--max-tokens", type=int, default=64, help="max_tokens of each request"),
                    arg("--out", default="bench-serve.json", help="results JSON"),
                    arg("--compare-gguf", metavar="FILE", help="start loraforge serve, then llama.cpp's server on "
                        "this GGUF (`loraforge export --format gguf`), and send both the same requests"),
                    arg("--base", default="gemma3-270m", help="with --compare-gguf: loraforge's base model"),
                    arg("--adapter", help="with --compare-gguf: a tuned run loraforge serves (the GGUF should be its "
                        "`loraforge export --format gguf`)"),
                    arg("--soak", type=int, default=0, help="with --compare-gguf: requests of a memory soak after "
                        "the load test (start and end RSS)"),
                    arg("--llama-threads", type=int, help="with --compare-gguf: llama.cpp threads (default: all)"),
                    arg("--loraforge-only", action="store_true", help="with --compare-gguf: skip llama.cpp (a long "
                        "--soak of loraforge alone)"),
                    arg("--int8", action="store_true", help="with --compare-gguf: loraforge serve --int8 (compare "
                        "with a q8_0 GGUF)"),
                    arg("--int8-lm-head", action="store_true", help="with --compare-gguf: loraforge serve "
                        "--int8-lm-head (the output layer in int8, fp32 or bf16 elsewhere)"),
                    arg("--out-dir", default="bench/results/serve-compare",
                        help="with --compare-gguf: where the JSON and Markdown go"),
                )),
        Command(("bench", "train"), "the same LoRA job with TRL SFTTrainer+PEFT and loraforge", _bench_train, args=(
            arg("--model", default="gemma3-270m", help="base model"),
            arg("--steps", type=int, default=20, help="optimizer steps per job (first 2 are warm-up)"),
            arg("--batch-size", type=int, default=8, help="examples per optimizer step"),
            arg("--max-length", type=int, default=256, help="longer examples are skipped, never truncated"),
            arg("--dev-examples", dest="n_dev", type=int, default=32, help="k8s:dev examples for the final dev loss"),
            arg("--matmul-size", type=int, default=2048, help="square matmul that measures the FLOP/s peak"),
            arg("--only", choices=["trl", "loraforge", "both"], default="both", help="which side to run"),
            arg("--ablation", action="store_true", help="also run loraforge with each speed lever switched, and "
                "TRL with each of its speed options alone"),
            arg("--trl-bf16-steps", dest="bf16_steps", type=int, help="steps of every TRL bf16 job (default: "
                "--steps; 0 skips them): for CPUs where bf16 is emulated and a step takes minutes"),
            arg("--jobs", dest="select", type=_csv, help="comma-separated job names to run (e.g. "
                "trl-bf16,loraforge-low-memory; any job, ablation ones included); default: all"),
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
