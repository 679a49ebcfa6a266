"""PII masking that leaks nothing and rewrites nothing (see docs in each module).

    from loraforge.pii import Masker, MaskOptions, unmask
    masker = Masker.from_model(model, tokenizer, cfg.data, bias=2.0)   # tuned model + patterns
    masker = Masker(options=MaskOptions(merge="patterns"))             # validated patterns only
    r = masker.mask_text(text, with_mapping=True)                       # r.text, r.spans, r.mapping
    unmask(r.text, r.mapping) == text

No torch at import time: the model is imported only by ``decode`` when a model masker is built.
"""

from loraforge.pii.decode import DEFAULT_BIAS, ConstrainedMasker
from loraforge.pii.io import FORMATS, check_text, iter_files, iter_jsonl, output_record, read_text
from loraforge.pii.mapping import MAPPING_FILE_MODE, MAPPING_WARNING, Mapping, MappingError, unmask
from loraforge.pii.masker import STYLES, Masker, MaskOptions, model_finder
from loraforge.pii.patterns import PATTERN_NAMES
from loraforge.pii.spans import MERGE_MODES, TYPES, MaskResult, Span

__all__ = ["DEFAULT_BIAS", "ConstrainedMasker", "FORMATS", "check_text", "iter_files", "iter_jsonl", "output_record",
           "read_text", "MAPPING_FILE_MODE", "MAPPING_WARNING", "Mapping", "MappingError", "unmask", "STYLES", "Masker",
           "MaskOptions", "model_finder", "PATTERN_NAMES", "MERGE_MODES", "TYPES", "MaskResult", "Span"]
