"""Numbered identities, pseudonyms (consistent, checksum-valid) and reversible masking."""

from __future__ import annotations

import pytest

from loraforge.eval.pii_baseline import iban_ok, luhn_ok
from loraforge.pii import Masker, MaskOptions, MappingError, unmask
from loraforge.pii.pseudonym import Pseudonymizer
from loraforge.pii.spans import Span

TEXT = ("Mail john@example.com or JOHN@Example.com; also ann@example.org. Card 4111-1111-1111-1111, "
        "IBAN DE89 3704 0044 0532 0130 00, call +49 30 1234567 or 0049 30 1234567, host 10.1.2.3.")


def _masker(**kw):
    return Masker(options=MaskOptions(merge="patterns", **kw))


class _Names:
    """A stand-in model that finds given names (tests identities without a trained model)."""

    def find_spans(self, texts):
        out = []
        for t in texts:
            spans, i = [], 0
            for name in ("John Smith", "john smith", "Dr. John Smith", "Ann Lee"):
                i = t.find(name)
                while i >= 0:
                    spans.append(Span(i, i + len(name), "NAME"))
                    i = t.find(name, i + 1)
            out.append(spans)
        return out


def test_numbered_identities_are_consistent_in_a_document():
    r = _masker(style="numbered").mask_text(TEXT)
    assert r.text.count("[EMAIL_1]") == 2 and "[EMAIL_2]" in r.text  # case-insensitive identity
    assert r.text.count("[PHONE_1]") == 2  # +49 and 0049: one number
    m = Masker(_Names(), MaskOptions(style="numbered"))
    r = m.mask_text("John Smith met Ann Lee; later john smith called.")
    assert r.text == "[NAME_1] met [NAME_2]; later [NAME_1] called."


def test_numbering_across_a_batch_only_when_asked():
    texts = ["Ann Lee wrote.", "John Smith and Ann Lee."]
    per_doc = Masker(_Names(), MaskOptions(style="numbered")).mask(texts)
    assert [r.text for r in per_doc] == ["[NAME_1] wrote.", "[NAME_1] and [NAME_2]."]
    batch = Masker(_Names(), MaskOptions(style="numbered", across_batch=True)).mask(texts)
    assert [r.text for r in batch] == ["[NAME_1] wrote.", "[NAME_2] and [NAME_1]."]


def test_pseudonyms_are_consistent_realistic_and_checksum_valid():
    r = _masker(style="pseudonym", locale="de_DE").mask_text(TEXT)
    reps = dict(zip([TEXT[s.start:s.end] for s in r.spans], r.replacements))
    assert reps["john@example.com"] == reps["JOHN@Example.com"] != reps["ann@example.org"]
    assert "@" in reps["ann@example.org"] and reps["john@example.com"] != "john@example.com"
    card, iban = reps["4111-1111-1111-1111"], reps["DE89 3704 0044 0532 0130 00"]
    assert luhn_ok(card) and card != "4111-1111-1111-1111" and card[0] == "4" and card.count("-") == 3
    assert iban_ok(iban) and iban.startswith("DE") and len(iban) == len("DE89 3704 0044 0532 0130 00")
    assert reps["+49 30 1234567"].startswith("+49 ") and reps["+49 30 1234567"] != "+49 30 1234567"
    again = _masker(style="pseudonym", locale="de_DE").mask_text(TEXT)
    assert again.text == r.text  # same seed, same pseudonyms


def test_many_pseudo_cards_and_ibans_pass_their_checks():
    p = Pseudonymizer(seed=1)
    for i in range(50):
        assert luhn_ok(p.fake("CREDIT_CARD", f"4{i:03d} 1111 1111 1111"))
        assert iban_ok(p.fake("IBAN", f"GB{i:02d}NWBK6016133192{i:04d}"))


@pytest.mark.parametrize("style", ["placeholder", "numbered", "pseudonym"])
def test_unmask_restores_the_original(style):
    r = _masker(style=style).mask_text(TEXT, with_mapping=True)
    assert r.text != TEXT
    assert unmask(r.text, r.mapping) == TEXT
    assert unmask(r.text, r.mapping.to_dict()) == TEXT  # as read back from its JSON file


def test_a_mapping_for_another_text_is_refused():
    m = _masker(style="numbered")
    r = m.mask_text(TEXT, with_mapping=True)
    other = m.mask_text("Write to zoe@example.net", with_mapping=True)
    with pytest.raises(MappingError, match="another text"):
        unmask(other.text, r.mapping)
    with pytest.raises(MappingError, match="does not know"):  # derived text, unknown numbered placeholder
        unmask("Reply to [EMAIL_7] today", r.mapping, strict=False)
    with pytest.raises(MappingError, match="not a loraforge PII mapping"):
        unmask(r.text, {"entries": []})
    assert unmask("Reply to [EMAIL_2] today", r.mapping, strict=False) == "Reply to ann@example.org today"


def test_plain_placeholders_are_ambiguous_without_strict_mode():
    r = _masker().mask_text(TEXT, with_mapping=True)
    with pytest.raises(MappingError, match="several values"):
        unmask(r.text, r.mapping, strict=False)


def test_the_mapping_carries_its_warning():
    from loraforge.pii import MAPPING_WARNING

    r = _masker(style="numbered").mask_text(TEXT, with_mapping=True)
    assert r.mapping.to_dict()["warning"] == MAPPING_WARNING and "personal data" in MAPPING_WARNING
    assert _masker().mask_text(TEXT).mapping is None  # never built unless asked
