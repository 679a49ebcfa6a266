"""Any finder's spans made to follow the annotation rules (``datasets/pii-handwritten/RULES.md``).

Why a separate step: a tagger's spans are whole tokens, and a token can carry a quote, a bracket or
a comma with the value (``'(428)688-4747`` in a SQL row, ``alice@example.com,`` in a CSV). The rules
say a span is the value only. They also say what is never personal data however it looks: role
mailboxes of an organisation (``security@``, ``no-reply@``), loopback and unspecified addresses, CIDR
ranges, generic system accounts. The model learns these from data, but a rule that can be checked
is checked here, for the model's spans and the patterns' alike, so neither depends on having seen
that context in training.
"""

from __future__ import annotations

import ipaddress
import re

from loraforge.data.pii_tags import spaceless
from loraforge.eval.pii_baseline import EMAIL, TOKEN
from loraforge.eval.pii_baseline import iban_ok as rules_iban_ok
from loraforge.pii.patterns import DOTTED_NUMBER, PERSONAL_NUMBER_KEY, card_number_ok, national_id_ok, service_number
from loraforge.pii.spans import Span
from loraforge.pii.wordlists import alternation as _alternation
from loraforge.pii.wordlists import words as _words


# local parts of mailboxes that belong to an organisation, not a person (RULES.md: EMAIL)
ROLE_MAILBOXES = frozenset(_words("role_mailboxes"))
# a role word as one part of a hyphenated local part: accounts-payable@, logistics-ops@, sales-emea@
_ROLE_PARTS = ROLE_MAILBOXES - set(_words("role_mailboxes_not_as_parts"))
_MAILING_LIST = re.compile(r"(?i)@(?:lists?|groups|googlegroups)\.|@users\.noreply\.")
# <...@mail.gmail.com> names a message (also the tail of one: ``message-id=<CAF3m+Kq8v2=J1xQ7hZ0pWcT@mail.gmail.com>``)
_MESSAGE_ID_BEFORE = re.compile(r"(?i)(?:message[-_ ]?id|msgid)\s*[:=]\s*<?[^\s<>@]*$")
# a cloud's service account, not a person's address (``terraform-ci@acme-prod.iam.gserviceaccount.com``)
_SERVICE_ACCOUNT_DOMAIN = re.compile(r"(?i)@[\w.-]*\.(?:iam\.gserviceaccount\.com|svc\.id\.goog)$")
# a form's field label, not the name written in it (``Naam: Neha Gupta``, ``Requester: ...``)
FIELD_LABELS = frozenset(_words("field_labels"))
# an email's header words at a line's start (``An: buchhaltung@...``, ``Oggetto:``), not a name
EMAIL_HEADERS = frozenset(_words("email_headers"))
# the word of thanks that closes a letter (``Dhanyavaad,``), not a name
SIGN_OFFS = frozenset(_words("sign_offs"))
# generic system accounts and bots (RULES.md: USERNAME)
SYSTEM_ACCOUNTS = frozenset(_words("system_accounts"))
_BOT = re.compile(r"(?i)(?:^|[-_.])bot(?:\[bot\])?$|\[bot\]$|^bot[-_.]")
# chat words a tagger takes for a handle or a name (``hey r u coming``); lower case only: ``Ty`` is a name
CHAT_WORDS = frozenset(_words("chat_words"))
# placeholders, not secrets or logins (RULES.md: PASSWORD): template variables, changeme, masks
_PLACEHOLDER_VALUE = re.compile(r"(?i)\$\{[^}]*\}|\$\([^)]*\)|(?-i:\$[A-Z_][A-Z0-9_]*)|\{\{.*\}\}|<[^<>]+>|%\([^)]*\)s|"
                                r"user(?:name)?|pass(?:word)?|"  # the word itself: ``postgres://USER:PASS@HOST``
                                r"\*+|change-?me|changeit|"
                                r"\w*your[_-]\w*|[a-z]{2,5}_(?:test|live)_")  # sk_test_your_key_here; a key's prefix (``ph_test_``)
# a company's legal form: a NAME ending in one is a company, an ADDRESS right after one is its premises (RULES.md)
LEGAL_FORM = _alternation("legal_forms")
_COMPANY_NAME = re.compile(r".+\s" + LEGAL_FORM + r"\.?")
_COMPANY_BEFORE = re.compile(r"\b" + LEGAL_FORM + r"\.?\s*[,·|–—-]\s*$")
# the identifier of a request, an event, an account or an organisation is not a secret (``"request_id":"req_01HZ..."``),
# nor is a key's public fingerprint (``SHA256:Xq2b...``)
_ID_KEY_BEFORE = re.compile(r"(?i)(?:\b|_)(?:request|trace|span|event|correlation|transaction|message|chat|org|tenant|"
                            r"account|customer|order|job|run|build|bic|swift|existing[ _-]?secret|secret[ _-]?name)(?:[ _-]?(?:id|code))?[\"']?\s*[:=]?\s*[\"']?$|"
                            r"(?<![\w-])(?:id|uid|uuid|guid)[\"'`]?\s*[:=]?\s*[\"'`]?$|"  # a bare ``"id": "usr_01J7..."``
                            r"\b(?:SHA256|SHA1|MD5):$")

_QUOTES = "\"'`‘’“”«»「」『』【】"  # never the first or last character of a value
_PUNCT_BEFORE = ",;:"  # nor punctuation
_PAIRS = {"(": ")", "[": "]", "{": "}", "<": ">"}  # off when unmatched inside the value, or around all of it
_SENTENCE_END = ".!?。！？"  # ends a sentence, not a value of a structured type
_CONNECTOR_AFTER = re.compile(r"\s+(?:and|or|und|oder|et|ou|y|o|e|en|i|oraz)$")  # "and" after an address: prose goes on
_NO_TRAILING_DOT = {"EMAIL", "PHONE", "IP_ADDRESS", "CREDIT_CARD", "IBAN", "SSN", "DATE_OF_BIRTH", "USERNAME"}
_RANGE_AFTER = re.compile(r"(?:[0-9a-fA-F]*::?)*/\d{1,3}\b")  # an address (or its first groups) then /n: a CIDR range
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
_HONORIFICS = frozenset(_words("honorifics_before"))  # one alone is no name (``⟦pan⟧ ⟦Zbigniew Kaczmarek⟧``)
# a greeting before a name in a chat or a letter (``Hi ⟦Dorota⟧``, ``Hoi ⟦Joost⟧``)
_GREETING_BEFORE = re.compile("(?i)" + _alternation("greetings_before") + r"\s+")
_POSSESSIVE = re.compile(r"['’]s$")  # ``⟦Mr. Reid⟧'s shifts``
_INTRO_BEFORE = re.compile(_alternation("introductions_before") + r"\s*")  # "my name is"
_HONORIFIC_AFTER = re.compile(r"\s*" + _alternation("honorifics_after") + "$")
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
    closing = {c: o for o, c in _PAIRS.items()}
    changed = True
    while changed and a < b:
        changed = False
        first, last = value[a], value[b - 1]
        if first in _PAIRS and b - a > 1 and last == _PAIRS[first]:  # [John] -> John
            a, b, changed = a + 1, b - 1, True
        elif first in _QUOTES or first in punct or first.isspace() or (first in _PAIRS and _PAIRS[first] not in value[a:b]):
            a, changed = a + 1, True
        elif (last in _QUOTES or last in punct or last.isspace() or (last in _PAIRS and b - a > 1)
              or (last in closing and closing[last] not in value[a:b - 1])
              or (last in _SENTENCE_END and ptype in _NO_TRAILING_DOT)):
            b, changed = b - 1, True
    return a, b


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
    return a, b


def line_bounds(text: str, a: int, b: int) -> tuple[int, int]:
    """Start and end of the line that holds ``text[a:b]`` (where every field rule's search stops)."""
    end = text.find("\n", b)
    return text.rfind("\n", 0, a) + 1, len(text) if end < 0 else end


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
    if (m := _HONORIFIC_BEFORE.match(text, lo) or _INTRO_BEFORE.match(text, lo) or _GREETING_BEFORE.match(text, lo)) \
            and m.end() <= a:
        lo = m.end()  # Frau, 我叫, Hi stay outside, as _strip left them
    if (m := _HONORIFIC_AFTER.search(text, b, hi)) and m.start() >= b:
        hi = m.start()  # 様, 님 stay outside too
    if (lo, hi) == (a, b):
        return a, b
    added = text[lo:a] + text[b:hi]
    if added.strip() and all(spaceless(c) or c.isspace() for c in added):
        return (lo, hi) if len(text[lo:hi].replace(" ", "")) <= _SPACELESS_NAME else (a, b)
    words = (text[lo:a] + " " + text[b:hi]).split()
    if len(text[lo:hi].split()) > 4 or not all(_NAME_WORD.fullmatch(w) and w[0].isupper() for w in words):
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
_HONORIFICS_AFTER = frozenset(_words("honorifics_after"))  # ``⟦Nermin⟧ Hanım``: the title after a name is no surname
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
_STREET_SUFFIX_AFTER = re.compile(" " + _alternation("street_suffixes_after") + r"\b")


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


# the label before a number on its line says which number it is (as Presidio's context words do)
_ID_LABEL = re.compile(r"(?i:\b(?:ssn|social security|national id|id (?:number|no\.?|card)|identity (?:number|card)|"
                       r"passport|tax id|pesel|codice fiscale|steuer-?id|steuernummer|insurance id|member id|"
                       r"personnummer|henkilötunnus|aadhaar|medicare|medicaid|national insurance|"
                       r"s[ée]curit[ée] sociale|seguridad social|sozialversicherung\w*|codice sanitario|carteirinha|"
                       r"fødselsnummer|personnummer|emirates id|pps(?: number)?|medicare card)\b)|"
                       r"\b(?:CPF|DNI|NIE|NIF|NHS|AHV|BSN|TIN|NIR|NINO|SIN|PAN|RRN|TFN|NIP|AMKA|CCCD|CMND|CURP|RFC|INN|SNILS)\b|"
                       r"ΑΜΚΑ|ΑΦΜ|ИНН|СНИЛС|паспорт|رقم الهوية|"  # acronyms: upper case
                       r"身份证|身分證|マイナンバー|주민등록번호")  # (Polish "nie", "dni" are words)
_ID_LABEL_HEAD = re.compile(r"(?:" + _ID_LABEL.pattern + r")[ \t]*[:#]?[ \t]*(?=\d)")
_PHONE_LABEL = re.compile(r"(?i)\b(?:phone|tel|telephone|mobile|cell|fax|telefon|teléfono|téléphone|telefone|celular|"
                          r"handy|cellulare|telefoon)\b|电话|手机|電話|携帯|전화|휴대폰")
_CARD_LABEL = re.compile(r"(?i)\b(?:card|karte|tarjeta|carte|cartão|carta|kaart)\b|卡号|信用卡|カード|카드")
_BIRTH_LABEL = re.compile(r"(?i)\b(?:dob|d\.o\.b|born|birth|birthday|geb|geboren|née?|nacid[oa]|nat[oa]|nascimento|"
                          r"nascita|urodzon[ya])\b|生年月日|出生|誕生|생년월일")
# the number of an order, ticket, parcel, medical record or meter (RULES.md: PHONE, not this)
_REFERENCE_LABEL = re.compile(r"(?i:(?<![^\W_])(?:order|ticket|invoice|tracking|booking|case|reference|ref|receipt|shipment|parcel|claim|"
                              r"bestellung|auftrag|rechnung|pedido|factura|commande|facture|ordine|fattura|zamówienie|"
                              r"faktura|bestelling|factuur|employee (?:id|no\.?|number)|staff (?:id|no\.?|number)|"
                              r"company (?:no\.?|number)|registration (?:no\.?|number)|(?:england|wales|scotland) (?:no\.?|number)|"
                              r"UTR|arn|personalnummer|personal-?nr\.?|mitarbeiternummer|medical record|record (?:no\.?|number)|"
                              r"prontuário|meter|contador|zähler|compteur|seguimiento|env[ií]o|werkorder|"
                              r"fakturanummer|nr seryjny|serial (?:no\.?|number)|protocolo|copyright|takip|ocr-nummer|meeting id|"
                              r"zählernummer|kundennr\.?|kundennummer|beleg(?:-?nr\.?|nummer)?|reserva|localizador|reservation|"
                              r"reservierung|réservation|prenotazione|rezerwacja|beställning|order(?:nummer|bekräftelse)|"
                              r"bestellnummer|auftragsnummer|numer klienta|nr klienta|vertrags(?:konto|nummer)|merchant id|"
                              r"txn|transaction|transaktion|dossier|account (?:no\.?|number)|error_page|"
                              r"vat(?: no\.?| number)?|ust-?id(?:nr)?)(?![^\W_])|"
                              r"account[ _-]?id\b)|"
                              # a carrier's name, a product's or a company's code (registration numbers: RULES.md does
                              # not annotate them): their numbers follow (case as written: ``Iva`` is a name)
                              r"\b(?:FedEx|UPS|DHL|USPS|SEUR|KRS|SIRET|SIREN|REGON|PO|CEP|BTW|TVA|IVA|KvK|KVK|Mersis|CIN|FINESS|IFSC|HRB|HRA|"
                              r"EORI|DUNS|LEI|CIF|КПП|ОГРН(?:ИП)?)\b|"
                              r"订单|注文|사번|社員番号|工号|工单|运单|单号|账号|伝票番号|送り状番号|운송장번호|예약번호|주문번호|"
                              r"法人番号|取引番号|会议号|رقم الطلب|رقم الحجز|رقم التذكرة|केस संख्या|खाता संख्या|लेन-देन आईडी|\bRCS\b")
# an organisation's line, not a person's (RULES.md: PHONE): a switchboard, a reception, customer service
_LONGEST_FIRST = sorted(_words("organisation_phone_labels"), key=len, reverse=True)
_ORGANISATION_PHONE_LABEL = re.compile(
    r"(?i)(?<![^\W\d_])(?:" + "|".join(re.escape(w) for w in _LONGEST_FIRST if not any(spaceless(c) for c in w))
    + r")(?![^\W\d_])|" + "|".join(re.escape(w) for w in _LONGEST_FIRST if any(spaceless(c) for c in w)))
ORGANISATION_PHONE_LABEL = _ORGANISATION_PHONE_LABEL  # also read on a phone's whole line (organisations)
# a product's code: never a card, whatever its checksum (an EAN-13 passes the Luhn check one time in ten)
_PRODUCT_CODE_LABEL = re.compile(r"\b(?:EAN|GTIN|UPC|ISBN|JAN)\b|(?i:\b(?:barcode|barkod|código de barras)\b)")
_DATE_SHAPE = re.compile(r"\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}")
_LABEL_WINDOW = 24
_LABELLED_TYPES = {"PHONE", "SSN", "CREDIT_CARD"}
# None, CODE: a reference, a product's code; ORGANISATION: an organisation's phone line (before PHONE: ``客服电话``
# ends where its ``电话`` does, and the first of labels ending at one place wins)
# a meeting's ID has a phone's shape (``Zoom 921 4410 8821``, ``ID da reunião: 381 442 907 15``), and may pass an ID's check
_MEETING_LABEL = re.compile(r"(?i)\b(?:zoom|webex)\b|(?i:(?<![^\W_])(?:(?:besprechungs|konferenz|meeting)-id|"
                            r"id d[ae] reuni(?:ão|ón)|id de (?:la )?réunion)(?![^\W_]))")
_LABELS = (("SSN", _ID_LABEL), ("ORGANISATION", _ORGANISATION_PHONE_LABEL), ("MEETING", _MEETING_LABEL), ("PHONE", _PHONE_LABEL),
           ("CREDIT_CARD", _CARD_LABEL), ("DATE_OF_BIRTH", _BIRTH_LABEL), (None, _REFERENCE_LABEL), ("CODE", _PRODUCT_CODE_LABEL))


def _labelled_type(text: str, a: int, b: int, ptype: str) -> str | None:
    """A phone, ID or card number typed as the label right before it on its line says (``SSN / national
    ID: ⟦559 581 962⟧`` is an ID even if it looks like a phone number); the nearest label wins. A card
    label needs a number that passes the Luhn check, a birth label a date; after an order or ticket
    label the number is a reference (None: not personal data), after an organisation's (``Switchboard``) a phone
    is the organisation's (None too)."""
    if ptype != "IBAN" and ptype not in _LABELLED_TYPES:
        return ptype
    before = text[max(line_bounds(text, a, a)[0], a - _LABEL_WINDOW):a]
    if ptype == "IBAN":  # only a reference's label speaks for an IBAN-shaped value (``BTW NL862233451B01``: a VAT number)
        return None if _REFERENCE_LABEL.search(before) and not rules_iban_ok(text[a:b]) else ptype
    last = {label: max((m.end() for m in rx.finditer(before)), default=-1) for label, rx in _LABELS}
    label = max(last, key=last.get)
    if last[label] < 0:
        return ptype
    value = text[a:b]
    if label == "CODE" or (label in ("ORGANISATION", "MEETING") and ptype == "PHONE"):
        return None
    if label in ("ORGANISATION", "MEETING"):
        return ptype
    if label == "CREDIT_CARD" and not card_number_ok(value):
        return ptype  # "paid with card ⟦number⟧" only when the number is a card's
    if label == "DATE_OF_BIRTH" and not _DATE_SHAPE.fullmatch(value):
        return ptype
    if label is None and (card_number_ok(value) or national_id_ok(value)):
        return ptype  # a card number after "order" is still a card number, a national ID after "invoice" an ID
    return label


def _retyped(text: str, a: int, b: int, ptype: str) -> str | None:
    """An "IBAN" not shaped as one is an ID number; the type by the label; then a "card" that fails the Luhn
    check is an ID number (a card number passes it; an ID of the same shape one time in ten)."""
    if ptype == "IBAN" and not _IBAN_START.match(text, a) and sum(c.isdigit() for c in text[a:b]) >= 5:
        ptype = "SSN"  # an IBAN starts with a country and two digits: another ID (``BQRPR7712C``, a PAN), or a
        # reference its label names (``PAVG870923H41``; a parcel's ``JJD000390007711842031`` without one stays masked);
        # words typed IBAN keep that type (and their mask: an ID's test would drop them)
    ptype = _labelled_type(text, a, b, ptype)
    if ptype == "CREDIT_CARD" and len(re.sub(r"\D", "", text[a:b])) >= 12 and not card_number_ok(text[a:b]):
        return "SSN"
    return ptype


# a Kubernetes object's own name (``metadata:`` / ``name: regcred``), YAML or JSON: named by the API, not a person
_OBJECT_NAME_BEFORE = re.compile(r'(?:^|\n)[ \t]*metadata:[ \t]*\n[ \t]+name:[ \t]*["\']?$|"metadata"\s*:\s*\{\s*"name"\s*:\s*"$')
# a host, not a login (``"auths": {"ghcr.io": ...}``)
_HOSTNAME = re.compile(r"(?i)(?:[a-z0-9-]+\.)+(?:io|com|org|net|dev|cloud|local|internal|svc|app|ai|example|test|"
                       r"invalid|localhost|lan|corp|eu|de|uk|fr|es|it|nl|pl|jp|cn|kr|in|br|ch|at|se)(?::\d{1,5})?")
_MAC = re.compile(r"(?i)[0-9a-f]{2}(?:[:-][0-9a-f]{2}){5}")  # a network card's MAC address: not an IP (RULES.md)
# machine identifiers a tagger takes for an address: a hash or container ID, an image digest, a PCI slot,
# a duration (``47m``), localhost; a word typed IP_ADDRESS keeps its mask (it may be a name)
_NOT_IP = re.compile(r"(?i)(?=[0-9a-f]*\d)[0-9a-f]{6,}|(?:sha\d+|md5):[0-9a-f]+|[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.\d|"
                     r"\d+(?:ms|[smhd])|localhost(?::\d{1,5})?")
# a record's code: letters, a hyphen, digits (a customer or payment ID in a table), never a phone, card or ID number
_RECORD_CODE = re.compile(r"[A-Z]{1,5}-\d{3,8}")
_IMAGE_TAG = re.compile(r"[a-z][\w.-]*:\d+(?:\.\d+)*")  # name:version
_DIGITS_AND_DOTS = re.compile(r"[\d.]+")
# a code path (``com.acme.billing.InvoiceService.computeTax``): dotted, with a CamelCase or call-like part
_CODE_PATH = re.compile(r"[a-z][\w]*(?:\.[A-Za-z_]\w*){2,}")
# a date with a time of day is when something happened, not a birth (``[30/Sep/2023:23:56:46 +0000]``)
_TIME_AFTER = re.compile(r"(?::|T|,?\s)\d{1,2}:\d{2}")  # also a chat export's ``[12/6/24, 18:07]``


# a format, not a value: DD/MM/YYYY, XXX-XX-XXXX, **** (letters that stand for digits, in groups)
_FORMAT_MASK = re.compile(r"(?i)[xdmyn#*•_]+(?:[-/. ][xdmyn#*•_]+)*")
_BARE_NUMBER = re.compile(r"\d{1,6}(?:[.,]\d{1,2})?")  # an amount, a year, a count
_NUMBER_TYPES = ("PHONE", "SSN", "IBAN", "DATE_OF_BIRTH", "IP_ADDRESS", "CREDIT_CARD")


_IBAN_START = re.compile(r"[A-Z]{2}\d{2}")
_TWO_GROUP_DATE = re.compile(r"\d{1,2}\s?/\s?\d{2}")  # MM/YY: a card's expiry, not a birth date
_LETTERED_ID = re.compile(r"[A-Z]{5}\d{4}[A-Z]")  # an Indian PAN: ten characters, only four of them digits


def _implausible(value: str, ptype: str) -> bool:
    """A value that cannot be of its type nor of any other: a format where a number should be
    (``DD/MM/YYYY`` in a blank form, ``XXX-XX-XXXX`` in a masked CSV), or an amount or a year where
    a card number or an address should be (``3805.39``, ``2023``). Only such values are dropped: a
    value of the wrong type is still personal data, and masked under the type it was given."""
    if not any(c.isalnum() for c in value):
        return True  # punctuation alone (``/__`` of a blank date)
    if ptype in _NUMBER_TYPES and _FORMAT_MASK.fullmatch(value):
        return True
    if ptype in ("PHONE", "SSN") and sum(c.isdigit() for c in value) < 5 and not _LETTERED_ID.fullmatch(value):
        return True  # a status code, a count (``200``, ``550``): every phone or ID number is longer
    if ptype == "PHONE" and DOTTED_NUMBER.fullmatch(value) and sum(c.isdigit() for c in value) < 9:
        return True  # a version (``535.161.07``): a phone written with dots has at least nine digits
    if ptype == "DATE_OF_BIRTH" and (_TWO_GROUP_DATE.fullmatch(value) or (value.isdigit() and len(value) <= 2)):
        return True  # an expiry, an age (``満28歳``)
    return ptype in ("CREDIT_CARD", "IP_ADDRESS") and bool(_BARE_NUMBER.fullmatch(value))


def _ipv6_port(value: str) -> int | None:
    """Where the port starts when an IPv6 address is followed by ``:port`` without brackets (nine groups)."""
    if value.count(":") != 8 or "::" in value:
        return None
    head = value.rsplit(":", 1)[0]
    try:
        ipaddress.IPv6Address(head)
    except ValueError:
        return None
    return len(head)


# a syslog line's head: its time, its host, then the program that wrote it (``Apr 15 17:40:22 mail dovecot: ``)
_SYSLOG_PROGRAM = re.compile(r"(?:[A-Z][a-z]{2} +\d{1,2} \d\d:\d\d:\d\d|\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d\S*) \S+ "
                             r"([\w./-]+)(?:\[\d+\])?: ")
_PAM_MODULE = re.compile(r"pam_\w+")  # ``pam_unix(su:auth)``: a module, not an account
# a template placeholder in the text (``%(username)s``, ``${DB_PASSWORD}``, ``{{ .Values.x }}``): no piece of it is a value
_PLACEHOLDER_IN_TEXT = re.compile(r"%\([^)\n]*\)s|\$\{[^}\n]*\}|\{\{[^}\n]*\}\}")
# a version's key or word right before an IP-shaped number (``"driver":"8.36.3.0"``, ``upgrade from 10.27.13.24``,
# in the rules' languages too: ``sürüm 3.7.1.204``, ``v. 8.3.0.41``; an image's ``tag: "2.9.0.4"``, ``bumped to 4.18.0.6``)
# (one word may come between: ``Firmware atual: 1.4.0.22``), or a changelog's heading (``## [10.2.0.1] - 2024-05-14``)
_VERSION_BEFORE = re.compile(r"(?i)(?:(?:(?-i:\b[A-Z][A-Za-z]+/)|\bv\.?|\bversion|\bver\.?|\brelease|\bbuild|\bfirmware|\bkernel|"
                             r"\bdriver|\bupgraded? (?:from|to)|\bbumped to|\bversión|\bversão|\bversione|\bwersj[ai]|\bверси[яи]|"
                             r"\bsürüm(?:ü)?|\bsection|\babschnitt|\bsecci[oó]n|\bchapter|\bядр[оа])(?:\s+[^\W\d]+)?|"
                             r"最新版|版本由?|升级至|バージョン|버전|संस्करण|फ़र्मवेयर|إصدار|§|커널|カーネル|内核)"
                             r"[\"']?\s*[:=]?\s*[\"'（(]?v?$|^#{1,6}\s*\[?v?$|"
                             r"\btag[\"']?\s*[:=]\s*[\"']?v?$", re.M)  # ``tag:`` as a key (German ``Tag`` is a day)


def _log_process(text: str, span: Span, line_start: int) -> bool:
    """The program or the process ID of a log line (``mail ⟦dovecot⟧:``, ``su[⟦66873⟧]``, ``)<⟦75437⟧>``):
    a machine's, never a person's, whatever its type."""
    value, a, b = text[span.start:span.end], span.start, span.end
    if value.isdigit() and len(value) <= 7 and a >= 2 and text[a - 1] in "[<" \
            and text[b:b + 1] == _PAIRS[text[a - 1]] and (text[a - 2].isalnum() or text[a - 2] in ")_-"):
        return True
    m = _SYSLOG_PROGRAM.match(text, line_start)
    return bool(m) and m.start(1) <= a and b <= m.end(1)


# a machine's numbers in a log or a config: a ``key=`` whose key names no phone, ID or card (``ses=4294967295``,
# ``SET timestamp=1739439718``), a process's or a thread's ID (``[pid 1120:tid 140245110937472]``)
_MACHINE_KEY_BEFORE = re.compile(r"(?:\b([A-Za-z_][\w.-]*)=[\"']?|\b(?:pid|tid|ppid|uid|gid|auid|ses)[ =])$")
_GENERIC_KEYS = frozenset({"value", "val", "default", "text", "data", "content"})  # an HTML field's value="...": any number
_IMAGE_BEFORE = re.compile(r"/[\w.-]+:$")
_VERSION_SUFFIX_AFTER = re.compile(r"-[a-z]|\+[a-z0-9]")  # ``6.1.0.18-rt9``, ``1.2.3.4+build``: a version's suffix


def _machine_number(text: str, span: Span, value: str) -> bool:
    """A phone-, ID- or card-shaped number a machine wrote: the rest of a decimal or a time, or bare digits
    after a ``key=`` that names no person's number, a process's or a thread's ID."""
    if span.type not in ("PHONE", "SSN", "CREDIT_CARD"):
        return False
    if re.match(r"\d[.:]", text[max(0, span.start - 2):span.start]):
        return True  # right after a decimal's or a time's digits, the number goes on (``ps``: ``11.2 5120448 3671032``)
    if not value.isdigit():
        return False
    m = _MACHINE_KEY_BEFORE.search(text, max(0, span.start - 40), span.start)
    key = (m.group(1) or "") if m else ""
    return bool(m) and key.lower() not in _GENERIC_KEYS and not PERSONAL_NUMBER_KEY.search(key)


_LEGAL_FORM_AFTER = re.compile(r"\s+" + LEGAL_FORM + r"(?![\w/])")
_MAILBOX_AFTER = re.compile(r"\s*<(" + EMAIL.pattern + r")>")
_SENTINEL_DATES = frozenset({"1970-01-01", "1900-01-01", "0001-01-01", "1901-01-01", "01/01/1970", "01.01.1970"})
_OTHER_DATE_LABEL = re.compile(r"(?i)(?<![^\W\d_])(?:due|invoice date|issued|issue date|expiry|expires|valid until|"
                               r"vervaldatum|factuurdatum|rechnungsdatum|fällig(?:keit)?|lieferdatum|vencimiento|"
                               r"fecha de factura|échéance|date de facture|scadenza|data fattura|vencimento|"
                               r"termin płatności|data wystawienia|förfallodatum|fakturadatum)(?![^\W\d_])")
_SINGLE_DIGIT_GROUPS = re.compile(r"\d(?:[-. ]\d){5,}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_NUMBER_HEAD_BEFORE = re.compile(r"(?<![\d+])(\+?\d{1,4}[ .-])$")  # a number's first group, right before a span
_DIAL_IN_PIN_AFTER = re.compile(r"(?:\\?[,;]){1,3}\d{4,}#")  # pauses then a meeting PIN and #; ICS escapes commas


def _never_personal(text: str, span: Span) -> bool:
    value = text[span.start:span.end]
    if _machine_number(text, span, value):
        return True
    if _implausible(value, span.type) or _OBJECT_NAME_BEFORE.search(text, max(0, span.start - 80), span.start):
        return True
    line_start, line_end = line_bounds(text, span.start, span.end)
    if _log_process(text, span, line_start):
        return True
    placeholders = _PLACEHOLDER_IN_TEXT.finditer(text, line_start, line_end)
    if any(m.start() <= span.start and span.end <= m.end() for m in placeholders):
        return True
    if span.type == "DATE_OF_BIRTH" and _TIME_AFTER.match(text, span.end):
        return True
    if span.type in ("NAME", "USERNAME") and text.startswith("=", span.end) and not any(c.isspace() for c in value):
        return True  # a key (``tty=``, ``ruser=``), not its value
    if span.type in ("USERNAME", "PASSWORD") and text[max(0, span.start - 2):span.start] in (" -", "\t-"):
        return True  # a command's flags (``ss -tlnp``)
    if span.type == "PASSWORD" and len(value) < 3:
        return True  # a format verb, a chat word (``%s``, ``GG``): no secret is that short
    if span.type in ("SSN", "CREDIT_CARD", "PHONE") and _RECORD_CODE.fullmatch(value):
        return True  # a record's code in a table (``KH-20932``, ``PAY-55802``)
    if span.type == "EMAIL" and "@" not in value:
        return bool(_HOSTNAME.fullmatch(value))  # a host; any other word keeps its mask (retyped a login: conform)
    if span.type in ("NAME", "USERNAME") and (value in CHAT_WORDS or (len(value) == 1 and value.isascii())):
        return True
    if span.type in ("PASSWORD", "USERNAME") and _PLACEHOLDER_VALUE.fullmatch(value):
        return True
    if span.type == "PASSWORD" and _ID_KEY_BEFORE.search(text, max(0, span.start - 24), span.start):
        return not TOKEN.fullmatch(value)  # a well-known secret's shape is a secret under any key
    if span.type == "ADDRESS":  # a city or a place on its own is not a postal address, nor a company's premises
        lone_place = " " not in value and not any(c.isdigit() for c in value) and not any(spaceless(c) for c in value)
        return lone_place or bool(_COMPANY_BEFORE.search(text, max(line_start, span.start - 40), span.start))
    if span.type == "EMAIL":
        return role_mailbox(value) or bool(_MAILING_LIST.search(value)) or bool(_SERVICE_ACCOUNT_DOMAIN.search(value)) \
            or bool(_MESSAGE_ID_BEFORE.search(text, max(0, span.start - 48), span.start))
    if span.type == "NAME" and (value.lower().rstrip(".") in FIELD_LABELS or _COMPANY_NAME.fullmatch(value)
                                or value.lower() in SIGN_OFFS or _LEGAL_FORM_AFTER.match(text, span.end)):
        return True  # ``⟦Brunnhofer Präzisionstechnik⟧ GmbH``: a company's name, its legal form after it
    if span.type == "NAME" and (m := _MAILBOX_AFTER.match(text, span.end)) and role_mailbox(m.group(1)):
        return True  # ``MAIL_FROM="⟦Venuely Tickets⟧ <tickets@venuely.example>"``: a role mailbox's display name
    if span.type == "DATE_OF_BIRTH" and (value in _SENTINEL_DATES or (
            _OTHER_DATE_LABEL.search(text, max(line_start, span.start - _LABEL_WINDOW), span.start)
            and not _BIRTH_LABEL.search(text, max(line_start, span.start - _LABEL_WINDOW), span.start))):
        return True  # a default (``1970-01-01``), a due or invoice date
    if span.type == "IBAN" and value.startswith("RF"):
        return True  # an ISO 11649 creditor reference: an IBAN's check digits, no country (RULES.md: a reference)
    if span.type != "PASSWORD" and _UUID.fullmatch(value):
        return True  # RULES.md: UUIDs are not personal data (a secret may still have a UUID's shape)
    if span.type == "SSN" and len(value) == 10 and value.isdigit() and \
            "ИНН" in text[max(line_start, span.start - _LABEL_WINDOW):span.start]:
        return True  # a 10-digit INN is an organisation's (a person's has 12)
    if span.type == "PHONE" and (m := _NUMBER_HEAD_BEFORE.search(text, max(line_start, span.start - 8), span.start)) \
            and service_number(m.group(1) + value):
        return True  # ``900 ⟦812 340⟧``: the tail of a free line
    if span.type == "PHONE" and _SINGLE_DIGIT_GROUPS.fullmatch(value):
        return True  # ``1-3-7-9-1-3-7-9-1-3``: weights, a sequence; no phone is written one digit at a time
    if span.type == "CREDIT_CARD" and span.start > 0 and text[span.start - 1].isalpha():
        return True  # ``SF⟦1458 2230 7716 4⟧``: a parcel's number after its carrier's letters
    if span.type == "NAME" and span.start == line_start and text.startswith(":", span.end) and value in EMAIL_HEADERS:
        return True
    if span.type == "PHONE" and service_number(value):
        return True  # an organisation's free line
    if span.type == "PHONE" and _DIAL_IN_PIN_AFTER.match(text, span.end):
        return True  # a conference bridge's dial-in (``+48 22 307 18 44,,771203548#``): the meeting's, no one's
    if span.type == "USERNAME" and ("bot_message" in text[line_start:line_end] or value.startswith("service-account-")):
        return True  # a chat bot's post (Slack's ``"subtype": "bot_message"``), an identity provider's service account
    if span.type == "USERNAME":
        return value.lower() in SYSTEM_ACCOUNTS or bool(_BOT.search(value)) or bool(_HOSTNAME.fullmatch(value)) or \
            bool(_PAM_MODULE.fullmatch(value)) or \
            text.startswith("[bot]", span.end) or (bool(_CODE_PATH.fullmatch(value)) and not value.islower())
    if span.type == "IP_ADDRESS" and (_IMAGE_TAG.fullmatch(value) or (_DIGITS_AND_DOTS.fullmatch(value) and not _parses_as_ip(value))):
        return True  # a container image (``postgres:16.2``), a timestamp or a status code (``11.630275``, ``5.7.1``)
    if span.type == "IP_ADDRESS" and _IMAGE_BEFORE.search(text, line_start, span.start):
        return True  # ``ghcr.io/kestrelpay/edge-gateway:⟦10.4.12.1⟧``: an image's tag
    if span.type == "IP_ADDRESS":
        return _not_an_address(text, span, value) or bool(_VERSION_SUFFIX_AFTER.match(text, span.end)) or \
            bool(_VERSION_BEFORE.search(text, max(line_start, span.start - 24), span.start))
    return False


def role_mailbox(address: str) -> bool:
    """An organisation's mailbox (RULES.md: EMAIL): a role word as the local part, or as one part of a
    hyphenated one (``accounts-payable``, ``logistics-ops``)."""
    local = address.split("@", 1)[0].lower()
    parts = re.split(r"[-_]", local)  # not at dots: first.last is a person's shape (``maria.personal@``)
    return local in ROLE_MAILBOXES or (len(parts) > 1 and any(part in _ROLE_PARTS for part in parts)) or \
        any(local[:i] in _ROLE_PARTS and local[i:] in _ROLE_PARTS for i in range(3, len(local) - 2))  # ``atencionclientes``


def _parses_as_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _not_an_address(text: str, span: Span, value: str) -> bool:
    """Loopback, unspecified, a range, a MAC address, or a machine identifier (``_NOT_IP``)."""
    if "/" in value or _RANGE_AFTER.match(text, span.end) or _MAC.fullmatch(value) or _NOT_IP.fullmatch(value):
        return True
    try:
        ip = ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        return False  # a piece of an address, or an address in context: the finder's call stands
    return ip.is_loopback or ip.is_unspecified


def conform(text: str, spans: list[Span]) -> list[Span]:
    """``spans`` trimmed to their values and without those the rules say are never personal data."""
    out = []
    for s in spans:
        a, b = _credential_edges(text, s.start, s.end, s.type)
        da, db = _strip(text[a:b], s.type)
        a, b = a + da, a + db
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
        if s.type == "NAME" and text[a:b] in _HONORIFICS:
            continue  # before it grows into the name after it
        if s.type == "NAME":
            a, b = _name_cell(text, a, b)
            a = _surname_first(text, a, b)
            b = _surname_after(text, a, b)
        if s.type == "PHONE" and (m := _EXTENSION_AFTER.match(text, b)):
            b = m.end()
        if s.type == "ADDRESS":
            a, b = _address_edges(text, *_quoted_field(text, a, b))
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
        if s.type == "SSN" and (m := _ID_LABEL_HEAD.match(text, a, b)) and m.end() < b:
            a = m.end()  # ``⟦PESEL 88050314575⟧``: the label is not the number
        if s.type == "IP_ADDRESS":
            if m := _IPV4_PORT.fullmatch(text, a, b):
                b = m.end(1)
            elif (port := _ipv6_port(text[a:b])) is not None:
                b = a + port
        if s.type in ("CREDIT_CARD", "SSN") and re.match(r"\d{4} ", text[a:b]) \
                and (m := _DIGIT_GROUP_BEFORE.search(text, max(0, a - 6), a)):
            a = m.start()  # 0891 ⟦2234 5560 1177⟧: a number's first group, missed
        ptype = _retyped(text, a, b, s.type)
        if ptype == "PHONE" and _POSTCODE_CITY.fullmatch(text, a, b):
            ptype = "ADDRESS"  # ``⟦08003 Barcelona⟧``: an address's last line, no phone has a city in it
        if ptype == "EMAIL" and "@" not in text[a:b] and not _HOSTNAME.fullmatch(text[a:b]):
            ptype = "USERNAME"  # ``user is still ⟦t.wroblewski⟧``: an address without its @ is a login
        if ptype is None:
            continue
        s = Span(a, b, ptype, s.score, s.source)
        if not _never_personal(text, s):
            out.append(s)
    return [s for s in _join_pieces(text, out) if not (s.type == "ADDRESS" and _NUMBER_ONLY_ADDRESS.fullmatch(text[s.start:s.end]))]
