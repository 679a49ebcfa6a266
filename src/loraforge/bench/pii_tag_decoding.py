"""How a PII tagger's per-token probabilities become spans, compared on the dev split (never test):
token by token (the argmax label of each token, ``data.pii_tags.decode_spans``) against entity by
entity (``decode_entities``: a run of tagged tokens is one value, typed by its summed probability,
grown to whole words), at several biases, the model alone and merged with the validated patterns.

    python -m loraforge.bench.pii_tag_decoding RUN [--biases -1,0,1,2,3] [--out bench/results]

The model runs once per text; every decoding and bias reads the same probabilities. Writes
``pii-tag-decoding.json`` and ``pii-tag-decoding.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from loraforge.bench.report import cpu_name, publish, table

KEYS = ("leak_rate", "typed_f1", "entity_f1", "over_masking", "no_pii_unchanged")


def token_probabilities(model, tokenizer, texts: list[str]) -> list[tuple[list, list]]:
    """(offsets, per-token label probabilities) per text."""
    import torch

    out = []
    with torch.no_grad():
        for text in texts:
            enc = tokenizer(text, return_offsets_mapping=True, return_tensors="pt")
            logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
            out.append(([tuple(o) for o in enc["offset_mapping"][0].tolist()],
                        torch.softmax(logits.float(), -1)[0].tolist()))
    return out


def spans_of(decoding: str, text: str, offsets: list, probs: list, bias: float) -> list:
    import math

    from loraforge.data.pii_tags import decode_entities, decode_spans
    from loraforge.pii.spans import Span

    if decoding == "token":
        best = [max(range(len(p)), key=lambda k: math.log(max(p[k], 1e-30)) - (bias if k == 0 else 0.0))
                for p in probs]
        found = decode_spans(text, offsets, best)
    else:
        found = decode_entities(text, offsets, probs, bias)
    return [Span(a, b, t, s, "model") for a, b, t, s in found]


def compare(run: str, biases: list[float]) -> dict:
    from loraforge.config import load_config
    from loraforge.eval.inference import load_for_inference
    from loraforge.pii import patterns as pat
    from loraforge.pii.evaluate import score_spans
    from loraforge.pii.sidebyside import dev_records
    from loraforge.pii.spans import merge_spans

    cfg = load_config(str(Path(run) / "config.yaml"))
    cfg.model.dtype = "fp32"
    cfg.data.max_dev_examples = None
    split, recs = dev_records(cfg)
    loaded, model = load_for_inference(cfg, run)
    texts = [r["text"] for r in recs]
    probs = token_probabilities(model, loaded.tokenizer, texts)
    found = {t: pat.find(t, pat.select(None)) for t in texts}
    rows = []
    for decoding in ("token", "entity"):
        for bias in biases:
            spans = [spans_of(decoding, t, o, p, bias) for t, (o, p) in zip(texts, probs)]
            alone = score_spans(recs, spans)
            merged = score_spans(recs, [merge_spans(s, found[t], "union", t) for s, t in zip(spans, texts)])
            rows.append({"decoding": decoding, "bias": bias, "model": {k: alone[k] for k in KEYS},
                         "model_patterns": {k: merged[k] for k in KEYS}})
    return {"run": str(run), "split": split, "n": len(recs), "cpu": cpu_name(), "rows": rows}


def markdown(results: dict) -> str:
    head = ["decoding", "bias", *KEYS, "+ patterns: leak", "+ patterns: typed F1"]
    body = [[r["decoding"], r["bias"], *(r["model"][k] for k in KEYS), r["model_patterns"]["leak_rate"],
             r["model_patterns"]["typed_f1"]] for r in results["rows"]]
    return (f"# PII tagger: token-by-token vs entity decoding\n\nRun `{results['run']}`, split `{results['split']}` "
            f"({results['n']} rows; the operating point is chosen here, never on test).\n\n" + table(head, body)
            + f"\n\nReproduce: `python -m loraforge.bench.pii_tag_decoding {results['run']}`\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a tagger run directory (model.head=tagger)")
    parser.add_argument("--biases", default="-1,0,1,2,3")
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args(argv)
    results = compare(args.run, [float(b) for b in args.biases.split(",")])
    publish(args.out, "pii-tag-decoding", results, markdown(results))


if __name__ == "__main__":
    main()
