"""The annotation rules' word lists (``words.toml``, one list per key), read once for the rules' modules
(``conform``, ``labels``, ``never_personal``, ``organisations``, ``patterns``): growing a list is a data edit, not a
code change."""

from __future__ import annotations

import re
import tomllib
import unicodedata
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


def unaccented(text: str) -> str:
    """``text`` without its combining marks (``ọ́fíìsì`` -> ``ofiisi``): a word list written once matches a word however
    its accents and tone marks were typed. Offsets into the result are not offsets into ``text``."""
    return "".join(c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c))


def unaccented_words(key: str) -> re.Pattern:
    """A list as a regex over ``unaccented`` text, any case: a whole word in a script written with spaces, anywhere in
    one without (``事務所``)."""
    from loraforge.data.pii_tags import spaceless

    listed = sorted({unaccented(w) for w in words(key)}, key=len, reverse=True)
    spaced = [re.escape(w) for w in listed if not any(spaceless(c) for c in w)]
    unspaced = [re.escape(w) for w in listed if any(spaceless(c) for c in w)]
    return re.compile(r"(?i)(?<![^\W\d_])(?:" + "|".join(spaced) + r")(?![^\W\d_])" + "".join("|" + w for w in unspaced))
