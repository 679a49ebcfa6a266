"""Spans made to follow the annotation rules (``pii.conform``), whoever found them."""

from __future__ import annotations

import pytest

from loraforge.pii import Masker, MaskOptions
from loraforge.pii.conform import conform
from loraforge.pii.spans import Span


def spans_of(text: str, *pieces: tuple[str, str]) -> list[Span]:
    out = []
    for sub, typ in pieces:
        i = text.index(sub)
        out.append(Span(i, i + len(sub), typ))
    return out


def kept(text: str, *pieces: tuple[str, str]) -> list[tuple[str, str]]:
    return [(text[s.start:s.end], s.type) for s in conform(text, spans_of(text, *pieces))]


@pytest.mark.parametrize("text, piece, value", [
    ("VALUES (1, '(428)688-4747x7985', 'x')", ("'(428)688-4747x7985'", "PHONE"), "(428)688-4747x7985"),
    ("id,(99242630,", ("(99242630,", "PHONE"), "99242630"),
    ("Mail ann@example.org.", ("ann@example.org.", "EMAIL"), "ann@example.org"),
    ("«Jean Dupont» a écrit", ("«Jean Dupont»", "NAME"), "Jean Dupont"),
    ("Sehr geehrte Frau Brandt,", ("Frau Brandt", "NAME"), "Brandt"),
    ("佐藤 健様、こんにちは", ("佐藤 健様", "NAME"), "佐藤 健"),
    ("Dr. Helen Cho called", ("Dr. Helen Cho", "NAME"), "Dr. Helen Cho"),  # English titles stay in
    ("St. John's Rd. 5", ("St. John's Rd.", "ADDRESS"), "St. John's Rd."),  # an address may end in a dot
    ("pw: '(1$oH!S)'", ("'(1$oH!S)'", "PASSWORD"), "(1$oH!S)"),  # a password keeps its brackets
    ("host ::1 up", ("::1", "IP_ADDRESS"), None),  # loopback, colons and all
    ("proxy_pass http://10.1.2.3:8080;", ("10.1.2.3:8080", "IP_ADDRESS"), "10.1.2.3"),  # the address, not its port
    ("proxy_pass http://127.0.0.1:8080;", ("127.0.0.1:8080", "IP_ADDRESS"), None),
    ("allow 198.51.100.0/24;", ("198.51.100.0/24", "IP_ADDRESS"), None),  # a range, however tagged
    ("from fe80::1ff:fe23:4567:890a,", ("fe80::1ff:fe23:4567:890a,", "IP_ADDRESS"), "fe80::1ff:fe23:4567:890a"),
])
def test_spans_are_trimmed_to_the_value(text, piece, value):
    assert kept(text, piece) == ([(value, piece[1])] if value else [])


def test_what_the_rules_say_is_never_personal_data_is_dropped():
    text = ("security@example.com and no-reply@corp.io wrote to jane.doe@example.com; allow 10.0.0.0/8, "
            "127.0.0.1 and 0.0.0.0 but block 203.0.113.9; ran as root, then as jdoe; merged by ci-bot, "
            "dependabot[bot] and bot_deploy, reviewed by abbott")
    found = kept(text, ("security@example.com", "EMAIL"), ("no-reply@corp.io", "EMAIL"),
                 ("jane.doe@example.com", "EMAIL"), ("10.0.0.0", "IP_ADDRESS"), ("127.0.0.1", "IP_ADDRESS"),
                 ("0.0.0.0", "IP_ADDRESS"), ("203.0.113.9", "IP_ADDRESS"), ("root", "USERNAME"), ("jdoe", "USERNAME"),
                 ("ci-bot", "USERNAME"), ("dependabot[bot]", "USERNAME"), ("bot_deploy", "USERNAME"), ("abbott", "USERNAME"))
    assert found == [("jane.doe@example.com", "EMAIL"), ("203.0.113.9", "IP_ADDRESS"), ("jdoe", "USERNAME"),
                     ("abbott", "USERNAME")]


def test_the_masker_conforms_the_patterns_spans_and_the_models():
    class Model:  # a finder that over-reaches the way a tagger's tokens do
        def find_spans(self, texts):
            return [spans_of(t, ("'Ann Lee',", "NAME")) for t in texts]

    text = "INSERT ('Ann Lee', 'support@shop.example', 'ann.lee@mail.example', '127.0.0.1')"
    masked = Masker(Model(), MaskOptions(merge="union")).mask_text(text)
    assert masked.text == "INSERT ('[NAME]', 'support@shop.example', '[EMAIL]', '127.0.0.1')"
    assert Masker(options=MaskOptions(merge="patterns")).mask_text("ping 127.0.0.1 from 10.1.2.3").text == (
        "ping 127.0.0.1 from [IP_ADDRESS]")
