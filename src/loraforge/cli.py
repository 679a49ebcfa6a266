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

    config, overrides = args.config, list(args.overrides)
    if config and "=" in config and not Path(config).exists():  # no config file, only overrides
        config, overrides = None, [config, *overrides]
    return load_config(config, overrides)


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
    if args.baseline:  # the rule-based PII masker on the same test split, scored the same way
        from loraforge.eval.pii_baseline import baseline_eval

        metrics = baseline_eval(cfg, args.metrics_out)
    else:
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


def _cmd_report(args) -> int:
    from loraforge.workflows import rebuild_report

    print(rebuild_report(args.run))
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
    p.add_argument("--baseline", action="store_true", help="score the rule-based PII masker instead of a model")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("translate", help="translate text with a base model or an adapter")
    p.add_argument("text", nargs="*", help="text to translate (or use --file / stdin)")
    p.add_argument("--adapter", help="adapter or run directory")
    p.add_argument("--model", help="base model (default: the adapter's base, or the embedded Gemma 3 270M)")
    p.add_argument("--config", help="config whose template/system prompt to use")
    p.add_argument("--file", help="one text per line; '-' for stdin")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.set_defaults(func=_cmd_translate)

    p = sub.add_parser("report", help="rebuild a finished run's report from its files")
    p.add_argument("run", help="run directory")
    p.set_defaults(func=_cmd_report)


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


def _cmd_data_pii(args) -> int:
    import json

    from loraforge.data import pii

    if args.import_format:
        from loraforge.data.formats import DataError
        from loraforge.data.pii_import import import_ai4privacy

        if args.import_format[0] != "ai4privacy" or not args.out:
            raise DataError("usage: --import ai4privacy FILE --out OUT (ai4privacy is the supported format)")
        records, report = import_ai4privacy(args.import_format[1], split=args.split, language=args.language)
        pii.write_jsonl(records, args.out)
    elif args.out_dir:
        report = pii.build_packaged(args.out_dir, args.n, args.n_dev, args.n_test, args.seed)
    elif args.out:
        records = pii.generate(args.n, args.seed, args.split)
        pii.write_jsonl(records, args.out)
        report = {"records": len(records), "negatives": sum(not r["spans"] for r in records)}
    else:
        raise FileNotFoundError("give --out FILE (one split) or --out-dir DIR (train/dev/test)")
    print(json.dumps(report, indent=2))
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

    p = data.add_parser("pii", help="synthetic PII-masking records (text -> masked), or import ai4privacy files")
    p.add_argument("--n", type=int, default=1000, help="records (the train split with --out-dir)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", choices=["train", "test"], default="train", help="template family to draw from")
    p.add_argument("--out", help="output .jsonl or .jsonl.gz")
    p.add_argument("--out-dir", help="write train/dev/test.jsonl.gz here instead (test = held-out templates)")
    p.add_argument("--n-dev", type=int, default=200)
    p.add_argument("--n-test", type=int, default=400)
    p.add_argument("--import", dest="import_format", nargs=2, metavar=("FORMAT", "FILE"),
                   help="convert a public dataset file: ai4privacy FILE (source_text + privacy_mask)")
    p.add_argument("--language", help="with --import: keep only rows of this language (e.g. en)")
    p.set_defaults(func=_cmd_data_pii)


# --- export, serve, bench serve ------------------------------------------------------------


def _cmd_export(args) -> int:
    import json

    from loraforge.export.run import export_run

    res = export_run(args.run, args.format, args.out, push=args.push, gguf_type=args.gguf_type,
                     plain_http=args.plain_http)
    print(json.dumps(res, indent=2))
    return 0


def _cmd_serve(args) -> int:
    from loraforge.serve.app import serve

    serve(args.base, args.adapter, host=args.host, port=args.port, admin_token=args.admin_token,
          adapter_dir=args.adapter_dir, dtype=args.dtype, max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms)
    return 0


def _cmd_bench_serve(args) -> int:
    import json

    from loraforge.bench.serve import bench_serve

    res = bench_serve(args.url, models=args.models.split(",") if args.models else None, requests=args.requests,
                      concurrency=args.concurrency, max_tokens=args.max_tokens, out=args.out)
    print(json.dumps(res, indent=2))
    return 1 if res["failures"] else 0


def bench_subparsers(sub):
    """The ``bench`` group, created once: each area adds its benchmark (``bench serve``, ``bench train``) here."""
    if not hasattr(sub, "_loraforge_bench"):
        sub._loraforge_bench = sub.add_parser("bench", help="benchmarks whose numbers the README publishes") \
            .add_subparsers(dest="bench_cmd", required=True)
    return sub._loraforge_bench


def _add_serve_commands(sub) -> None:
    p = sub.add_parser("export", help="export a run: PEFT adapter + card, merged model, GGUF, or OCI image")
    p.add_argument("run", help="run directory (or an adapter folder)")
    p.add_argument("--format", required=True, choices=["adapter", "merged", "gguf", "oci"])
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--gguf-type", default="f16", choices=["f16", "bf16", "q8_0", "f32"])
    p.add_argument("--push", metavar="REF", help="oci: push to REGISTRY/REPO[:TAG] and verify by pulling back")
    p.add_argument("--plain-http", action="store_true", help="oci: talk HTTP to the registry (default for localhost)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("serve", help="OpenAI-compatible server for a base model and many LoRA adapters")
    p.add_argument("--base", default="gemma3-270m", help="base model (embedded name, .gguf, HF folder or hub id)")
    p.add_argument("--adapter", action="append", default=[], metavar="NAME=DIR", help="adapter to serve (repeat)")
    p.add_argument("--adapter-dir", help="directory the admin API may load adapters from at run time")
    p.add_argument("--admin-token", help="bearer token for /admin/adapters (admin API off without it)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp32", "fp16"])
    p.add_argument("--max-batch", type=int, default=16, help="requests per batched generate() call")
    p.add_argument("--batch-wait-ms", type=float, default=5, help="how long to collect requests into a batch")
    p.set_defaults(func=_cmd_serve)

    p = bench_subparsers(sub).add_parser("serve", help="bounded load test against a running server")
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--models", help="comma-separated model names to cycle (default: all the server lists)")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--out", default="bench-serve.json", help="results JSON")
    p.set_defaults(func=_cmd_bench_serve)


# --- deploy, estimate -------------------------------------------------------------------------


def _cmd_deploy_docker(args) -> int:
    from loraforge.deploy.docker import write_dockerfiles

    for path in write_dockerfiles(args.out):
        print(path)
    return 0


def _cmd_deploy_k8s(args) -> int:
    from loraforge.deploy.k8s import Options, render

    opts = Options(name=args.name, image=args.image, nodes=args.nodes, procs=args.procs, gpus=args.gpus,
                   namespace=args.namespace, storage=args.storage, storage_class=args.storage_class,
                   kaito_preset=args.kaito_preset, kaito_instance_type=args.instance_type,
                   adapter_image=args.adapter_image, push_secret=args.push_secret)
    text = render(_config(args), args.target, opts).to_yaml()
    if not args.out:
        print(text, end="")
        return 0
    from loraforge.deploy import atomic_write

    out = Path(args.out)
    path = out if out.suffix in (".yaml", ".yml") else out / f"{args.target}.yaml"
    atomic_write(path, text)
    print(f"wrote {path} (validated offline)")
    return 0


def _cmd_deploy_validate(args) -> int:
    from loraforge.deploy.validate import validate_file

    for path in args.files:
        for line in validate_file(path):
            print(line)
    return 0


def _cmd_estimate(args) -> int:
    import json

    from loraforge.deploy.estimate import compare_with_run, format_estimate

    if args.check:
        print(json.dumps(compare_with_run(args.check), indent=2))
        return 0
    print(format_estimate(_config(args), args.gpu_gb))
    return 0


def _add_deploy_commands(sub) -> None:
    deploy = sub.add_parser("deploy", help="Dockerfiles and validated Kubernetes manifests").add_subparsers(
        dest="deploy_cmd", required=True
    )
    p = deploy.add_parser("docker", help="write Dockerfiles: train-cpu, train-cuda, serve")
    p.add_argument("--out", default="docker", help="directory for Dockerfile.* (build from the repo root)")
    p.set_defaults(func=_cmd_deploy_docker)

    p = deploy.add_parser("k8s", help="render a run config as Kubernetes resources (validated offline)")
    _add_config_args(p)
    p.add_argument("--target", required=True, choices=["kaito", "pytorchjob", "trainjob", "job", "serve"])
    p.add_argument("--nodes", type=int, default=1, help="pytorchjob/trainjob: nodes")
    p.add_argument("--procs", type=int, default=1, help="pytorchjob/trainjob: processes per node")
    p.add_argument("--gpus", type=int, default=0, help="GPUs per node (0 = CPU)")
    p.add_argument("--image", help="container image (default: the loraforge train/serve image)")
    p.add_argument("--name", help="resource name (default: loraforge-<output dir name>)")
    p.add_argument("--namespace")
    p.add_argument("--storage", default="20Gi", help="PVC size")
    p.add_argument("--storage-class", help="PVC storage class (RWX for pytorchjob/trainjob)")
    p.add_argument("--kaito-preset", help="kaito: KAITO preset name of the base model")
    p.add_argument("--instance-type", help="kaito: node SKU (default: from `loraforge estimate`)")
    p.add_argument("--adapter-image", help="kaito: image the tuning pushes and inference pulls")
    p.add_argument("--push-secret", help="kaito: imagePushSecret for --adapter-image")
    p.add_argument("--out", help="file (.yaml) or directory (writes <target>.yaml); default stdout")
    p.set_defaults(func=_cmd_deploy_k8s)

    p = deploy.add_parser("validate", help="validate manifests offline (core kinds and KAITO/Kubeflow CRDs)")
    p.add_argument("files", nargs="+", help="YAML files (multi-document)")
    p.set_defaults(func=_cmd_deploy_validate)

    p = sub.add_parser("estimate", help="parameters and memory of a config's training step; batch size, KAITO SKU")
    _add_config_args(p)
    p.add_argument("--gpu-gb", type=float, default=24, help="GPU memory to fit a batch into")
    p.add_argument("--check", metavar="RUN_DIR", help="compare with the peak RSS a finished run measured")
    p.set_defaults(func=_cmd_estimate)


# --- methods and tokenizers ---------------------------------------------------------------------


def _cmd_compare(args) -> int:
    from loraforge.compare import compare_run, parse_lrs, parse_methods

    methods = parse_methods(args.methods)
    compare_run(_config(args), methods, parse_lrs(args.lr, methods))
    return 0


def _cmd_tokenizer_train(args) -> int:
    from loraforge.data.tokenizer_train import train_tokenizer

    out = train_tokenizer(args.data, args.vocab_size, args.out, args.model_type, args.format, args.src_lang,
                          args.tgt_lang, args.max_examples)
    print(out)
    return 0


def _add_method_commands(sub) -> None:
    p = sub.add_parser("compare", help="train every method on the same data and budget; write the method table")
    _add_config_args(p)
    p.add_argument("--methods", default="lora,dora,ia3,prefix,prompt,adapter,full",
                   help="comma-separated adapter.method values (default: %(default)s)")
    p.add_argument("--lr", help="per-method learning rates, e.g. full=5e-5,prompt=3e-2 (others: train.lr)")
    p.set_defaults(func=_cmd_compare)

    tok = sub.add_parser("tokenizer", help="train tokenizers").add_subparsers(dest="tokenizer_cmd", required=True)
    p = tok.add_parser("train", help="SentencePiece on a dataset's source+target text (Marian / mBART-50 layout)")
    p.add_argument("--data", default="k8s:train", help="file or packaged split (default: %(default)s)")
    p.add_argument("--vocab-size", type=int, default=8000)
    p.add_argument("--out", required=True, help="tokenizer folder to write")
    p.add_argument("--model-type", choices=["unigram", "bpe"], default="unigram")
    p.add_argument("--format", choices=["marian", "mbart50"], default="marian",
                   help="marian: source.spm/target.spm/vocab.json; mbart50: tokenizer.json with language codes")
    p.add_argument("--src-lang", default="en")
    p.add_argument("--tgt-lang", default="zh")
    p.add_argument("--max-examples", type=int, help="train on the first N pairs only")
    p.set_defaults(func=_cmd_tokenizer_train)


# --- bench train, bench generate ---------------------------------------------------------------


def _cmd_bench_train(args) -> int:
    from loraforge.bench.train import BenchSpec, bench_train

    spec = BenchSpec(model=args.model, steps=args.steps, batch_size=args.batch_size, max_length=args.max_length,
                     n_dev=args.dev_examples, matmul_size=args.matmul_size, random_weights=args.random_weights)
    results = bench_train(spec, args.out, only=args.only, ablation=args.ablation, bf16_steps=args.trl_bf16_steps,
                          select=args.jobs.split(",") if args.jobs else None, name=args.name)
    print(f"wrote {Path(args.out) / args.name}.json and {args.name}.md")
    if results["failed"]:
        print(f"failed jobs: {', '.join(results['failed'])}", file=sys.stderr)
        return 1
    return 0


def _cmd_bench_generate(args) -> int:
    from loraforge.bench.generate import GenerateSpec, bench_generate

    spec = GenerateSpec(model=args.model, adapter=args.adapter, prompts=args.prompts,
                        max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, dtype=args.dtype)
    bench_generate(spec, args.out)
    print(f"wrote {Path(args.out) / 'generate.json'} and generate.md")
    return 0


def _add_bench_commands(sub) -> None:
    p = bench_subparsers(sub).add_parser("train", help="the same LoRA job with TRL SFTTrainer+PEFT and loraforge")
    p.add_argument("--model", default="gemma3-270m", help="base model (default: %(default)s)")
    p.add_argument("--steps", type=int, default=20, help="optimizer steps per job (first 2 are warm-up)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=256, help="longer examples are skipped, never truncated")
    p.add_argument("--dev-examples", type=int, default=32, help="k8s:dev examples for the final dev loss")
    p.add_argument("--matmul-size", type=int, default=2048, help="square matmul that measures the FLOP/s peak")
    p.add_argument("--only", choices=["trl", "loraforge", "both"], default="both")
    p.add_argument("--ablation", action="store_true", help="also run loraforge with each speed lever off")
    p.add_argument("--trl-bf16-steps", type=int, help="steps of the TRL bf16 job only (default: --steps; 0 skips "
                   "it): for CPUs where bf16 is emulated and a step takes minutes")
    p.add_argument("--jobs", help="comma-separated job names to run (e.g. trl-bf16,loraforge); default: all")
    p.add_argument("--random-weights", action="store_true", help="build the model from its config.json, no weights "
                   "(throughput and memory only: for a machine the weights cannot be copied to)")
    p.add_argument("--out", default="bench/results", help="results directory")
    p.add_argument("--name", default="train", help="file name of the results: NAME.json and NAME.md")
    p.set_defaults(func=_cmd_bench_train)

    p = bench_subparsers(sub).add_parser("generate", help="batched eval generator vs a plain batch-1 generate loop")
    p.add_argument("--model", default="gemma3-270m", help="base model (default: %(default)s)")
    p.add_argument("--adapter", help="adapter or run directory to merge in")
    p.add_argument("--prompts", type=int, default=32, help="first N k8s:dev sources")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--dtype", default="fp32", choices=["auto", "bf16", "fp32"],
                   help="model weights (default: %(default)s, what eval.exact generates in)")
    p.add_argument("--out", default="bench/results", help="directory for generate.json and generate.md")
    p.set_defaults(func=_cmd_bench_generate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loraforge", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="cmd", required=True)
    _add_train_commands(sub)
    _add_data_commands(sub)
    _add_serve_commands(sub)
    _add_deploy_commands(sub)
    _add_method_commands(sub)
    _add_bench_commands(sub)
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
