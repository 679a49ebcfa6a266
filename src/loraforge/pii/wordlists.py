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


def alternation(key: str, capitalized: bool = False) -> str:
    """A list as a regex group, longest words first (``Herrn`` before ``Herr``); ``capitalized``: each word with
    a capital first letter (a list kept in lower case, matched as part of a proper name)."""
    listed = (w[:1].upper() + w[1:] if capitalized else w for w in words(key))
    return "(?:" + "|".join(re.escape(w) for w in sorted(listed, key=len, reverse=True)) + ")"
