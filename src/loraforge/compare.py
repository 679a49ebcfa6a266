"""Moved to ``loraforge.workflows.compare``. This alias keeps ``from loraforge.compare import ...``
working for callers not yet switched (cli.py, tests/unit/test_methods.py); delete it once they are."""

from loraforge.workflows.compare import compare_run, markdown_table, parse_lrs, parse_methods  # noqa: F401
