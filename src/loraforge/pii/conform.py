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

from loraforge.pii.spans import Span

# local parts of mailboxes that belong to an organisation, not a person (RULES.md: EMAIL)
ROLE_MAILBOXES = frozenset("""
abuse accounts admin administrator alerts billing careers compliance contact devops do-not-reply donotreply
feedback finance help helpdesk hostmaster hr info invoices it jobs legal mailer-daemon marketing news
newsletter no-reply noc noreply notifications notify office ops payroll platform platform-team postmaster
press privacy recruiting root sales security service servicedesk sre support team webmaster
""".split())
# generic system accounts and bots (RULES.md: USERNAME)
SYSTEM_ACCOUNTS = frozenset({"root", "system", "nobody", "daemon", "www-data", "localhost"})
_BOT = re.compile(r"(?i)(?:^|[-_.])bot(?:\[bot\])?$|\[bot\]$|^bot[-_.]")

_QUOTES = "\"'`‘’“”«»「」『』【】"  # never the first or last character of a value
_PUNCT_BEFORE = ",;:"  # nor punctuation
_PAIRS = {"(": ")", "[": "]", "{": "}", "<": ">"}  # off when unmatched inside the value, or around all of it
_SENTENCE_END = ".!?。！？"  # ends a sentence, not a value of a structured type
_NO_TRAILING_DOT = {"EMAIL", "PHONE", "IP_ADDRESS", "CREDIT_CARD", "IBAN", "SSN", "DATE_OF_BIRTH", "USERNAME"}
_RANGE_AFTER = re.compile(r"/\d{1,3}\b")  # an address followed by /n is a CIDR range
_IPV4_PORT = re.compile(r"(\d{1,3}(?:\.\d{1,3}){3}):\d{1,5}")  # the port is not the address
# honorifics stay outside a name (RULES.md: ``Frau ⟦Brandt⟧``, ``⟦佐藤 健⟧様``); English title
# abbreviations (Dr., Mr., Ms., Mrs.) are part of it
_HONORIFIC_BEFORE = re.compile(r"(?:Herr|Frau|Monsieur|Madame|Mademoiselle|Mme\.?|Mlle\.?|Señora?|Señorita|Signora?|"
                               r"Sig\.(?:ra)?|Doña|Senhora?|Pani|Meneer|Mevrouw|Herra|Rouva)\s+")  # not Don, Pan: also names
_HONORIFIC_AFTER = re.compile(r"\s*(?:様|さま|さん|氏|殿|先生|君|くん|ちゃん|女士|小姐|同学|老师|님|씨|선생님)$")


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
        m = _HONORIFIC_BEFORE.match(value)
        if m and m.end() < b:
            a = m.end()
        m = _HONORIFIC_AFTER.search(value, a)
        if m and m.start() > a:
            b = m.start()
    punct = _PUNCT_BEFORE if ptype != "IP_ADDRESS" else ",;"  # ::1
    closing = {c: o for o, c in _PAIRS.items()}
    changed = True
    while changed and a < b:
        changed = False
        first, last = value[a], value[b - 1]
        if first in _PAIRS and b - a > 1 and last == _PAIRS[first]:  # [John] -> John
            a, b, changed = a + 1, b - 1, True
        elif first in _QUOTES or first in punct or first.isspace() or (first in _PAIRS and _PAIRS[first] not in value[a:b]):
            a, changed = a + 1, True
        elif (last in _QUOTES or last in punct or last.isspace()
              or (last in closing and closing[last] not in value[a:b - 1])
              or (last in _SENTENCE_END and ptype in _NO_TRAILING_DOT)):
            b, changed = b - 1, True
    return a, b


def _never_personal(text: str, span: Span) -> bool:
    value = text[span.start:span.end]
    if span.type == "EMAIL" and "@" in value:
        return value.split("@", 1)[0].lower() in ROLE_MAILBOXES
    if span.type == "USERNAME":
        return value.lower() in SYSTEM_ACCOUNTS or bool(_BOT.search(value))
    if span.type == "IP_ADDRESS":
        if "/" in value or _RANGE_AFTER.match(text, span.end):
            return True
        try:
            ip = ipaddress.ip_address(value)
        except ValueError:
            return False  # a piece of an address, or an address in context: the finder's call stands
        return ip.is_loopback or ip.is_unspecified
    return False


def conform(text: str, spans: list[Span]) -> list[Span]:
    """``spans`` trimmed to their values and without those the rules say are never personal data."""
    out = []
    for s in spans:
        a, b = _strip(text[s.start:s.end], s.type)
        if a >= b:
            continue
        if s.type == "IP_ADDRESS" and (m := _IPV4_PORT.fullmatch(text, s.start + a, s.start + b)):
            b = m.end(1) - s.start
        s = Span(s.start + a, s.start + b, s.type, s.score, s.source)
        if not _never_personal(text, s):
            out.append(s)
    return out
