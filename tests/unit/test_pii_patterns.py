"""Validated patterns reject what fails their checks; merging is a union without leaks, deterministic."""

from __future__ import annotations

import random

import pytest

from loraforge.pii import patterns
from loraforge.pii.spans import Span, merge_spans, render


def _found(text):
    return [(text[s.start:s.end], s.type) for s in patterns.find(text)]


@pytest.mark.parametrize("text,expected", [
    ("card 4111 1111 1111 1111 ok", [("4111 1111 1111 1111", "CREDIT_CARD")]),
    ("card 4111 1111 1111 1112 ok", []),  # fails Luhn
    ("IBAN DE89 3704 0044 0532 0130 00.", [("DE89 3704 0044 0532 0130 00", "IBAN")]),
    ("IBAN DE88 3704 0044 0532 0130 00.", []),  # fails mod-97
    ("from 192.168.1.20 and 2001:db8:85a3:0:0:8a2e:370:7334", [("192.168.1.20", "IP_ADDRESS"),
                                                              ("2001:db8:85a3:0:0:8a2e:370:7334", "IP_ADDRESS")]),
    ("from 999.168.1.20", []),  # not an IP
    ("kernel 5.10.0.1 and version 10.4.2.1", []),  # versions, not IPs
    ('{"driver":"10.28.29.1","peer":"10.28.29.7"}', [("10.28.29.7", "IP_ADDRESS")]),
    # another version of a family the text versions: a three-number version, or a four-number one in a version's
    # context, with the same first two numbers; an address that shares only a two-number decimal stays an address
    ("deployed  billing-api-4.11.0       4.11.0.2", []),
    ("on firmware 7.2.14.1; there's a known issue that 7.2.15.0 fixes", []),
    ("firmware 7.2.14.1, console at 7.3.15.10", [("7.3.15.10", "IP_ADDRESS")]),
    ("load 10.8 at peak; from 10.8.0.27 port 49870", [("10.8.0.27", "IP_ADDRESS")]),
    ("ssh from 10.8.0.27 then 10.8.0.31", [("10.8.0.27", "IP_ADDRESS"), ("10.8.0.31", "IP_ADDRESS")]),
    # a package's pin is a version; a comparison in code with spaces is not a pin
    ("nvidia-cudnn-cu12==8.9.2.26\nnvidia-cufft-cu12>=11.0.2.54", []),
    ('if peer == "10.2.3.4":', [("10.2.3.4", "IP_ADDRESS")]),
    ("ssn 123-45-6789, not 000-12-3456 or 666-12-3456", [("123-45-6789", "SSN")]),
    ("call +49 30 1234567 or (555) 123-4567", [("+49 30 1234567", "PHONE"), ("(555) 123-4567", "PHONE")]),
    ("order 12345678 on 2024-03-01", []),  # an order number and a date are not phones
    ("VALUES (99242630, 'x') and (+358) 291926593", [("(+358) 291926593", "PHONE")]),  # SQL's "(" is no area code
    ("ID 260343-718E, call 06 12 34 56 78", [("06 12 34 56 78", "PHONE")]),  # digits that run into a letter
    ("Call summary - 31.01.2025 11:51, or 01.23.45.67.89", [("01.23.45.67.89", "PHONE")]),  # a date and time
    ("web3 0/0/82/256/34 200 59 - - ---- 239/141/0", []),  # HAProxy timers and counters
    ("Vieja Finlandia, MICH 08119-6192; office 06221-5432", [("06221-5432", "PHONE")]),  # ZIP+4 after a state
    ("mail a.b+tag@mail.example.org!", [("a.b+tag@mail.example.org", "EMAIL")]),
    ("postgres://admin:s3cr3t@db:5432/x", [("admin", "USERNAME"), ("s3cr3t", "PASSWORD")]),
    ("key ghp_" + "a1B2" * 9, [("ghp_" + "a1B2" * 9, "PASSWORD")]),
    # numbers of logs and tables that are not phones: decimals, an access log's status and size, versions
    # with unbalanced brackets, dates with a build suffix or a time
    ("[   11.630275] e1000e up; EMEA,London,1204330.55,65.38", []),
    ('"GET /metrics HTTP/1.1" 200 18342 "-"', []),
    ("gcc-12 (Debian 12.2.0-14) 12.2.0) #1 SMP", []),
    ("rollback to storefront@2024.06.12-1 and 2024.06.11-3", []),
    ("challenge passed (2024-06-12 08:14)", []),
    ('{"created":1698580637,"examples": [1717401600],"phone":4155550100}', [("4155550100", "PHONE")]),
    ("commit=00000000; hotline 1-800-555-0100, 0800 123 4567, 고객센터(1588-0000)", []),
    ("mysql -h db.internal -u reporting_ro -p sales; docker login -u jdoe ghcr.io; sort -u names.txt",
     [("reporting_ro", "USERNAME"), ("jdoe", "USERNAME")]),
    ("Aadhaar 5843, PAN: AJXPG7731K; order ABCDE1234F", [("AJXPG7731K", "SSN")]),
    # IPv6 with "::": three groups or more, not loopback; a UK National Insurance number by HMRC's letters
    ("remote=2001:db8:3c4d:15::1a2f session=9b2e [2a01:4f8:c17:3b2a::1]:443",
     [("2001:db8:3c4d:15::1a2f", "IP_ADDRESS"), ("2a01:4f8:c17:3b2a::1", "IP_ADDRESS")]),
    ("listen [::1]:8080; std::map a::b dead::beef at 12:30:45, mac 00:1a:2b:3c:4d:5e", []),
    ("NI number JT 48 91 27 B; QQ 12 34 56 C and GB 12 34 56 A are not", [("JT 48 91 27 B", "SSN")]),
    ("pam_unix(su:auth): authentication failure; logname=elif25 uid=52 ruser=elif25 rhost=\n"
     "su[60725]: FAILED SU (to root) qramos on pts/3", [("elif25", "USERNAME"), ("elif25", "USERNAME"), ("qramos", "USERNAME")]),
    # a login after a user key; not a value that names no one
    ("DB_USER=orders_svc\nusername: billing_app\nuser=e.novak login: true username = var.db_username",
     [("orders_svc", "USERNAME"), ("billing_app", "USERNAME"), ("e.novak", "USERNAME")]),
    ("[15:21] user: 04.04.1962\nmail dovecot: imap-login: Login: user=<a@b.io>", [("a@b.io", "EMAIL")]),  # a
    # chat speaker, a log's program and event
    # numbers that are not a person's phone: the tail of a lettered reference, a broker's ID in a log field, a merchant's
    # line on a card statement; a code reference after a user key. A national ID after its label is still found
    # (and typed SSN by its label, pii.conform), and a phone after a plain word keeps its mask.
    ("Tracking number: 1Z 999 AA1 01 2345 6784; call 01 2345 6784", [("01 2345 6784", "PHONE")]),
    ("coordinator kafka-2:9092 (id: 2147483645 rack: b); SSN / national ID: 523577822809",
     [("523577822809", "PHONE")]),
    ("  2024-06-06 23:41  STEAMGAMES.COM 4259522985   USD 59.99\nmy number 4259522985", [("4259522985", "PHONE")]),
    ("username=user.username, username: apikey_ops", [("apikey_ops", "USERNAME")]),
    # a surname after an honorific (without it) or an English title (with it, and a given name between)
    ("Herr Brandt wird; Mr. Nair's shifts; Name on card: Mrs. Lisa George. Frau Dr. Weber",
     [("Brandt", "NAME"), ("Mr. Nair", "NAME"), ("Mrs. Lisa George", "NAME"), ("Dr. Weber", "NAME")]),
    ("Sehr geehrte Frau Kollegin, Dr. med. S. Albrecht", []),  # a noun after the honorific; no name after the title
    # a profile's handle; not a repository, a site's page, a Markdown link's target (a project), a Go import path
    ("CV: github.com/jdoe-dev · https://gitlab.com/ana.silva; [Kyverno](https://github.com/kyverno), "
     "github.com/kubernetes/website, github.com/settings, vendor/github.com/spf13",
     [("jdoe-dev", "USERNAME"), ("ana.silva", "USERNAME")]),
    # a handle named after its code host in prose; not prose in parentheses, not the host's own name in a URL
    ("my GitHub (jdoe-42) and GitHub: @ana-lima; GitHub (optional), GitHub: github.com/settings",
     [("jdoe-42", "USERNAME"), ("ana-lima", "USERNAME")]),
    # a directory login: uid= always, cn= after a bind key (a person's name with a space), not a group's entry
    ("LDAP_BIND_DN=cn=svc-crm-bind,ou=service,dc=corp\nbindDN: cn=Ana Lima,ou=staff,dc=corp\n"
     "memberOf: CN=GG-VPN,OU=Groups,DC=corp\nuser: uid=jdoe,ou=people,dc=corp\n"
     "  - name: LDAP_BIND_DN\n    value: \"cn=svc-web,ou=service,dc=corp\"",
     [("svc-crm-bind", "USERNAME"), ("Ana Lima", "NAME"), ("jdoe", "USERNAME"), ("svc-web", "USERNAME")]),
    # a Korean name before a job title, not a word before a title-like word (문의는 대리점: an inquiry, a dealer)
    ("담당 박지훈 과장님께 전달했고 고객님 문의는 대리점으로", [("박지훈", "NAME")]),
    # a password's shape: both cases, a digit and a symbol; not a plain word, emphasis, a URL's query, a long token
    ("I tried Sommer2024!! and hunter2, *FieldsV1, ?q=env%3DProd1, Ab1!" + "x" * 40, [("Sommer2024!!", "PASSWORD")]),
    # the cells under a table's name columns (quoted or not); not a mask, a placeholder, a shop's name, prose
    ('id,first_name,last_name,email\n1,Hannah,Lindqvist,h@x.io\n2,Mateo,"Ruiz Fernández",m@y.es\n3,XXX,N/A,[EMAIL]',
     [("Hannah", "NAME"), ("Lindqvist", "NAME"), ("h@x.io", "EMAIL"), ("Mateo", "NAME"), ("Ruiz Fernández", "NAME"),
      ("m@y.es", "EMAIL")]),
    ("id;naam;stad;company_name\n7;Albert Heijn;Utrecht;Ahold\nis relevant, such as a pod name, is only\n"
     "components. Other data, such as metrics, is not", []),
    # an SQL INSERT's column list is a header: a surname in capitals is a name, an account's display name is not
    ("INSERT INTO patients (mrn, family_name, given_names, full_name) VALUES\n  ('M1', 'ABIODUN', 'Folasade Mary', "
     "'Import Bot'),\n  ('M2', 'Ó Floinn', 'Donnchadh', 'XXX');",
     [("ABIODUN", "NAME"), ("Folasade Mary", "NAME"), ("Ó Floinn", "NAME"), ("Donnchadh", "NAME")]),
])
def test_patterns_find_only_valid_values(text, expected):
    assert _found(text) == expected


def test_select_rejects_unknown_names():
    with pytest.raises(ValueError, match="known: url_user"):
        patterns.select(["email", "passport"])
    assert [p.name for p in patterns.select(["iban", "email"])] == ["email", "iban"]


M = [Span(5, 15, "NAME", 0.9, "model"), Span(30, 40, "EMAIL", 0.8, "model")]
P = [Span(12, 20, "PHONE", 1.0, "patterns"), Span(50, 60, "IBAN", 1.0, "patterns")]


def test_union_covers_everything_either_side_found():
    merged = merge_spans(M, P, "union")
    assert [(s.start, s.end) for s in merged] == [(5, 20), (30, 40), (50, 60)]
    assert merged[0].type == "NAME" and merged[0].score == 1.0  # the longer member's type, the higher score
    covered = {i for s in merged for i in range(s.start, s.end)}
    assert all(i in covered for s in M + P for i in range(s.start, s.end))


def test_model_only_and_patterns_only():
    assert merge_spans(M, P, "model") == sorted(M)
    assert merge_spans(M, P, "patterns") == sorted(P)
    with pytest.raises(ValueError):
        merge_spans(M, P, "intersection")


def test_merge_is_deterministic_and_pattern_wins_a_tie():
    a, b = Span(0, 10, "NAME", 0.5, "model"), Span(0, 10, "EMAIL", 1.0, "patterns")
    for _ in range(5):
        xs = [a, b, Span(8, 12, "PHONE", 0.1, "model")]
        random.shuffle(xs)
        merged = merge_spans([x for x in xs if x.source == "model"], [x for x in xs if x.source == "patterns"])
        assert [(s.start, s.end, s.type) for s in merged] == [(0, 12, "EMAIL")]


def test_render_refuses_overlaps():
    with pytest.raises(ValueError, match="overlapping"):
        render("abcdefghij", [Span(0, 5, "NAME"), Span(3, 8, "NAME")])


def test_tables_are_shared_and_cannot_be_changed():
    # tables() caches the last text's tables for two passes; a caller that changed one would change the other's
    text = "name,email,city\nAda Lovelace,ada@example.org,London\nAlan Turing,alan@example.org,Wilmslow\n"
    first = patterns.tables(text)
    assert patterns.tables(text) is first
    (table,) = first
    assert table.labels == ("name", "email", "city")
    assert [line for _, line, _ in table.rows] == ["Ada Lovelace,ada@example.org,London", "Alan Turing,alan@example.org,Wilmslow"]
    with pytest.raises(AttributeError):
        table.labels = ("x",)
    assert not hasattr(table.rows, "append") and not hasattr(table.rows[0][2], "append")


def test_find_keeps_the_earlier_pattern_on_every_overlap_whatever_the_order_of_matches():
    """``find`` checks overlaps against the kept spans by their sorted starts (a long log holds tens of thousands):
    the same result as comparing each candidate with every kept span, on random overlapping finders."""
    rng = random.Random(7)
    for _ in range(300):
        text = "x" * 120
        cands = [[(a, a + rng.randrange(0, 9)) for a in (rng.randrange(115) for _ in range(rng.randrange(1, 25)))]
                 for _ in range(3)]
        pats = [patterns.Pattern(f"p{k}", "NAME", None, lambda t, s, v: True, finder=lambda t, c=c: c)
                for k, c in enumerate(cands)]
        kept: list[tuple[int, int]] = []
        for c in cands:
            for a, b in c:
                if a < b and not any(a < e and s < b for s, e in kept):
                    kept.append((a, b))
        assert [(s.start, s.end) for s in patterns.find(text, pats)] == sorted(kept)
