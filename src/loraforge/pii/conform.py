"""Any finder's spans made to follow the annotation rules (``datasets/pii-handwritten/RULES.md``).

Why a separate step: a tagger's spans are whole tokens, and a token can carry a quote, a bracket or
a comma with the value (``'(428)688-4747`` in a SQL row, ``alice@example.com,`` in a CSV). The rules
say a span is the value only: this module trims and grows each span to its value's edges (names, addresses,
dates, credentials), types a number by the label before it (``labels``) and drops what the rules say is never
personal data however it looks (``never_personal``). The model learns these from data, but a rule that can be
checked is checked here, for the model's spans and the patterns' alike, so neither depends on having seen
that context in training.
"""

from __future__ import annotations

import re
import unicodedata

from loraforge.data.pii_tags import spaceless
from loraforge.pii.labels import ID_LABEL_HEAD, retyped
from loraforge.pii.never_personal import (CHAT_WORDS, FIELD_LABELS, HOSTNAME, SIGN_OFFS, WEEKDAYS, bot_names, ipv6_port,
                                          never_personal)
from loraforge.pii.spans import BRACKETS, Span, line_bounds
from loraforge.pii.wordlists import alternation as _alternation
from loraforge.pii.wordlists import words as _words

_QUOTES = "\"'`‘’“”«»「」『』【】"  # never the first or last character of a value
_PUNCT_BEFORE = ",;:"  # nor punctuation
_SENTENCE_END = ".!?。！？"  # ends a sentence, not a value of a structured type
_CONNECTOR_AFTER = re.compile(r"\s+(?:and|or|und|oder|et|ou|y|o|e|en|i|oraz)$")  # "and" after an address: prose goes on
_NO_TRAILING_DOT = {"EMAIL", "PHONE", "IP_ADDRESS", "CREDIT_CARD", "IBAN", "SSN", "DATE_OF_BIRTH", "USERNAME"}
_IPV4_PORT = re.compile(r"(\d{1,3}(?:\.\d{1,3}){3})(?::\d{1,5})+")  # the ports (docker's host:port:port) are not the address
# a URL's credentials end at the @ of its host: https://user:TOKEN@github.com/org/repo.git
_URL_CREDENTIALS_BEFORE = re.compile(r"://[^\s/@:]*:?$")
_HOST_TAIL = re.compile(r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+(?::\d{1,5})?(?:/\S*)?$")
_SHELL_QUOTES = "\"'`"
# the rest of a password's token the tagger stopped short of: no space, quote or bracket, not the sentence's end
# (nor ``@ / : = $``, where a URL's host, a path, the next key or a template variable starts)
_TOKEN_REST = re.compile(r"[^\s\"'`<>()\[\]{},;@/:=$]*?(?=[.!?]*(?:[\s\"'`<>()\[\]{},;@/:=$]|$))")
_LAST_WORD = re.compile(r"[^\W\d_]+$")
ADDRESS_ABBREVIATIONS = frozenset(_words("address_abbreviations"))
_QUOTE_REACH = 8  # how far a password's quote may be from where the tagger started or ended it
# honorifics stay outside a name (RULES.md: ``Frau ⟦Brandt⟧``, ``⟦佐藤 健⟧様``); English title
# abbreviations (Dr., Mr., Ms., Mrs.) are part of it
_HONORIFIC_BEFORE = re.compile(_alternation("honorifics_before") + r"\s+")
_HONORIFIC_WORD_BEFORE = re.compile(r"(?<![\w'’-])" + _alternation("honorifics_before") + r"\s+")  # inside a field too
_HONORIFICS = frozenset(_words("honorifics_before"))  # one alone is no name (``⟦pan⟧ ⟦Zbigniew Kaczmarek⟧``)
# a greeting before a name in a chat or a letter (``Hi ⟦Dorota⟧``, ``Hoi ⟦Joost⟧``)
_GREETING_BEFORE = re.compile("(?i)" + _alternation("greetings_before") + r"\s+")
_POSSESSIVE = re.compile(r"['’]s$")  # ``⟦Mr. Reid⟧'s shifts``
_INTRO_BEFORE = re.compile(_alternation("introductions_before") + r"\s*")  # "my name is"
_HONORIFIC_AFTER = re.compile(r"\s*" + _alternation("honorifics_after", "korean_titles_after") + "$")
# a Japanese particle the tagger took with the name after it (``担当⟦の高橋 美咲⟧``): a name never starts with one
_PARTICLE_BEFORE = re.compile(r"[のはがをにでへ](?=[\u4e00-\u9fff])")


def _strip(value: str, ptype: str) -> tuple[int, int]:
    """(offset of the first kept character, of the end) in ``value``: surrounding quotes, brackets
    and punctuation off (an IPv6 address may start or end with a colon). A password keeps everything
    but a pair of quotes around it: any character may belong to it."""
    a, b = 0, len(value)
    if ptype == "PASSWORD":
        while a < b and value[a] in "\"'`" and value[b - 1] == value[a]:
            a, b = a + 1, b - 1
        return a, b
    if ptype == "NAME":
        m = _HONORIFIC_BEFORE.match(value) or _INTRO_BEFORE.match(value) or _GREETING_BEFORE.match(value) \
            or _PARTICLE_BEFORE.match(value)
        if m and m.end() < b:
            a = m.end()
        m = _HONORIFIC_AFTER.search(value, a) or _POSSESSIVE.search(value, a)
        if m and m.start() > a:
            b = m.start()
    punct = _PUNCT_BEFORE if ptype != "IP_ADDRESS" else ",;"  # ::1
    if ptype == "NAME":
        punct += "."  # ``Dra⟦. Fernanda Lopes⟧``: a name never starts with a dot
    if ptype == "ADDRESS" and (m := _CONNECTOR_AFTER.search(value, a, b)) and m.start() > a:
        b = m.start()  # ``..., Edinburgh EH9 1BL⟧ and the best number``: the sentence goes on, not the address
    closing = {c: o for o, c in BRACKETS.items()}
    changed = True
    while changed and a < b:
        changed = False
        first, last = value[a], value[b - 1]
        if first in BRACKETS and b - a > 1 and last == BRACKETS[first]:  # [John] -> John
            a, b, changed = a + 1, b - 1, True
        elif first in _QUOTES or first in punct or first.isspace() or (first in BRACKETS and BRACKETS[first] not in value[a:b]):
            a, changed = a + 1, True
        elif (last in _QUOTES or last in punct or last.isspace() or (last in BRACKETS and b - a > 1)
              or (last in closing and closing[last] not in value[a:b - 1])
              or (last in _SENTENCE_END and ptype in _NO_TRAILING_DOT)):
            b, changed = b - 1, True
    return a, b


# a form's encoded fields (``grant_type=password&username=...&password=...``): a value ends at the next ``&key=``
_FORM_FIELD_BEFORE = re.compile(r"[?&][\w.\[\]-]+=$")
_FORM_FIELD_NEXT = re.compile(r"&[\w.\[\]-]+=")


def _credential_edges(text: str, a: int, b: int, ptype: str) -> tuple[int, int]:
    """A password or login inside a URL ends at its host's ``@``; a quoted password is everything
    between its quotes (``='secret'``, ``-p'(secret'``: a token may stop short of, or run into, a quote)."""
    if ptype in ("PASSWORD", "USERNAME") and _URL_CREDENTIALS_BEFORE.search(text, max(0, a - 64), a):
        if m := _HOST_TAIL.search(text, a, b):
            b = m.start()
    if ptype != "PASSWORD" or a >= b:
        return a, b
    if b - a > 1 and text[a] == "=" and a > 0 and (text[a - 1].isalnum() or text[a - 1] == "_") \
            and text[a + 1] not in _SHELL_QUOTES:
        a += 1  # KEY⟦=secret⟧: the key's sign is not the value's (quoted values: below)
    if b < len(text) and b - a >= 3 and not _URL_CREDENTIALS_BEFORE.search(text, max(0, a - 64), a) \
            and (m := _TOKEN_REST.match(text, b)) and m.group().strip("_") and not text[a:b].isspace():
        b = m.end()  # ``password is ⟦sAi^Jsbg+g6⟧*.``: a secret runs to its token's end, less a sentence's punctuation
        # (not over a blank form's underscores: ``⟦IT⟧__ _ ____``)
    if (m := re.search(r"\s", text[a:b])) and not any(c.isalnum() for c in text[a + m.start():b]):
        b = a + m.start()  # ⟦'secret' },⟧: what follows a space is the code around the value
    while b - a > 2 and text[a] in "=:" and text[a + 1] in _SHELL_QUOTES and text[b - 1] == text[a + 1]:
        a += 1  # PGPASSWORD⟦='secret'⟧: the quotes go below
    if b - a > 2 and text[a] in "=:" and text[a + 1] in _SHELL_QUOTES:
        a += 1  # password⟦='secr⟧et': the key's sign is not the value's; its quote opens it
    if text[a] in _SHELL_QUOTES and b < len(text) and text[b] == text[a]:
        a += 1  # ⟦"secret⟧"
    elif text[b - 1] in _SHELL_QUOTES and a > 0 and text[a - 1] == text[b - 1]:
        b -= 1  # "⟦secret"⟧
    elif text[b - 1] in _SHELL_QUOTES and (k := text.rfind(text[b - 1], max(0, a - _QUOTE_REACH), a)) >= 0 \
            and not any(c.isspace() for c in text[k + 1:a]):
        a, b = k + 1, b - 1  # ")⟦secret"⟧: the value runs from its opening quote
    elif text[a] in _SHELL_QUOTES and (k := text.find(text[a], b, b + _QUOTE_REACH)) >= 0 \
            and not any(c.isspace() for c in text[b:k]):
        a, b = a + 1, k  # ⟦'secr⟧et': to its closing quote
    if b < len(text) and text[b] in _SHELL_QUOTES:  # grown back to the opening quote over a few characters
        k = text.rfind(text[b], max(0, a - _QUOTE_REACH), a)
        if k >= 0 and not any(c.isspace() for c in text[k + 1:a]):
            a = k + 1
    elif a > 0 and text[a - 1] in _SHELL_QUOTES:  # or on to the closing one
        k = text.find(text[a - 1], b, b + _QUOTE_REACH)
        if k >= 0 and not any(c.isspace() for c in text[b:k]):
            b = k
    if _FORM_FIELD_BEFORE.search(text, max(0, a - 40), a) and (m := _FORM_FIELD_NEXT.search(text, a, b + 1)) \
            and m.start() > a:
        b = m.start()  # ``&password=⟦Tz8#quetzal-Rio22⟧&client_id=...``: a form's next field (rules 55)
    return a, b


_CELL_EDGES = ";,\t|，、；"  # what ends a field; a colon also opens one (``Name: ...``, ``紧急联系人：...``)
_OPENERS = _CELL_EDGES + ":："
_NAME_WORD = re.compile(r"[^\W\d_][\w'’.-]*")  # a word of a name: starts with a letter
_SPACELESS_NAME = 5  # characters of a name in a script without spaces (李桂花, 加藤 智也)


def _name_cell(text: str, a: int, b: int) -> tuple[int, int]:
    """A name in a field of a record (``2025-09-22;Alberico Lombardi;IT22...``, ``紧急联系人：李桂花，``)
    is the whole field: a left-to-right tagger often misses a given name because it has not yet read
    the surname. Grown only when a delimiter or a label's colon opens the field (not a line start:
    ``Dear John,``), the field is on one line, has at most four words, and every word added starts
    with a capital letter, or, in a script without spaces, the field has at most five characters."""
    line_start, line_end = line_bounds(text, a, b)
    left = max(text.rfind(c, line_start, a) for c in _OPENERS)  # searches bounded by the line
    if left < 0:
        return a, b
    ends = [k for k in (text.find(c, b, line_end) for c in _CELL_EDGES) if k >= 0]
    lo, hi = left + 1, min(ends, default=line_end)
    while lo < a and text[lo].isspace():
        lo += 1
    while hi > b and text[hi - 1].isspace():
        hi -= 1
    if hi - 1 > b and text[hi - 1] == "." and text[hi - 2].islower() and text[hi - 3:hi - 1].isalpha():
        hi -= 1  # a sentence's end (``con la dott.ssa ⟦Marta⟧ Pavan.``), not an abbreviation's point
    if (m := _HONORIFIC_BEFORE.match(text, lo) or _INTRO_BEFORE.match(text, lo) or _GREETING_BEFORE.match(text, lo)) \
            and m.end() <= a:
        lo = m.end()  # Frau, 我叫, Hi stay outside, as _strip left them
    elif honorifics := [m for m in _HONORIFIC_WORD_BEFORE.finditer(text, lo, a) if m.end() <= a]:
        lo = honorifics[-1].end()  # ``Ansprechpartnerin Frau ⟦Trautwein⟧``: a role, its title, then the name (rules 55)
    if (m := _HONORIFIC_AFTER.search(text, b, hi)) and m.start() >= b:
        hi = m.start()  # 様, 님 stay outside too
    if (lo, hi) == (a, b):
        return a, b
    added = text[lo:a] + text[b:hi]
    if added.strip() and all(spaceless(c) or c.isspace() for c in added):
        return (lo, hi) if len(text[lo:hi].replace(" ", "")) <= _SPACELESS_NAME else (a, b)
    words = (text[lo:a] + " " + text[b:hi]).split()
    if len(text[lo:hi].split()) > 4 or not all(_NAME_WORD.fullmatch(w) and w[0].isupper() for w in words) \
            or any(w.lower().rstrip(".:") in FIELD_LABELS for w in words):  # ``Kontoinhaber ⟦Jürgen Haase⟧``
        return a, b
    return lo, hi


# a name or a login never ends in a number of its own: ``⟦Pamela 21⟧:42`` is a chat speaker and a time
_TRAILING_NUMBER = re.compile(r"\s+\d[\d:.]*$")
_TRAILING_KEY = re.compile(r"\s+\S+$")
_TERMINAL_AFTER = re.compile(r"\s+(?:pts|tty)\w*$")
_PHONE_WORD_BEFORE = re.compile(r"(?i)(?:mob|tel|phone|mobile|cell|fax|handy|tlf|tfn)\.?:?\s+(?=[+(\d])")
# a surname after a given name: one capitalized word (``⟦Jeffrey⟧ Ross exceeded``), not an acronym
_NEXT_WORD = re.compile(r" ([^\W\d_][^\W\d_'’-]*(?:[-'’][^\W\d_]+)*)(?=[\s.,;:!?)\]]|$)")
_NOT_SURNAMES = frozenset(_words("not_surnames"))
# ``⟦Nermin⟧ Hanım``: the title after a name is no surname
_HONORIFICS_AFTER = frozenset(_words("honorifics_after", "korean_titles_after"))
_TITLES = frozenset(_words("english_titles"))  # part of the name that follows: ``⟦Mr⟧. ⟦Holloway⟧`` is one name


# a display name written surname first, before the given name the tagger found (``An: Wagenknecht, ⟦Ingo⟧ <...>``)
_SURNAME_COMMA_BEFORE = re.compile(r"(?<![\w'’-])([^\W\d_][\w'’-]*), ?$")


def _surname_first(text: str, a: int, b: int) -> int:
    """Where a NAME starts once a ``Surname, `` just before it joins it, where ``_last_first`` says the whole
    is one person (a field, a mailbox's display name, after a ``Last, First`` label), not people listed."""
    line_start, _ = line_bounds(text, a, b)
    m = _SURNAME_COMMA_BEFORE.search(text, max(line_start, a - 40), a)
    if not m or not m.group(1)[0].isupper() or m.group(1).lower().rstrip(".:") in FIELD_LABELS:
        return a
    return m.start() if _last_first(text, m.start(), b) else a


def _surname_after(text: str, a: int, b: int) -> int:
    """Where a one-word NAME ends once the capitalized word right after it joins it: a left-to-right
    tagger labels a given name before it reads the surname and often stops there."""
    value = text[a:b]
    if " " in value or not value[:1].isupper() or any(spaceless(c) for c in value):
        return b
    # ``⟦Mr⟧. Nair``: a title alone names no one; the name is the word after it
    m = _NEXT_WORD.match(text, b + 1 if value in _TITLES and text.startswith(".", b) else b)
    if not m:
        return b
    word = m.group(1)
    if len(word) < 2 or not word[0].isupper() or word.isupper() or word in _NOT_SURNAMES or word in _HONORIFICS_AFTER:
        return b
    return m.end(1)


# a line that is one person's name, the tagger having read only the surname (``Perpetua ⟦Ndiaye-Holmgren⟧``); rules 58
_LINE_GIVEN_NAME = re.compile(r"[ \t]*([A-Z\u00c0-\u00de][a-z\u00df-\u00ff'’-]+)[ \t]+$")
_NOT_GIVEN_NAMES = frozenset(_words("not_given_names"))


def _given_name_before(text: str, a: int, b: int) -> int:
    """Where a surname alone on its line, after a sign-off (``Met vriendelijke groet,``), starts once the one
    capitalized word before it joins it."""
    line_start, line_end = line_bounds(text, a, b)
    m = _LINE_GIVEN_NAME.fullmatch(text, line_start, a)
    if not m or text[b:line_end].strip() or " " in text[a:b] or not _after_comma(text, line_start):
        return a  # a signature: the name alone on its line, after a sign-off's comma
    word = m.group(1).lower()
    if word in _NOT_GIVEN_NAMES or word in SIGN_OFFS or word in WEEKDAYS or word in CHAT_WORDS or word in FIELD_LABELS \
            or m.group(1) in _NOT_SURNAMES or m.group(1) in _HONORIFICS or _GREETING_BEFORE.fullmatch(m.group(1) + " "):
        return a
    return m.start(1)


def _after_comma(text: str, i: int) -> bool:
    """Whether the last character before ``i``, less white space, is a comma (read back from ``i``, not a copy of
    the text before it: this runs for every name)."""
    while i > 0 and text[i - 1].isspace():
        i -= 1
    return i > 0 and text[i - 1] == ","


def _quoted_field(text: str, a: int, b: int) -> tuple[int, int]:
    """An address in a double-quoted field on its line (a CSV cell: ``,"44/327, Goda Circle, Bathinda",``)
    is the whole field: the tagger, reading left to right, often starts it late."""
    line_start, line_end = line_bounds(text, a, b)
    lo, hi = text.rfind('"', line_start, a), text.find('"', b, line_end)
    if lo < 0 or hi < 0 or text.count('"', line_start, lo) % 2:  # an opening quote, not a closing one
        return a, b
    if (lo > line_start and text[lo - 1] not in ",;\t") or (hi + 1 < line_end and text[hi + 1] not in ",;\t"):
        return a, b  # quotes in prose: ``she said "I live at ..."``
    return lo + 1, hi


# Words that begin a street's name, in the languages of the data (lower case; ``ul.``: Polish ulica)
_STREET_WORD_BEFORE = re.compile(r"(?i)(?<!\w)" + _alternation("street_words_before")
                                 + r"(?:\s+(?:do|da|dos|das|de|del|dels|de la|della|delle|dei|di|du|des|d')?)?\s*$")
# (``Rua do ⟦Benformoso 112⟧``, ``C/ de ⟦Sant Pere Més Alt, 41⟧``: the street's word, then its particle)
# a word of an address just before the span: a capitalized or Korean word, or a house number (``12``, ``14a``, ``12-14``)
_ADDRESS_WORD_BEFORE = re.compile(r"(?<![^\s(])(?:[A-Z\u00c0-\u024f][\w'.-]*|[\uac00-\ud7a3]+|"
                                  r"\d{1,5}[A-Za-z]?(?:[-/]\d{1,4})?) $")
_FLAT_AFTER = re.compile(r"/\d{1,4}[a-zA-Z]?\b")
_NUMBER_POSTCODE_CITY_AFTER = re.compile(r"[ \t]+\d{1,4}[a-zA-Z]?(?:[/-]\d{1,4}[a-zA-Z]?)?,[ \t]*(?:[A-Z]{1,2}-)?\d{4,5}"
                                         r"[ \t]+[A-ZÀ-Ý][^\W\d_]+(?:[ -][A-ZÀ-Ý][^\W\d_]+){0,2}(?![\w-])")
_BRACKETED_POSTCODE_AFTER = re.compile(r"[ \t]*\(\d{5}\)")
_STREET_SUFFIX_AFTER = re.compile(" " + _alternation("street_suffixes_after") + r"\b")


_TRAILING_PARTICLE = re.compile(r"[ \t]+(?:van|von|de|da|di|del|della|der|den|ten|ter|du|dos|das|le|la)$")
_LOWER_WORD_AFTER = re.compile(r"[ \t]+[a-zß-ÿ]")  # the particle is the sentence's (``van hiernaast``)
_NEXT_LINE_WORD = re.compile(r"[ \t]*\n[ \t]*[^\W\d_]+$")


def _name_edges(text: str, a: int, b: int, japanese: bool) -> tuple[int, int]:
    """A name's own edges: not onto the next line's first word (``Ms. Pereira-Gault⟦\nDate⟧``; a span over several
    lines, as a high bias makes, is left whole), and, in a Japanese text, a name grown over its kanji."""
    if (m := _NEXT_LINE_WORD.search(text, a, b)) and m.start() > a:
        b = m.start()
    return _japanese_name(text, a, b) if japanese else (a, b)


def _name_field_edges(text: str, a: int, b: int) -> tuple[int, int]:
    """A name grown to its record's field, a surname written first or after it, a given name on a signature's line,
    less a particle the sentence goes on with (``⟦Hiskje van⟧ hiernaast``; rules 61)."""
    a, b = _name_cell(text, a, b)
    a = _surname_first(text, a, b)
    b = _surname_after(text, a, b)
    a = _given_name_before(text, a, b)
    if (m := _TRAILING_PARTICLE.search(text, a, b)) and m.start() > a and _LOWER_WORD_AFTER.match(text, b):
        b = m.start()
    return a, b


def _japanese_name(text: str, a: int, b: int) -> tuple[int, int]:
    """A Japanese name the tagger cut (``渡会 千⟦晶⟧様``, ``の鷲見 ⟦俊介⟧です``): grown to its run of kanji when the run
    is short (a name's; Chinese prose runs on), less an honorific after it, then over a short surname a space before it.
    Japanese texts only (kana in them): a Chinese name's neighbours are often words (``感谢 小王``, ``陈师傅``)."""
    if not all(_kanji(c) for c in text[a:b]):
        return a, b
    lo, hi = a, b
    while lo > 0 and _kanji(text[lo - 1]):
        lo -= 1
    while hi < len(text) and _kanji(text[hi]) and not any(text.startswith(h, hi) for h in _HONORIFICS_AFTER):
        hi += 1
    if hi - lo > 4 or (lo > 0 and text[lo - 1].isalnum() and not _kana(text[lo - 1])) or \
            (hi < len(text) and text[hi].isalnum() and not _kanji(text[hi]) and not _kana(text[hi])):
        return a, b
    if lo >= 3 and text[lo - 1] == " " and _kanji(text[lo - 2]) and _kanji(text[lo - 3]):
        k = lo - 3
        while k > 0 and _kanji(text[k - 1]):
            k -= 1
        if lo - 1 - k <= 3 and (k == 0 or not text[k - 1].isalnum() or _hiragana(text[k - 1])):
            lo = k  # a surname of two or three kanji after a particle or a line's start (``の鷲見 ⟦俊介⟧``), not a word
    return lo, hi


def _kanji(c: str) -> bool:
    return "\u4e00" <= c <= "\u9fff"


def _kana(c: str) -> bool:
    return "\u3040" <= c <= "\u30ff"


def _hiragana(c: str) -> bool:
    return "\u3040" <= c <= "\u309f"


def _address_edges(text: str, a: int, b: int) -> tuple[int, int]:
    """An address the tagger starts late or ends early is grown on its line: back over CJK characters (to
    the prefecture), the postal mark ``〒``, a street word (``Via``, ``Calle``, ``ul.``), and, when the span
    holds a number, up to three capitalized or Korean words or a house number (``Bergens ⟦Allé 214``), stopping
    at a field label; on to a street suffix just after a street's name (``14 Marchmont⟧ Crescent``)."""
    line_start, line_end = line_bounds(text, a, b)
    if any(spaceless(c) for c in text[a:b]) and text.count(",", line_start, line_end) >= 3:
        cell_start, cell_end = text.rfind(",", line_start, a) + 1, text.find(",", b, line_end)
        cell_start = max(cell_start, line_start)
        cell_end = line_end if cell_end < 0 else cell_end
        if cell_end - cell_start <= 64 and not any(c in _QUOTES for c in text[cell_start:cell_end]):
            return cell_start, cell_end  # a CJK address in a CSV cell is the whole cell (上海市...⟧汇智大厦17楼,)
    while a > line_start and spaceless(text[a - 1]) and text[a - 1].isalnum():
        a -= 1  # 福島⟦県横浜市...⟧: a CJK address starts at its prefecture
    if a > line_start and text[a - 1] == "〒":
        a -= 1
    if m := _STREET_WORD_BEFORE.search(text, max(line_start, a - 16), a):
        a = m.start()
    for _ in range(3 if any(c.isdigit() for c in text[a:b]) else 0):  # 25 Hilton ⟦Forges, DA1 7DU⟧; not New ⟦Elaineshire⟧
        if text[a].isdigit() or not (m := _ADDRESS_WORD_BEFORE.search(text, max(line_start, a - 32), a)):
            break
        if m.group().strip().lower().rstrip(".:") in FIELD_LABELS:
            break
        a = m.start()
    if text[b - 1].isalpha() and (m := _STREET_SUFFIX_AFTER.match(text, b)):
        b = m.end()
    if text[b - 1].isalpha() and (m := _NUMBER_POSTCODE_CITY_AFTER.match(text, b)):
        b = m.end()  # ``⟦Via dei Cordai⟧ 14, 16123 Genova``: the street's number, its postcode and city (rules 59)
    if m := _BRACKETED_POSTCODE_AFTER.match(text, b):
        b = m.end()  # ``..., 1104동 1502호⟧ (13590)``: a Korean address's postcode after it
    if text[b - 1].isdigit() and (m := _FLAT_AFTER.match(text, b)):
        b = m.end()  # ``ul. Słowackiego 24⟧/7``: the flat's number after the house's
    if m := _CITY_BEFORE.search(text, max(line_start, a - 32), a):
        a = m.start()
    if _POSTCODE_END.search(text, a, b) and any(c.isalpha() for c in text[a:b]) and (m := _CITY_AFTER.match(text, b)):
        b = m.end()
    return a, b


_JAPANESE_ERAS = _words("japanese_eras")  # a year of a Japanese date is written after its era
# the rest of a date the tagger cut: its day before a month.year (``14.⟦09.1992⟧``), a Japanese date's year (and era)
# before its month (``平成元年⟦11月30⟧日``), the day's mark after it; a Russian ``г.р.`` (year of birth) is no part of it
_DAY_NUMBER_BEFORE = re.compile(r"(?<![\w.:/-])\d{1,2}[./-]$")
_MONTH_YEAR = re.compile(r"\d{1,2}[./-]\d{2,4}\b")
_YEAR_BEFORE = re.compile("(?:" + "|".join(_JAPANESE_ERAS) + r")?(?:\d{1,4}|元)年\s?$|\d{4}년\s?$")
_YEAR_OF_BIRTH_AFTER = re.compile(r"\s+г\.?\s?р\.?$")
# a Korean sentence's ending the tagger took with a number or an address (it is, please: 입니다, 예요, 이에요, 로, 요),
# and an address's label with its particle before it (``현재 주소는``: the current address is)
_KOREAN_ENDING = re.compile(r"(?<=[\d호동층])(?:입니다|이에요|예요|이요|으로|로|요)$")
# a form's code or an address's own label, with its colon (not a chat's speaker: ``Anna: ...`` may start a span)
_LABEL_IN_ADDRESS = re.compile(r"(?:[^\W\d_]{0,4}\d[\w-]{0,8}|(?i:address|adres|adresse|anschrift|dirección|direccion|"
                               r"indirizzo|endereço|endereco|adresa|адрес|domicilio|wohnort))[:：][ \t]+(?=\d|[^\W\d_])")
_KOREAN_ADDRESS_LABEL = re.compile(r"(?:현재[ \t]+)?(?:주소|거주지|배송지|배송 주소|집 주소)(?:는|은|:)?[ \t]+")
# a password's label right before a value the tagger took for a login (``password ⟦plumtree-otter-47⟧``)
_PASSWORD_LABEL_BEFORE = re.compile(r"(?i)\b(?:password|passwort|kennwort|contraseña|mot de passe|senha|wachtwoord|"
                                    r"hasło|lösenord|passord|salasana|пароль|パスワード|密码|비밀번호)[ \t]*(?:is|ist|:|=)?[ \t]*$")
# a direct line's extension after the number (``514-555-0173 poste 22``, ``ext. 4411``, ``内線 123``)
_EXTENSION_AFTER = re.compile(r"(?i)[ \t]*,?[ \t]*(?:ext\.?|extension|x|poste|durchwahl|ramal|interno|wew\.|内線|分機|내선)"
                              r"[ \t]*:?[ \t]*\d{1,5}(?!\d)")
# a city written before a Russian street (``г. Москва, ⟦ul. ...⟧``) and a city after a postcode the address ends
# with (``lgh 1102, 113 58⟧ Stockholm``)
_CITY_BEFORE = re.compile(r"(?:г\.|гор\.|город)\s?[А-ЯЁ][а-яё-]+(?:[ -][А-ЯЁ][а-яё-]+)?,\s*$")
_POSTCODE_END = re.compile(r"(?<![\w-])(?:\d{3} \d{2}|\d{4,5})$")
_CITY_AFTER = re.compile(r" [A-ZÀ-Ý][^\W\d_]+(?:[ -][A-ZÀ-Ý][^\W\d_]+){0,2}(?=[ \t]*(?:$|[,;)\n]))", re.M)
_DIGIT_GROUP_BEFORE = re.compile(r"(?<![\w.,/:-])\d{4} $")  # a card or ID number's first group of four, one space before
_DAY_BEFORE = re.compile(r"(?<![\w.:])\d{1,2}(?:st|nd|rd|th|\.)? $")  # ``4th ⟦April 1990⟧``: the day is the date's

_NINO_HEAD = re.compile(r"[A-Z]{2} ?\d{2} ?\d{2} ?\d{2}")
_NINO_LETTER_AFTER = re.compile(r" ?[A-Z](?!\w)")  # A-D by the rules; generators write any letter
_TRAILING_ASIDE = re.compile(r"\s*\([^()]*\)$")  # ``1990년 7월 3일 (양력)``: a note after the date


def _date_edges(text: str, a: int, b: int) -> tuple[int, int]:
    """A birth date the tagger cut, made whole: ``_DAY_NUMBER_BEFORE``, ``_YEAR_BEFORE``, the day's mark after
    it (日, 일), without a trailing ``г.р.``."""
    if (m := _YEAR_OF_BIRTH_AFTER.search(text, a, b) or _TRAILING_ASIDE.search(text, a, b)) and m.start() > a:
        b = m.start()
    month_mark = "月" in text[a:b] or "월" in text[a:b]  # a CJK date
    if _MONTH_YEAR.match(text, a) and (m := _DAY_NUMBER_BEFORE.search(text, max(0, a - 4), a)):
        a = m.start()
    elif month_mark and text[a:a + 1].isdigit() and (m := _YEAR_BEFORE.search(text, max(0, a - 8), a)):
        a = m.start()
    if month_mark and text[b - 1:b].isdigit() and text[b:b + 1] in ("日", "일"):
        b += 1
    return a, b


# a house number, an age or a postcode alone (``Oudegracht ⟦120⟧``, ``Whitlock, ⟦81⟧``, ``⟦1017 BZ⟧``), once the
# pieces are joined: no postal address
_NUMBER_ONLY_ADDRESS = re.compile(r"\d{1,5}(?: ?[A-Z]{2})?")
_PIECE_GAPS = {"NAME": (" ",), "ADDRESS": (" ", ", ")}
# the lines between two pieces of an address written over several lines (``17 Hawthorn Close⟧ / Chesterton /
# Cambridge / ⟦CB4 1XR``): at most two lines, each a place's name of up to three capitalized words
_ADDRESS_LINES_GAP = re.compile(r",?[ \t]*\n(?:[ \t]*[A-Z\u00c0-\u024f][^\W\d_]+(?:[ -][A-Z\u00c0-\u024f][^\W\d_]+){0,2}"
                                r"[ \t]*,?[ \t]*\n){0,2}[ \t]*")


_POSTCODE_CITY = re.compile(r"\d{4,5}\s+[A-ZÀ-Ý][^\W\d_]+(?:[ -][A-ZÀ-Ý][^\W\d_]+){0,2}")
_LAST_FIRST_LABEL = re.compile(r"(?i)(?:last|sur|family)(?:[ _-]?name)?,\s*first|nachname,\s*vorname|apellidos?,\s*nombre|"
                               r"nom,\s*pr[ée]nom|cognome,\s*nome|achternaam,\s*voornaam|nazwisko,\s*imi[eę]")


_FIELD_START = re.compile(r'(?:^|[|;\t"])[ \t]*$')  # a cell's or a quote's start
_FIELD_END = re.compile(r'[ \t]*(?:$|[|;\t"<(\n])')  # a cell's end, a quote's, a mailbox or a role after it
_LABEL_START = re.compile(r'\w:[ \t]*$')  # ``Author:``, ``An:``: a display name when a mailbox follows
_MAILBOX_NEXT = re.compile(r'[ \t]*<')


def _last_first(text: str, a: int, b: int) -> bool:
    """``"Okonkwo, Ifeoma"``, ``| Brandvold, Kjersti |``, ``Author: OGUNLEYE-BAKER, Temitope <t.o@...>``, or a
    name after a ``Last, First`` label: one person written surname first (a whole field, a mailbox's display
    name), not people listed (``Attendees: Okonkwo, Ifeoma``; ``Ahmad bin Yusof, D'Cruz, Anselm``)."""
    line_start, line_end = line_bounds(text, a, b)
    whole_field = bool(_FIELD_START.search(text, line_start, a)) and bool(_FIELD_END.match(text, b))
    display_name = bool(_LABEL_START.search(text, line_start, a)) and bool(_MAILBOX_NEXT.match(text, b))
    return whole_field or display_name or bool(_LAST_FIRST_LABEL.search(text, line_start, a))


def _join_pieces(text: str, spans: list[Span]) -> list[Span]:
    """NAME or ADDRESS spans one space (an address: or a comma, or the lines of place names between its
    lines) apart, or overlapping once grown, are one value (``⟦Elisa⟧ ⟦Zechner⟧``, ``⟦44/327⟧, ⟦Goda Circle,
    Bathinda⟧``): the rules make a full name and a whole address one span."""
    out: list[Span] = []
    for s in sorted(spans, key=lambda s: (s.start, s.end)):
        prev = out[-1] if out else None
        gap = text[prev.end:s.start] if prev else ""
        title = prev is not None and s.type == "NAME" and gap == ". " and text[prev.start:prev.end] in _TITLES
        lines = prev is not None and s.type == "ADDRESS" and bool(_ADDRESS_LINES_GAP.fullmatch(gap))
        last_first = prev is not None and s.type == "NAME" and gap == ", " and _last_first(text, prev.start, s.end)
        if prev and prev.type == s.type and s.type in _PIECE_GAPS \
                and (s.start <= prev.end or gap in _PIECE_GAPS[s.type] or title or lines or last_first):
            out[-1] = Span(prev.start, max(prev.end, s.end), s.type, max(prev.score, s.score), prev.source)
        else:
            out.append(s)
    return out


def _whole_letters(text: str, a: int, b: int) -> tuple[int, int]:
    """A span never splits a letter from its combining marks (Yoruba ``ọ̀``, Devanagari vowel signs, Lao tone marks):
    a model's token offsets may end between them, which left the mark in the output between two placeholders and
    cut one name in two (``⟦Ayọ⟧̀⟦kúnlé⟧``); grown over the marks, the pieces touch and ``_join_pieces`` makes them one."""
    while b < len(text) and unicodedata.category(text[b]).startswith("M"):
        b += 1
    while 0 < a < b and unicodedata.category(text[a]).startswith("M"):
        a -= 1
    return a, b


def conform(text: str, spans: list[Span]) -> list[Span]:
    """``spans`` trimmed to their values and without those the rules say are never personal data."""
    out = []
    names = any(s.type == "NAME" for s in spans)
    bots = bot_names(text) if names else frozenset()
    japanese = names and any(_kana(c) for c in text)  # read once per text, not once per name
    for s in spans:
        a, b = _credential_edges(text, s.start, s.end, s.type)
        da, db = _strip(text[a:b], s.type)
        a, b = _whole_letters(text, a + da, a + db)
        if a >= b:
            continue
        if s.type in ("NAME", "USERNAME") and (m := _TRAILING_NUMBER.search(text, a, b)) and m.start() > a:
            b = m.start()
        if s.type == "USERNAME" and text.startswith("=", b) and (m := _TRAILING_KEY.search(text, a, b)) and m.start() > a:
            b = m.start()  # ``⟦qfreitas uid⟧=153``: the login, then the next field's key
        if s.type == "USERNAME" and (m := _TERMINAL_AFTER.search(text, a, b)) and m.start() > a:
            b = m.start()  # ``⟦akowalcz pts⟧/1`` (``w``, ``last``): the login, then its terminal
        if s.type == "PHONE" and (m := _PHONE_WORD_BEFORE.match(text, a, b)) and m.end() < b:
            a = m.end()  # ``⟦mob 07700 958 431⟧``: the label is not the number (any other word stays: it may be a name)
        if s.type == "NAME" and (text[a:b] in _HONORIFICS or text[a:b] in _HONORIFICS_AFTER):
            continue  # before it grows into the name after it; a title after a name, alone (``⟦さん⟧``), is none
        if s.type == "NAME":
            a, b = _name_edges(text, a, b, japanese)
            if text[a:b] in bots:
                continue  # the text names a bot so (``Chat with Ava (virtual assistant)``), on every line (rules 54)
            a, b = _name_field_edges(text, a, b)
        if s.type == "PHONE" and (m := _KOREAN_ENDING.search(text, a, b)) and m.start() > a:
            b = m.start()  # ``010-2759-6483⟦입니다⟧``: the sentence's ending, not the number
        if s.type == "PHONE" and (m := _EXTENSION_AFTER.match(text, b)):
            b = m.end()
        if s.type == "ADDRESS":
            a, b = _address_edges(text, *_quoted_field(text, a, b))
            if (m := _LABEL_IN_ADDRESS.match(text, a, b)) and m.end() < b:
                a = m.end()  # ``⟦P45: 14 Ballindean Crescent, ...⟧``: a label's colon, then the address (rules 56)
            if (m := _KOREAN_ADDRESS_LABEL.match(text, a, b)) and m.end() < b:
                a = m.end()  # ``⟦현재 주소는⟧ 서울특별시 ...``: the label and its particle, not the address
            if (m := _KOREAN_ENDING.search(text, a, b)) and m.start() > a:
                b = m.start()  # ``..., 201호⟦예요⟧``
            if b - a > 1 and text[b - 1] == "." and (m := _LAST_WORD.search(text, a, b - 1)) \
                    and len(m.group()) >= 5 and m.group().lower() not in ADDRESS_ABBREVIATIONS:
                b -= 1  # ``..., 46252 Ferrand⟧.``: the sentence's full stop (``Main St.``, ``Jal.`` keep their own)
        if s.type == "DATE_OF_BIRTH" and text[max(0, a - 2):a] in _JAPANESE_ERAS:
            a -= 2  # ⟦平成⟧8年2月29日: the era is part of the year
        if s.type == "DATE_OF_BIRTH" and text.endswith("日生", a, b):
            b -= 1  # 2月29日⟦生⟧: "born" after the date is not part of it
        if s.type == "DATE_OF_BIRTH" and text[a:a + 1].isalpha() and (m := _DAY_BEFORE.search(text, max(0, a - 6), a)):
            a = m.start()
        if s.type == "DATE_OF_BIRTH":
            a, b = _date_edges(text, a, b)
        if (m := _NINO_LETTER_AFTER.match(text, b)) and _NINO_HEAD.fullmatch(text, a, b):
            b = m.end()  # ``⟦ZZ 162330⟧ T``: a UK National Insurance number ends in its letter (whatever it was typed)
        if s.type == "SSN" and (m := ID_LABEL_HEAD.match(text, a, b)) and m.end() < b:
            a = m.end()  # ``⟦PESEL 88050314575⟧``: the label is not the number
        if s.type == "IP_ADDRESS":
            if m := _IPV4_PORT.fullmatch(text, a, b):
                b = m.end(1)
            elif (port := ipv6_port(text[a:b])) is not None:
                b = a + port
        if s.type in ("CREDIT_CARD", "SSN") and re.match(r"\d{4} ", text[a:b]) \
                and (m := _DIGIT_GROUP_BEFORE.search(text, max(0, a - 6), a)):
            a = m.start()  # 0891 ⟦2234 5560 1177⟧: a number's first group, missed
        ptype = retyped(text, a, b, s.type)
        if ptype == "PHONE" and _POSTCODE_CITY.fullmatch(text, a, b):
            ptype = "ADDRESS"  # ``⟦08003 Barcelona⟧``: an address's last line, no phone has a city in it
        if ptype == "USERNAME" and _PASSWORD_LABEL_BEFORE.search(text, max(0, a - 24), a):
            ptype = "PASSWORD"  # ``network is SEDGEMOOR-5G, password ⟦plumtree-otter-47⟧``: the label says what it is
        if ptype == "EMAIL" and "@" not in text[a:b] and not HOSTNAME.fullmatch(text[a:b]):
            ptype = "USERNAME"  # ``user is still ⟦t.wroblewski⟧``: an address without its @ is a login
        if ptype is None:
            continue
        s = Span(a, b, ptype, s.score, s.source)
        if not never_personal(text, s):
            out.append(s)
    return [s for s in _join_pieces(text, out) if not (s.type == "ADDRESS" and _NUMBER_ONLY_ADDRESS.fullmatch(text[s.start:s.end]))]
