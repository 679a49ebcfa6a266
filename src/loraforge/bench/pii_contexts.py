"""Does a change to the PII training data help on contexts the tagger never saw? Judged without
touching ``pii:test`` or the hand-written set: whole contexts of the train family (``--hold`` of
them, drawn by ``--split-seed``) are held out, train/dev are built from the other contexts and a
held-out set from these, the tagger preset is trained once per variant (the share of structured
records, ``data pii --records-share``), and each variant masks the held-out set (model + validated
patterns, as ``loraforge mask`` does) at each bias.

    python -m loraforge.bench.pii_contexts [--config configs/pii-tagger-gemma3-270m.yaml]
        [--records-share 0,0.25] [--hold 12] [--split-seed 7] [--n-train 4000] [--n-heldout 300]
        [--biases 0,1,2] [--handwritten-repeat K] [--work runs/pii-contexts] [--out bench/results] [--reuse]
        [section.key=value ...]

Trainings run one after another (never two at once on a small machine). ``--reuse`` scores the runs and
data already under ``--work`` (e.g. at more biases) and trains only the variants that have none. Writes
``pii-contexts.json`` and ``pii-contexts.md``; the runs stay under ``--work``.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from loraforge.bench.report import cpu_name, publish, table
from loraforge.data.pii import GENERATIONS

KEYS = ("leak_rate", "typed_f1", "entity_f1", "over_masking", "no_pii_unchanged")


def held_out_contexts(hold: int, split_seed: int) -> list[str]:
    """``hold`` contexts of the train template family, the same ones for the same seed. Drawn from the
    first generation of templates only, so a split seed names the same contexts after templates are added."""
    from loraforge.data.pii_templates import TEMPLATES

    contexts = sorted({t.context for t in TEMPLATES if t.split == "train" and t.generation == 1})
    if not 0 < hold < len(contexts):
        raise ValueError(f"--hold must be between 1 and {len(contexts) - 1}, got {hold}")
    return sorted(random.Random(f"pii-contexts/{split_seed}").sample(contexts, hold))


def build_data(work: Path, held: list[str], records_share: float, n_train: int, n_dev: int, n_heldout: int,
               generations: int = GENERATIONS, handwritten_repeat: int = 0) -> dict:
    """train/dev (other contexts, with ``records_share`` records; templates of generations up to
    ``generations``; train also ``handwritten_repeat`` copies of the hand-written training cases) and the
    held-out set (held-out contexts, templates only, its own seed so no value repeats one of train's), as
    jsonl under ``work``."""
    from loraforge.data.pii import generate, write_jsonl
    from loraforge.data.pii_cases import training_records

    held_set = set(held)
    seen = lambda t: t.context not in held_set  # noqa: E731
    splits = {"train": generate(n_train, 0, "train", records_share=records_share, keep=seen, generations=generations),
              "dev": generate(n_dev, 1, "train", records_share=records_share, keep=seen, generations=generations),
              "heldout": generate(n_heldout, 2, "train", records_share=0.0, keep=lambda t: t.context in held_set)}
    splits["train"] += training_records(handwritten_repeat)
    return {name: write_jsonl(recs, work / f"{name}.jsonl") for name, recs in splits.items()}


def run_variant(config: str, overrides: list[str], work: Path, paths: dict) -> Path:
    """Train one variant. No test split in the run: ``score`` masks the held-out set once, and the
    run's own side-by-side table (which reads the hand-written set) is not computed."""
    from loraforge.config import load_config
    from loraforge.workflows.train import train_run

    cfg = load_config(config, [*overrides, f"data.train={paths['train']}", f"data.dev={paths['dev']}",
                               "data.test=null", f"output.dir={work / 'run'}", "output.overwrite=true"])
    return train_run(cfg).path


def score(run: Path, heldout: Path, biases: list[float]) -> list[dict]:
    import json

    from loraforge.pii.evaluate import score_spans
    from loraforge.workflows.mask import build_masker

    recs = [json.loads(line) for line in heldout.read_text(encoding="utf-8").splitlines()]
    masker = build_masker(str(run), merge="union")
    masker.model.memo = {}  # the tagger reads each text once; every bias decodes the same probabilities
    rows = []
    for bias in biases:
        masker.bias = bias
        scores = score_spans(recs, masker.find_spans([r["text"] for r in recs]))
        rows.append({"bias": bias, **{k: scores[k] for k in KEYS}})
    return rows


def compare(config: str, shares: list[float], hold: int, split_seed: int, n_train: int, n_heldout: int,
            biases: list[float], work: str, overrides: list[str], reuse: bool = False,
            generations: int = GENERATIONS, handwritten_repeat: int = 0) -> dict:
    import json

    held = held_out_contexts(hold, split_seed)
    variants = []
    for share in shares:
        root = Path(work) / f"split{split_seed}-records{share:g}"
        paths = {name: root / f"{name}.jsonl" for name in ("train", "dev", "heldout")}
        run = root / "run"
        if not (reuse and (run / "metrics.json").is_file() and all(p.is_file() for p in paths.values())):
            paths = build_data(root, held, share, n_train, 200, n_heldout, generations, handwritten_repeat)
            run = run_variant(config, overrides, root, paths)
        train = json.loads((run / "metrics.json").read_text())["train"]
        variants.append({"records_share": share, "run": str(run), "train_seconds": train.get("seconds"),
                         "rows": score(run, paths["heldout"], biases)})
    return {"config": config, "overrides": overrides, "work": work, "held_out_contexts": held, "split_seed": split_seed,
            "generations": generations, "handwritten_repeat": handwritten_repeat, "n_train": n_train,
            "n_heldout": n_heldout, "cpu": cpu_name(), "variants": variants}


def markdown(results: dict) -> str:
    head = ["records share", "bias", *KEYS]
    body = [[v["records_share"], r["bias"], *(r[k] for k in KEYS)] for v in results["variants"] for r in v["rows"]]
    biases = ",".join(f"{r['bias']:g}" for r in results["variants"][0]["rows"])
    shares = ",".join(f"{v['records_share']:g}" for v in results["variants"])
    extra = "".join(f" {o}" for o in results["overrides"])
    if results.get("work", "runs/pii-contexts") != "runs/pii-contexts":
        extra = f" --work {results['work']}{extra}"
    if results.get("generations", GENERATIONS) != GENERATIONS:
        extra = f" --generations {results['generations']}{extra}"
    if results.get("handwritten_repeat"):
        extra = f" --handwritten-repeat {results['handwritten_repeat']}{extra}"
    return (f"# PII tagger on train contexts held out from training\n\nHeld out (split seed "
            f"{results['split_seed']}): {', '.join(results['held_out_contexts'])}; {results['n_heldout']} rows, "
            f"model + validated patterns. CPU: {results['cpu']}.\n\n" + table(head, body)
            + f"\n\nReproduce: `python -m loraforge.bench.pii_contexts --config {results['config']} "
            f"--split-seed {results['split_seed']} --records-share {shares} --biases={biases}{extra}`\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. train.steps=50")
    parser.add_argument("--config", default="configs/pii-tagger-gemma3-270m.yaml")
    parser.add_argument("--records-share", default="0,0.25")
    parser.add_argument("--hold", type=int, default=12)
    parser.add_argument("--split-seed", type=int, default=7)
    parser.add_argument("--n-train", type=int, default=4000)
    parser.add_argument("--n-heldout", type=int, default=300)
    parser.add_argument("--biases", default="0,1,2")
    parser.add_argument("--work", default="runs/pii-contexts")
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--name", default="pii-contexts", help="results file name (without .json/.md)")
    parser.add_argument("--generations", type=int, default=GENERATIONS,
                        help="train on template generations up to N (the data's default: 1)")
    parser.add_argument("--handwritten-repeat", type=int, default=0,
                        help="add this many copies of the hand-written training cases to train (pii:train has 2)")
    parser.add_argument("--reuse", action="store_true", help="score the finished runs under --work, train only missing ones")
    args = parser.parse_args(argv)
    results = compare(args.config, [float(s) for s in args.records_share.split(",")], args.hold, args.split_seed,
                      args.n_train, args.n_heldout, [float(b) for b in args.biases.split(",")], args.work,
                      args.overrides, args.reuse, args.generations, args.handwritten_repeat)
    publish(args.out, args.name, results, markdown(results))


if __name__ == "__main__":
    main()
