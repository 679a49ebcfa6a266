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

import bisect
import functools
import ipaddress
import re
from importlib import import_module
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from loraforge.eval import pii_baseline as rules
from loraforge.pii.spans import Span
from loraforge.pii.wordlists import alternation, words

_VERSION_CONTEXT = re.compile(r"(?i)(?:version|\bver\.?|kernel|driver|build|release|firmware|upgrade from|"
                              r"_version|\bv|(?<=[\w\]])[=<>~!]=)\"?\s*[:=]?\s*\"?$")  # also a JSON key: "driver":"10.28.29.1"
# (and a package's pin: ``nvidia-cudnn-cu12==8.9.2.26``)
_PHONE_SEPARATED = re.compile(r"^(?:\+|00|\(\+?\d{1,5}\))|\d[ .()-]+\d")  # "(" only as a closed area code
_NOT_PHONE_START = re.compile(r"\d{1,2}[./-]\d{1,2}[./-](?:19|20)\d\d\b|\d{4}-\d{2}-\d{2}|(?:19|20)\d\d\. \d{1,2}\. \d{1,2}\.|"
                              r"(?:19|20)\d\d\.\d{1,2}\.\d{1,2}\b")  # a date (and a time, a build suffix): 2024.06.12-1
_DECIMAL = re.compile(r"\d+\.\d+")  # 1204330.55, a kernel timestamp 11.630275: one dot is a decimal point
_HTTP_STATUS_BEFORE = re.compile(r'HTTP/[\d.]+"\s*$')  # an access log's status and size: "GET / HTTP/1.1" 200 18342
# a bare JSON number under a key that names no phone (``"created":1698580637``, an epoch; an account ID)
_JSON_NUMBER_KEY = re.compile(r'"([\w.-]*)"\s*:\s*\[?\s*"?$')  # also a number as a string: ``"Account": "4829..."``
# a key that names a person's number (a phone, an ID, a card): bare digits under any other key are a machine's
PERSONAL_NUMBER_KEY = re.compile(r"(?i)phone|tel|mobile|cell|fax|msisdn|contact|ssn|\bsin\b|national|passport|tax|insurance|"
                                 r"member|card|cc_|\bpan\b|iban|pesel|aadhaar|cpf|dni|nhs|tckn|id_?(?:number|no)|personnummer|"
                                 r"\bnin\b|bsn|nif|nie\b|\bnir\b|insee")
# a toll-free or shared-cost line is an organisation's, never a person's (RULES.md: PHONE): 1-800, 0800, 0120, and
# Korea's nationwide company numbers (15xx/16xx/18xx-xxxx)
TOLL_FREE = re.compile(r"(?:\+?1[ .-]?)?\(?8(?:00|33|44|55|66|77|88)\)?[ .-]\d{3}[ .-]?\d{4}|0800[ ]?\d{3}[ ]?\d{3,4}|"
                       r"0120[ -]?\d{2,3}[ -]?\d{3}|1[568]\d\d-\d{4}")
# national service ranges, written without a country code (digits only): an organisation's line in every country
# that has them. ES 900-905, PT 800/808/707, PL 800/801, IT 800/803 (9 digits); CN 400/800, JP 0120/0570 (10);
# DE 0180/0800/0900, TR 0850, IN 1800 (11). Not the UK's 03/084/087 (Berlin's 030 numbers share their length),
# nor anything with a country code.
_SERVICE_DIGITS = re.compile(r"(?:90[0125]|80[0138]|707)\d{6}|(?:400|800)\d{7}|0(?:120|570)\d{6}|"
                             r"0(?:180|800|900|850)\d{7}|1800\d{7}")
# France's and Switzerland's 08 ranges by their grouping: a bare 08 and ten digits is also Perth's or Stockholm's
_SERVICE_SHAPE = re.compile(r"08(?:[ .]\d{2}){4}|08\d{2} \d{2} \d{2} \d{2}")


def service_number(value: str) -> bool:
    """A toll-free, shared-cost or national service number (``TOLL_FREE``, ``_SERVICE_DIGITS``): no person's."""
    if TOLL_FREE.fullmatch(value) or _SERVICE_SHAPE.fullmatch(value):
        return True
    if value.lstrip().startswith("+") or not (m := _SERVICE_DIGITS.fullmatch(re.sub(r"\D", "", value))):
        return False
    prefix = re.match(r"0?\d{3}", m.group(0)).group(0)  # the range's prefix, written as the first group:
    return re.match(r"\D*(\d+)", value).group(1).startswith(prefix)  # ``080-0693-9743`` is a Japanese mobile


_DOUBLE_SEPARATOR = re.compile(r"[.-]\s*[.-]")  # "200 390 - - ---- 91" in a log line
_ZIP4 = re.compile(r"\d{5}-\d{4}")
DOTTED_NUMBER = re.compile(r"\d+(?:\.\d+)+")  # a version's shape (conform's too)
# an epoch in milliseconds (13 digits from 1), a compact timestamp (``20240611091502``): a machine's numbers
_MACHINE_NUMBER = re.compile(r"1\d{12}|(?:19|20)\d\d(?:0[1-9]|1[0-2])(?:[0-2]\d|3[01])(?:[01]\d|2[0-3])[0-5]\d[0-5]\d")
# the tail of a longer reference: a letters-and-digits group right before (``1Z 999 AA1 01 2345 6784``, a parcel)
_CODE_GROUP_BEFORE = re.compile(r"(?<![\w-])(?=[A-Z0-9]*[A-Z])(?=[A-Z0-9]*\d)[A-Z0-9]+ $")
# an identifier's field right before bare digits (``(id: 2147483645 rack: ...)``, a broker's ID in a log)
_ID_KEY = re.compile(r"(?:^|[(\[{,;|])[ \t]*id[ \t]*[:=][ \t]*$", re.M)  # a log field; ``national ID:`` is a label
# a card statement's merchant descriptor ends in the merchant's phone (``STEAMGAMES.COM 4259522985``)
_MERCHANT_BEFORE = re.compile(r"\b[A-Z0-9*-]+\.(?:COM|NET|ORG|CO|IO)\s+$")
# Scripts that put particles and words right against a value (``IP 주소는 81.249.17.203입니다``, ``手机号是
# 13912345678，``, ``198.51.100.7から``): their letters end a value as a space does. The rule baseline's expressions
# take any ``\w`` as part of a longer word and miss these; the patterns take the baseline's shapes with these edges.
_ATTACHED = "\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff"  # CJK, kana, Hangul
_WORD = rf"[^\W{_ATTACHED}]"  # a letter, digit or _ of a script that spaces its words
_ATTACHED_LETTER = re.compile(rf"[{_ATTACHED}]")
EMAIL, IBAN, IPV4, PHONE = rules.structured_expressions(_WORD, country_in_parentheses=True)  # also (+358) 291926593
_STATE_BEFORE = re.compile(r"\b[A-Z]{2,4}\s+$")
_NOT_PHONE = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}|\d{3}-\d{2}-\d{4}|(?:19|20)\d\d-(?:19|20)\d\d")  # IP-, SSN-shaped, years
# a login after a user key of a config, a CLI or a log line (``DB_USER=orders_svc``, ``username: billing_app``,
# ``user=e.novak``); not "user: ..." (a chat speaker) nor ``imap-login: Login:`` (a log's program and event).
# System accounts and placeholders are dropped afterwards (``pii.conform``). Narrower than the rule baseline's
# USER_KV on purpose (no ``account`` key, no ``user:`` with a space): the baseline stays as published.
USER_KEY = re.compile(r"(?i)(?:(?<![\w-])(?:user_?name|login|logname|ruser)|_user|(?<![\w-])user(?==))[\"']?[ \t]*[:=][ \t]*[\"']?"
                      r"([\w.@-]*\w)")
# the user of a client's command line (``mysql -h db -u reporting_ro``, ``docker login -u jdoe``, ``curl -u jdoe:...``)
# (sudo's own -u only: ``sudo journalctl -u nginx`` names a unit)
CLI_USER = re.compile(r"(?:\b(?:mysql\w*|psql|pg_dump\w*|pg_restore|mongo\w*|redis-cli|curl|(?:docker|podman|oc|helm registry) "
                      r"login)\b[^\n|;&]*?|\bsudo(?:\s+-[A-Za-tv-z]+)*)\s(?:-u ?|-U ?|--user(?:name)?[= ])[\"']?([\w.@-]*\w)")
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
# a person's profile on a code host or a social network: the handle is the URL's one path segment
# (``github.com/epetrova-dev``; not ``github.com/kubernetes/website``, a repository, nor a site page, nor a Markdown
# link's target: ``[Kubewarden](https://github.com/kubewarden)`` is documentation pointing at a project)
PROFILE_HANDLE = re.compile(r"(?<![\w./-])(?<!\]\()(?:https?://)?(?:www\.)?(?:(?:github|gitlab|twitter|x|instagram)\.com/@?|linkedin\.com/in/)"
                            r"([A-Za-z0-9](?:[\w.-]{0,38}[A-Za-z0-9])?)(?![\w/-])")
_SITE_PAGES = frozenset(words("site_pages"))
# a handle named after the code host in prose (``your GitHub (kasante-ops)``, ``GitHub: @jdoe``); in parentheses
# only with a hyphen or a digit, as ``GitHub (optional)`` is prose
HOST_HANDLE = re.compile(r"\bGit(?:Hub|Lab)\b(?:\s*\(@?(?=[a-z0-9-]*[-\d])|:\s*@?|\s+@)([a-z0-9][a-z0-9-]{1,38})(?![\w-]|\.\w)")
# the directory (LDAP) entry a login binds as: ``uid=jdoe,ou=people``; a ``cn`` only after a bind key
# (``LDAP_BIND_DN``, ``bindDN``), as other entries are groups and system accounts (``memberOf: CN=GG-VPN,OU=Groups``);
# a ``cn`` with a space is a person's name (``cn=Ana Lima,ou=staff``)
LDAP_LOGIN = re.compile(r"(?i)\b(?:cn|uid)=([^\s,=\"']+)(?=,\s*(?:ou|dc|o)=)")
LDAP_NAME = re.compile(r"(?i)\bcn=([^\s,=\"'][^,=\"'\n]* [^,=\"'\n]+)(?=,\s*(?:ou|dc|o)=)")
_BIND_KEY_BEFORE = re.compile(r"(?i)bind_?dn|bind\b|user_?dn|\s-D\s")


def ldap_ok(text: str, start: int, value: str) -> bool:
    """``uid=`` names a login; ``cn=`` one after a bind key on its line, or on the line before a YAML ``value:``
    (``- name: LDAP_BIND_DN`` / ``value: "cn=..."``, a container's environment)."""
    if text[max(0, start - 4):start].lower() == "uid=":
        return True
    line_start = text.rfind("\n", 0, start) + 1
    if _BIND_KEY_BEFORE.search(text, line_start, start):
        return True
    previous = text.rfind("\n", 0, max(0, line_start - 1)) + 1
    return bool(re.search(r"\bvalue\s*:", text[line_start:start])) and bool(_BIND_KEY_BEFORE.search(text, previous, line_start))


# a Korean name (surname and two syllables) before a job title or an honorific (``⟦이서연⟧ 주임``, ``⟦김민지⟧님``)
KOREAN_NAME_TITLE = re.compile(r"(?<![\uac00-\ud7a3])(" + alternation("korean_surnames") + r"[\uac00-\ud7a3]{2})"
                               r"(?!(?<=[주정승하])차장)"  # 지하주차장: a car park, 승차장: a stop (no name before)
                               r"(?= ?" + alternation("korean_titles_after") + r"(?!점))")  # 대리점: a dealer
# a password's shape: lower and upper case letters, a digit and a symbol in one word (``Wiosna2024!!``)
# of 8 to 32 characters, as people make them (longer random strings are tokens: ``rules.TOKEN``); not ``=`` nor ``&``,
# which join a key to its value and the fields of a query (``300Mi&quot``: an HTML entity)
_PASSWORD_CHARS = r"[\w!@#$%^*?+~]"
PASSWORD_SHAPE = re.compile(r"(?<![\w!@#$%^&*?+~./:-])(?=" + _PASSWORD_CHARS + r"*[a-z])(?=" + _PASSWORD_CHARS + r"*[A-Z])"
                            r"(?=" + _PASSWORD_CHARS + r"*\d)(?=" + _PASSWORD_CHARS + r"*[!@#$%^*?+~])"
                            + _PASSWORD_CHARS + r"{8,32}(?![\w!@#$%^&*?+~./:-])")
_NOT_A_LOGIN = re.compile(r"(?i)true|false|null|none|nil|yes|no|ip|addr|id|uid|key|host|"  # ``bucket login:ip``
                         r"(?:var|local|module|data|env|self)\..*|os\.environ|os\.getenv|"
                         r"[a-z_]\w*\.(?:user_?name|login|user|email)|"  # code: ``username=user.username``
                         r"\d+(?:ms|[smhdkg])")  # a size or a duration (nginx's ``zone=login:10m``)


def login_ok(text: str, start: int, value: str) -> bool:
    """A word with a letter that is not a literal, a code reference, a date, the next key (``Login: user=``), a
    path's first part (``"logName": "projects/...``) or a call (``username: System.get_env("DB_USER")``)."""
    end = start + len(value)
    return (any(c.isalpha() for c in value) and not _NOT_A_LOGIN.fullmatch(value) and text[end:end + 1] not in (":", "=", "/", "(")
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
    """Parses as an IP address and is not a version number (``kernel 5.10.0.1``, or one of a family the text
    names: ``_version_family``)."""
    return (rules._valid_ip(value) and not _VERSION_CONTEXT.search(text[max(0, start - 24):start])
            and not _version_family(text, start, value))


_KEYED_VALUE = re.compile(r"\w\"?\s*[:=]\s*\"?$")  # peer=, "peer":", host:
_DOTTED_NUMBER_RUN = re.compile(r"(?<![\d.])\d{1,4}(?:\.\d{1,4}){2,3}(?![\d.])")


def _version_family(text: str, start: int, value: str) -> bool:
    """Another version of something the text versions (RULES.md: versions that look like IPs are not IPs): the
    same first two numbers as a three-number version elsewhere in the text (``billing-api-4.11.0 ... 4.11.0.2``)
    or as a four-number one in a version's context (``firmware 7.2.14.1; ... that 7.2.15.0 fixes``). Two
    numbers alone (``4.11``) are too often a decimal to name a family. A value under a key is what its key
    says (``"driver":"10.28.29.1","peer":"10.28.29.7"``: the peer is a host)."""
    head = tuple(value.split(".")[:2])
    if len(head) < 2 or _KEYED_VALUE.search(text[max(0, start - 40):start]):
        return False  # IPv6; a keyed value
    return bool(_version_heads(text).get(head, set()) - {start})


@functools.lru_cache(maxsize=4)
def _version_heads(text: str) -> dict[tuple[str, ...], set[int]]:
    """Where the text's versions start, by their first two numbers: once per text, not once per address (a long
    log holds thousands of both)."""
    heads: dict[tuple[str, ...], set[int]] = {}
    for m in _DOTTED_NUMBER_RUN.finditer(text):
        groups = m.group().split(".")
        if len(groups) == 3 or _VERSION_CONTEXT.search(text[max(0, m.start() - 24):m.start()]):
            heads.setdefault(tuple(groups[:2]), set()).add(m.start())
    return heads


def phone_ok(text: str, start: int, value: str) -> bool:
    """8-15 digits, not a date, an IP or an SSN shape, and written like a phone number: a leading
    + / 00 / area code in parentheses or separators between digit groups; a bare run of digits (an
    order number) needs 10 or more. Not a phone: digits run on into letters (``260343-718E``, an ID),
    a date with a time, doubled separators (log fields), a US ZIP+4 after a state, a decimal number,
    unbalanced parentheses (``12.2.0-14) 12.2.0``: versions), the status and size of an access log line,
    a bare JSON number under a key that names no phone, one digit repeated, a toll-free line, the tail of a
    lettered reference (``1Z 999 AA1 01 2345 6784``), bare digits after an ``id:`` key, a merchant's line on a
    card statement (``STEAMGAMES.COM 4259522985``), a table's columns (two spaces), a date running into a time, a
    dotted version with a one-digit group, an epoch in milliseconds or a compact timestamp."""
    digits = sum(c.isdigit() for c in value)
    end = start + len(value)
    if "  " in value or "\t" in value or (text[end:end + 1] == ":" and text[end + 1:end + 2].isdigit()):
        return False  # columns of a table (``31  24  6  1``), a date running into a time (``240129 10:02:44``)
    if DOTTED_NUMBER.fullmatch(value) and any(len(g) == 1 for g in value.split(".")):
        return False  # a version (``128.0.6613.120``, ``10.0.22631.0``): phones written with dots have no 1-digit group
    if value.isdigit() and _MACHINE_NUMBER.fullmatch(value):
        return False
    if len({c for c in value if c.isdigit()}) == 1 or service_number(value):
        return False  # 00000000 (a commit placeholder), an organisation's free line
    if not 8 <= digits <= 15 or rules.DATE_LIKE.fullmatch(value.strip("()")) or _NOT_PHONE.fullmatch(value):
        return False
    end = start + len(value)
    if end < len(text) and ((text[end].isalnum() and not _ATTACHED_LETTER.match(text[end])) or text[end] == "/"):
        return False  # 260343-718E (an ID), 91/146 (timers); ``010-4821-7735입니다``: a particle, not the number's end
    if _NOT_PHONE_START.match(value.lstrip("(")) or _DOUBLE_SEPARATOR.search(value) or _DECIMAL.fullmatch(value):
        return False
    if value.count("(") != value.count(")") or _HTTP_STATUS_BEFORE.search(text, max(0, start - 16), start):
        return False
    if value.isdigit() and (m := _JSON_NUMBER_KEY.search(text, max(0, start - 40), start)) \
            and not PERSONAL_NUMBER_KEY.search(m.group(1)):
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


def length_only(text: str, span: Span) -> bool:
    """A phone the patterns found by its length alone: bare digits, no ``+``, no separators (``phone_ok``'s last
    case). On the development sets these are as often an order's, a product's EAN or a customer's number as a
    person's, and every person's one there the model found too; so a union keeps them where the model agrees
    (``Masker.combine``), and the patterns alone keep them all."""
    return span.type == "PHONE" and text[span.start:span.end].isdigit()


def international_mobile(value: str) -> bool:
    """A mobile number written with its country's code (``+31 6 2847 1936``, ``0044 7911 123456``), by the country's
    numbering plan (libphonenumber's metadata via ``phonenumbers``). Written without one, a number's country, and so
    its line type, is a guess: most organisations' national numbers are a valid mobile in some country."""
    import phonenumbers

    digits = value.strip()
    if digits.startswith("00"):
        digits = "+" + digits[2:]
    if not digits.startswith("+"):
        return False
    try:
        number = phonenumbers.parse(digits, None)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_valid_number(number) and \
        phonenumbers.number_type(number) == phonenumbers.PhoneNumberType.MOBILE


# --- national ID numbers, by their check digits (python-stdnum) ------------------------------------------------
# Each shape is proposed by a regex and kept only when its country's check digits hold (PESEL's also encodes a
# birth date): typed SSN before the phone pattern sees the same digits. Not the shapes a phone shares too often
# (a BSN's nine digits, an NHS number's 3-3-4): those need their label (``pii.conform``).
PESEL = re.compile(r"(?<![\w-])\d{11}(?![\w-])")  # also a Turkish TC Kimlik number: eleven digits
PERSONNUMMER = re.compile(r"(?<![\w-])(?:\d{2})?\d{6}[-+]\d{4}(?![\w-])")
DNI_NIE = re.compile(r"(?<![\w-])(?:\d{8}|[XYZ]-?\d{7})-?[A-Z](?![\w-])")
CPF = re.compile(r"(?<![\w.])\d{3}\.\d{3}\.\d{3}-\d{2}(?![\w-])")
CODICE_FISCALE = re.compile(r"\b[A-Z]{6}\d{2}[A-EHLMPRST]\d{2}[A-Z]\d{3}[A-Z]\b")
# more services' access tokens by their documented prefixes (npm, GitHub's fine-grained, Hugging Face, PyPI,
# DigitalOcean, Stripe's restricted keys), beyond those the rule baseline shares (``rules.TOKEN``; rules 56)
TOKEN_PREFIXED = re.compile(r"(?<![\w-])(?:npm_[A-Za-z0-9]{36}|github_pat_\w{60,}|hf_[A-Za-z0-9]{30,}|pypi-[\w-]{50,}|"
                            r"dop_v1_[a-f0-9]{64}|rk_(?:live|test)_\w{20,})(?![\w-])")
# a Korean resident registration number (주민등록번호): the birth date, a dash, seven digits with their check (rules 57)
KOREAN_RRN = re.compile(r"(?<![\w-])\d{6}-[1-8]\d{6}(?![\w-])")
# a Czech or Slovak birth number (rodné číslo): six digits of the birth date, a slash, four with the check (rules 55;
# the nine-digit numbers of those born before 1954 have no check digit: any date would pass)
RODNE_CISLO = re.compile(r"(?<![\w/.-])\d{6}/\d{4}(?![\w/.-])")
AADHAAR = re.compile(r"(?<!\d)(?<!\d )[2-9]\d{3} \d{4} \d{4}(?! ?\d)")  # written in three groups of four


_CHINESE_MOBILE = re.compile(r"1[3-9]\d{9}")  # eleven digits too: one in a hundred passes the TC Kimlik test


def _national_id_ok(*modules: str) -> Callable[[str, int, str], bool]:
    checks = [import_module(f"stdnum.{m}").is_valid for m in modules]
    return lambda text, start, value: any(check(value) for check in checks) and not _CHINESE_MOBILE.fullmatch(value)


_ANY_NATIONAL_ID = _national_id_ok("pl.pesel", "tr.tckimlik", "se.personnummer", "es.dni", "es.nie", "br.cpf",
                                   "it.codicefiscale", "in_.aadhaar")  # built once: conform asks per span


def national_id_ok(value: str) -> bool:
    """Passes one of the national ID check-digit tests the patterns use."""
    return _ANY_NATIONAL_ID("", 0, value)


_URL_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}|\*{3}")


def password_shape_ok(text: str, start: int, value: str) -> bool:
    """Not an address, a URL's escaped query (``environment%3Dproduction``), a masked value (``****x2Lp``),
    Markdown emphasis (``*FieldsV1``) or a message ID (``<CAF3m+Kq8v2=...@mail``)."""
    return "@" not in value and not _URL_ESCAPE.search(value) and text[start - 1:start] != "<" \
        and value[0] not in "*~"


# --- a table's name columns ------------------------------------------------------------------------------------
# Why our own: Python's csv module gives a row's fields but not where they are in the text, and a span is offsets.
_NAME_COLUMNS = frozenset(words("name_columns"))
_ORGANISATION_COLUMNS = frozenset(words("organisation_columns"))
_CODE_COLUMNS = frozenset(words("code_columns"))
_ORGANISATION_PHONE_COLUMNS = frozenset(w for w in words("organisation_phone_labels") if " " not in w)
_PHONE_COLUMN_WORDS = frozenset(words("phone_column_words"))
_NOT_NAME_COLUMNS = frozenset(words("not_name_columns"))  # ``company_name``, ``product_name``: not a person's
_DELIMITERS = ",;\t|"
_NAME_CELL = re.compile(r"[^\W\d_][^\d\n()\[\]]{0,60}")  # letters first, no digits nor brackets (``N/A``: below)
# a column's label: up to three words, then maybe a unit in brackets (``内存(GB)``, ``size (MB)``)
_HEADER_CELL = re.compile(r"[ \t]*[^\W\d][\w.-]{0,30}(?: [\w.-]{1,30}){0,2}(?:[ \t]?[(（][\w%/.]{1,10}[)）])?[ \t]*")
_NOT_A_NAME_CELL = re.compile(r"(?i)n/?a|null|none|nil|unknown|redacted|anonymi[sz]ed|tbd|-+|\[.*\]|<.*>|\{.*\}")
_ACCOUNT_CELL = re.compile(r"(?i)\b(?:bot|system|administrator|admin|service|daemon|no-?reply)\b")  # ``Import Bot``
_MASK_CELL = re.compile(r"[X*•#_](?:[X*•#_ -]*[X*•#_])?")  # XXX-XX-XXXX, ***: a mask, not a name in capitals


def _cells(line: str, delimiter: str) -> list[tuple[int, int]] | None:
    """(start, end) of each field of a delimited line, quotes excluded; None when a quote is left open."""
    out, i = [], 0
    while True:
        if line.startswith('"', i):
            close = i + 1
            while (close := line.find('"', close)) >= 0 and line.startswith('""', close):
                close += 2
            if close < 0:
                return None
            out.append((i + 1, close))
            i = close + 1
            i = line.find(delimiter, i)
        else:
            end = line.find(delimiter, i)
            out.append((i, len(line) if end < 0 else end))
            i = end
        if i < 0:
            return out
        i += 1


def _column_key(label: str) -> str:
    return re.sub(r"[\s-]+", "_", label.strip().strip("\"'").lower())


def _is_name_column(header: str) -> bool:
    key = _column_key(header)
    return key in _NAME_COLUMNS or (key.endswith("_name") and key.count("_") <= 2 and key[:-5] not in _NOT_NAME_COLUMNS)


@dataclass(frozen=True)
class Table:
    """A delimited table in a text: its column labels and, per row, the row's offset, line and cells.
    Immutable: ``tables`` caches it, so every caller reads the same object."""

    labels: tuple[str, ...]
    rows: tuple[tuple[int, str, tuple[tuple[int, int], ...]], ...]


@functools.lru_cache(maxsize=1)
def tables(text: str) -> tuple[Table, ...]:
    """The delimited tables in ``text``: two or more lines in a row with the same number of fields, the first its
    header: three or more labels, and the rows of SQL ``INSERT`` statements (``sql_tables``). Our own parser
    because ``csv`` gives no character offsets. Cached for the last text: the patterns' pass
    (``table_name_cells``) and the after-merge pass (``Masker.combine``) read the same tables."""
    found: list[Table] = []
    lines, offset = [], 0
    for line in text.split("\n"):
        lines.append((offset, line))
        offset += len(line) + 1
    i = 0
    while i < len(lines):
        header = lines[i][1]
        delimiter = max(_DELIMITERS, key=header.count)
        heads = _cells(header, delimiter) if header.count(delimiter) >= 2 else None
        if heads and not all(_HEADER_CELL.fullmatch(header[a:b]) for a, b in heads):
            heads = None  # code (``name=name,``), prose: a header is three or more labels
        j, rows = i + 1, []
        while heads and j < len(lines) and (row := _cells(lines[j][1], delimiter)) is not None and len(row) == len(heads):
            rows.append((*lines[j], row))
            j += 1
        if rows:
            found.append(Table(tuple(header[a:b] for a, b in heads), tuple((o, line, tuple(row)) for o, line, row in rows)))
        i = j if j > i + 1 else i + 1
    return tuple(found + sql_tables(text))


_SQL_INSERT = re.compile(r"(?i)\binsert\s+into\s+[\w.\"`\[\]]+\s*\(([^()]*)\)\s*values\s*")
_SQL_ROW_START = re.compile(r"\s*\(")
_SQL_VALUE = re.compile(r"\s*(?:'((?:[^']|'')*)'|([^,()'\s][^,()']*?))\s*(?=[,)])")
_SQL_NEXT_ROW = re.compile(r"\s*,")


def sql_tables(text: str) -> list[Table]:
    """The rows of each ``INSERT INTO t (col, ...) VALUES (...), (...)`` in ``text`` as a table: the column
    list is its header (a seed file's ``family_name`` column says what its quoted values are, as a CSV's
    header does). Each row's cells are its values (a quoted one without its quotes)."""
    found = []
    for m in _SQL_INSERT.finditer(text):
        labels = [c.strip().strip('"`[]') for c in m.group(1).split(",")]
        rows, pos = [], m.end()
        while start := _SQL_ROW_START.match(text, pos):
            cells, p = [], start.end()
            while value := _SQL_VALUE.match(text, p):
                g = 1 if value.group(1) is not None else 2
                cells.append((value.start(g) - start.end() + 1, value.end(g) - start.end() + 1))
                p = value.end() + 1 if text.startswith(",", value.end()) else value.end()
                if text.startswith(")", value.end()):
                    break
            if not text.startswith(")", p) or len(cells) != len(labels):
                break
            row_start = start.end() - 1
            rows.append((row_start, text[row_start:p + 1], cells))
            if not (sep := _SQL_NEXT_ROW.match(text, p + 1)):
                break
            pos = sep.end()
        if rows:
            found.append(Table(tuple(labels), tuple((o, line, tuple(cells)) for o, line, cells in rows)))
    return found


def table_name_cells(text: str) -> list[tuple[int, int]]:
    """The cells under a person's-name column of a delimited table (``first_name``, ``last_name``, ``Nachname``,
    ``customer_name``): a tagger reads a row left to right and finds a given name more often than a surname, but
    the header says what each column holds."""
    found: list[tuple[int, int]] = []
    for table in tables(text):
        columns = [k for k, label in enumerate(table.labels) if _is_name_column(label)]
        for row_start, line, row in table.rows:
            for k in columns:
                a, b = row[k]
                value = line[a:b].strip()
                if _NAME_CELL.fullmatch(value) and not _NOT_A_NAME_CELL.fullmatch(value) and len(value.split()) <= 4 \
                        and not _MASK_CELL.fullmatch(value) and not _ACCOUNT_CELL.search(value):  # XXX-XX-XXXX: a mask
                    a += len(line[a:b]) - len(line[a:b].lstrip())
                    found.append((row_start + a, row_start + a + len(value)))
    return found


def _cells_under(found_tables: tuple[Table, ...], wanted: Callable[[str], bool]) -> list[tuple[int, int]]:
    found = []
    for table in found_tables:
        columns = [k for k, label in enumerate(table.labels) if wanted(_column_key(label))]
        found += [(start + row[k][0], start + row[k][1]) for start, _, row in table.rows for k in columns]
    return found


def code_cells(found_tables: tuple[Table, ...]) -> list[tuple[int, int]]:
    """(start, end) of each cell of ``found_tables`` (``tables(text)``) under a column that names no person's value: a
    product code's or a version's (``ean``, ``sku``, ``agent_version``, ``bmc_firmware``; ``code_columns``), a
    department's (``dzial``; ``department_columns``) or an organisation's tax number's (``supplier_vat_id``). An EAN-13
    has a phone's length and passes the Luhn check one time in ten, a firmware's ``2.61.0.4`` an address's shape, but
    the header says what it is."""
    return _cells_under(found_tables, lambda key: key in _CODE_COLUMNS or _VERSION_COLUMN.search(key) is not None
                        or _ORGANISATION_TAX_COLUMN.fullmatch(key) is not None or key in _DEPARTMENT_COLUMNS)


# a version's column (``agent_version``, ``bmc_firmware``), in one word or another script too (``kernelversion``,
# ``内核版本``, ``バージョン``; not ``conversion``)
_VERSION_COLUMN = re.compile(r"(?:(?<!con)version|_firmware|_fw|_kernel|_build|版本号?|バージョン|버전)$")
_DEPARTMENT_COLUMNS = frozenset(words("department_columns"))  # ``Księgowość`` under ``dzial``: a department, no one
# an organisation's own tax number (RULES.md: companies' numbers are not annotated); a bare ``vat_id`` may be a person's
_ORGANISATION_TAX_COLUMN = re.compile(r"(?:supplier|vendor|seller|company|merchant|manufacturer|carrier|issuer)_"
                                      r"(?:vat|tax|ust)(?:_?id)?(?:_?(?:no|nr|number))?")


_COLUMN_TYPES = {**{k: "SSN" for k in words("ssn_columns")}, **{k: "PASSWORD" for k in words("password_columns")},
                 **{k: "DATE_OF_BIRTH" for k in words("birth_columns")}}


def typed_cells(found_tables: tuple[Table, ...]) -> list[tuple[int, int, str]]:
    """(start, end, type) of each cell of ``found_tables`` under a column whose header names its type
    (``national_id``: SSN, ``password``: PASSWORD, ``birth_date``: DATE_OF_BIRTH; ``ssn_columns`` and its
    neighbours in words.toml)."""
    found = []
    for table in found_tables:
        for k, label in enumerate(table.labels):
            if ptype := _COLUMN_TYPES.get(_column_key(label)):
                found += [(start + row[k][0], start + row[k][1], ptype) for start, _, row in table.rows]
    return found


def organisation_phone_cells(found_tables: tuple[Table, ...]) -> list[tuple[int, int]]:
    """(start, end) of each cell of ``found_tables`` under an organisation's phone column: ``store_phone``,
    ``office_tel``, or a switchboard's label (``växel``, ``Zentrale``; ``organisation_phone_labels``)."""
    def wanted(key: str) -> bool:
        parts = key.split("_")
        return key in _ORGANISATION_PHONE_COLUMNS or (
            len(parts) == 2 and parts[0] in _ORGANISATION_COLUMNS and parts[1] in _PHONE_COLUMN_WORDS)
    return _cells_under(found_tables, wanted)


def organisation_rows(found_tables: tuple[Table, ...]) -> list[tuple[int, int]]:
    """(start, end) of each row of a table of organisations: its first column is one of ``organisation_columns``
    (``store_id``, ``branch``, ``Filiale``) and no column holds a person's name. A phone in such a row is the
    store's or the branch's, not a person's (RULES.md: PHONE)."""
    found = []
    for table in found_tables:
        key = _column_key(table.labels[0])
        if key.split("_")[0] in _ORGANISATION_COLUMNS and not any(_is_name_column(label) for label in table.labels):
            found += [(start, start + len(line)) for start, line, _ in table.rows]
    return found


@dataclass(frozen=True)
class Pattern:
    name: str
    type: str
    regex: re.Pattern | None
    check: Callable[[str, int, str], bool]  # (text, start, value) -> valid?
    group: int = 0
    finder: Callable[[str], list[tuple[int, int]]] | None = None  # instead of the regex: (start, end) of each value

    def matches(self, text: str) -> Iterable[tuple[int, int]]:
        if self.finder is not None:
            yield from self.finder(text)
            return
        for m in self.regex.finditer(text):
            yield m.start(self.group), m.end(self.group)


# the first digits of a card network's numbers (ISO/IEC 7812: airlines and old JCB 1, Diners/Amex/JCB 3, Visa 4,
# Mastercard 51-55 and 2221-2720, Mir 2200-2204, Maestro/Discover/UnionPay 5-6, and the older JCB 2131 and Maestro
# 0604 that Faker also issues): a Luhn-valid number that starts otherwise is a reference that passed the check by chance
# (``Claim No. 2024-0518-88731``: one number in ten does)
_CARD_ISSUER = re.compile(r"[13456]|2(?:22[1-9]|2[3-9]|[3-6]|7[01]|720)|220[0-4]|2131|0604")


# the groups card networks print a number in: 4-4-4-4 (and a tail of 1-4), 4-6-5 (Amex), 4-6-4 (Diners). Other
# groups are another number's, Luhn-valid by chance: an order's (``Pedido n.º 402-7718265-3390``), a phone's
# (``+49 151 23847761``), an ID's (``070516-1440569``)
_CARD_GROUPING = re.compile(r"\d{4}(?:[ -]\d{4}){2,3}(?:[ -]\d{1,4})?|\d{4}[ -]\d{6}[ -]\d{4,5}")


def card_number_ok(value: str) -> bool:
    """12 or more digits (no letters) that pass the Luhn check and start as a card network's numbers do, unbroken
    or in a card's groups (``_CARD_GROUPING``)."""
    if re.search(r"[^\d \-]", value):
        return False  # ``1Z4E80V96841270318``, a parcel's number, whose digits alone may pass
    if re.search(r"[ -]", value) and not _CARD_GROUPING.fullmatch(value):
        return False
    digits = re.sub(r"\D", "", value)
    return rules.luhn_ok(digits) and bool(_CARD_ISSUER.match(digits))


# another group of four digits right after: the card's shape cut from a longer number (a parcel's ``6204 1937 7301
# 5528 4402 1176``); an expiry date after a card (``4111 ... 1111 09/27``) is not a group
_MORE_GROUPS_AFTER = re.compile(r"[ -]\d{4}(?![\d/.:-])")


def card_ok(text: str, start: int, value: str) -> bool:
    return card_number_ok(value) and not _MORE_GROUPS_AFTER.match(text, start + len(value))


def card_candidates(text: str) -> Iterable[tuple[int, int]]:
    """``rules.CARD``'s matches, each followed by itself without its last group where an expiry date starts there
    (``4532 0151 1283 0366 09/27``: the regex takes the month as a fifth group, and the Luhn check fails)."""
    for m in rules.CARD.finditer(text):
        yield m.span()
        if text[m.end():m.end() + 1] in ("/", ".") and (tail := re.search(r"[ -]\d{1,2}$", m.group())):
            yield m.start(), m.start() + tail.start()


PATTERNS: tuple[Pattern, ...] = (  # most specific first: an earlier pattern wins an overlap
    Pattern("url_user", "USERNAME", rules.URL_CREDENTIALS, lambda t, s, v: True, group=1),
    Pattern("url_password", "PASSWORD", rules.URL_CREDENTIALS, lambda t, s, v: True, group=2),
    Pattern("email", "EMAIL", EMAIL, lambda t, s, v: True),
    # a local part in those scripts (``张伟@example.com``): the baseline's wider expression, where no address was found
    Pattern("email_attached", "EMAIL", rules.EMAIL, lambda t, s, v: True),
    Pattern("token", "PASSWORD", rules.TOKEN, lambda t, s, v: True),
    Pattern("token_prefixed", "PASSWORD", TOKEN_PREFIXED, lambda t, s, v: True),
    Pattern("iban", "IBAN", IBAN, lambda t, s, v: rules.iban_ok(v)),
    Pattern("card", "CREDIT_CARD", None, card_ok, finder=card_candidates),
    Pattern("ssn_us", "SSN", rules.SSN_US, lambda t, s, v: ssn_ok(v)),
    Pattern("ipv4", "IP_ADDRESS", IPV4, ip_ok),
    Pattern("ipv6", "IP_ADDRESS", rules.IPV6, ip_ok),
    Pattern("ipv6_compressed", "IP_ADDRESS", IPV6_COMPRESSED, ipv6_compressed_ok),
    Pattern("pesel_tckimlik", "SSN", PESEL, _national_id_ok("pl.pesel", "tr.tckimlik")),
    Pattern("personnummer", "SSN", PERSONNUMMER, _national_id_ok("se.personnummer")),
    Pattern("dni_nie", "SSN", DNI_NIE, _national_id_ok("es.dni", "es.nie")),
    Pattern("cpf", "SSN", CPF, _national_id_ok("br.cpf")),
    Pattern("codice_fiscale", "SSN", CODICE_FISCALE, _national_id_ok("it.codicefiscale")),
    Pattern("aadhaar", "SSN", AADHAAR, _national_id_ok("in_.aadhaar")),
    Pattern("rodne_cislo", "SSN", RODNE_CISLO, _national_id_ok("cz.rc")),
    Pattern("korean_rrn", "SSN", KOREAN_RRN, _national_id_ok("kr.rrn")),
    Pattern("phone", "PHONE", PHONE, phone_ok),
    Pattern("user_key", "USERNAME", USER_KEY, login_ok, group=1),
    Pattern("cli_user", "USERNAME", CLI_USER, login_ok, group=1),
    Pattern("su_user", "USERNAME", SU_USER, login_ok, group=1),
    Pattern("pan_in", "SSN", PAN_IN, lambda t, s, v: True, group=1),
    Pattern("nino_uk", "SSN", NINO, lambda t, s, v: True),
    Pattern("profile_handle", "USERNAME", PROFILE_HANDLE, lambda t, s, v: v.lower() not in _SITE_PAGES, group=1),
    Pattern("host_handle", "USERNAME", HOST_HANDLE, lambda t, s, v: True, group=1),
    Pattern("ldap_login", "USERNAME", LDAP_LOGIN, ldap_ok, group=1),
    Pattern("ldap_name", "NAME", LDAP_NAME, ldap_ok, group=1),
    Pattern("korean_name_title", "NAME", KOREAN_NAME_TITLE, lambda t, s, v: True, group=1),
    Pattern("password_shape", "PASSWORD", PASSWORD_SHAPE, password_shape_ok),
    Pattern("table_name", "NAME", None, lambda t, s, v: True, finder=table_name_cells),
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
    starts: list[int] = []  # the kept spans' starts, sorted; kept spans never overlap, so their ends sort alike
    ends: list[int] = []
    for p in (PATTERNS if patterns is None else patterns):
        for start, end in p.matches(text):
            i = bisect.bisect_left(starts, end)  # kept spans starting before this one ends; the last ends latest
            if start >= end or (i and ends[i - 1] > start):
                continue
            if p.check(text, start, text[start:end]):
                found.append(Span(start, end, p.type, 1.0, "patterns"))
                starts.insert(i, start)  # no kept span starts inside [start, end): start sorts where end does
                ends.insert(i, end)
    return sorted(found)
