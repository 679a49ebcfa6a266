"""``loraforge mask`` and ``loraforge unmask``: PII masking of texts, files, folders and jsonl streams
(``loraforge.pii`` does the masking; this module wires inputs, the model and outputs together).

Without ``--adapter`` only the validated patterns run (emails, IBANs, cards, IPs, phones, ...); with a
tuned PII run, its model finds names, addresses, usernames and secrets too, by constrained decoding
that can only copy the input or write a placeholder (faithful by construction).
A reversible mapping is written only when asked, 0600, with a warning: it is personal data itself.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

from loraforge.data.formats import DataError
from loraforge.pii.defaults import DEFAULT_LONE_MIN_SCORE
from loraforge.runs import atomic_write


def build_masker(adapter: str | None = None, merge: str | None = None, style: str = "placeholder",
                 bias: float | None = None, locale: str = "en_US", across_batch: bool = False,
                 batch_size: int = 8, lone_min_score: float = DEFAULT_LONE_MIN_SCORE):
    """A ``pii.Masker``: patterns only without an adapter, else the run's model (+ patterns by default)."""
    from loraforge.pii import Masker, MaskOptions

    merge = merge or ("union" if adapter else "patterns")
    if merge != "patterns" and not adapter:
        raise DataError(f"--merge {merge} needs a tuned PII model: pass --adapter RUN (or --merge patterns)")
    options = MaskOptions(merge=merge, style=style, locale=locale, across_batch=across_batch,
                          lone_min_score=lone_min_score)
    if merge == "patterns":
        return Masker(options=options)
    from loraforge.eval.inference import load_for_inference
    from loraforge.runs import resolve_adapter

    ref = resolve_adapter(adapter)
    cfg = pii_config(ref.run.config() if ref.run else None, adapter)
    cfg.model.dtype = "fp32"  # decoding compares log-probabilities; fp32 keeps them batch-independent
    loaded, model = load_for_inference(cfg, ref)
    return Masker.from_model(model, loaded.tokenizer, cfg.data, options=options, bias=bias, batch_size=batch_size)


def pii_config(cfg, adapter: str):
    """The run's config narrowed to its PII task (a multi-task run's first pii task): the prompt, template
    and system prompt the masking model was trained with. Not a PII run: a DataError saying why."""
    from loraforge.config import ConfigError
    from loraforge.eval.inference import task_run_config

    try:
        if cfg is None:
            raise ConfigError("no run config beside the adapter")
        _, data = cfg.data.task_config(kind="pii")
    except ConfigError as e:
        raise DataError(f"{adapter}: not a PII run ({e}); train one with "
                        "`loraforge train configs/pii-gemma3-270m.yaml`") from None
    return task_run_config(cfg, data)


def _inputs(text: list[str], file: str | None) -> tuple[str, list[str]]:
    """('texts'|'stdin'|'file', texts) for the plain-text inputs."""
    from loraforge.pii import read_text

    if text:
        return "texts", list(text)
    if file and file != "-":
        return "file", [read_text(file)]
    if sys.stdin.isatty():
        print("reading the text to mask from stdin; end with Ctrl-D", file=sys.stderr)
    data = sys.stdin.read()
    if not data.strip():
        raise DataError("nothing to mask: stdin is empty; give TEXT arguments, --file FILE or --jsonl FILE")
    return "stdin", [data]


def _write_mapping(path: str, mappings: list) -> None:
    from loraforge.pii import MAPPING_FILE_MODE, MAPPING_WARNING

    payload = mappings[0].to_json() if len(mappings) == 1 else json.dumps([json.loads(m.to_json()) for m in mappings])
    atomic_write(path, payload, mode=MAPPING_FILE_MODE)
    print(f"loraforge: warning: {path}: {MAPPING_WARNING}", file=sys.stderr)


def mask_run(text: list[str], file: str | None = None, jsonl: str | None = None, folder: str | None = None,
             out: str | None = None, field: str = "text", fmt: str = "text", mapping: str | None = None,
             adapter: str | None = None, merge: str | None = None, style: str = "placeholder",
             bias: float | None = None, locale: str = "en_US", across_batch: bool = False,
             lone_min_score: float = DEFAULT_LONE_MIN_SCORE) -> Iterator[str]:
    """Masked outputs, one item per input (a text, a jsonl line, or a line naming a written file)."""
    from loraforge.pii import iter_files, iter_jsonl, output_record, read_text

    if mapping and (jsonl or folder):
        raise DataError("--mapping works with one text (arguments, --file or stdin), not --jsonl/--folder")
    if folder and not out:
        raise DataError("--folder needs --out DIR (one masked file per input file)")
    if folder and Path(out).exists() and any(Path(out).iterdir()):
        raise DataError(f"{out} already exists and is not empty; choose another --out")
    kind, texts = ("folder", []) if folder else ("jsonl", []) if jsonl else _inputs(text, file)
    masker = build_masker(adapter, merge, style, bias, locale, across_batch, lone_min_score=lone_min_score)
    if jsonl:
        for _where, rec, result in masker.mask_stream(iter_jsonl(jsonl, field, progress=True), field=field):
            yield output_record(result, "both" if fmt == "text" else fmt, rec, field)
        return
    if folder:
        for path in iter_files(folder):
            result = masker.mask_text(read_text(path))
            target = Path(out) / path.relative_to(folder)
            atomic_write(target, output_record(result, fmt) + ("\n" if fmt != "text" else ""))
            yield f"wrote {target}"
        return
    results = masker.mask(texts, with_mapping=bool(mapping), where=kind)
    if mapping:
        _write_mapping(mapping, [r.mapping for r in results])
    for r in results:
        yield output_record(r, fmt)


def unmask_run(file: str, mapping: str, derived: bool = False) -> str:
    """The original text back from a masked text and the mapping ``mask --mapping`` wrote."""
    from loraforge.pii import read_text, unmask

    try:
        data = json.loads(Path(mapping).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"mapping not found: {mapping}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{mapping}: not a loraforge mapping file ({e})") from None
    from loraforge.pii import MappingError

    text = sys.stdin.read() if file == "-" else read_text(file)
    try:
        return unmask(text, data, strict=not derived, where=mapping)
    except MappingError:
        if derived or not text.endswith("\n"):
            raise
        # `mask` prints a text that does not end in a newline with one added: the masked text is without it
        return unmask(text[:-1], data, where=mapping) + "\n"
