"""``metrics.json``: the typed record every writer and reader of a run's results shares.

Train writes it; eval, report, compare, export (model card), estimate (``--check``) and serve read
it through ``RunMetrics``, never by string keys into a plain dict. Task metrics (chrF, leak rate,
...) differ per task, so they stay a mapping of metric name to number; everything else is typed.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

TaskScores = dict[str, Any]
"""One evaluation's metrics, e.g. {"chrf": 45.6, "bleu": 30.1, "markup": 52.4, "n": 100}."""


class _Record(BaseModel):
    # Unknown keys are kept (a newer loraforge may add fields) but every known one is typed.
    model_config = ConfigDict(extra="allow")


class TrainStats(_Record):
    steps: int
    seconds: float
    tokens_per_s: float
    target_tokens_per_s: float
    final_dev_loss: float | None = None
    trainable_params: int
    total_params: int
    peak_rss_mb: float
    dtype: str
    world_size: int = 1
    ranks_identical: bool = True
    steps_asked: int | None = None
    """``train.steps`` where ``train.max_minutes`` ran fewer (None: it ran them all)."""
    tokens: int | None = None
    """Tokens trained on (all ranks', as ``tokens_per_s`` counts them), exact: ``seconds`` x ``tokens_per_s`` is rounded
    (None: runs before 2026-12-07)."""

    @property
    def trainable_pct(self) -> float:
        return 100 * self.trainable_params / max(self.total_params, 1)


class MaskerScores(_Record):
    """One masker on one evaluation set: a row of the PII side-by-side table (percentages)."""

    set: str
    """The rows scored, e.g. "pii:test" or "pii-handwritten"."""
    masker: str
    """e.g. "tuned model", "model + patterns", "validated patterns", "rule baseline", "presidio"."""
    n: int
    leak_rate: float
    typed_f1: float
    entity_f1: float
    over_masking: float
    faithfulness: float
    no_pii_unchanged: float | None = None
    """Texts without PII returned unchanged (None when the set has none)."""
    texts_per_s: float | None = None


class PiiComparison(_Record):
    """PII: every masker on the same rows of every set, with the operating point the model used."""

    rows: list[MaskerScores]
    bias: float | None = None
    """The model's recall knob (logits added to starting a placeholder)."""
    presidio: str
    """How Presidio ran (spaCy model or pattern recognizers only), or why it did not."""


class PiiCurvePoint(_Record):
    """The tuned model at one value of the recall knob (percentages)."""

    bias: float
    leak_rate: float
    over_masking: float
    typed_f1: float
    entity_f1: float
    no_pii_unchanged: float | None = None
    """Texts without PII returned unchanged (None when the set has none)."""


class PiiCurve(_Record):
    """PII: leak rate against over-masking as the recall knob moves, on the dev split (the operating
    point is picked there, never on test)."""

    set: str
    """The rows scored, e.g. "pii:dev"."""
    n: int
    points: list[PiiCurvePoint]


class TaskMetrics(_Record):
    """One task of a multi-task run: its own metrics (translate: chrF/BLEU/markup; pii: its own) and
    how much of it training saw."""

    task: str
    before: TaskScores | None = None
    after: TaskScores = {}
    baseline: TaskScores | None = None
    """PII: the rule-based masker on the same rows."""
    train_examples: int | None = None
    """Training examples of the task (after max_length; with back-translated pairs)."""
    probability: float | None = None
    """The configured sampling probability (data.task_temperature or data.task_weights)."""
    sampled: int | None = None
    """Examples actually drawn from the task over the run."""


class HeldOutScores(_Record):
    """One extra test set of a run (``eval.extra_tests``): its scores and how much of it training saw."""

    split: str
    """The split scored, e.g. "k8s:tutorials"."""
    before: TaskScores | None = None
    after: TaskScores = {}
    documents: int = 0
    """Pages the scored rows come from (rows without a page path count as none)."""
    trained_rows: int = 0
    """Training rows from those pages: more than 0 means the set is not held out."""
    trained_documents: int = 0
    """Of ``documents``, how many the training data has rows from."""

    contaminated: bool = False
    """Training saw rows from these pages (set from ``trained_rows``)."""

    @model_validator(mode="after")
    def _contaminated_from_rows(self) -> HeldOutScores:
        self.contaminated = self.trained_rows > 0
        return self

    def note(self) -> str:
        pages = f"{self.documents} page{'' if self.documents == 1 else 's'}"
        if not self.contaminated:
            return (f"held out: no training row comes from its {pages}" if self.documents
                    else "its rows carry no page path: whether training saw them is unknown")
        return (f"CONTAMINATED: training saw {self.trained_rows} rows from {self.trained_documents} of its {pages} "
                "(data.exclude_sources does not cover them); these scores do not measure held-out pages")


class RunMetrics(_Record):
    task: str
    """data.task; 'multi' for a multi-task run (data.tasks), whose before/after are its first task's."""
    before: TaskScores | None = None
    """The base model on the test split (None when eval.before is off or there is no test split)."""
    after: TaskScores = {}
    """The tuned model on the test split."""
    train: TrainStats | None = None
    wall_seconds: float | None = None
    baseline: TaskScores | None = None
    """PII: the rule-based masker on the same rows."""
    pii_compare: PiiComparison | None = None
    """PII: tuned model, model + patterns, rules and Presidio side by side (``pii.sidebyside``)."""
    pii_curve: PiiCurve | None = None
    """PII: the recall knob's curve on the dev split (``loraforge eval --pii-curve``)."""
    tasks: dict[str, TaskMetrics] | None = None
    """Multi-task: each task's metrics and mix, by task name."""
    extra_tests: dict[str, HeldOutScores] | None = None
    """``eval.extra_tests``: more test sets scored beside the test split, by name."""

    def to_json(self) -> str:
        return self.model_dump_json(indent=2, exclude_none=False)
