"""``loraforge data check``: show what training will see, with the trained tokens marked, and fail
when any example would train wrongly. Needs the tokenizer only; no weights are loaded.

On a terminal the trained tokens are green; elsewhere (a pipe, a file) colour is gone, so they are
wrapped in ``TRAINED_OPEN``/``TRAINED_CLOSE`` instead, and the legend says which marking is used.
A multi-task config is checked task by task; augmented examples (data.augment) are shown beside
their originals, as training draws them.
"""

from __future__ import annotations

from loraforge.config import RunConfig
from loraforge.data.formats import example_problems
from loraforge.data.splits import check_exclusions, read_split

TRAINED_OPEN, TRAINED_CLOSE = "⟦", "⟧"


def _problems(tok, example, enc, cfg: RunConfig, family: str) -> list[str]:
    """An example's problems: the data's own (``example_problems``, shared with ``data stats``) and the
    encoding's; over max_length is not one (such examples are dropped and counted)."""
    from loraforge.data.templates import check_encoded

    encoded = [p for p in check_encoded(tok, enc, cfg.data, family) if "max_length" not in p]
    return example_problems(example) + encoded


def _check_split(console, tok, family: str, cfg: RunConfig, split: str, examples: list, n: int) -> bool:
    """Render the first ``n`` examples (and the first few bad ones); True when none has a problem."""
    from loraforge.data.templates import encode_examples

    bad = too_long = 0
    for i, (ex, enc) in enumerate(zip(examples, encode_examples(tok, examples, cfg.data, family))):
        problems = _problems(tok, ex, enc, cfg, family)
        too_long += enc.too_long
        bad += bool(problems)
        if i < n or (problems and bad <= 3):
            console.print(_render(tok, enc, family, f"{split} example {i} ({ex.id or 'no id'})", _plain(console)))
            for p in problems:
                console.print(f"  [red]problem:[/red] {p}")
    console.print(f"{split}: {len(examples)} examples, {bad} with problems, {too_long} over "
                  f"data.max_length={cfg.data.max_length} (dropped, not truncated)")
    return bad == 0


def check_data(cfg: RunConfig, n: int = 3, out=None) -> bool:
    """Render ``n`` examples per split with the trained tokens marked; False when any example would
    train wrongly (an empty source or target, no trained token, or an untrained end-of-turn).
    Examples over data.max_length are dropped by the trainer, never truncated: counted, not failed."""
    from rich.console import Console

    tasks, excluded, train = [], [], {}  # the data is read (and a bad line reported) before the tokenizer loads
    for name, d in cfg.data.task_configs():
        task_cfg = cfg.model_copy(update={"data": d})
        label = f"{name}: " if cfg.data.tasks else ""
        read = {split: read_split(d, split) for split in ("train", "dev") if getattr(d, split)}
        train[name] = read["train"]
        excluded += [f"{label}{split} {n} ({p})" for split, (_, c) in read.items() for p, n in c.items()]
        tasks.append((label, task_cfg, [(label + split, rows) for split, (rows, _) in read.items()]))
    check_exclusions(cfg.data, train)
    from loraforge.models.load import load_tokenizer

    tok, family = load_tokenizer(cfg.model)
    console = Console(file=out, highlight=False)
    if cfg.data.exclude_sources:
        console.print(f"data.exclude_sources dropped rows: {', '.join(excluded)} (test splits keep theirs)")
    ok = True
    for label, task_cfg, splits in tasks:
        checked = [_check_split(console, tok, family, task_cfg, split, examples, n) for split, examples in splits]
        ok = all(checked) and ok
        if task_cfg.data.augment.active:
            _show_augmented(console, tok, family, task_cfg, label, n)
    marking = f"between {TRAINED_OPEN} {TRAINED_CLOSE}" if _plain(console) else "green"
    meaning = ("the personal data, each value followed by its <TYPE>" if family == "tagger"
               else "exactly the targets, ending with end-of-turn")
    console.print(f"[green]OK[/green]: marked tokens ({marking}) are {meaning}"
                  if ok else f"[red]FAILED[/red]: see the problems above (trained tokens are {marking})")
    return ok


def _show_augmented(console, tok, family: str, cfg: RunConfig, label: str, n: int) -> None:
    """The first ``n`` noised training examples of epochs 0 and 1 beside their originals, and the first
    ``n`` back-translated pairs: exactly what training draws (data.splits.TrainExamples)."""
    from rich.markup import escape

    from loraforge.data.splits import encode_task, load_task

    d = cfg.data
    splits = load_task(d, None)
    train = encode_task(d, splits, tok, family, d.seed).train
    if train.noise is not None:
        console.print(f"--- {label}train, augmented by data.augment.noise (seed {d.seed}): original, then epochs 0, 1")
        real = [i for i, e in enumerate(train.examples) if not e.meta.get("synthetic")][:n]
        for i in real:
            console.print(f"  original: {escape(train.examples[i].source)}")
            for epoch in (0, 1):
                console.print(f"  epoch {epoch}:  {escape(train.example_at(i, epoch).source)}")
    synthetic = [e for e in train.examples if e.meta.get("synthetic")]
    if synthetic:
        bt = d.augment.back_translation
        console.print(f"--- {label}train, back-translated pairs from {bt.file} (ratio {bt.ratio}, tagged "
                      f"{bt.tagged}): {len(synthetic)} of {len(train)} training examples; "
                      f"{splits.synthetic_copies} dropped as copies (source = target)")
        for e in synthetic[:n]:
            console.print(f"  synthetic source: {escape(e.source)}\n  real target:      {escape(e.target)}")


def _plain(console) -> bool:
    """No colour reaches the reader (not a terminal, NO_COLOR, ...): mark trained tokens with brackets."""
    return console.color_system is None


def _render(tok, enc, family: str, title: str, plain: bool = False):
    """The example's tokens, trained ones green (``plain``: wrapped in ``TRAINED_OPEN``/``CLOSE``)."""
    from rich.text import Text

    from loraforge.data.templates import IGNORE

    text = Text(f"--- {title}: {len(enc.input_ids)} tokens\n")
    if family == "tagger":  # the text alone; each tagged value marked, then its type
        from loraforge.data.pii_tags import LABELS

        values: list[tuple[str | None, list[int]]] = []  # consecutive tokens of one value (or of no value)
        for tid, label in zip(enc.input_ids, enc.labels):
            name = LABELS[label] if label != IGNORE else "O"
            typ = None if name == "O" else name[2:]
            if values and values[-1][0] == typ and not name.startswith("B-"):
                values[-1][1].append(tid)
            else:
                values.append((typ, [tid]))
        for typ, ids in values:
            _append(text, tok.decode(ids), typ is not None, plain)
            if typ is not None:
                text.append(f"<{typ}>", style="bold")
    elif family == "causal":
        runs: list[tuple[bool, list[int]]] = []  # consecutive tokens with the same trained-ness
        for tid, label in zip(enc.input_ids, enc.labels):
            trained = label != IGNORE
            if runs and runs[-1][0] == trained:
                runs[-1][1].append(tid)
            else:
                runs.append((trained, [tid]))
        for trained, ids in runs:
            _append(text, tok.decode(ids), trained, plain)
    else:
        text.append(tok.decode(enc.input_ids), style="dim")
        text.append("\n=> ")
        _append(text, tok.decode([t for t in enc.labels if t != IGNORE]), True, plain)
    return text


def _append(text, piece: str, trained: bool, plain: bool) -> None:
    if trained and plain:
        piece = f"{TRAINED_OPEN}{piece}{TRAINED_CLOSE}"
    text.append(piece, style="bold green" if trained else "dim")
