"""Pseudonyms: realistic fake values (Faker, locale-aware) instead of placeholders, so masked text
still reads naturally and downstream parsers still accept it.

Consistent: one identity (normalized value, ``identities.normalize``) always gets the same fake
value, from a seed derived from (seed, type, identity), so a shared ``Pseudonymizer`` is consistent
across a batch and across runs. Format-preserving where it matters: card numbers keep their length,
grouping and network digit and pass Luhn; IBANs keep their country, length and grouping and pass
mod-97; IPs keep their family; dates of birth keep their format; phone numbers and IDs keep their
shape (separators, a leading +country code).
"""

from __future__ import annotations

import hashlib
import random
import re
import string
from datetime import datetime
from functools import lru_cache

from loraforge.pii.identities import normalize

DATE_FORMATS = ("%Y-%m-%d", "%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%B %d, %Y", "%d %b %Y", "%d %B %Y", "%Y/%m/%d")


@lru_cache(maxsize=None)
def _faker(locale: str):
    from faker import Faker

    return Faker(locale)


def luhn_digit(body: str) -> str:
    """The check digit that makes ``body + digit`` pass Luhn."""
    total = 0
    for i, c in enumerate(reversed(body)):
        d = int(c) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return str((10 - total % 10) % 10)


def iban_check_digits(country: str, bban: str) -> str:
    n = int("".join(str(int(c, 36)) for c in (bban + country + "00").upper()))
    return f"{98 - n % 97:02d}"


def _shape(value: str, rng: random.Random, keep_prefix: int = 0) -> str:
    """Same shape: digits -> digits, letters -> letters of the same case, the rest kept."""
    out = list(value[:keep_prefix])
    for c in value[keep_prefix:]:
        if c.isdigit():
            out.append(rng.choice(string.digits))
        elif c.isascii() and c.isalpha():
            out.append(rng.choice(string.ascii_uppercase if c.isupper() else string.ascii_lowercase))
        else:
            out.append(c)
    return "".join(out)


def fake_card(value: str, rng: random.Random) -> str:
    digits = [c for c in value if c.isdigit()]
    body = digits[0] + "".join(rng.choice(string.digits) for _ in digits[1:-1])
    new = iter(body + luhn_digit(body))
    return "".join(next(new) if c.isdigit() else c for c in value)


def fake_iban(value: str, rng: random.Random) -> str:
    compact = value.replace(" ", "")
    country, bban = compact[:2].upper(), _shape(compact[4:], rng)
    new = iter(country + iban_check_digits(country, bban) + bban)
    return "".join(c if c == " " else next(new) for c in value)


def fake_phone(value: str, rng: random.Random) -> str:
    m = re.match(r"^(?:\+|00)\d{1,3}", value)  # the country code is not identifying: keep it
    return _shape(value, rng, keep_prefix=m.end() if m else 0)


def fake_date(value: str, fake) -> str:
    new = fake.date_of_birth(minimum_age=18, maximum_age=85)
    for fmt in DATE_FORMATS:
        try:
            datetime.strptime(value.strip(), fmt)
        except ValueError:
            continue
        return new.strftime(fmt)
    return new.isoformat()


class Pseudonymizer:
    """Fake values per identity: ``fake(type, value)`` returns the same string for the same identity."""

    def __init__(self, locale: str = "en_US", seed: int = 0):
        self.locale, self.seed = locale, seed
        self.faker = _faker(locale)
        self.values: dict[tuple[str, str], str] = {}
        self.used: set[str] = set()

    def fake(self, ptype: str, value: str) -> str:
        key = (ptype, normalize(value, ptype))
        if key not in self.values:
            digest = hashlib.sha256(f"{self.seed}\0{ptype}\0{key[1]}".encode()).digest()
            rng = random.Random(digest)
            for _ in range(20):  # never the original, never another identity's fake
                self.faker.seed_instance(rng.getrandbits(64))
                new = self._make(ptype, value, rng)
                if new != value and new not in self.used:
                    break
            self.values[key] = new
            self.used.add(new)
        return self.values[key]

    def _make(self, ptype: str, value: str, rng: random.Random) -> str:
        f = self.faker
        if ptype == "NAME":
            return f.first_name() if len(value.split()) == 1 else f"{f.first_name()} {f.last_name()}"
        if ptype == "EMAIL":
            return f.email()
        if ptype == "PHONE":
            return fake_phone(value, rng)
        if ptype == "ADDRESS":
            return re.sub(r"\s*\n\s*", ", ", f.address().strip())
        if ptype == "DATE_OF_BIRTH":
            return fake_date(value, f)
        if ptype == "CREDIT_CARD" and sum(c.isdigit() for c in value) >= 12:
            return fake_card(value, rng)
        if ptype == "IBAN" and re.fullmatch(r"[A-Za-z]{2}\d{2}[A-Za-z0-9 ]{11,}", value):
            return fake_iban(value, rng)
        if ptype == "IP_ADDRESS":
            return f.ipv6() if ":" in value else f.ipv4_public()
        if ptype == "USERNAME":
            return f.user_name()
        return _shape(value, rng)  # SSN, PASSWORD and anything unknown: same shape, new characters
