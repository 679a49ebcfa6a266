"""``loraforge data check``: show what training will see, with the trained tokens marked, and fail
when any example would train wrongly. Needs the tokenizer only; no weights are loaded.

On a terminal the trained tokens are green; elsewhere (a pipe, a file) colour is gone, so they are
wrapped in ``TRAINED_OPEN``/``TRAINED_CLOSE`` instead, and the legend says which marking is used.
"""

from __future__ import annotations

from loraforge.config import RunConfig
from loraforge.data.formats import example_problems
from loraforge.data.splits import split_examples

TRAINED_OPEN, TRAINED_CLOSE = "⟦", "⟧"


def _tokenizer(cfg: RunConfig):
    """(tokenizer, family) without loading weights."""
    from transformers import AutoConfig, AutoTokenizer

    from loraforge.models.load import detect_family, resolve_model_path

    path = resolve_model_path(cfg.model.name)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok, detect_family(AutoConfig.from_pretrained(path))


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

    splits = [(split, split_examples(cfg, spec, limit)) for split, spec, limit in
              (("train", cfg.data.train, cfg.data.max_train_examples), ("dev", cfg.data.dev, cfg.data.max_dev_examples))
              if spec]  # the data is read (and a bad line reported) before the tokenizer loads
    tok, family = _tokenizer(cfg)
    console = Console(file=out, highlight=False)
    ok = all([_check_split(console, tok, family, cfg, split, examples, n) for split, examples in splits])
    marking = f"between {TRAINED_OPEN} {TRAINED_CLOSE}" if _plain(console) else "green"
    console.print(f"[green]OK[/green]: trained tokens ({marking}) are exactly the targets, ending with end-of-turn"
                  if ok else f"[red]FAILED[/red]: see the problems above (trained tokens are {marking})")
    return ok


def _plain(console) -> bool:
    """No colour reaches the reader (not a terminal, NO_COLOR, ...): mark trained tokens with brackets."""
    return console.color_system is None


def _render(tok, enc, family: str, title: str, plain: bool = False):
    """The example's tokens, trained ones green (``plain``: wrapped in ``TRAINED_OPEN``/``CLOSE``)."""
    from rich.text import Text

    from loraforge.data.templates import IGNORE

    text = Text(f"--- {title}: {len(enc.input_ids)} tokens\n")
    if family == "causal":
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
