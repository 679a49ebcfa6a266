"""Localize whole Markdown/Hugo pages: parse (markdown-it-py), translate blocks in one batch, rewrite
links and anchors, keep the English as comments, update mode, glossary, structure checks, Hugo builds.

Markup protection itself lives in ``loraforge.data.markup`` (training data needs it too).
"""

from loraforge.localize.evaluate import PagesEval, eval_pages
from loraforge.localize.files import PagesResult, translate_pages
from loraforge.localize.glossary import Glossary, build_glossary, default_glossary, load_glossary, term_accuracy
from loraforge.localize.page import PageError, parse_page, read_page
from loraforge.localize.structure import Problem, check_page_structure
from loraforge.localize.translate import (PageOptions, PageResult, TranslateFn, translate_page, translate_texts,
                                          update_page)

__all__ = ["Glossary", "PageError", "PageOptions", "PageResult", "PagesEval", "PagesResult", "Problem", "TranslateFn",
           "build_glossary", "check_page_structure", "default_glossary", "eval_pages", "load_glossary", "parse_page",
           "read_page", "term_accuracy", "translate_page", "translate_pages", "translate_texts", "update_page"]
