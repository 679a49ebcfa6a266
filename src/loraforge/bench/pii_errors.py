"""A PII masker's scores and errors on a hand-annotated development set: where rules and training data
are tuned, so the hand-written evaluation set (``datasets/pii-handwritten``) and ``pii:test`` are never read
to find errors.

    python -m loraforge.bench.pii_errors [--adapter runs/pii-tagger-v4] [--cases bench/data/pii-handwritten-dev/cases-11.txt[,cases-12.txt]]
        [--bias 0] [--curve=-1,0,1,2] [--spans-cache FILE] [--show-values] [--out bench/results] [--name pii-handdev]

The set is written like the evaluation set (``⟦TYPE|value⟧`` inline, ``RULES.md``) but by other hands and
kept apart from it. Writes ``<name>.json`` / ``<name>.md`` with the scores and the error counts by kind;
``--show-values`` also prints every error with its text (personal data of the development set: asked for).
``--curve`` adds the scores at more biases (the recall knob): the tagger reads the set once and each bias decodes
its stored probabilities, so a curve's report has no texts/s (time a plain run for that).
``--spans-cache FILE`` keeps the model's spans per text in a file (``CachedFinder``): a change to the rules is
then scored again in seconds on the very same model output, and anyone holding the file gets the same numbers.
``--adapter gold`` puts the annotation itself through the rules and patterns (no model): its leaks are gold values
the rules drop, the count a rules change must not raise (run it on the training parts and rounds in use too).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import time
from collections import Counter
from pathlib import Path

from loraforge.bench.report import cpu_name, publish, table
from loraforge.pii.defaults import DEFAULT_LONE_MIN_SCORE

KEYS = ("leak_rate", "typed_f1", "entity_f1", "over_masking", "no_pii_unchanged")
DEV_FILES = ("bench/data/pii-handwritten-dev/cases-11.txt",  # round 11: the evaluation set's kinds; before rules 30
             "bench/data/pii-handwritten-dev/cases-12.txt",  # round 12: the same kinds, fresh writers; chose tagger v13
             "bench/data/pii-handwritten-dev/cases-13.txt",  # round 13: the same kinds; screened three model changes, rules 31
             "bench/data/pii-handwritten-dev/cases-14.txt",  # round 14: the same kinds, fresh writers; scored first with v14
             "bench/data/pii-handwritten-dev/cases-15.txt",  # round 15: hard look-alikes named in the brief; checked rules 32
             "bench/data/pii-handwritten-dev/cases-16.txt",  # round 16: the neutral brief again; judged screen 4 (parts u, v)
             "bench/data/pii-handwritten-dev/cases-17.txt",  # round 17: the neutral brief; decided rules 33
             "bench/data/pii-handwritten-dev/cases-18.txt",  # round 18: the same, 14 single-value cases; the lone gate
             "bench/data/pii-handwritten-dev/cases-19.txt",  # round 19: round 18's brief; the lone gate's second version
             "bench/data/pii-handwritten-dev/cases-20.txt",  # round 20: round 18's brief; judged screen 5 (rounds 11-16 trained)
             "bench/data/pii-handwritten-dev/cases-21.txt",  # round 21: round 18's brief; decided rules 34
             "bench/data/pii-handwritten-dev/cases-22.txt",  # round 22: round 18's brief + named look-alikes; rules 35
             "bench/data/pii-handwritten-dev/cases-23.txt",  # round 23: round 22's brief; decided rules 36
             "bench/data/pii-handwritten-dev/cases-24.txt",  # round 24: round 22's brief, kept sealed; decided rules 37
             "bench/data/pii-handwritten-dev/cases-25.txt",  # round 25: + rules 38's look-alikes named; decided rules 38
             "bench/data/pii-handwritten-dev/cases-26.txt",  # round 26: round 24's brief; decided rules 39
             "bench/data/pii-handwritten-dev/cases-27.txt",  # round 27: round 26's brief; judged gate v4 (not adopted)
             "bench/data/pii-handwritten-dev/cases-28.txt",  # round 28: round 26's brief; judged gate v4 with round 27
             "bench/data/pii-handwritten-dev/cases-29.txt",  # round 29: round 26's brief; judged screen 7 (not adopted)
             "bench/data/pii-handwritten-dev/cases-30.txt",  # round 30: round 26's brief; judged screen 7 with round 29
             "bench/data/pii-handwritten-dev/cases-31.txt",  # round 31: round 26's brief; judged screen 8b (adopted: v15)
             "bench/data/pii-handwritten-dev/cases-32.txt",  # round 32: round 26's brief; judged screen 8b with round 31
             "bench/data/pii-handwritten-dev/cases-33.txt",  # round 33: round 26's brief, 32 languages; decided rules 40
             "bench/data/pii-handwritten-dev/cases-34.txt",  # round 34: round 26's brief, 40 languages; judged screen 9
             "bench/data/pii-handwritten-dev/cases-35.txt",  # round 35: round 34's brief; judged screen 10
             "bench/data/pii-handwritten-dev/cases-36.txt",  # round 36: part B's brief names rules 41's look-alikes; decided rules 41
             "bench/data/pii-handwritten-dev/cases-37.txt",  # round 37: round 35's brief; judged screen 11
             "bench/data/pii-handwritten-dev/cases-38.txt",  # round 38: hard negatives of the writers' choosing; decided rules 42
             "bench/data/pii-handwritten-dev/cases-39.txt",  # round 39: round 38's brief; decided rules 43
             "bench/data/pii-handwritten-dev/cases-40.txt",  # round 40: round 38's brief; decided rules 44
             "bench/data/pii-handwritten-dev/cases-41.txt",  # round 41: the evaluation set's kinds and languages; decided rules 45
             "bench/data/pii-handwritten-dev/cases-42.txt",  # round 42: round 41's brief; decided rules 46
             "bench/data/pii-handwritten-dev/cases-43.txt",  # round 43: round 41's brief; decided rules 47
             "bench/data/pii-handwritten-dev/cases-44.txt",  # round 44: round 41's brief; decided rules 48
             "bench/data/pii-handwritten-dev/cases-45.txt",  # round 45: round 41's brief; decided rules 49
             "bench/data/pii-handwritten-dev/cases-46.txt",  # round 46: round 41's brief; decided rules 50
             "bench/data/pii-handwritten-dev/cases-47.txt",  # round 47: round 41's brief; decided rules 51
             "bench/data/pii-handwritten-dev/cases-48.txt",  # round 48: round 41's brief; decided rules 52
             "bench/data/pii-handwritten-dev/cases-49.txt",  # round 49: round 41's brief; decided rules 53
             "bench/data/pii-handwritten-dev/cases-50.txt",  # round 50: round 41's brief; decided rules 54
             "bench/data/pii-handwritten-dev/cases-51.txt",  # round 51: round 41's brief; decided rules 55
             "bench/data/pii-handwritten-dev/cases-52.txt",  # round 52: round 41's brief; decided rules 56
             "bench/data/pii-handwritten-dev/cases-53.txt",  # round 53: round 41's brief; scored once with rules 56, judged none
             "bench/data/pii-handwritten-dev/cases-54.txt",  # round 54: round 41's brief; decided rules 57
             "bench/data/pii-handwritten-dev/cases-55.txt",  # round 55: round 41's brief; decided rules 58
             "bench/data/pii-handwritten-dev/cases-56.txt",  # round 56: round 41's brief; decided rules 59
             "bench/data/pii-handwritten-dev/cases-57.txt",  # round 57: round 41's brief; decided rules 60
             "bench/data/pii-handwritten-dev/cases-58.txt",  # round 58: round 41's brief; decided rules 61
             "bench/data/pii-handwritten-dev/cases-59.txt",  # rounds 59-62: round 41's brief; judged the rounds 11-40 screen
             "bench/data/pii-handwritten-dev/cases-60.txt",
             "bench/data/pii-handwritten-dev/cases-61.txt",
             "bench/data/pii-handwritten-dev/cases-62.txt",
             "bench/data/pii-handwritten-dev/cases-63.txt",  # round 63: round 41's brief; scored once, judged none
             "bench/data/pii-handwritten-dev/cases-64.txt",  # rounds 64-67: BRIEF.md; round 64 decided rules 63
             "bench/data/pii-handwritten-dev/cases-65.txt",  # rounds 65-66: judged the rounds 41-64 screen
             "bench/data/pii-handwritten-dev/cases-66.txt",
             "bench/data/pii-handwritten-dev/cases-67.txt")  # round 67: decided rules 64
"""The development rounds in use. Rounds 1-10, used up, are training texts since 2026-12-07
(``datasets/pii-handwritten-train/part-t-round*.txt``); numbers published on them reproduce at commit d931c87.
A round in ``bench/data/pii-handwritten-dev/sealed/`` is written but not yet read: it judges the next change, then
joins these."""
DEV_CASES = ",".join(DEV_FILES)


class CachedFinder:
    """A model finder read from a file of its spans, keyed by each text's SHA-256, for replaying rule changes.

    Texts not in the file yet go to the real finder (``load()``, called at most once, so a replay over cached
    texts loads no model) and are added; ``save()`` writes the file back whole. The file records the adapter's
    weights (their SHA-256) and the bias, and a file made with others is refused rather than mixed. Where the
    adapter's folder is absent, the file's spans are replayed as they are (``bench/data/pii-spans``: a rule change
    scored by anyone on the spans the published numbers came from)."""

    def __init__(self, path: str | Path, adapter: str, bias: float | None, load):
        self.path, self.load, self._finder, self.added = Path(path), load, None, 0
        self.spans: dict[str, list] = {}
        data = json.loads(gzip.decompress(self.path.read_bytes())) if self.path.exists() else None
        weights = adapter_digest(adapter) if Path(adapter).exists() else None
        if weights is None and data and data["key"].get("adapter") == adapter:
            weights = data["key"]["weights"]  # the run is not on this machine: replay the file's spans alone
        self.key = {"adapter": adapter, "weights": weights, "bias": bias}
        if data is not None:
            if data.get("key") != self.key:
                from loraforge.data.formats import DataError

                raise DataError(f"{self.path}: spans of {data.get('key')}, not of {self.key}; name another file")
            self.spans = data["spans"]

    @staticmethod
    def digest(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def find_spans(self, texts: list[str]) -> list:
        from loraforge.pii.spans import Span

        missing = list(dict.fromkeys(t for t in texts if self.digest(t) not in self.spans))
        if missing:
            self._finder = self._finder or self.load()
            for t, found in zip(missing, self._finder.find_spans(missing)):
                self.spans[self.digest(t)] = [[s.start, s.end, s.type, s.score, s.source] for s in found]
            self.added += len(missing)
        return [[Span(*row) for row in self.spans[self.digest(t)]] for t in texts]

    def save(self) -> None:
        from loraforge.runs.files import atomic_write

        if self.added or not self.path.exists():
            data = {"key": self.key, "spans": dict(sorted(self.spans.items()))}
            atomic_write(self.path, gzip.compress(json.dumps(data).encode("utf-8"), mtime=0))


GOLD = "gold"
"""``--adapter gold``: score the annotation itself through the rules and patterns (``GoldFinder``)."""


class GoldFinder:
    """The gold spans as the model's output. A leak scored through it is a gold value the rules drop, and an over
    is a pattern find the annotation does not hold: the check a rules change passes before it merges (it must not
    drop more gold values than the rules before it)."""

    def __init__(self, records: list[dict]):
        from loraforge.pii.spans import Span

        self.gold = {r["text"]: [Span(s["start"], s["end"], s["type"]) for s in r["spans"]] for r in records}

    def find_spans(self, texts: list[str]) -> list[list]:
        return [list(self.gold.get(t, [])) for t in texts]


def adapter_digest(adapter: str) -> str:
    """SHA-256 over the weight files of an adapter folder (a run folder: its final ``adapter/``): which weights
    made the spans, so a retrained run under the same path does not reuse the old run's spans."""
    root = Path(adapter)
    root = root / "adapter" if (root / "adapter").is_dir() else root
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.safetensors")) if root.is_dir() else [root]:
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def errors(record: dict, spans) -> list[dict]:
    """The masker's errors on one record: a gold value left partly or wholly visible (``leak``), masked
    with another type (``type``) or with other bounds (``bounds``), and a span over no gold value (``over``).
    ``found``: the spans involved, as (start, end, type, which finder)."""
    gold = [(s["start"], s["end"], s["type"]) for s in record["spans"]]
    pred = [(s.start, s.end, s.type, s.source) for s in spans]
    out = []
    for a, b, t in gold:
        covered = [p for p in pred if p[0] < b and a < p[1]]
        hidden = sum(1 for i in range(a, b) if any(p[0] <= i < p[1] for p in covered))
        if hidden < b - a:
            out.append({"kind": "leak", "type": t, "start": a, "end": b, "found": covered})
        elif not any(p[2] == t for p in covered):
            out.append({"kind": "type", "type": t, "start": a, "end": b, "found": covered})
        elif (a, b, t) not in [p[:3] for p in pred]:
            out.append({"kind": "bounds", "type": t, "start": a, "end": b, "found": covered})
    for p in pred:
        if not any(p[0] < b and a < p[1] for a, b, _ in gold):
            out.append({"kind": "over", "type": p[2], "start": p[0], "end": p[1], "found": [p]})
    return out


def describe(record: dict, err: dict) -> str:
    """One error as a line: kind, type, the value in its line's context, what was found instead."""
    text = record["text"]
    a, b = err["start"], err["end"]
    left = text.rfind("\n", 0, a) + 1
    right = text.find("\n", b)
    right = len(text) if right < 0 else right
    context = f"{text[max(left, a - 60):a]}⟦{text[a:b]}⟧{text[b:min(right, b + 60)]}"
    found = ", ".join(f"{pt}:{text[pa:pb]!r} ({source})" for pa, pb, pt, source in err["found"])
    return f"{record['id']} {err['kind']} {err['type']}: {context!r}" + (f" -> {found}" if found else "")


def run(adapter: str, cases: str, bias: float | None, show_values: bool,
        curve: list[float] = (), spans_cache: str | None = None,
        lone_min_score: float = DEFAULT_LONE_MIN_SCORE) -> tuple[dict, list[str]]:
    from loraforge.pii import Masker, MaskOptions
    from loraforge.pii.evaluate import score_spans, sweep_bias
    from loraforge.workflows.mask import build_masker

    records = [r for part in cases.split(",") for r in _records(part)]
    texts = [r["text"] for r in records]
    points, seconds = [], None
    options = MaskOptions(merge="union", lone_min_score=lone_min_score)
    if adapter == GOLD:  # the annotation as the model's output: what the rules alone do to perfect spans
        if curve or spans_cache or bias is not None:
            raise ValueError("--adapter gold has no bias to set or sweep and no spans to cache")
        finder = GoldFinder(records)
        masker = Masker(finder, options)
        found = finder.find_spans(texts)  # whole texts: a chunk would not be found by its text
    elif spans_cache:  # the rules replayed on stored spans: nothing decoded, nothing timed
        if curve:
            raise ValueError("--curve decodes at each bias; it cannot replay one bias's cached spans")
        finder = CachedFinder(spans_cache, adapter, bias, lambda: build_masker(adapter, merge="union", bias=bias).model)
        masker = Masker(finder, options)
        found = masker.model_spans(texts)
        finder.save()
    else:
        masker = build_masker(adapter, merge="union", bias=bias, lone_min_score=lone_min_score)
        if curve:  # the tagger reads each text once; every bias, the run's own too, decodes the same probabilities
            masker.model.memo = {}
            points = sweep_bias(masker, records, curve, batch_size=max(1, len(records)))
        start = time.perf_counter()  # without a curve: the model, then the rules (as ``find_spans``), timed
        found = masker.model_spans(texts)
        masker.model.memo = None
        bias = masker.bias
    spans = [masker.combine(t, m) for t, m in zip(texts, found)]
    seconds = None if spans_cache or adapter == GOLD or curve else time.perf_counter() - start
    scores = score_spans(records, spans, seconds)
    errs = [(r, e) for r, s in zip(records, spans) for e in errors(r, s)]
    kinds = Counter(f"{e['kind']} {e['type']}" for _, e in errs)
    results = {"adapter": adapter, "cases": cases, "bias": bias, "lone_min_score": lone_min_score,
               "cpu": cpu_name(), "n": len(records),
               "no_pii_cases": sum(1 for r in records if not r["spans"]),
               "single_value_cases": sum(1 for r in records if len(r["spans"]) == 1), "scores": {k: scores[k] for k in KEYS},
               "texts_per_s": scores.get("texts_per_s"), "errors": dict(sorted(kinds.items())), "curve": points,
               "pattern_agreement": pattern_agreement(records, found, masker.patterns, spans),
               **({"spans_cache": spans_cache} if spans_cache else {})}
    return results, [describe(r, e) for r, e in errs] if show_values else []


def pattern_agreement(records: list[dict], model_spans: list, patterns, masked: list | None = None) -> dict[str, int]:
    """What the union's rules for the patterns rest on: each validated pattern's find (after ``conform``), counted by
    type as over a gold value (``real``) or not (``over``), and as overlapping one of the model's spans or not; then
    the same counts in the texts where the model found nothing (``alone in text``), and, given the masker's final
    spans (``masked``), the finds no final span covers (``dropped``: by the union's rules, e.g. ``_NEED_A_PERSON``)."""
    from loraforge.pii import patterns as pat
    from loraforge.pii.conform import conform

    counts: Counter = Counter()
    for i, (r, raw) in enumerate(zip(records, model_spans)):
        text = r["text"]
        model = conform(text, raw)
        for p in conform(text, pat.find(text, patterns)):
            real = "real" if any(g["start"] < p.end and p.start < g["end"] for g in r["spans"]) else "over"
            agree = any(m.start < p.end and p.start < m.end for m in model)
            counts[f"{p.type} {real}, {'model agrees' if agree else 'patterns only'}"] += 1
            if not model:
                counts[f"{p.type} {real}, alone in text"] += 1
            if masked is not None and not any(s.start <= p.start and p.end <= s.end for s in masked[i]):
                counts[f"{p.type} {real}, dropped"] += 1
    return dict(sorted(counts.items()))


def _records(part: str) -> list[dict]:
    """A cases file's records, or a packaged split's (``pii:dev``: generated texts with their spans)."""
    from loraforge.data.formats import read_records, resolve_spec
    from loraforge.pii.handwritten import parse_cases

    if Path(part).is_file() or ":" not in part:
        return parse_cases(Path(part).read_text(encoding="utf-8"), part)
    return [{"id": f"{part}#{i}", **r} for i, (_, r) in enumerate(read_records(resolve_spec(part)))]


def markdown(results: dict) -> str:
    scores = table(["set", "bias", *KEYS], [[results["cases"], results["bias"], *(results["scores"][k] for k in KEYS)]])
    errs = table(["error", "count"], [[k, v] for k, v in results["errors"].items()])
    agreement = table(["find", "count"], [[k, v] for k, v in results.get("pattern_agreement", {}).items()])
    agreement = agreement if results.get("pattern_agreement") else ""
    curve, biases = "", ",".join(format(p["bias"], "g") for p in results.get("curve", []))
    if results.get("curve"):
        rows = [[p["bias"], *(p[k] for k in KEYS)] for p in results["curve"]]
        curve = "\n\nAt each bias (`--curve`):\n\n" + table(["bias", *KEYS], rows)
    single = f", {results['single_value_cases']} with one value" if "single_value_cases" in results else ""
    lone = results.get("lone_min_score", DEFAULT_LONE_MIN_SCORE)
    return (f"# PII masker on the hand-written development set\n\n{results['n']} cases ({results['no_pii_cases']} "
            f"without personal data{single}), model + validated patterns, adapter `{results['adapter']}`. CPU: "
            f"{results['cpu']}.\n\n{scores}\n\nErrors by kind and gold (or found) type:\n\n{errs}{curve}\n\n"
            + (f"The validated patterns' finds, against gold and the model (``pattern_agreement``):\n\n{agreement}\n\n"
               if agreement else "") +
            f"Reproduce: `python -m loraforge.bench.pii_errors --adapter {results['adapter']} --cases {results['cases']}"
            + (f" --bias {results['bias']:g}" if results["bias"] is not None else "")
            + (f" --lone-min-score {lone:g}" if lone != DEFAULT_LONE_MIN_SCORE else "")
            + (f" --curve={biases}" if biases else "")
            + (f" --spans-cache {results['spans_cache']}" if results.get("spans_cache") else "") + "`\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", default="runs/pii-tagger-v4", help=f"a run or adapter folder, or {GOLD!r}")
    parser.add_argument("--cases", default=DEV_CASES, help="a cases file or a split (pii:dev), or several comma-separated")
    parser.add_argument("--bias", type=float, default=None, help="the recall knob (default: the run's own)")
    parser.add_argument("--curve", default="", help="also score at these biases, e.g. --curve=-1,0,1,2")
    parser.add_argument("--spans-cache", default=None, help="read/add the model's spans per text here (.json.gz)")
    parser.add_argument("--lone-min-score", type=float, default=DEFAULT_LONE_MIN_SCORE,
                        help="a text's only model find, a name or a login, kept from this score (0: every span)")
    parser.add_argument("--show-values", action="store_true", help="print each error with its text")
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--name", default="pii-handdev")
    args = parser.parse_args(argv)
    curve = [float(b) for b in args.curve.split(",") if b.strip()]
    results, lines = run(args.adapter, args.cases, args.bias, args.show_values, curve, args.spans_cache,
                         args.lone_min_score)
    publish(args.out, args.name, results, markdown(results), lines)


if __name__ == "__main__":
    main()
