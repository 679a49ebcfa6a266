"""The baseline to beat: a rule-based PII masker (regular expressions plus checksums).

What a careful engineer would ship without a model: e-mail, IBAN (mod-97), card numbers (Luhn),
IPv4/IPv6, US-style SSNs, phone numbers, well-known token shapes, ``key=value`` secrets, and
values after labels such as "DOB:", "username:" or "Name:". It cannot know that a bare name or a
street address is personal data, nor that ``10.4.2.1`` after "version" is not an IP address;
that is what the tuned model is for.
"""

from __future__ import annotations

import ipaddress
import re


def structured_expressions(word: str = r"\w", country_in_parentheses: bool = False) -> tuple[re.Pattern, ...]:
    """EMAIL, IBAN, IPV4 and PHONE, with ``word`` as what may not touch a value's edges: any ``\\w`` here (a value
    inside a longer word is not one), a narrower class in ``pii.patterns`` (scripts that write particles right
    against a value). ``country_in_parentheses``: a phone may also start ``(+358) ``. One builder, so the two
    sets of expressions differ only where they are told to."""
    email = re.compile(rf"(?:{word}|[.+-])+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{{2,}}")
    iban = re.compile(rf"(?<!{word})[A-Z]{{2}}\d{{2}}(?: ?[A-Z0-9]){{11,30}}(?!{word})")
    ipv4 = re.compile(rf"(?<!{word})(?<!\.)(?:\d{{1,3}}\.){{3}}\d{{1,3}}(?!{word})(?!\.)")
    country = r"\(\+\d{1,4}\)\s?|" if country_in_parentheses else ""
    # not inside a word, path, version or longer number; digits and separators, an extension
    phone = re.compile(rf"(?<!{word})(?<![+/.-])(?:{country}(?:\+|00)?\(?)\d[\d ().-]{{6,}}\d(?:\s?x\d+)?"
                       rf"(?!{word}\w)(?![.-]\w)")
    return email, iban, ipv4, phone


EMAIL, IBAN, IPV4, PHONE = structured_expressions()
CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
SSN_US = re.compile(r"\b\d{3}-\d{2}-\d{4}\b")
IPV6 = re.compile(r"(?<![\w:])(?:[0-9a-fA-F]{1,4}:){2,7}[0-9a-fA-F]{1,4}(?![\w:])")
DATE_LIKE = re.compile(r"\d{4}-\d{2}-\d{2}|\d{1,2}[./]\d{1,2}[./]\d{4}")
TOKEN = re.compile(r"\b(?:sk_(?:live|test)_\w{16,}|gh[pousr]_\w{30,}|AKIA[0-9A-Z]{16}|glpat-[\w-]{20}|AIza[\w-]{35}"
                   r"|xox[abpr]-[\w-]{10,}|eyJ[\w-]+\.[\w-]+\.[\w-]+)")
_SEP = r"\s*[:=]\s*\"?"
SECRET_KV = re.compile(r"(?i)\b[\w-]*(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key)[\w-]*"
                       + _SEP + r"([^\s\"']{4,})")
URL_CREDENTIALS = re.compile(r"://([^:/\s@]+):(\S+)@[\w.-]+")
USER_KV = re.compile(r"(?i:\b(?:user(?:name)?|login|account|_user))" + _SEP + r"([\w.@-]{2,}\w)")
DOB_KV = re.compile(r"(?i)\b(?:dob|date of birth|born(?: on)?|birthday|geb(?:oren am|\.))\s*[:=]?\s*"
                    r"(\d{1,4}[./-]\d{1,2}[./-]\d{1,4}|\w+ \d{1,2}, \d{4}|\d{1,2} \w+ \d{4})")
ID_KV = re.compile(r"(?i:\b(?:ssn|social security(?: number)?|national id|id number|insurance id|steuer-id)|身份证号)"
                   r"\s*[:=]?\s*([A-Z0-9][A-Z0-9 -]{5,22}[A-Z0-9])")
NAME_KV = re.compile(r"(?i:\bname|\bholder|\bpatient)\s*[:=]\s*\"?((?:[^\W\d_][\w.'-]*)(?: [^\W\d_][\w.'-]*){0,3})")
TITLE_NAME = re.compile(r"\b(?:Mr|Mrs|Ms|Dr)\.? [A-Z][a-z]+(?: [A-Z][a-z]+)?")
_SECRET_VALUE_STOPWORDS = re.compile(r"^(?:\$|\{|<|%\(|changeme$|true$|false$)")


def luhn_ok(digits: str) -> bool:
    d = [int(c) for c in digits if c.isdigit()]
    total = sum(d[-1::-2]) + sum(sum(divmod(2 * x, 10)) for x in d[-2::-2])
    return len(d) >= 12 and total % 10 == 0


def iban_ok(text: str) -> bool:
    s = text.replace(" ", "")
    return len(s) >= 15 and int("".join(str(int(c, 36)) for c in s[4:] + s[:4])) % 97 == 1


def _valid_ip(s: str) -> bool:
    try:
        ipaddress.ip_address(s)
        return True
    except ValueError:
        return False


def find_pii(text: str) -> list[tuple[int, int, str]]:
    """(start, end, type) spans, earlier rules winning overlaps (most specific first)."""
    found: list[tuple[int, int, str]] = []

    def add(start: int, end: int, ptype: str) -> None:
        if start < end and not any(start < b and a < end for a, b, _ in found):
            found.append((start, end, ptype))

    for m in URL_CREDENTIALS.finditer(text):
        add(m.start(1), m.end(1), "USERNAME")
        add(m.start(2), m.end(2), "PASSWORD")
    for m in EMAIL.finditer(text):
        add(m.start(), m.end(), "EMAIL")
    for m in TOKEN.finditer(text):
        add(m.start(), m.end(), "PASSWORD")
    for m in SECRET_KV.finditer(text):
        if not _SECRET_VALUE_STOPWORDS.match(m.group(1)):
            add(m.start(1), m.end(1), "PASSWORD")
    for m in IBAN.finditer(text):
        if iban_ok(m.group()):
            add(m.start(), m.end(), "IBAN")
    for m in CARD.finditer(text):
        if luhn_ok(m.group()):
            add(m.start(), m.end(), "CREDIT_CARD")
    for m in DOB_KV.finditer(text):
        add(m.start(1), m.end(1), "DATE_OF_BIRTH")
    for m in SSN_US.finditer(text):
        add(m.start(), m.end(), "SSN")
    for m in ID_KV.finditer(text):
        add(m.start(1), m.end(1), "SSN")
    for rx in (IPV4, IPV6):
        for m in rx.finditer(text):
            if _valid_ip(m.group()):
                add(m.start(), m.end(), "IP_ADDRESS")
    for m in PHONE.finditer(text):
        if sum(c.isdigit() for c in m.group()) >= 8 and not DATE_LIKE.fullmatch(m.group().strip("()")):
            add(m.start(), m.end(), "PHONE")
    for m in USER_KV.finditer(text):
        if not _SECRET_VALUE_STOPWORDS.match(m.group(1)) and not DATE_LIKE.fullmatch(m.group(1)):
            add(m.start(1), m.end(1), "USERNAME")
    for rx in (NAME_KV, TITLE_NAME):
        for m in rx.finditer(text):
            g = 1 if rx.groups else 0
            value = m.group(g)
            if not value[0].islower() and not value.isupper():  # 'name: gateway', 'name: PASSWORD'
                add(m.start(g), m.end(g), "NAME")
    return sorted(found)


def baseline_mask(text: str) -> str:
    """``text`` with every span the rules find replaced by its placeholder."""
    out, last = [], 0
    for start, end, ptype in find_pii(text):
        out += [text[last:start], f"[{ptype}]"]
        last = end
    return "".join(out) + text[last:]


def baseline_eval(cfg, out_path: str | None = None) -> dict:
    """Baseline metrics on a run config's test split (``eval.max_examples`` rows), scored exactly as
    ``loraforge eval`` scores a model, so the numbers sit in one table. A multi-task config: each pii
    task's test split, {"tasks": {name: metrics}} as ``loraforge eval`` gives for the model."""
    import json

    from loraforge.data.splits import test_examples
    from loraforge.eval.pii import pii_metrics
    from loraforge.runs.files import atomic_write

    if cfg.data.tasks:
        metrics = {"tasks": _task_baselines(cfg)}
    else:
        examples = test_examples(cfg)
        sources = [e.source for e in examples]
        metrics = pii_metrics(sources, [baseline_mask(s) for s in sources], [e.target for e in examples])
    if out_path:
        atomic_write(out_path, json.dumps(metrics, indent=2))
    return metrics


def _task_baselines(cfg) -> dict:
    """{pii task: baseline metrics on its test split}; none such is an error naming the tasks."""
    from loraforge.data.formats import DataError
    from loraforge.eval.inference import task_run_config

    tasks = cfg.data.task_configs()
    pii = [(name, d) for name, d in tasks if d.task == "pii" and d.test]
    if not pii:
        raise DataError("the rule baseline masks PII: no entry of data.tasks is a pii task with a test split (tasks: "
                        + ", ".join(f"{n} ({d.task})" for n, d in tasks) + ")")
    return {name: baseline_eval(task_run_config(cfg, d)) for name, d in pii}
