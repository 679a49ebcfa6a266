"""Translation-memory match rates of a config with ``data.memory`` (docs/training.md quotes them)."""

from __future__ import annotations


def match_rates(config: str, overrides: list[str], tests: list[str]) -> dict:
    """How many training rows carry a match (as training sees them, before data.max_length) and how many
    rows of each test split find one, at min_score and at 0.8: the rates docs/training.md quotes."""
    from loraforge.config import load_config
    from loraforge.data.markup import protect
    from loraforge.data.memory import UNMATCHED
    from loraforge.data.splits import load_splits, split_examples, task_memory

    cfg = load_config(config, overrides)
    d = cfg.data
    if d.memory is None:
        raise SystemExit(f"{config}: data.memory is not set")
    train = load_splits(cfg).train
    out = {"train": {"rows": len(train), "matched": sum(UNMATCHED in e.meta for e in train)}}
    memory = task_memory(d)
    for spec in tests:
        rows = split_examples(d, spec)
        matches = [memory.lookup(protect(e.source).text if d.protect_markup else e.source) for e in rows]
        out[spec] = {"rows": len(rows), "matched": sum(m is not None for m in matches),
                     "matched_0.8": sum(m is not None and m.score >= 0.8 for m in matches)}
    return out


if __name__ == "__main__":  # python -m loraforge.bench.memory_matches CONFIG [key=value ...]
    import json
    import sys

    print(json.dumps(match_rates(sys.argv[1], sys.argv[2:], ["k8s:test", "k8s:dev"]), indent=1))
