"""The ``loraforge`` command: parse arguments, build a config, call one workflow function.

Thin on purpose: every subcommand is a call into the Python API, so anything the CLI does can
be done from Python. Heavy imports (torch, transformers) happen inside the handlers so that
``loraforge --help`` and ``loraforge deploy`` stay fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _add_config_args(p: argparse.ArgumentParser, config_required: bool = False) -> None:
    p.add_argument("config", nargs=None if config_required else "?", help="YAML config (see configs/)")
    p.add_argument(
        "overrides", nargs="*", metavar="section.key=value", help="override any config key, e.g. train.steps=50"
    )


def _config(args):
    from loraforge.config import load_config

    return load_config(args.config, args.overrides)


# --- training, evaluation, translation -------------------------------------------------------


def _cmd_train(args) -> int:
    from loraforge.workflows import train_run

    cfg = _config(args)
    if args.out:
        cfg.output.dir = args.out
    if args.overwrite:
        cfg.output.overwrite = True
    train_run(cfg, resume=args.resume)
    return 0


def _cmd_eval(args) -> int:
    from loraforge.workflows import eval_run

    cfg = _config(args)
    metrics = eval_run(cfg, adapter=args.adapter, out_path=args.metrics_out, show_examples=args.show_examples)
    import json

    print(json.dumps(metrics, indent=2, ensure_ascii=False))
    return 0


def _cmd_translate(args) -> int:
    from loraforge.workflows import translate_texts

    if args.text:
        texts = args.text
    elif args.file and args.file != "-":
        texts = [t for t in Path(args.file).read_text(encoding="utf-8").split("\n") if t.strip()]
    else:
        texts = [t for t in sys.stdin.read().split("\n") if t.strip()]
    outputs = translate_texts(
        texts,
        adapter=args.adapter,
        model=args.model,
        config_path=args.config,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
    )
    for out in outputs:
        print(out)
    return 0


def _add_train_commands(sub) -> None:
    p = sub.add_parser("train", help="fine-tune a model (LoRA and friends) and evaluate before/after")
    _add_config_args(p)
    p.add_argument("--out", help="run directory (= output.dir)")
    p.add_argument("--resume", action="store_true", help="continue the run in the output directory")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="evaluate a base model or an adapter on the test split")
    _add_config_args(p)
    p.add_argument("--adapter", help="adapter directory (a run directory or its adapter/ folder)")
    p.add_argument("--metrics-out", help="write metrics JSON here")
    p.add_argument("--show-examples", action="store_true", help="print sample outputs (PII: raw data!)")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("translate", help="translate text with a base model or an adapter")
    p.add_argument("text", nargs="*", help="text to translate (or use --file / stdin)")
    p.add_argument("--adapter", help="adapter or run directory")
    p.add_argument("--model", help="base model (default: the adapter's base, or the embedded Gemma 3 270M)")
    p.add_argument("--config", help="config whose template/system prompt to use")
    p.add_argument("--file", help="one text per line; '-' for stdin")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.set_defaults(func=_cmd_translate)


# --- data -------------------------------------------------------------------------------------


def _cmd_data_check(args) -> int:
    from loraforge.workflows import check_data

    ok = check_data(_config(args), n=args.n)
    return 0 if ok else 1


def _cmd_data_k8s(args) -> int:
    import json

    from loraforge.data.k8s import build

    report = build(args.source, args.out, lang=args.lang, section=args.section)
    print(json.dumps(report.as_dict(), indent=2))
    return 0


def _cmd_data_stats(args) -> int:
    from loraforge.data.stats import data_stats, format_stats

    tokenizer = args.tokenizer
    if tokenizer:  # 'gemma3-270m' or a .gguf file -> the cached HF folder; folders and hub ids as is
        from loraforge.models.load import EMBEDDED_MODELS, resolve_model_path

        if tokenizer in EMBEDDED_MODELS or tokenizer.endswith(".gguf"):
            tokenizer = resolve_model_path(tokenizer)
    stats = data_stats(args.file, tokenizer=tokenizer, source_field=args.source_field,
                       target_field=args.target_field)
    if args.tokenizer:
        stats["unit"] = f"tokens ({args.tokenizer})"
    print(format_stats(stats))
    return 0


def _add_data_commands(sub) -> None:
    data = sub.add_parser("data", help="build, inspect and check datasets").add_subparsers(
        dest="data_cmd", required=True
    )
    p = data.add_parser("check", help="render examples with trained tokens highlighted; fail on silent bugs")
    _add_config_args(p)
    p.add_argument("-n", type=int, default=3, help="examples to render")
    p.set_defaults(func=_cmd_data_check)

    p = data.add_parser("k8s", help="align English/translated pairs from a kubernetes/website checkout")
    p.add_argument("--source", required=True, help="checkout (or snapshot) holding content/<lang>/<section>")
    p.add_argument("--out", required=True, help="output directory for train/dev/test.jsonl.gz")
    p.add_argument("--lang", default="zh-cn", help="localization to pair with English (zh-cn, ja, ko, ...)")
    p.add_argument("--section", default="docs", help="content section (docs, blog, ...)")
    p.set_defaults(func=_cmd_data_k8s)

    p = data.add_parser("stats", help="counts, length percentiles and problems of a dataset file")
    p.add_argument("file", help="jsonl/json/csv/parquet file or packaged split (k8s:train)")
    p.add_argument("--tokenizer", help="HF tokenizer name or directory (default: whitespace/char count)")
    p.add_argument("--source-field", help="field holding the source text")
    p.add_argument("--target-field", help="field holding the target text")
    p.set_defaults(func=_cmd_data_stats)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loraforge", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="cmd", required=True)
    _add_train_commands(sub)
    _add_data_commands(sub)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("loraforge")
    except PackageNotFoundError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    from loraforge.config import ConfigError
    from loraforge.data.formats import DataError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, DataError, FileExistsError, FileNotFoundError) as e:
        print(f"loraforge: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # TrainingInterrupted says where its checkpoint is
        print(f"loraforge: {e or 'interrupted'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
