"""PII masking that leaks nothing and rewrites nothing (see docs in each module).

    from loraforge.pii import Masker, MaskOptions, unmask
    masker = Masker.from_model(model, tokenizer, cfg.data, bias=2.0)   # tuned model + patterns
    masker = Masker(options=MaskOptions(merge="patterns"))             # validated patterns only
    r = masker.mask_text(text, with_mapping=True)                       # r.text, r.spans, r.mapping
    unmask(r.text, r.mapping) == text

No torch at import time: the model is imported only by ``decode`` when a model masker is built.
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what the lazy loader below returns, for type checkers and editors (kept in step by a test)
    from loraforge.pii.decode import ConstrainedMasker
    from loraforge.pii.defaults import DEFAULT_BIAS, DEFAULT_TAG_BIAS
    from loraforge.pii.io import FORMATS, check_text, iter_files, iter_jsonl, output_record, read_text
    from loraforge.pii.mapping import MAPPING_FILE_MODE, MAPPING_WARNING, Mapping, MappingError, unmask
    from loraforge.pii.masker import STYLES, Masker, MaskOptions, model_finder
    from loraforge.pii.patterns import PATTERN_NAMES
    from loraforge.pii.spans import MERGE_MODES, TYPES, MaskResult, Span

# name -> submodule. Loaded on first use (PEP 562), so importing one submodule (the CLI reads
# ``pii.defaults`` for its help) does not load the decoders, patterns and pseudonymizer with it.
_EXPORTS = {
    "decode": ["ConstrainedMasker"],
    "defaults": ["DEFAULT_BIAS", "DEFAULT_TAG_BIAS"],
    "io": ["FORMATS", "check_text", "iter_files", "iter_jsonl", "output_record", "read_text"],
    "mapping": ["MAPPING_FILE_MODE", "MAPPING_WARNING", "Mapping", "MappingError", "unmask"],
    "masker": ["STYLES", "Masker", "MaskOptions", "model_finder"],
    "patterns": ["PATTERN_NAMES"],
    "spans": ["MERGE_MODES", "TYPES", "MaskResult", "Span"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = list(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
