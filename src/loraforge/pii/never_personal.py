"""What the annotation rules (``datasets/pii-handwritten/RULES.md``) say is never personal data however it looks:
role mailboxes of an organisation (``security@``, ``no-reply@``), loopback addresses and CIDR ranges, versions and
image tags, generic system accounts and bots, template placeholders, a machine's numbers in logs, companies'
names and numbers. ``never_personal(text, span)`` is asked by ``conform`` for every span, the model's and the
patterns' alike, so neither depends on having seen that context in training."""

from __future__ import annotations

import ipaddress
import re

import phonenumbers

from loraforge.data.pii_tags import spaceless
from loraforge.eval.pii_baseline import TOKEN
from loraforge.pii.labels import BIRTH_LABEL, ID_LABEL, LABEL_WINDOW
from loraforge.pii.patterns import DOTTED_NUMBER, EMAIL, PERSONAL_NUMBER_KEY, service_number
from loraforge.pii.spans import BRACKETS, Span, line_bounds
from loraforge.pii.wordlists import alternation as _alternation
from loraforge.pii.wordlists import personal_names, unaccented, unaccented_words
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
SYSTEM_ACCOUNTS = frozenset(_words("system_accounts")) | frozenset(_words("server_accounts"))
_BOT = re.compile(r"(?i)(?:^|[-_.])bot(?:\[bot\])?$|\[bot\]$|^bot[-_.]")
# chat words a tagger takes for a handle or a name (``hey r u coming``); lower case only: ``Ty`` is a name
CHAT_WORDS = frozenset(_words("chat_words"))
# a family role or the writer as a chat's speaker (``Mama:``, ``Ja:``): any case
SPEAKER_ROLES = frozenset(_words("kinship_words")) | frozenset(_words("first_person_words"))
# placeholders, not secrets or logins (RULES.md: PASSWORD): template variables, changeme, masks
_PLACEHOLDER_VALUE = re.compile(r"(?i)\$\{[^}]*\}|\$\([^)]*\)|(?-i:\$[A-Z_][A-Z0-9_]*)|\{\{.*\}\}|<[^<>]+>|%\([^)]*\)s|"
                                r"user(?:name)?|pass(?:word)?|"  # the word itself: ``postgres://USER:PASS@HOST``
                                r"\*+|change-?me|changeit|"
                                r"\w*your[_-]\w*|[a-z]{2,5}_(?:test|live)_")  # sk_test_your_key_here; a key's prefix (``ph_test_``)
# a template's placeholder inside a secret's value or right after its prefix (``sk_test_<your-key>``): no secret
_PLACEHOLDER_PART = re.compile(r"<[^\W\d_][\w.-]{2,}>")
_PLACEHOLDER_AFTER = re.compile(r"[_-]?<[^\W\d_][\w.-]{2,}>")
# the quotes a name opens and closes with, in the rules' languages (``„Frau Holle"``, ``«Lucía»``, ``"Léa"``)
_OPENING_QUOTES = "\"'„“«"
_CLOSING_QUOTES = "\"'“”»"
# a chatbot's name: its role right before (``Chatbot "⟦Max⟧"``, ``Bot (⟦Penny⟧ from Northbank):``) or after it
# (``⟦Léa⟧, l'assistante virtuelle``)
_BOT_ROLE = _alternation("bot_roles")
_BOT_ROLE_BEFORE = re.compile(r"(?i)(?<![^\W\d_])" + _BOT_ROLE + r"(?:[ \t]+[" + _OPENING_QUOTES + "]?|[" + _OPENING_QUOTES + r"]|[ \t]*\([ \t]*)$")
# ... after it only where the bot introduces itself (``Je suis ⟦Léa⟧, ...``): ``Thanks Anna, the bot ...`` keeps its mask
_SELF_INTRODUCTION_BEFORE = re.compile(r"(?i)(?<![^\W\d_])(?:I'm|I am|this is|my name is|je suis|c'est|je m'appelle|soy|me llamo|"
                                       r"sono|mi chiamo|ich bin|hier ist|eu sou|sou|jestem|ik ben|hier is|ben)[ \t]+$")
_BOT_ROLE_AFTER = re.compile(r"(?i)[" + _CLOSING_QUOTES + r"]?[ \t]*(?:,[ \t]*|[ \t]*\([ \t]*)(?:(?:l'|the |la |el |il |der |die |our |your |votre |"
                             r"notre |nuestro |nuestra |su |tu |o |a |de |ihr |ihre |unser |unsere )[ \t]*)?" + _BOT_ROLE + r"(?![^\W\d_])")
# rules 54: a bot named once with its role names it in every line of the text (``Chat with ⟦Ava⟧ (virtual
# assistant)``, then ``Ava: ...`` as the speaker); a capital first
_BOT_NAMED = re.compile(r"(?<![^\W\d_])([^\W\d_][\w'’-]*)[ \t]*\([ \t]*(?i:(?:the |our |your |l'|la |le |el |il |o |a |der |die |"
                        r"ihr |ihre |unser |unsere )?" + _BOT_ROLE + r")[ \t]*\)|"
                        r"(?<![^\W\d_])(?i:" + _BOT_ROLE + r")[ \t]+[" + _OPENING_QUOTES + r"]?([^\W\d_][\w'’-]*)")


# rules 55: a birthplace (``Née le 17/02/1996 à ⟦Quimper⟧``), a school's classes named after trees (``⟦Hazel⟧ and
# Rowan classes``), a pet (``slyší na jméno ⟦Bubák⟧``): no person's name
_BIRTHPLACE_BEFORE = re.compile(r"(?i)(?<![^\W\d_])(?:née?|born|geboren|nacid[oa]|nat[oa]|nascid[oa]|urodzon[ya]|narozen[aá]?)"
                                r"(?![^\W\d_])[^\n]{0,30}?[ \t](?:à|in|en|a|w|em|ve|v)[ \t]+$")
_CLASS_AFTER = re.compile(r"(?:[ \t]+(?:and|&|und|et|y|e|i|en)[ \t]+[^\W\d_][\w'’-]*)?[ \t]+"
                          r"(?i:class|classes|klasse|klassen|classe|clase|clases|klas)(?![^\W\d_])")
_PET_NAME_BEFORE = re.compile(r"(?i)(?:answers to(?: the name(?: of)?)?|responds to(?: the name(?: of)?)?|slyší na jméno|"
                              r"hört auf den namen|répond au nom de|responde al nombre de|risponde al nome(?: di)?|"
                              r"wabi się|reaguje na imię|luistert naar de naam|atende pelo nome de)[ \t]+[" + _OPENING_QUOTES + r"]?$")


def bot_names(text: str) -> frozenset[str]:
    """The names ``text`` gives a bot, with a capital (``Ava`` of ``Ava (virtual assistant)``)."""
    found = (m.group(1) or m.group(2) for m in _BOT_NAMED.finditer(text))
    return frozenset(n for n in found if n[0].isupper())


# a product named after a person, its model's name in quotes (``sofá modelo "⟦Lucía⟧"``)
_PRODUCT_MODEL_BEFORE = re.compile(r"(?i)(?<![^\W\d_])" + _alternation("product_model_before") + r"[ \t]+[" + _OPENING_QUOTES + "]$")
# a company's legal form: a NAME ending in one is a company, an ADDRESS right after one is its premises (RULES.md)
LEGAL_FORM = _alternation("legal_forms")
_COMPANY_NAME = re.compile(r".+\s" + LEGAL_FORM + r"\.?")
_COMPANY_BEFORE = re.compile(r"\b" + LEGAL_FORM + r"\.?\s*[,·|–—-]\s*$")
# the identifier of a request, an event, an account or an organisation is not a secret (``"request_id":"req_01HZ..."``),
# nor is a key's public fingerprint (``SHA256:Xq2b...``, ``Fingerprint: 8c1f...``), a checksum or a commit
_ID_KEY_BEFORE = re.compile(r"(?i)(?:\b|_)(?:request|trace|span|event|correlation|transaction|message|chat|org|tenant|"
                            r"account|customer|order|job|run|build|bic|swift|existing[ _-]?secret|secret[ _-]?name|"
                            r"fingerprint|checksum|digest|etag|commit|idempotency[ _-]?key)(?:[ _-]?(?:id|code))?[\"']?\s*[:=]?\s*[\"']?$|"
                            r"(?<![\w-])(?:id|uid|uuid|guid)[\"'`]?\s*[:=]?\s*[\"'`]?$|"  # a bare ``"id": "usr_01J7..."``
                            r"\b(?:SHA256|SHA1|MD5):$|"
                            r"(?i:\b(?:RSA|DSA|ECDSA|EDDSA|ED25519|PGP|GPG|OpenPGP)[ \t]+key(?:[ \t]+ID)?)[ \t]*[:=]?[ \t]*$|"  # gpg's ``using EDDSA key 8A3F...``
                            r"(?i:\b(?:hash|md5|sha-?(?:1|224|256|384|512))\b)\)?[ \t]*[:=][ \t]*$|"  # ``Log-Hash (MD5): 5b7e...``
                            r"(?i:\b(?:kimli[gğ]i|identifiant|kennung|identificador|identificativo))[ \t]*[:=][ \t]*$|識別子[:：]?$")
_RANGE_AFTER = re.compile(r"(?:[0-9a-fA-F]*::?)*/\d{1,3}\b")  # an address (or its first groups) then /n: a CIDR range

# a Kubernetes object's own name (``metadata:`` / ``name: regcred``), YAML or JSON: named by the API, not a person
_OBJECT_NAME_BEFORE = re.compile(r'(?:^|\n)[ \t]*metadata:[ \t]*\n[ \t]+name:[ \t]*["\']?$|"metadata"\s*:\s*\{\s*"name"\s*:\s*"$')
# a host, not a login (``"auths": {"ghcr.io": ...}``)
HOSTNAME = re.compile(r"(?i)(?:[a-z0-9-]+\.)+(?:io|com|org|net|dev|cloud|local|internal|svc|app|ai|example|test|"
                       r"invalid|localhost|lan|corp|eu|de|uk|fr|es|it|nl|pl|jp|cn|kr|in|br|ch|at|se|tr|ru|ua|au|ca|mx|ar|pt|be|dk|no|"
                       r"fi|cz|hu|ro|gr|il|za|ng|ke|tz|id|my|sg|ph|vn|th|tw|hk|nz|ie)(?::\d{1,5})?")
# a network card's MAC address (RULES.md: not annotated), a certificate's or a key's fingerprint in pairs: not an IP
_MAC = re.compile(r"(?i)[0-9a-f]{2}(?:[:-][0-9a-f]{2}){5,}")
# machine identifiers a tagger takes for an address: a hash or container ID, an image digest, a PCI slot,
# a duration (``47m``), localhost; a word typed IP_ADDRESS keeps its mask (it may be a name)
_NOT_IP = re.compile(r"(?i)(?=[0-9a-f]*\d)[0-9a-f]{6,}|(?:sha\d+|md5):[0-9a-f]+|[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.\d|"
                     r"\d+(?:ms|[smhd])|localhost(?::\d{1,5})?")
# a record's code: letters, a hyphen, digits (a customer or payment ID in a table), never a phone, card or ID number
_RECORD_CODE = re.compile(r"[A-Z]{1,5}-\d{3,8}")
# a parcel's international tracking number (UPU S10: two letters, eight digits and a check digit, the origin's country):
# ``KR884120579JP``, ``LY482310976LT``; an IBAN's country code is followed by two check digits, never ends in letters
_PARCEL_NUMBER = re.compile(r"[A-Z]{2}\d{9}[A-Z]{2}")
_IMAGE_TAG = re.compile(r"[a-z][\w.-]*:\d+(?:\.\d+)*")  # name:version
# what a model may type an address that is none: a number with its unit (``41.27MB``, ``12.877s``), a timestamp or a
# status (``11.630275``, ``5.7.1``), SNMP OIDs; an address inside keeps its mask (``_WHOLE_IPV4``: letters may follow
# it, ``10.8.0.27MB``, where ``pii_baseline.IPV4`` would not match)
_NUMBER_WITH_UNIT = re.compile(r"[\d.,]+[ \t]*[A-Za-zµ%/]{0,4}|(?:\.?\d+(?:\.\d+){4,}[ \t]*)+")
_WHOLE_IPV4 = re.compile(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d.])")
# a code path (``com.acme.billing.InvoiceService.computeTax``): dotted, with a CamelCase or call-like part
_CODE_PATH = re.compile(r"[a-z][\w]*(?:\.[A-Za-z_]\w*){2,}")
# a date with a time of day is when something happened, not a birth (``[30/Sep/2023:23:56:46 +0000]``)
_TIME_AFTER = re.compile(r"(?::|T|,?\s)\d{1,2}:\d{2}")  # also a chat export's ``[12/6/24, 18:07]``


# a format, not a value: DD/MM/YYYY, XXX-XX-XXXX, **** (letters that stand for digits, in groups)
_FORMAT_MASK = re.compile(r"(?i)[xdmyn#*•_]+(?:[-/. ][xdmyn#*•_]+)*")
_BARE_NUMBER = re.compile(r"\d{1,6}(?:[.,]\d{1,2})?")  # an amount, a year, a count
_NUMBER_TYPES = ("PHONE", "SSN", "IBAN", "DATE_OF_BIRTH", "IP_ADDRESS", "CREDIT_CARD")


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
    if ptype == "IBAN" and sum(c.isdigit() for c in value) < 5 and not any(c.isalpha() for c in value):
        return True  # four digits of a longer code (``4518``); words typed IBAN are a wrongly typed value, kept
    if ptype == "PHONE" and DOTTED_NUMBER.fullmatch(value) and sum(c.isdigit() for c in value) < 9:
        return True  # a version (``535.161.07``): a phone written with dots has at least nine digits
    if ptype == "DATE_OF_BIRTH" and (_TWO_GROUP_DATE.fullmatch(value) or (value.isdigit() and len(value) <= 2)):
        return True  # an expiry, an age (``満28歳``)
    return ptype in ("CREDIT_CARD", "IP_ADDRESS") and bool(_BARE_NUMBER.fullmatch(value))


def ipv6_port(value: str) -> int | None:
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
# a template placeholder in the text (``%(username)s``, ``${DB_PASSWORD}``, ``{{ .Values.x }}``, a format field
# ``{password}`` or ``{os.environ['DB_USER']}``, a word in angle brackets in a URL's user part ``://<db-user>:<pw>@``):
# no piece of it is a value. A format field holds no space or colon (``{user: jdoe, password: S3cret}`` is a YAML map
# of values), and no ``@`` anywhere (``<dave@example.com>`` is an address)
_PLACEHOLDER_IN_TEXT = re.compile(r"%\([^)\n]*\)s|\$\{[^}\n]*\}|\{\{[^}\n]*\}\}|(?<![{$])\{[A-Za-z_][\w.\[\]'\"]*\}(?!\})|"
                                  r"(?<=//)<[^<>@\s]+>(?=:)|(?<=:)<[^<>@\s]+>(?=@)")
# a version's key or word right before an IP-shaped number (``"driver":"8.36.3.0"``, ``upgrade from 10.27.13.24``,
# in the rules' languages too: ``sürüm 3.7.1.204``, ``v. 8.3.0.41``; an image's ``tag: "2.9.0.4"``, ``bumped to 4.18.0.6``)
# (one word may come between: ``Firmware atual: 1.4.0.22``), or a changelog's heading (``## [10.2.0.1] - 2024-05-14``);
# an install's verb right before it (``reinstall 6.1.9.3``; not ``install ... on 10.0.0.5``) (rules 63)
_VERSION_BEFORE = re.compile(r"(?i)(?:(?:(?-i:\b[A-Z][A-Za-z]+/)|\bv\.?|\bversion|\bver\.?|\brev(?:ision)?\.?|\brelease|\bbuild|\bfirmware|\bkernel|"
                             r"\b(?:re)?install(?:s|ed|ing)?(?=[ \t]+v?$)|"
                             r"\bdriver|\bupgraded? (?:from|to)|\bbumped to|\bversión|\bversão|\bversione|\bwersj[ai]|\bверси[яи]|"
                             r"\bsürüm(?:ü)?|\bkernel\b[^\n.;:]{0,20}\b(?:is|ist|est|es|è|é)|\bsection|\babschnitt|\bsecci[oó]n|\bchapter|\bядр[оа]|\bolder|\bnewer|\bprior to|"
                             r"\banterior a|\bposterior a|\bsince)(?:\s+[^\W\d]+)?|"
                             r"最新版|版本由?|升级至|バージョン|버전|संस्करण|फ़र्मवेयर|إصدار|§|커널|カーネル|内核)"
                             r"[\"']?\s*[:=]?\s*[\"'（(]?v?$|^#{1,6}\s*\[?v?$|"
                             r"\btag[\"']?\s*[:=]\s*[\"']?v?$", re.M)  # ``tag:`` as a key (German ``Tag`` is a day)


# a constant or a key whose name holds ``version`` (``MIN_SERVER_VERSION: &str = "⟦3.2.0.41⟧"``, ``"agentVersion": "``;
# ``_VERSION_BEFORE`` reads the word alone), its type annotation too; not ``conversion:``; a release's key, its
# package's name before an ``@`` (``SENTRY_RELEASE=kasbah-crm@⟦1.9.0.3⟧``)
_VERSION_KEY_BEFORE = re.compile(r"(?:(?<![A-Za-z])(?i:version)|(?<=[a-z])Version)\w*[\"']?"
                                 r"(?:[ \t]*:[ \t]*&?'?[\w<>\[\]]+)?[ \t]*[:=][ \t]*[\"']?v?$|"
                                 r"(?<![A-Za-z])(?i:release)\w*[\"']?[ \t]*[:=][ \t]*[\"']?(?:[\w.-]+@)?v?$")
# a version's range after the number (``4.1.9.2 or later``, ``6.3.0.12 أو أحدث``), and a package's file name before it
# (``nvidia-cudnn-cu12-8.9.2.26``, ``opencv-python-headless-4.10.0.84``: a name's letters, then a hyphen)
_VERSION_RANGE_AFTER = re.compile(r"(?i)[ \t]*(?:or (?:later|newer|above|higher)|and (?:later|newer|above)|o (?:superior|posterior)|"
                                  r"ou (?:supérieure?|plus récente?)|oder (?:höher|neuer)|of (?:hoger|nieuwer)|lub nowsz[ay]|"
                                  r"или (?:новее|выше)|أو أحدث|أو أعلى|以降|及以上|或更高|이상)")
_PACKAGE_BEFORE = re.compile(r"(?<![\w.-])[A-Za-z][\w.]*(?:-[A-Za-z][\w.]*)*-$")
# a release announced after the number (``edge-gateway ⟦10.4.12.1⟧ tagged``; not ``tagged as`` a threat), a version's
# example after the command that prints it (``hedgehog --version`, e.g. 2.14.0.3``), a parametrised test's id
# (``test_parse[4.10.0.84]``)
_RELEASE_AFTER = re.compile(r"[ \t]+(?:tagged|released)\b(?![ \t]+as\b)")
# a version's change told by its verb, a few words before the number (``roll the Wi-Fi driver forward to ⟦22.250.1.2⟧``,
# ``downgraded the agent back to``, ``rolled back ingest-service from 4.12.0.3 to``, ``revert to``); not ``update``,
# ``move`` or ``point``: ``update DNS to 10.0.0.53`` names an address
_VERSION_CHANGE_BEFORE = re.compile(r"(?i)\b(?:upgrad(?:e[ds]?|ing)|downgrad(?:e[ds]?|ing)|roll(?:s|ed|ing)?(?:[ \t]+[\w-]+){0,4}"
                                    r"[ \t]+(?:forward|back)|revert(?:s|ed|ing)?)(?:[ \t]+[\w.-]+){0,4}[ \t]+(?:to|from)[ \t]+v?$|"
                                    r"\broll-?outs?[ \t]+of[ \t]+[\w.-]+[ \t]+v?$")  # ``the rollout of GlobalConnect`` (rules 63)
_VERSION_EXAMPLE_BEFORE = re.compile(r"(?i)--version`?\)?,?[ \t]+(?:e\.g\.|for example|z\.\s?B\.|p\.\s?ex\.|por ejemplo)[ \t]*$")
_TEST_ID_BEFORE = re.compile(r"\btest_\w*\[$")
_MONTH_NAME = re.compile(r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sept?|Oct|Nov|Dec)(?:[a-z]{2,6})?")
_DAY_TIME_AFTER = re.compile(r"\.?[ \t]{1,2}\d{1,2},?[ \t]+\d{1,2}:\d{2}")  # ``Jan 28 02:15:00``: a log's timestamp
_THREAD_NAME = re.compile(r"[A-Z][a-z]+(?:[A-Z][a-z]+)+-\d+(?:-\w+)*")  # ``HikariPool-1``, ``ForkJoinPool-3-worker-1``
# a placeholder key: a prefix, then one character repeated (``pk_test_xxxxxxxxxxxxxxxx``, ``AKIAXXXXXXXXXXXXXXXX``)
_PLACEHOLDER_RUN = re.compile(r"[\w-]*?([xX*•#])\1{7,}")
# a payment platform's object ID (a charge, a customer, an invoice): a record's key, not a secret; its secrets are
# ``sk_``, ``rk_``, ``whsec_`` and a client secret's ``_secret_`` part
_OBJECT_ID = re.compile(r"(?:ch|py|pi|cus|in|txn|re|src|pm|seti|evt|acct|prod|price|sub|po|tr|ii|il|si|ba|card|cs|tok)_"
                        r"(?:test_|live_)?[A-Za-z0-9]{14,}")
# a Kubernetes object named in a kubectl command (``kubectl describe secret ⟦ledger-db⟧``): an object, no one's
_KUBECTL_OBJECT_BEFORE = re.compile(r"\bkubectl\b(?:[ \t]+-{1,2}[\w-]+(?:[ =][\w.-]+)?)*[ \t]+(?:get|describe|delete|edit|patch|"
                                    r"label|annotate|rollout (?:restart|status|undo))[ \t]+(?:secrets?|configmaps?|cm|"
                                    r"deployments?|deploy|pods?|po|services?|svc|serviceaccounts?|sa|ingress(?:es)?|ing|"
                                    r"statefulsets?|sts|jobs?|cronjobs?|cj|nodes?|namespaces?|ns|pvc|pv|roles?|rolebindings?|"
                                    r"clusterroles?|clusterrolebindings?)(?:/|[ \t]+)$")
# a call assigned in code (``username = ⟦env⟧("MIMIR_USER")``); not a log's ``user jdoe(uid=1017)``
_ASSIGNED_BEFORE = re.compile(r"=[ \t]*$")
_IDENTIFIER = re.compile(r"[A-Za-z_][\w.]*")
_CALL_AFTER = re.compile(r"\((?!uid=)")
_COMPANY_REGISTER = re.compile(r"\b(?:KRS|REGON)\b")
_INVOICE_ISSUER_NUMBER = re.compile(r"T\d{13}")  # Japan's qualified invoice issuer number: a company's
_VERSION_TYPE_AFTER = re.compile(r"[\"']?[ \t]*,[ \t]*(?:\w+\.)?Version[{(]")  # a test's table: ``{"6.1.0.18", Version{}, true}``
# a platform after it (``sync client ⟦4.12.0.3⟧ on Windows``): a product's version (rules 56)
_PLATFORM_AFTER = re.compile(r"[ \t]+(?:on|for|für|pour|para|per|na|voor)[ \t]+(?:Windows|macOS|Linux|Android|iOS|iPadOS|"
                             r"ChromeOS|Ubuntu|Debian)\b")
_VERSION_SUFFIX_AFTER = re.compile(r"-[a-z]|\+[a-z0-9]")  # ``6.1.0.18-rt9``, ``1.2.3.4+build``: a version's suffix
# a word that speaks of an address (its host, its client, its traffic), on an IP-shaped number's line: the number
# keeps its mask (``_small_version``); inside identifiers too (``bastion_public_ip``, ``REMOTE_ADDR``); not a user
# agent's key or a client's product name (``user_agent``, ``tarifa-client/``)
_ADDRESS_WORD = re.compile(r"(?i)(?<![a-z])(?:ips?|ipv[46]|inet6?|addr\w*|address\w*|adress\w*|direcci[oó]n|endere[cç]o|"
                           r"indirizzo|адрес\w*|host\w*|from|client\w*(?!/)|src|dst|source|remote\w*|peer\w*|server\w*|"
                           r"connect\w*|ssh|ping|log(?:ged)?[ _-]?in|via|origin\w*|forward\w*|block\w*|bann?(?:ed)?|unban|"
                           r"allow\w*|deny|denied|reject\w*|attack\w*|scan\w*|gateway|gw|dns|nameserver|resolver|listen\w*|"
                           r"bind|route[rs]?|proxy|vpn|nat|lan|wan|subnet|endpoint|upstream|bastion|firewall|whitelist|"
                           r"blacklist|blocklist|geoip|rhost|user(?![_ -]?agent))(?![a-z])|(?-i:IP)|アドレス|地址|주소|@|://")
# what a product's version follows: a word or a name and a space (``skyctl ``, ``PayCore ``, ``Firmware-Update auf ``;
# not a tab: a table's cell; a package list's ``linux-image-amd64 (6.1.0.18)``), a user agent's product
# (``synthetic-monitor/``, not a path's ``/var/4.2.0.1``), an arrow
_NAME_BEFORE_VERSION = re.compile(r"[^\W\d][\w.&-]* +\(?$|(?<![\w./-])[\w.-]*[^\W\d][\w.-]*/$|→ *$")
_PORT_AFTER = re.compile(r":\d")
_ADDRESS_WORD_REACH = 200


def _reads_as_version(text: str, span: Span, line_start: int) -> bool:
    """An IP-shaped number in a version's context: a version word or key before it (a key or a constant named
    ``*version*`` too), a range after it (``or later``), a package's file name before it, a version's suffix after
    it (``6.1.0.18-rt9``), a release word or a version's type after it (``tagged``, ``, Version{}``), a ``--version`` example or a test's id before it,
    an upgrade's or a rollback's verb before it (``roll the driver forward to``)."""
    return bool(_VERSION_BEFORE.search(text, max(line_start, span.start - 24), span.start)
                or _VERSION_TYPE_AFTER.match(text, span.end) or _PLATFORM_AFTER.match(text, span.end)
                or _VERSION_KEY_BEFORE.search(text, max(line_start, span.start - 40), span.start)
                or _VERSION_EXAMPLE_BEFORE.search(text, max(line_start, span.start - 40), span.start)
                or _TEST_ID_BEFORE.search(text, max(line_start, span.start - 60), span.start)
                or _VERSION_CHANGE_BEFORE.search(text, max(line_start, span.start - 80), span.start)
                or _RELEASE_AFTER.match(text, span.end)
                or _VERSION_RANGE_AFTER.match(text, span.end) or _VERSION_SUFFIX_AFTER.match(text, span.end)
                or _PACKAGE_BEFORE.search(text, max(line_start, span.start - 60), span.start))


# a type in code, not a login (``pub username: ⟦Option⟧<String>``, ``user: ⟦List⟧<User>``)
_GENERIC_TYPE_AFTER = re.compile(r"<[A-Za-z_]")
# a programming language's type after a typed name (``def greet(user_name: ⟦str⟧)``, ``pub username: ⟦String⟧,``): no login
_TYPE_NAMES = frozenset({"str", "string", "int", "integer", "bool", "boolean", "bytes", "text", "varchar", "char",
                         "object", "any", "uuid", "none", "null", "number"})
_TYPED_BEFORE = re.compile(r"\w[ \t]*:[ \t]*$")
_TYPE_END_AFTER = re.compile(r"[ \t]*(?:[),;|\]=>]|$)", re.M)
# a weekday before a month and its day: a timestamp (``Last login: ⟦Tue⟧ Apr  9 08:51:17 2024``), no login
_WEEKDAY = re.compile(r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)(?:day|sday|nesday|rsday|urday)?")
_MONTH_DAY_AFTER = re.compile(r"[ \t]+" + _MONTH_NAME.pattern + r"\.?[ \t]+\d{1,2}\b")
# a server's own service login (``auth_user=⟦pgbouncer_auth⟧``, ``grafana-reader``): a ``server_accounts`` name, then a
# role (a generic word's is a credential's user: ``mysql -u ⟦deploy_rw⟧``)
_ACCOUNT_ROLE = re.compile(r"(?i)" + _alternation("server_accounts") + r"[_-](?:auth|admin|ro|rw|read(?:er|only)?|writer?|"
                           r"stats|monitor(?:ing)?|exporter|repl(?:ication)?|backup)")
# a directory entry under a service accounts' branch (``cn=⟦svc-ldap-read⟧,ou=Service Accounts,dc=corp``): no person's
_SERVICE_BRANCH_AFTER = re.compile(r"(?i)[^\n]*?\bou=(?:service[ _-]?accounts?|svc|services|applications?|apps|"
                                   r"system(?:[ _-]?accounts?)?|robots?|bots?)\b")
# a title and a name together in quotes name a thing after a person (``'Mme ⟦Alfred⟧ Carrière'``, a rose;
# ``Foodtruck „Frau ⟦Holle⟧"``): the quote opens right before the title and closes right after the name
_QUOTED_TITLE_BEFORE = re.compile(r"[" + _OPENING_QUOTES + r"][ \t]?(?:" + _alternation("honorifics_before") + "|"
                                  + _alternation("english_titles") + r"\.?)[ \t]+(?:[^\W\d][\w'’-]*[ \t]+)?$")
_QUOTE_CLOSE_AFTER = re.compile(r"(?:[ \t]+[^\W\d][\w-]*)?[" + _CLOSING_QUOTES + "]")
_THAI = re.compile(r"[\u0e00-\u0e7f]")
_BOT_SUFFIXES = _words("bot_suffixes")
_PERCENTILE = re.compile(r"[pP](?:50|75|90|95|99|999|99\.9)")


def _small_version(text: str, span: Span, value: str, line_start: int, line_end: int) -> bool:
    """A four-part version that no version word announces (RULES.md: versions that look like IPs): after a word or a
    product's name (``claims-batch 5.12.0.7``, ``PayCore 9.1.4.207 → 9.2.0.15``), its first number 0-15 but not 10.
    Public hosts do hold those ranges, so an address's word before it on its line (within ``_ADDRESS_WORD_REACH``:
    a log line of thousands of addresses is read once per address, not whole each time) or just after it, or a
    port, keeps the mask: the gold check (``bench.pii_errors --adapter gold``) over the training parts, rounds 11-17,
    ``pii:train`` and ``pii:dev`` leaks no annotated address."""
    parts = value.split(".")
    if len(parts) != 4 or not all(p.isdigit() for p in parts) or int(parts[0]) > 15 or parts[0] == "10":
        return False
    return bool(_NAME_BEFORE_VERSION.search(text, max(line_start, span.start - 80), span.start)) and not (
        _ADDRESS_WORD.search(text, max(line_start, span.start - _ADDRESS_WORD_REACH), span.start)
        or _ADDRESS_WORD.search(text, span.end, min(line_end, span.end + 24)) or _PORT_AFTER.match(text, span.end))


def _netmask(value: str) -> bool:
    """``255.255.255.0``, ``255.0.0.0``: a network's mask, no host's address."""
    if not value.startswith("255."):
        return False
    try:
        ipaddress.IPv4Network(f"0.0.0.0/{value}")
    except ValueError:
        return False
    return True


def _log_process(text: str, span: Span, line_start: int) -> bool:
    """The program or the process ID of a log line (``mail ⟦dovecot⟧:``, ``su[⟦66873⟧]``, ``)<⟦75437⟧>``):
    a machine's, never a person's, whatever its type."""
    value, a, b = text[span.start:span.end], span.start, span.end
    if value.isdigit() and len(value) <= 7 and a >= 2 and text[a - 1] in "[<" \
            and text[b:b + 1] == BRACKETS[text[a - 1]] and (text[a - 2].isalnum() or text[a - 2] in ")_-"):
        return True
    m = _SYSLOG_PROGRAM.match(text, line_start)
    return bool(m) and m.start(1) <= a and b <= m.end(1)


# a machine's numbers in a log or a config: a ``key=`` whose key names no phone, ID or card (``ses=4294967295``,
# ``SET timestamp=1739439718``), a process's or a thread's ID (``[pid 1120:tid 140245110937472]``)
_MACHINE_KEY_BEFORE = re.compile(r"(?:\b([A-Za-z_][\w.-]*)=[\"']?|\b(?:pid|tid|ppid|uid|gid|auid|ses)[ =])$")
_SNMP_TYPE_BEFORE = re.compile(r"\b(?:Counter32|Counter64|Gauge32|Unsigned32|Integer32|INTEGER|Timeticks|TimeTicks):[ \t]*$")
_GENERIC_KEYS = frozenset({"value", "val", "default", "text", "data", "content"})  # an HTML field's value="...": any number
_IMAGE_BEFORE = re.compile(r"/[\w.-]+:$|(?i:\bimages?\b)[^\n]{0,30}?[ \t][\w.-]+:$")  # also ``image edge-proxy:⟦3.18.0.2⟧``


def _machine_number(text: str, span: Span, value: str) -> bool:
    """A phone-, ID- or card-shaped number a machine wrote: the rest of a decimal or a time, an SNMP agent's typed
    value, or bare digits after a ``key=`` that names no person's number, a process's or a thread's ID."""
    if span.type not in ("PHONE", "SSN", "CREDIT_CARD"):
        return False
    if re.match(r"\d[.:]", text[max(0, span.start - 2):span.start]):
        return True  # right after a decimal's or a time's digits, the number goes on (``ps``: ``11.2 5120448 3671032``)
    if _SNMP_TYPE_BEFORE.search(text, max(0, span.start - 24), span.start):
        return True  # ``Counter64: 918273645501``, ``Timeticks: (418237712)``: a counter, never a person's number
    if not value.isdigit():
        return False
    m = _MACHINE_KEY_BEFORE.search(text, max(0, span.start - 40), span.start)
    key = (m.group(1) or "") if m else ""
    return bool(m) and key.lower() not in _GENERIC_KEYS and not PERSONAL_NUMBER_KEY.search(key)


# a business's kind as part of its proper name, so capitalized (``Hasan Usta Kebap``; ``the hotel Anna booked`` is a person)
_BUSINESS_NOUN = _alternation("business_nouns", capitalized=True)
_BUSINESS_AFTER = re.compile(r"(?:[ \t]*&[ \t]*[^\W\d_]+)?[ \t]+" + _BUSINESS_NOUN + r"(?![^\W\d_])|" + _alternation("business_suffixes"))
_BUSINESS_BEFORE = re.compile(r"(?<![^\W\d_])" + _BUSINESS_NOUN + r"[ \t]+(?:" + _alternation("honorifics_before") + r"[ \t]+)?$")
_LEGAL_FORM_AFTER = re.compile(r"\s+" + LEGAL_FORM + r"(?![\w/])")
_MAILBOX_AFTER = re.compile(r"\s*<(" + EMAIL.pattern + r")>")
# rules 54: not one person's birth date: a cohort's bound (``born before ⟦1 April 1960⟧``), a date under a plain date
# label alone (a receipt's ``วันที่ ⟦11/06/2568⟧``, ``Date: ...``; not ``birth_date:``), a date with its time (``... ⟦12/04/2567⟧ เวลา 14:32``)
_BIRTH_COHORT_BEFORE = re.compile(r"(?i)(?<![^\W\d_])(?:born|geboren|nacid[oa]s|nés|nées|nati|nate|nascidos|urodzeni)[ \t]+"
                                  r"(?:before|after|between|from|until|prior to|on or (?:before|after)|in or (?:before|after)|"
                                  r"vor dem|vor|nach dem|nach|zwischen|antes de|después de|entre|avant le|avant|après le|après|"
                                  r"prima del|dopo il|przed|po)[ \t][^.;:\n]{0,20}$")
_PLAIN_DATE_LABEL_BEFORE = re.compile(r"(?i)(?:(?<![\w-])(?:date|datum|fecha|data|tarih|tanggal|дата)|วันที่|日付|날짜)"
                                      r"[ \t]*[:：]?[ \t]*$")
_TIME_WORD_AFTER = re.compile(r"(?i)[ \t]+(?:at|um|à|a las|alle|o godz\.?|saat|เวลา|klo\.?|kl\.?)[ \t]*\d{1,2}[:.]\d{2}")
_SENTINEL_DATES = frozenset({"1970-01-01", "1900-01-01", "0001-01-01", "1901-01-01", "01/01/1970", "01.01.1970"})
_OTHER_DATE_LABEL = re.compile(r"(?i)(?<![^\W\d_])(?:due|invoice date|issued|issue date|expiry|expires|valid until|"
                               r"vervaldatum|factuurdatum|rechnungsdatum|fällig(?:keit)?|lieferdatum|vencimiento|"
                               r"fecha de factura|échéance|date de facture|scadenza|data fattura|vencimento|"
                               r"termin płatności|data wystawienia|förfallodatum|fakturadatum)(?![^\W\d_])")
_SINGLE_DIGIT_GROUPS = re.compile(r"\d(?:[-. ]\d){5,}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_NUMBER_HEAD_BEFORE = re.compile(r"(?<![\d+])(\+?\d{1,4}[ .-])$")  # a number's first group, right before a span
_DIAL_IN_PIN_AFTER = re.compile(r"(?:\\?[,;]){1,3}\d{4,}#")  # pauses then a meeting PIN and #; ICS escapes commas
# a SEPA creditor identifier (``DE98ZZZ09999999999``): an IBAN's country and check digits, then a business code
# (``ZZZ`` where none); it names the creditor, an organisation collecting direct debits (RULES.md: not a person's IBAN)
_CREDITOR_ID = re.compile(r"[A-Z]{2}\d{2}\s?ZZZ")
# the port (and path) of a URL, after its host (``postgres://<user>:<pw>@localhost:⟦5432/tidepool⟧``): no secret
_URL_PORT_BEFORE = re.compile(r"@[\w.-]+:$")
# a container image's tag, after its registry and repository (``registry.osprey-labs.io/ledger-ui:⟦pr-1432-b57⟧``);
# stricter than ``_IMAGE_BEFORE`` (a dotted registry host first): ``https://user:⟦pw⟧@`` ends in ``/user:`` too
_IMAGE_REPOSITORY_BEFORE = re.compile(r"[\w-]+(?:\.[\w-]+)+(?::\d+)?/(?:[\w.-]+/)*[\w.-]+:$")
# a Dockerfile's ``USER <uid>[:<gid>]``: a user's or a group's number, no secret
_DOCKERFILE_USER = re.compile(r"[ \t]*USER[ \t]+\d+(?::\d+)?[ \t]*$")
# a systemd unit's service account (``[Service]`` ... ``User=⟦telemetry⟧``): the account a daemon runs as, no one's login
_UNIT_USER = re.compile(r"(?:User|Group)=")
_UNIT_SECTION = re.compile(r"^\[(?:Service|Socket|Timer|Unit|Install)\][ \t]*$", re.M)
# a directory's domain or branch in a distinguished name (``ou=people,dc=⟦hartwell⟧``): no login
_DIRECTORY_PART_BEFORE = re.compile(r"(?i)(?<![\w-])(?:dc|ou|o)=$")
# what follows ``Bearer`` is a token, whatever its prefix (``tr_live_...`` is no payment record's ID there)
_BEARER_BEFORE = re.compile(r"(?i)\bbearer[ \t]+$")
# a post's hashtag (``#Pasko2024``), unless its line names a secret (``WLAN-Passwort: #Winter2024``)
_HASHTAG = re.compile(r"#[^\W_]\w*")
_SECRET_WORD = re.compile(r"(?i)" + _alternation("secret_words"))
_MAILBOX_REST = re.compile(r"[^\s\"'<>(),;@]*@[\w-]+\.")  # the rest of a mailbox's local part, its @ and domain
# a container's port mapping (``docker run -p 8080:80``): decimal ports, no address's piece (no colon or hex beside)
_PORT_MAPPING = re.compile(r"(?<![\w:.])\d{1,5}:\d{1,5}(?::\d{1,5})?(?![\w:.])")
# an SSH public key's line (known_hosts, authorized_keys): its key and hashed host are public, not secrets
_SSH_PUBLIC_KEY = re.compile(r"\b(?:ssh-(?:rsa|dss|ed25519)|ecdsa-sha2-nistp\d+|sk-(?:ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com)"
                             r"[ \t]+AAAA[A-Za-z0-9+/]")
# a configuration file's name (``grafana.ini:`` as a YAML key), not a login
_FILE_NAME = re.compile(r"(?i)[\w.-]+\.(?:ini|ya?ml|json|conf|cfg|toml|env|xml|properties|txt|log|sh|py)")
# a street named after a person, then its house number (``aan de ⟦Dr. Van Thienenweg⟧ 5``): a place (RULES.md: NAME)
_STREET_NAME = re.compile(r"(?i).*\w(?:weg|straat|laan|gracht|plein|kade|dijk|singel|stra(?:ß|ss)e|gasse|allee|platz|damm)")
_HOUSE_NUMBER_AFTER = re.compile(r"[ \t]+\d{1,4}[a-zA-Z]?\b")
# a database's name in a DSN's path, after its host and port (``postgres://${DB_USER}:${DB_PASSWORD}@db:5432/⟦kasbah⟧``):
# no login (a web URL's path may be a person's handle: ``github.com/jdoe``)
_DATABASE_PATH_BEFORE = re.compile(r"(?i)\b(?:postgres(?:ql)?|mysql|mariadb|mongodb(?:\+srv)?|rediss?|amqps?|sqlserver|"
                                   r"clickhouse|cockroachdb)://[^\s/]+/$")
# the key of a thing's name or a release (``APP_NAME=⟦kasbah-crm⟧``, ``"bucket_name": "``, ``SENTRY_RELEASE=``), a
# database's (``-- Database: ⟦rrhh⟧``, ``POSTGRES_DB: ⟦hanbit_dev⟧``), a second factor's (``mfa=⟦totp⟧``), a message's
# template or channel (``template=⟦kyc_manual_review⟧ via=⟦ses-eu-west-1⟧``): the value names an application, a bucket,
# a database, a method, no person nor login (``user_name``, ``account_name`` keep theirs)
_THING_NAME_KEY_BEFORE = re.compile(r"(?i)(?<![a-z])(?:(?:app|application|service|project|cluster|bucket|package|image|"
                                    r"database|db|queue|topic|bot|site|product|brand|company|org|team|release)[_-]?name|"
                                    r"release|database|db|dbname|schema|template|via|mfa(?:[_-]?(?:method|type|factor))?)[\"']?[ \t]*[:=][ \t]*[\"']?$")
# a heading: one word in capitals alone on its line (``WILLAKUY``), in a script with letter case; a person's name
# in capitals comes with another word (``KOWALSKI Jan``) or under a label
_CAPITALS_WORD = re.compile(r"[^\W\d_]{4,}")
WEEKDAYS = frozenset(w.lower() for w in _words("weekday_names"))
CARD_NETWORKS = frozenset(_words("card_networks"))
# an organisation's desk right after a name (``Hi Fernhill Kitchenware support``): the name is the organisation's
_ORGANISATION_ROLE_AFTER = re.compile(r"(?i)[ \t]+(?:support|customer (?:service|care|support)|help ?desk|service desk|"
                                      r"sales|billing|team|kundenservice|kundendienst|service client|atención al cliente)\b(?![ \t]*:)")
# a chat's speaker with a bot's role in brackets after it (``⟦Lia⟧ (assistente virtual): Olá!``): the bot's name
_BOT_SPEAKER_AFTER = re.compile(r"(?i)[ \t]*\([ \t]*(?:[^()\n]{0,30}[ \t])?" + _BOT_ROLE + r"[^()\n]{0,30}\)[ \t]*:")
_KOREAN_COMMON_WORDS = frozenset(_words("korean_common_words"))
_KOREAN_TITLE_AFTER = re.compile(r"[ \t]?" + _alternation("korean_titles_after"))
_COMPANY_WORDS = frozenset(_words("company_words"))
_LOGIN_OUTCOMES = frozenset(_words("login_outcomes"))
# an address's shape that is no one's mailbox (rules 60): a systemd template unit (``user@1004.service``), a key before
# a DSN's host (``3b1e9f0c7a2d4e58@o418822.ingest.sentry.io``), a bounce address (``bounces+4471822@mailer...``)
_NO_MAILBOX = re.compile(r"(?i)[\w.-]+@\d+\.(?:service|socket|timer|mount|target|slice|scope)|[0-9a-f]{16,}@\S+|"
                         r"bounces?(?:[+-][\w.-]+)?@\S+")
_IDENTIFIER_NAME = re.compile(r"[a-z0-9]+(?:[-_.][a-z0-9]+){2,}")
_ROOM_BEFORE = re.compile(r"(?i)(?<![^\W\d_])(?:meeting room|room|raum|besprechungsraum|salle|sala|zaal|vergaderruimte|"
                          r"sala de reuniones|sala riunioni|sala de reuniões|salka)[ \t]+[\"'„“«]?$|会議室[ \t]*$|회의실[ \t]*$")
# a product's or a client's version after its name (``⟦TramontanaApp⟧/5.12.0``, ``⟦tessaract-sdk-python⟧/4.2.0``); three
# parts at most (``openvpn: ⟦amartin⟧/81.57.203.112:61544`` is a login and its IP)
_PRODUCT_VERSION_AFTER = re.compile(r"/v?\d+(?:\.\d+){1,2}(?![\d.:])")
_INDEX_NAME = re.compile(r"(?i)(?:uk|pk|fk|idx|ix|uq|uniq)_\w+")
_HASH_ALGORITHMS = frozenset(_words("hash_algorithms"))
_ULID = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}")  # a sortable identifier (``usr_⟦01HQ8Z6K...⟧``): an object's, not a person's
_UID_FLAG_BEFORE = re.compile(r"(?:-u|--uid|uid=?)[ \t]*$")
_INQUIRY_MAILBOX_BEFORE = re.compile(r"(?:咨询|客服|服务|投诉)邮箱[:：]?[ \t]*$|お問い合わせ(?:先)?[:：]?[ \t]*$")
_SCHEME_BEFORE = re.compile(r"(?<![\w+.-])[a-z][\w+.-]*://$")
_AT_AHEAD = re.compile(r"(?::[^\s@]*)?@")  # ``https://⟦wayne35⟧:<password>@github.com``
_IDENTIFIER_CELL = re.compile(r"[\"']?[a-z][a-z0-9_]*[\"']?")
_DIGIT_NEAR = re.compile(r"[ \t]?\d")
_DIGIT_NEAR_BEFORE = re.compile(r"\d[ \t]?$")
# pg_dump's table of contents: an object's owner is a database role
_DUMP_OWNER_BEFORE = re.compile(r"\bSchema:[^;\n]*;[ \t]*Owner:[ \t]*$")
# a place and its country's code (``Rotterdam, NL``, an IP's approximate location): no street, no number
_PLACE_AND_COUNTRY = re.compile(r"[^\W\d_][\w'’.-]*(?:[ -][^\W\d_][\w'’.-]*)?,[ \t]*[A-Z]{2}")
# a bank's identifier code (ISO 9362): four letters of the bank, its country's two, two of its place, three of a branch
_BIC = re.compile(r"[A-Z]{4}[A-Z]{2}[A-Z0-9]{2}(?:[A-Z0-9]{3})?")
_COUNTRY_CODES = frozenset(phonenumbers.SUPPORTED_REGIONS)  # ISO 3166 alpha-2, as libphonenumber lists them
_CELL_BEFORE = re.compile(r"(?:^|[,;|\t])[ \t]*[\"']?$")
_CELL_AFTER = re.compile(r"[\"']?[ \t]*(?:$|[,;|\t])", re.M)
# an organisation's office or body (``organisation_nouns``), read on ``unaccented`` text: in a NAME, or right before one
# with a capital, it names the body, a person's name only as the body's (``Andra Mari ⟦Ikastola⟧``, ``Guddiga ⟦Suuqa⟧``:
# RULES.md, NAME); in a mailbox's local part, the body's mailbox; on a phone's line, the body's line
# (``organisations.organisation_lines``)
ORGANISATION_NOUN = unaccented_words("organisation_nouns")
_CAPITAL_WORD_BEFORE = re.compile(r"(?<![^\W\d_])([^\W\d_][\w'’]*)[ \t]+$")


def _header_row(line: str) -> bool:
    """A table's header: four or more cells, each a lower-case identifier, two or more with an underscore."""
    cells = [c.strip() for c in re.split(r"[\t,;|]", line.strip().strip("|"))]
    return len(cells) >= 4 and sum("_" in c for c in cells) >= 2 and all(_IDENTIFIER_CELL.fullmatch(c) for c in cells)


def never_personal(text: str, span: Span) -> bool:
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
    if span.type == "PASSWORD" and (_PLACEHOLDER_PART.search(value) or _PLACEHOLDER_AFTER.match(text, span.end)):
        return True  # ``sk_test_<your-key>``: a template's placeholder, not a secret (RULES.md: PASSWORD)
    if span.type == "NAME" and (_BOT_ROLE_BEFORE.search(text, max(line_start, span.start - 40), span.start)
                                or (_BOT_ROLE_AFTER.match(text, span.end) and
                                    _SELF_INTRODUCTION_BEFORE.search(text, max(line_start, span.start - 20), span.start))
                                or _PRODUCT_MODEL_BEFORE.search(text, max(line_start, span.start - 16), span.start)):
        return True  # a chatbot's or a product's name (RULES.md: NAME), not a person's
    if span.type == "NAME" and _MONTH_NAME.fullmatch(value) and _DAY_TIME_AFTER.match(text, span.end):
        return True  # ``⟦Jan⟧ 28 02:15:00 relay1 postfix``: a month in a timestamp
    if span.type == "NAME" and _THREAD_NAME.fullmatch(value):
        return True  # a connection pool's or a thread's name
    if span.type == "PASSWORD" and (_PLACEHOLDER_RUN.fullmatch(value) or (
            _OBJECT_ID.fullmatch(value) and "_secret_" not in value and not _BEARER_BEFORE.search(text, line_start, span.start))
                                    or ("." in value and HOSTNAME.fullmatch(value.split("/", 1)[0]))):
        return True  # a placeholder key, a payment record's ID (not a bearer token), a DSN's host (``o0.ingest.sentry.io/0``)
    if span.type == "PASSWORD" and _HASHTAG.fullmatch(value) and text[span.start - 1:span.start] in ("", " ", "\n") \
            and not _SECRET_WORD.search(text, line_start, span.start):
        return True  # ``#Pasko2024``: a post's hashtag, a word of its own; no secret unless the line asks for one
    if span.type in ("PASSWORD", "USERNAME") and "${" in value:
        return True  # a template's variable inside the value (``${POSTGRES_USER:-app}:${POSTGRES_PASSWORD}``)
    if span.type in ("PASSWORD", "USERNAME", "NAME") and _KUBECTL_OBJECT_BEFORE.search(text, line_start, span.start):
        return True
    if span.type == "SSN" and _INVOICE_ISSUER_NUMBER.fullmatch(value):
        return True  # a company's registration number (RULES.md: not annotated)
    if span.type == "USERNAME" and _CALL_AFTER.match(text, span.end) and _IDENTIFIER.fullmatch(value) \
            and _ASSIGNED_BEFORE.search(text, line_start, span.start):
        return True
    if span.type == "PASSWORD" and len(value) < 3:
        return True  # a format verb, a chat word (``%s``, ``GG``): no secret is that short
    if span.type in ("SSN", "CREDIT_CARD", "PHONE") and _RECORD_CODE.fullmatch(value):
        return True  # a record's code in a table (``KH-20932``, ``PAY-55802``)
    if span.type in ("IBAN", "SSN", "PHONE") and _PARCEL_NUMBER.fullmatch(value.replace(" ", "")):
        return True  # a parcel's tracking number (its check digit not asked: carriers' and writers' copies get it wrong)
    if span.type == "EMAIL" and "@" not in value:
        return bool(HOSTNAME.fullmatch(value))  # a host; any other word keeps its mask (retyped a login: conform)
    if span.type in ("NAME", "USERNAME") and (value in CHAT_WORDS or (len(value) == 1 and value.isascii())):
        return True
    if span.type in ("NAME", "USERNAME") and value.lower() in SPEAKER_ROLES:
        return True  # ``⟦Mama⟧: kommst du?``: a role in the family, not a name
    if span.type in ("NAME", "USERNAME", "PASSWORD") and (
            _DATABASE_PATH_BEFORE.search(text, line_start, span.start)
            or (span.type != "PASSWORD" and _THING_NAME_KEY_BEFORE.search(text, max(line_start, span.start - 40), span.start))):
        return True
    if span.type == "IBAN" and len(value) < 8 and value.isalnum() and any(c.isdigit() for c in value) \
            and not _DIGIT_NEAR.match(text, span.end) and not _DIGIT_NEAR_BEFORE.search(text, max(0, span.start - 2), span.start):
        return True  # a short code of letters and digits (a bank's reason code ``AC04``), no IBAN's first group
    if span.type == "NAME" and value in _COUNTRY_CODES and _CELL_BEFORE.search(text, line_start, span.start) \
            and _CELL_AFTER.match(text, span.end):
        return True  # ``...,+55 11 97426-3108,⟦BR⟧,2023-11-02``: a country's code in its column
    if span.type == "NAME" and _PRODUCT_VERSION_AFTER.match(text, span.end):
        return True  # ``User-Agent: ⟦TramontanaApp⟧/5.12.0``: a product and its version
    if span.type == "IBAN" and _BIC.fullmatch(value) and value[4:6] in _COUNTRY_CODES:
        return True  # ``DE58...;⟦INGDDEFFXXX⟧``: a bank's identifier code (BIC), no one's account
    if span.type == "NAME" and _ORGANISATION_ROLE_AFTER.match(text, span.end):
        return True  # ``Hi ⟦Fernhill Kitchenware⟧ support,``: a company's desk
    if span.type == "USERNAME" and _DUMP_OWNER_BEFORE.search(text, line_start, span.start):
        return True  # ``Name: customers; Type: TABLE DATA; Schema: crm; Owner: ⟦crm_app⟧``: a database role
    if span.type == "USERNAME" and ID_LABEL.fullmatch(value):
        return True  # ``imie;nazwisko;⟦pesel⟧;iban``: an ID's label as a column's header
    if span.type == "NAME" and _ROOM_BEFORE.search(text, max(line_start, span.start - 24), span.start):
        return True  # ``meeting room ⟦Ash⟧``: a room's name (rules 61)
    if span.type == "USERNAME" and (_PRODUCT_VERSION_AFTER.match(text, span.end) or _INDEX_NAME.fullmatch(value)):
        return True  # ``User-Agent: ⟦tessaract-sdk-python⟧/4.2.0``, ``for key '⟦uk_user_email⟧'`` (rules 61)
    if span.type == "PASSWORD" and value.lower() in _HASH_ALGORITHMS:
        return True  # ``salvate con ⟦Argon2id⟧``: the algorithm, not a secret (rules 61)
    if span.type == "NAME" and _IDENTIFIER_NAME.fullmatch(value):
        return True  # ``svc-okta-sync`` in a name's column: an identifier of three parts, no person's name (rules 59)
    if span.type == "NAME" and any(w.endswith("팀") for w in value.split()):
        return True  # ``CS팀 야간조``: a team (rules 57)
    if span.type == "NAME" and value.endswith(_BOT_SUFFIXES) and value not in _BOT_SUFFIXES:
        return True  # ``⟦배포봇⟧: payment-api 롤백 시작``: a bot (RULES.md), in the scripts without spaces (rules 63)
    if span.type == "USERNAME" and _PERCENTILE.fullmatch(value):
        return True  # ``⟦p99⟧ at 4.8s``: a latency's percentile (rules 63)
    if span.type == "USERNAME" and value.isdigit() and _UID_FLAG_BEFORE.search(text, max(line_start, span.start - 8), span.start):
        return True  # ``adduser -u ⟦10001⟧``: a user's number, not a login (rules 57)
    if span.type == "EMAIL" and _INQUIRY_MAILBOX_BEFORE.search(text, max(line_start, span.start - 8), span.start):
        return True  # ``咨询邮箱：...``: an organisation's inquiry mailbox (rules 57)
    if span.type == "NAME" and " " in value and value.rsplit(None, 1)[1] in _COMPANY_WORDS:
        return True  # ``Halberd Logistics``: a company (rules 56)
    if span.type == "NAME" and (_BIRTHPLACE_BEFORE.search(text, max(line_start, span.start - 50), span.start)
                                or _CLASS_AFTER.match(text, span.end)
                                or _PET_NAME_BEFORE.search(text, max(line_start, span.start - 40), span.start)):
        return True
    if span.type == "USERNAME" and _SCHEME_BEFORE.search(text, max(line_start, span.start - 16), span.start) \
            and not _AT_AHEAD.match(text, span.end):
        return True  # ``s3://⟦kvarn-backups⟧/pg/``: a bucket or a host, not a login (that one ends in ``@``)
    if _header_row(text[line_start:line_end]):
        return True  # ``osobni_cislo\tjmeno\t...\t⟦stredisko⟧``: a table's header row, its cells column names
    if span.type == "NAME" and any(w in _KOREAN_COMMON_WORDS for w in value.split()) \
            and not _KOREAN_TITLE_AFTER.match(text, span.end):
        return True  # ``DBA 팀 ⟦온콜⟧``, ``⟦지수 백오프⟧``: words, not a name (rules 54)
    if span.type == "NAME" and (value in CARD_NETWORKS or ID_LABEL.fullmatch(value) or _BOT_SPEAKER_AFTER.match(text, span.end)):
        return True  # a card's network, an ID's label (``⟦PESEL⟧: 87031405921``), a bot as a chat's speaker
    if span.type == "NAME" and value.lower() in WEEKDAYS:
        return True  # ``ranar ⟦Alhamis⟧``: a day of the week
    if span.type == "NAME" and (ORGANISATION_NOUN.search(unaccented(value)) or (
            (m := _CAPITAL_WORD_BEFORE.search(text, max(line_start, span.start - 40), span.start))
            and m.group(1)[0].isupper() and ORGANISATION_NOUN.fullmatch(unaccented(m.group(1))))):
        return True
    if span.type == "NAME" and _CAPITALS_WORD.fullmatch(value) and value.isupper() \
            and text[line_start:line_end].strip() == value:
        return True
    if span.type in ("PASSWORD", "USERNAME") and _PLACEHOLDER_VALUE.fullmatch(value):
        return True
    if span.type == "PASSWORD" and (_URL_PORT_BEFORE.search(text, line_start, span.start)
                                    or _IMAGE_REPOSITORY_BEFORE.search(text, line_start, span.start)
                                    or (value.isdigit() and _DOCKERFILE_USER.fullmatch(text, line_start, line_end))):
        return True  # a URL's port, an image's tag, a Dockerfile's user ID
    if span.type == "USERNAME" and (_FILE_NAME.fullmatch(value) or (HOSTNAME.fullmatch(value) and text.startswith("/", span.end))):
        return True  # a configuration file's name; a URL's host before its path (``hizlikargo.com.tr/takip``)
    if span.type == "USERNAME" and _UNIT_USER.fullmatch(text, line_start, span.start) and _UNIT_SECTION.search(text):
        return True  # the line's key first: the whole text is searched for a unit's section only after ``User=``
    if span.type == "USERNAME" and _DIRECTORY_PART_BEFORE.search(text, max(line_start, span.start - 4), span.start):
        return True
    if span.type == "USERNAME" and text.startswith("@", span.end) and role_mailbox(value + "@"):
        return True  # ``<author>⟦plataforma⟧@lumen.example``: a role mailbox's local part is no one's login
    if span.type == "USERNAME" and "@" in value and role_mailbox(value):
        return True  # ``(owner: ⟦sre-oncall@internal.example⟧)``: a role mailbox, whatever the model typed it
    if span.type == "PHONE" and (_MAILBOX_REST.match(text, span.end) or any(
            m.start() <= span.start and span.end <= m.end() for m in EMAIL.finditer(text, line_start, line_end))):
        return True  # ``41898282+github-actions[bot]@users.noreply...``: digits inside a mailbox are no phone
    if span.type == "PASSWORD" and _SSH_PUBLIC_KEY.search(text, line_start, line_end):
        return True
    if span.type == "IP_ADDRESS" and (m := _PORT_MAPPING.match(text, span.start)) and m.end() == span.end:
        return True
    if span.type == "NAME" and _STREET_NAME.fullmatch(value) and _HOUSE_NUMBER_AFTER.match(text, span.end):
        return True
    if span.type == "PASSWORD" and _ID_KEY_BEFORE.search(text, max(0, span.start - 24), span.start):
        return not TOKEN.fullmatch(value)  # a well-known secret's shape is a secret under any key
    if span.type == "ADDRESS":  # a city or a place on its own is not a postal address, nor a company's premises
        lone_place = (" " not in value or _PLACE_AND_COUNTRY.fullmatch(value) is not None) \
            and not any(c.isdigit() for c in value) and not any(spaceless(c) for c in value)
        return lone_place or bool(_COMPANY_BEFORE.search(text, max(line_start, span.start - 40), span.start))
    if span.type == "EMAIL":
        return role_mailbox(value) or bool(_MAILING_LIST.search(value)) or bool(_SERVICE_ACCOUNT_DOMAIN.search(value)) \
            or bool(_NO_MAILBOX.fullmatch(value)) \
            or bool(_MESSAGE_ID_BEFORE.search(text, max(0, span.start - 48), span.start))
    if span.type == "NAME" and (value.lower().rstrip(".") in FIELD_LABELS or _COMPANY_NAME.fullmatch(value)
                                or value.lower() in SIGN_OFFS or _LEGAL_FORM_AFTER.match(text, span.end)):
        return True  # ``⟦Brunnhofer Präzisionstechnik⟧ GmbH``: a company's name, its legal form after it
    if span.type == "NAME" and (m := _MAILBOX_AFTER.match(text, span.end)) and role_mailbox(m.group(1)):
        return True  # ``MAIL_FROM="⟦Venuely Tickets⟧ <tickets@venuely.example>"``: a role mailbox's display name
    if span.type == "NAME" and (_BUSINESS_AFTER.match(text, span.end)
                                or _BUSINESS_BEFORE.search(text, max(line_start, span.start - 40), span.start)):
        return True  # a business named after a person: ``⟦Hasan Usta⟧ Kebap``, ``Pastelería Doña ⟦Carmen⟧``
    if span.type == "NAME" and _organisation_sender(value, text[line_start:line_end]):
        return True  # ``('billing', 'billing@corvid-health.com', '⟦Corvid Billing⟧')``: the same, in a record
    if span.type == "DATE_OF_BIRTH" and (
            _BIRTH_COHORT_BEFORE.search(text, max(line_start, span.start - 40), span.start)
            or (not BIRTH_LABEL.search(text, max(line_start, span.start - LABEL_WINDOW), span.start)
                and (_PLAIN_DATE_LABEL_BEFORE.search(text, max(line_start, span.start - LABEL_WINDOW), span.start)
                     or _TIME_WORD_AFTER.match(text, span.end)))):
        return True
    if span.type == "DATE_OF_BIRTH" and (value in _SENTINEL_DATES or (
            _OTHER_DATE_LABEL.search(text, max(line_start, span.start - LABEL_WINDOW), span.start)
            and not BIRTH_LABEL.search(text, max(line_start, span.start - LABEL_WINDOW), span.start))):
        return True  # a default (``1970-01-01``), a due or invoice date
    if span.type == "IBAN" and value.startswith("RF"):
        return True  # an ISO 11649 creditor reference: an IBAN's check digits, no country (RULES.md: a reference)
    if span.type in ("IBAN", "SSN") and _CREDITOR_ID.match(value):
        return True  # a SEPA creditor identifier, whatever it was typed (``Incassant-ID: ⟦NL71ZZZ302184460000⟧``)
    if span.type == "USERNAME" and value.lower() in _LOGIN_OUTCOMES:
        return True  # ``login ⟦fallito⟧``: the attempt's outcome (rules 58)
    if span.type != "PASSWORD" and (_UUID.fullmatch(value) or _ULID.fullmatch(value)):
        return True  # RULES.md: UUIDs are not personal data (a secret may still have a UUID's shape)
    if span.type == "SSN" and len(value) == 10 and value.isdigit() and \
            "ИНН" in text[max(line_start, span.start - LABEL_WINDOW):span.start]:
        return True  # a 10-digit INN is an organisation's (a person's has 12)
    if span.type == "SSN" and "NIP" in text[max(line_start, span.start - LABEL_WINDOW):span.start] and \
            _COMPANY_REGISTER.search(text, max(0, span.start - 200), min(len(text), span.end + 200)):
        return True  # a Polish tax number beside the company register's (KRS, REGON): the company's
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
    if span.type == "USERNAME" and (_GENERIC_TYPE_AFTER.match(text, span.end) and value[:1].isupper()
                                    or _WEEKDAY.fullmatch(value) and _MONTH_DAY_AFTER.match(text, span.end)
                                    or _ACCOUNT_ROLE.fullmatch(value)
                                    or value.lower() in _TYPE_NAMES and _TYPED_BEFORE.search(text, line_start, span.start)
                                    and _TYPE_END_AFTER.match(text, span.end)):
        return True  # a type in code, a timestamp's weekday, a system account's service login
    if span.type in ("USERNAME", "NAME") and _SERVICE_BRANCH_AFTER.match(text, span.end):
        return True
    if span.type == "NAME" and _QUOTED_TITLE_BEFORE.search(text, line_start, span.start) \
            and _QUOTE_CLOSE_AFTER.match(text, span.end):
        return True
    if span.type == "SSN" and len(value) == 13 and value.isdigit() and value.startswith("0") \
            and _THAI.search(text, line_start, line_end):
        return True  # a Thai taxpayer number that starts with 0 is a company's (a person's starts with 1-8)
    if span.type == "USERNAME" and ("bot_message" in text[line_start:line_end] or value.startswith("service-account-")):
        return True  # a chat bot's post (Slack's ``"subtype": "bot_message"``), an identity provider's service account
    if span.type == "USERNAME":
        return value.lower() in SYSTEM_ACCOUNTS or bool(_BOT.search(value)) or bool(HOSTNAME.fullmatch(value)) or \
            bool(_PAM_MODULE.fullmatch(value)) or \
            text.startswith("[bot]", span.end) or (bool(_CODE_PATH.fullmatch(value)) and not value.islower())
    if span.type == "IP_ADDRESS" and (_IMAGE_TAG.fullmatch(value) or HOSTNAME.fullmatch(value) or (
            _NUMBER_WITH_UNIT.fullmatch(value) and not any(_parses_as_ip(m.group()) for m in _WHOLE_IPV4.finditer(value)))):
        return True  # a container image (``postgres:16.2``), a host's name, a number that is no address
    if span.type == "IP_ADDRESS" and _IMAGE_BEFORE.search(text, line_start, span.start):
        return True  # ``ghcr.io/kestrelpay/edge-gateway:⟦10.4.12.1⟧``: an image's tag
    if span.type == "IP_ADDRESS":
        return _not_an_address(text, span, value) or _reads_as_version(text, span, line_start) or _netmask(value) \
            or _small_version(text, span, value, line_start, line_end)
    return False


def _organisation_sender(name: str, line: str) -> bool:
    """A name that carries the domain of a role mailbox on its line is that organisation's display name, not a
    person's (``Corvid Billing`` beside ``billing@corvid-health.com``)."""
    words = {w.lower() for w in re.findall(r"[^\W\d_]{3,}", name)}
    for m in EMAIL.finditer(line):
        address = m.group(0)
        if role_mailbox(address) and words & set(re.split(r"[.-]", address.split("@", 1)[1].lower())):
            return True
    return False


# a department's short name before a dot (``hr.casework@``, ``it.support@``): no one's first name
_DEPARTMENTS_BEFORE_DOT = frozenset(_words("departments_before_dot"))


def role_mailbox(address: str) -> bool:
    """An organisation's mailbox (RULES.md: EMAIL): a role word as the local part, or as one part of a
    hyphenated one (``accounts-payable``, ``logistics-ops``), or every part of a dotted one (``atencion.cliente``), or
    the first part of a dotted one unless a person's name follows (``reception.riverside@``, not ``sales.sigurdis@``);
    an organisation's office or body as any part unless a person's name is another (``iroda@``, ``liburutegia@``:
    ``organisation_nouns``)."""
    local = address.split("@", 1)[0].lower()
    parts = re.split(r"[-_]", local)  # not at dots: first.last is a person's shape (``maria.personal@``)
    dotted = local.split(".")
    return local in ROLE_MAILBOXES or (len(parts) > 1 and any(part in _ROLE_PARTS for part in parts)) or \
        dotted[0] in _DEPARTMENTS_BEFORE_DOT or \
        any(local[:i] in _ROLE_PARTS and local[i:] in _ROLE_PARTS for i in range(3, len(local) - 2)) or \
        (len(dotted) > 1 and all(part in _ROLE_PARTS for part in dotted)) or \
        (len(dotted) > 1 and len(dotted[0]) >= 4 and dotted[0] in _ROLE_PARTS and dotted[1] not in personal_names()) or \
        _organisation_part(re.split(r"[-_.]", local))


def _organisation_part(parts: list[str]) -> bool:
    """An office or a body as one part of a local part (``iroda@``, ``council.planning@``), unless another part is a
    person's name (``delina.biro@``, ``council.moser@``: Biró and Moser are surnames)."""
    organisation = [i for i, part in enumerate(parts) if ORGANISATION_NOUN.fullmatch(unaccented(part))]
    return bool(organisation) and not any(part in personal_names() for i, part in enumerate(parts) if i not in organisation)


def _parses_as_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _not_an_address(text: str, span: Span, value: str) -> bool:
    """Loopback, unspecified, a network's own address (``10.2.0.0``: two zero parts at the end), a range, a MAC
    address, or a machine identifier (``_NOT_IP``)."""
    if "/" in value or _RANGE_AFTER.match(text, span.end) or _MAC.fullmatch(value) or _NOT_IP.fullmatch(value):
        return True
    try:
        ip = ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        return False  # a piece of an address, or an address in context: the finder's call stands
    return ip.is_loopback or ip.is_unspecified or (ip.version == 4 and value.endswith(".0.0"))
