"""Validated patterns: the structured types that must never leak, found without the model.

A regular expression proposes, a check disposes: card numbers must pass Luhn, IBANs mod-97, IP
addresses must parse, US SSNs must use an issued area. The expressions and checks are the rule
baseline's (``eval.pii_baseline``), imported so both stay one implementation; what is added here is
the validation that keeps hard negatives (order numbers, versions such as ``10.4.2.1``, dates)
unmasked. Names, addresses, usernames and passwords in prose need context: that is the model's job
(a login after a user key of a config or a log line, ``DB_USER=...``, is the one login found here, and a
surname after an honorific, ``Herr Brandt``, the one name).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from loraforge.eval import pii_baseline as rules
from loraforge.pii.spans import Span
from loraforge.pii.wordlists import alternation, words

_VERSION_CONTEXT = re.compile(r"(?i)(?:version|\bver\.?|kernel|driver|build|release|firmware|upgrade from|"
                              r"_version|\bv)\"?\s*[:=]?\s*\"?$")  # also a JSON key: "driver":"10.28.29.1"
_PHONE_SEPARATED = re.compile(r"^(?:\+|00|\(\+?\d{1,5}\))|\d[ .()-]+\d")  # "(" only as a closed area code
_NOT_PHONE_START = re.compile(r"\d{1,2}[./-]\d{1,2}[./-](?:19|20)\d\d\b|\d{4}-\d{2}-\d{2}|"
                              r"(?:19|20)\d\d\.\d{1,2}\.\d{1,2}\b")  # a date (and a time, a build suffix): 2024.06.12-1
_DECIMAL = re.compile(r"\d+\.\d+")  # 1204330.55, a kernel timestamp 11.630275: one dot is a decimal point
_HTTP_STATUS_BEFORE = re.compile(r'HTTP/[\d.]+"\s*$')  # an access log's status and size: "GET / HTTP/1.1" 200 18342
# a bare JSON number under a key that names no phone (``"created":1698580637``, an epoch; an account ID)
_JSON_NUMBER_KEY = re.compile(r'"([\w.-]*)"\s*:\s*\[?\s*$')
_PHONE_KEY = re.compile(r"(?i)phone|tel|mobile|cell|fax|msisdn|contact")
# a toll-free or shared-cost line is an organisation's, never a person's (RULES.md: PHONE): 1-800, 0800, 0120, 1588
TOLL_FREE = re.compile(r"(?:\+?1[ .-]?)?\(?8(?:00|33|44|55|66|77|88)\)?[ .-]\d{3}[ .-]?\d{4}|0800[ ]?\d{3}[ ]?\d{3,4}|"
                       r"0120[ -]?\d{2,3}[ -]?\d{3}|1[56]88-\d{4}")
_DOUBLE_SEPARATOR = re.compile(r"[.-]\s*[.-]")  # "200 390 - - ---- 91" in a log line
_ZIP4 = re.compile(r"\d{5}-\d{4}")
# the tail of a longer reference: a letters-and-digits group right before (``1Z 999 AA1 01 2345 6784``, a parcel)
_CODE_GROUP_BEFORE = re.compile(r"(?<![\w-])(?=[A-Z0-9]*[A-Z])(?=[A-Z0-9]*\d)[A-Z0-9]+ $")
# an identifier's field right before bare digits (``(id: 2147483645 rack: ...)``, a broker's ID in a log)
_ID_KEY = re.compile(r"(?:^|[(\[{,;|])[ \t]*id[ \t]*[:=][ \t]*$", re.M)  # a log field; ``national ID:`` is a label
# a card statement's merchant descriptor ends in the merchant's phone (``STEAMGAMES.COM 4259522985``)
_MERCHANT_BEFORE = re.compile(r"\b[A-Z0-9*-]+\.(?:COM|NET|ORG|CO|IO)\s+$")
# the baseline's phone expression, plus a country code in parentheses: (+358) 291926593
PHONE = re.compile(rules.PHONE_BEFORE + r"(?:\(\+\d{1,4}\)\s?|(?:\+|00)?\(?)" + rules.PHONE_BODY)
_STATE_BEFORE = re.compile(r"\b[A-Z]{2,4}\s+$")
_NOT_PHONE = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}|\d{3}-\d{2}-\d{4}")  # IP-shaped, SSN-shaped
# a login after a user key of a config, a CLI or a log line (``DB_USER=orders_svc``, ``username: billing_app``,
# ``user=e.novak``); not "user: ..." (a chat speaker) nor ``imap-login: Login:`` (a log's program and event).
# System accounts and placeholders are dropped afterwards (``pii.conform``). Narrower than the rule baseline's
# USER_KV on purpose (no ``account`` key, no ``user:`` with a space): the baseline stays as published.
USER_KEY = re.compile(r"(?i)(?:(?<![\w-])(?:user_?name|login|logname|ruser)|_user|(?<![\w-])user(?==))[\"']?[ \t]*[:=][ \t]*[\"']?"
                      r"([\w.@-]*\w)")
# the user of a client's command line (``mysql -h db -u reporting_ro``, ``docker login -u jdoe``, ``curl -u jdoe:...``)
CLI_USER = re.compile(r"\b(?:mysql\w*|psql|pg_dump\w*|pg_restore|mongo\w*|redis-cli|sudo|curl|(?:docker|podman|oc|helm registry) "
                      r"login)\b[^\n|;&]*?\s(?:-u ?|-U ?|--user(?:name)?[= ])[\"']?([\w.@-]*\w)")
# who ran su, in its log line (``FAILED SU (to root) elif25 on pts/3``)
SU_USER = re.compile(r"\bSU \(to [\w.-]+\) ([\w.-]*\w) on\b")
# an Indian PAN after its label: five letters (the fourth says who holds it), four digits, a letter
PAN_IN = re.compile(r"\bPAN\b\W{0,6}([A-Z]{3}[PCHFATBLJG][A-Z]\d{4}[A-Z])\b")
# a UK National Insurance number (HMRC's letter rules; ``JT 48 91 27 B``)
NINO = re.compile(r"\b(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")
# a surname after an honorific (``Herr Brandt``, ``Mr. Nair``): the one name found without the model, as the context
# says it is a person's. English title abbreviations are part of the name, the others are not (RULES.md: NAME).
_CAPITALIZED = r"[A-ZÀ-ÖØ-Þ][^\W\d_]+(?:[-'’][A-ZÀ-ÖØ-Þ][^\W\d_]+)?"
HONORIFIC_NAME = re.compile(r"(?<!\w)" + alternation("honorifics_before") + r"\s+(" + _CAPITALIZED + ")")  # surname only

TITLE_NAME = re.compile(r"\b" + alternation("english_titles") + r"\.\s+" + _CAPITALIZED + r"(?:\s" + _CAPITALIZED + ")?")
_NOT_A_SURNAME = frozenset(words("not_surnames_after_honorific"))
_NOT_A_LOGIN = re.compile(r"(?i)true|false|null|none|nil|yes|no|(?:var|local|module|data|env|self)\..*|"
                         r"[a-z_]\w*\.(?:user_?name|login|user|email)")  # code: ``username=user.username``


def login_ok(text: str, start: int, value: str) -> bool:
    """A word with a letter that is not a literal, a code reference, a date or the next key (``Login: user=``)."""
    end = start + len(value)
    return (any(c.isalpha() for c in value) and not _NOT_A_LOGIN.fullmatch(value) and text[end:end + 1] not in (":", "=")
            and not _NOT_PHONE_START.match(value))


def ssn_ok(value: str) -> bool:
    """An SSN the US could have issued (area not 000, 666 or 9xx; group and serial not zero)."""
    area, group, serial = value.split("-")
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


# rules.IPV6 (shared with the rule baseline) takes addresses written in full; this one the ``::`` forms,
# with at least three groups (``a::b`` is C++ as often as an address) and not loopback or unspecified
IPV6_COMPRESSED = re.compile(r"(?<![\w:.])(?:[0-9a-fA-F]{1,4}:)*(?:[0-9a-fA-F]{1,4})?::(?:[0-9a-fA-F]{1,4}"
                             r"(?::[0-9a-fA-F]{1,4})*)?(?![\w:])")


def ipv6_compressed_ok(text: str, start: int, value: str) -> bool:
    if sum(1 for g in value.split(":") if g) < 3 or not ip_ok(text, start, value):
        return False
    address = ipaddress.IPv6Address(value)  # ip_ok parsed it: the regex admits IPv6 shapes only
    return not (address.is_loopback or address.is_unspecified)


def ip_ok(text: str, start: int, value: str) -> bool:
    """Parses as an IP address and is not a version number (``kernel 5.10.0.1``)."""
    return rules._valid_ip(value) and not _VERSION_CONTEXT.search(text[max(0, start - 24):start])


def phone_ok(text: str, start: int, value: str) -> bool:
    """8-15 digits, not a date, an IP or an SSN shape, and written like a phone number: a leading
    + / 00 / area code in parentheses or separators between digit groups; a bare run of digits (an
    order number) needs 10 or more. Not a phone: digits run on into letters (``260343-718E``, an ID),
    a date with a time, doubled separators (log fields), a US ZIP+4 after a state, a decimal number,
    unbalanced parentheses (``12.2.0-14) 12.2.0``: versions), the status and size of an access log line,
    a bare JSON number under a key that names no phone, one digit repeated, a toll-free line, the tail of a
    lettered reference (``1Z 999 AA1 01 2345 6784``), bare digits after an ``id:`` key, a merchant's line on a
    card statement (``STEAMGAMES.COM 4259522985``)."""
    digits = sum(c.isdigit() for c in value)
    if len({c for c in value if c.isdigit()}) == 1 or TOLL_FREE.fullmatch(value):
        return False  # 00000000 (a commit placeholder), an organisation's free line
    if not 8 <= digits <= 15 or rules.DATE_LIKE.fullmatch(value.strip("()")) or _NOT_PHONE.fullmatch(value):
        return False
    end = start + len(value)
    if end < len(text) and (text[end].isalnum() or text[end] == "/"):  # 260343-718E (an ID), 91/146 (timers)
        return False
    if _NOT_PHONE_START.match(value.lstrip("(")) or _DOUBLE_SEPARATOR.search(value) or _DECIMAL.fullmatch(value):
        return False
    if value.count("(") != value.count(")") or _HTTP_STATUS_BEFORE.search(text, max(0, start - 16), start):
        return False
    if value.isdigit() and (m := _JSON_NUMBER_KEY.search(text, max(0, start - 40), start)) \
            and not _PHONE_KEY.search(m.group(1)):
        return False
    if _ZIP4.fullmatch(value) and _STATE_BEFORE.search(text[max(0, start - 12):start]):  # "NL 74812-3060"
        return False
    if _VERSION_CONTEXT.search(text[max(0, start - 24):start]) or _CODE_GROUP_BEFORE.search(text, max(0, start - 12), start):
        return False
    if _MERCHANT_BEFORE.search(text, max(0, start - 40), start):
        return False
    if value.isdigit() and _ID_KEY.search(text, max(0, start - 8), start):
        return False
    return bool(_PHONE_SEPARATED.search(value)) or digits >= 10


@dataclass(frozen=True)
class Pattern:
    name: str
    type: str
    regex: re.Pattern
    check: Callable[[str, int, str], bool]  # (text, start, value) -> valid?
    group: int = 0


# the first digits of a card network's numbers (ISO/IEC 7812: airlines and old JCB 1, Diners/Amex/JCB 3, Visa 4,
# Mastercard 51-55 and 2221-2720, Maestro/Discover/UnionPay 5-6, and the older JCB 2131 and Maestro 0604 that
# Faker also issues): a Luhn-valid number that starts otherwise is a reference that passed the check by chance
# (``Claim No. 2024-0518-88731``: one number in ten does)
_CARD_ISSUER = re.compile(r"[13456]|2(?:22[1-9]|2[3-9]|[3-6]|7[01]|720)|2131|0604")


def card_number_ok(value: str) -> bool:
    """12 or more digits that pass the Luhn check and start as a card network's numbers do."""
    digits = re.sub(r"\D", "", value)
    return rules.luhn_ok(digits) and bool(_CARD_ISSUER.match(digits))


PATTERNS: tuple[Pattern, ...] = (  # most specific first: an earlier pattern wins an overlap
    Pattern("url_user", "USERNAME", rules.URL_CREDENTIALS, lambda t, s, v: True, group=1),
    Pattern("url_password", "PASSWORD", rules.URL_CREDENTIALS, lambda t, s, v: True, group=2),
    Pattern("email", "EMAIL", rules.EMAIL, lambda t, s, v: True),
    Pattern("token", "PASSWORD", rules.TOKEN, lambda t, s, v: True),
    Pattern("iban", "IBAN", rules.IBAN, lambda t, s, v: rules.iban_ok(v)),
    Pattern("card", "CREDIT_CARD", rules.CARD, lambda t, s, v: card_number_ok(v)),
    Pattern("ssn_us", "SSN", rules.SSN_US, lambda t, s, v: ssn_ok(v)),
    Pattern("ipv4", "IP_ADDRESS", rules.IPV4, ip_ok),
    Pattern("ipv6", "IP_ADDRESS", rules.IPV6, ip_ok),
    Pattern("ipv6_compressed", "IP_ADDRESS", IPV6_COMPRESSED, ipv6_compressed_ok),
    Pattern("phone", "PHONE", PHONE, phone_ok),
    Pattern("user_key", "USERNAME", USER_KEY, login_ok, group=1),
    Pattern("cli_user", "USERNAME", CLI_USER, login_ok, group=1),
    Pattern("su_user", "USERNAME", SU_USER, login_ok, group=1),
    Pattern("pan_in", "SSN", PAN_IN, lambda t, s, v: True, group=1),
    Pattern("nino_uk", "SSN", NINO, lambda t, s, v: True),
    Pattern("title_name", "NAME", TITLE_NAME, lambda t, s, v: v.split()[1] not in _NOT_A_SURNAME),
    Pattern("honorific_name", "NAME", HONORIFIC_NAME, lambda t, s, v: v not in _NOT_A_SURNAME, group=1),
)
PATTERN_NAMES = tuple(p.name for p in PATTERNS)


def select(names: Iterable[str] | None = None) -> tuple[Pattern, ...]:
    """The patterns named (all when None); an unknown name is an error that lists the known ones."""
    if names is None:
        return PATTERNS
    names = list(names)
    unknown = [n for n in names if n not in PATTERN_NAMES]
    if unknown:
        raise ValueError(f"unknown PII pattern(s) {unknown}; known: {', '.join(PATTERN_NAMES)}")
    return tuple(p for p in PATTERNS if p.name in names)


def find(text: str, patterns: Iterable[Pattern] | None = None) -> list[Span]:
    """Validated pattern spans in ``text``, sorted, non-overlapping (earlier patterns win)."""
    found: list[Span] = []
    for p in (PATTERNS if patterns is None else patterns):
        for m in p.regex.finditer(text):
            start, end = m.start(p.group), m.end(p.group)
            if start >= end or any(start < s.end and s.start < end for s in found):
                continue
            if p.check(text, start, m.group(p.group)):
                found.append(Span(start, end, p.type, 1.0, "patterns"))
    return sorted(found)
