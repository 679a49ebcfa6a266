"""The annotation rules' word lists (``words.toml``, one list per key), read once for the rules' modules
(``conform``, ``labels``, ``never_personal``, ``organisations``, ``patterns``): growing a list is a data edit, not a
code change."""

from __future__ import annotations

import re
import tomllib
import unicodedata
from functools import lru_cache
from importlib.resources import files

_WORDS = tomllib.loads(files("loraforge.pii").joinpath("words.toml").read_text(encoding="utf-8"))


def words(*keys: str) -> tuple[str, ...]:
    """The words of one list, or of several read as one (``honorifics_after`` with ``korean_titles_after``)."""
    values = (_WORDS[key] for key in keys)
    return tuple(w for value in values for w in (value.split() if isinstance(value, str) else value))


def alternation(*keys: str, capitalized: bool = False) -> str:
    """A list (or several) as a regex group, longest words first (``Herrn`` before ``Herr``); ``capitalized``: each
    word with a capital first letter (a list kept in lower case, matched as part of a proper name)."""
    listed = {w[:1].upper() + w[1:] if capitalized else w for w in words(*keys)}
    return "(?:" + "|".join(re.escape(w) for w in sorted(listed, key=lambda w: (-len(w), w))) + ")"


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


@lru_cache(maxsize=1)
def personal_names() -> frozenset[str]:
    """Given names and surnames of every Faker locale (~56,000) that are no town in its address lists, unaccented,
    lower case: such a word keeps an address personal after a role word (``resi.beernaert@``, ``sales.sigurdis@``;
    ``filiale.lucca@`` stays a branch's). Faker's lists rather than ours: no hand-written list covers that many naming
    traditions."""
    return frozenset(_faker_words("person", ("first_names", "first_names_male", "first_names_female", "last_names"))
                     - _faker_words("address", ("cities", "city_names", "real_city_names", "metropolitan_cities")))


def _faker_words(provider_kind: str, keys: tuple[str, ...]) -> frozenset[str]:
    """The words under ``keys`` of every locale's ``faker.providers.<provider_kind>`` provider."""
    import importlib
    import pkgutil

    package = importlib.import_module(f"faker.providers.{provider_kind}")
    found: set[str] = set()
    for module in pkgutil.iter_modules(package.__path__):
        provider = getattr(importlib.import_module(f"{package.__name__}.{module.name}"), "Provider", None)
        for key in keys:
            listed = vars(provider).get(key) if provider else None
            if isinstance(listed, (dict, list, tuple, set)):
                found.update(unaccented(str(word)).lower() for word in listed)
    return frozenset(found)
