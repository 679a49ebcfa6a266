"""The annotation rules' word lists (``words.toml``, one list per key), read once for ``conform`` and
``patterns``: growing a list is a data edit, not a code change."""

from __future__ import annotations

import re
import tomllib
from importlib.resources import files

_WORDS = tomllib.loads(files("loraforge.pii").joinpath("words.toml").read_text(encoding="utf-8"))


def words(key: str) -> tuple[str, ...]:
    value = _WORDS[key]
    return tuple(value.split() if isinstance(value, str) else value)


def alternation(key: str) -> str:
    """A list as a regex group, longest words first (``Herrn`` before ``Herr``)."""
    return "(?:" + "|".join(re.escape(w) for w in sorted(words(key), key=len, reverse=True)) + ")"
