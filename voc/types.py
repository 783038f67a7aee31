"""The data model at the toolkit's boundary: a `Question` goes in, an `Answer` comes out.

Both are pydantic models, so bad input fails early with a message that says what to fix.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

LABELS = string.ascii_uppercase  # option labels used when options come as a plain list
DUPLICATE_OPTIONS = "duplicate_options"  # metadata key flagging options with the same text (see duplicate_option_groups)
_LINE_BREAK = re.compile(r"\s*[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]\s*")  # what str.splitlines() splits on


def one_line(text: str) -> str:
    """An option text as it is shown and stored: stripped, each line break (with the spaces around it) made one space."""
    return _LINE_BREAK.sub(" ", text.strip())


def _short(value: Any, limit: int = 60) -> str:
    """repr() of a value for an error message, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def default_labels(n: int) -> list[str]:
    """Labels A, B, C, ... for `n` options (at most 26)."""
    if n > len(LABELS):
        raise ValueError(f"{n} options given, at most {len(LABELS)} can be labelled A-Z; pass options as a dict label -> text")
    return list(LABELS[:n])


def duplicate_option_groups(options: Mapping[str, str]) -> list[list[str]]:
    """Labels of options that have the same text, ignoring case and spacing: [['A', 'D']] when A and D read alike.

    Such questions (a few rows of public datasets, e.g. 14 of MedMCQA's test file) are kept, since answers are
    scored by label, and flagged with these groups in `Question.metadata["duplicate_options"]` so reports can count them.
    """
    by_text: dict[str, list[str]] = {}
    for label, text in options.items():
        by_text.setdefault(" ".join(text.split()).casefold(), []).append(label)
    return [labels for labels in by_text.values() if len(labels) > 1]


def _options_to_dict(options: Any) -> dict[str, str]:
    """Accept a list of texts, a list of (label, text) pairs or a mapping; keep the order."""
    if isinstance(options, Mapping):
        pairs = list(options.items())
    elif isinstance(options, str | bytes):
        raise ValueError("options must be a list of option texts or a dict label -> text, not a single string")
    elif isinstance(options, Sequence):
        items = list(options)
        if items and all(isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 2 for item in items):
            pairs = [(item[0], item[1]) for item in items]
        else:
            pairs = list(zip(default_labels(len(items)), items, strict=True))
    else:
        raise ValueError(f"options must be a list or a dict, got {type(options).__name__}")
    result: dict[str, str] = {}
    for label, text in pairs:
        if not isinstance(label, str) or not isinstance(text, str):
            raise ValueError(f"option labels and texts must be strings, got {_short(label)}: {_short(text)}")
        label = label.strip()
        if label in result:
            raise ValueError(f"duplicate option label {_short(label)}; give each option its own label")
        result[label] = text
    return result


class Question(BaseModel):
    """One multiple-choice question.

    `options` is an ordered mapping label -> text; a plain list of texts gets labels A, B, C, ...
    Each option is shown on one line of the prompt, so option texts are stored stripped, with every
    line break (and the spaces around it) replaced by one space. Labels are printable text without
    whitespace. Bad input raises pydantic's `ValidationError` with a one-line reason. Options with
    the same text are allowed (answers are scored by label) and flagged in `metadata["duplicate_options"]`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    question: str
    options: dict[str, str]
    context: str | None = None
    gold: str | None = Field(default=None, description="label of the correct option, if known")
    id: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("question")
    @classmethod
    def _question_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the question is empty; give the question text")
        return value

    @field_validator("options", mode="before")
    @classmethod
    def _normalise_options(cls, value: Any) -> dict[str, str]:
        options = _options_to_dict(value)
        if len(options) < 2:
            raise ValueError(f"a question needs at least 2 options, got {len(options)}")
        for label, text in options.items():
            if not label:
                raise ValueError("an option label is empty; labels must be non-empty strings like 'A'")
            if any(ch.isspace() for ch in label):
                raise ValueError(f"option label {_short(label)} contains whitespace; use labels like 'A' or 'yes'")
            if not label.isprintable():
                raise ValueError(f"option label {_short(label)} contains an unprintable character; use labels like 'A' or 'yes'")
            text = options[label] = one_line(text)
            if not text:
                raise ValueError(f"option {_short(label)} has no text; every option needs a text")
        return options

    @field_validator("context")
    @classmethod
    def _blank_context_is_none(cls, value: str | None) -> str | None:
        return value if value is not None and value.strip() else None

    @model_validator(mode="after")
    def _check_gold_and_id(self) -> Question:
        if self.gold is not None and self.gold not in self.options:
            raise ValueError(f"gold label {self.gold!r} is not among the option labels {list(self.options)}")
        if not self.id:
            object.__setattr__(self, "id", self.fingerprint()[:12])
        groups = duplicate_option_groups(self.options)
        if groups or DUPLICATE_OPTIONS in self.metadata:  # the flag is derived from the options: always rewritten
            metadata = {k: v for k, v in self.metadata.items() if k != DUPLICATE_OPTIONS}
            object.__setattr__(self, "metadata", {**metadata, DUPLICATE_OPTIONS: groups} if groups else metadata)
        return self

    @property
    def labels(self) -> list[str]:
        return list(self.options)

    @property
    def duplicate_options(self) -> list[list[str]]:
        """Groups of labels whose options have the same text (ignoring case and spacing), e.g. [['A', 'C']]; [] if none."""
        return self.metadata.get(DUPLICATE_OPTIONS, [])

    def fingerprint(self) -> str:
        """A stable hash of the content (question, options, context); the default id."""
        payload = json.dumps([self.question, list(self.options.items()), self.context], ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()


def whole_number(name: str, value: object, minimum: int, unit: str, too_small: str) -> int:
    """`value` as a count of `unit`s; a one-line TypeError unless it is an int, ValueError (`too_small`) below `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a whole number of {unit}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be {too_small}, got {value}")
    return value


def explanation_of(question: Question) -> str | None:
    """A reference explanation kept by the loader (PubMedQA's LONG_ANSWER, or an `explanation`/`exp` field)."""
    for key in ("long_answer", "explanation", "exp"):
        value = question.metadata.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def questions_digest(questions: Sequence[Question]) -> str:
    """sha256 over the questions' ids, contents and gold labels: a question set's identity in run fingerprints."""
    digest = hashlib.sha256()
    for q in questions:
        digest.update(q.id.encode() + b"\0" + q.fingerprint().encode() + b"\0" + (q.gold or "").encode() + b"\n")
    return digest.hexdigest()


class Verification(BaseModel):
    """The VoC strategy's check of one option: the generated text and the verdict probability."""

    label: str
    text: str
    verdict_probability: float | None = Field(
        default=None, description="P(option is correct) from the verdict tokens, 0..1; None when the final rule does not use it"
    )


class SampleAnswer(BaseModel):
    """One self-consistency path (`VoC(samples=N)`): what was chosen after one sampled reasoning (cot) or one sampled
    verification of every option (voc)."""

    label: str = Field(description="the option this path chose (its most probable label)")
    probabilities: dict[str, float] = Field(description="this path's probabilities of the option labels")
    completions: list[str] = Field(default_factory=list, description="the path's generated texts (cot: a reasoning; voc: one per option)")
    verdicts: dict[str, float] = Field(default_factory=dict, description="voc: this path's verdict probability per option, when computed")


class OrderingAnswer(BaseModel):
    """The answer under one ordering of the options (see voc.permutations), in terms of the ORIGINAL options."""

    order: list[int] = Field(description="position j showed original option order[j] (0-based indices)")
    label: str = Field(description="the original label of the option chosen under this ordering")
    probabilities: dict[str, float] = Field(description="this ordering's probabilities, keyed by the original labels")
    samples: list[SampleAnswer] = Field(
        default_factory=list, description="with samples: each path's choice and probabilities here (original labels; no texts)",
    )


class Answer(BaseModel):
    """The toolkit's answer to one `Question`.

    Asked under several option orderings (`VoC(permutations=K)`), `label` and `probabilities` are the ensemble (the
    mean over orderings, by original option), `orderings` holds each ordering's answer, the other fields are those of
    the identity ordering (the question as given), and the token counts are summed over orderings.

    With several self-consistency paths (`VoC(samples=N)`, cot and voc), `probabilities` are the mean of the paths'
    probabilities and `label` their most probable option; `majority` is the majority vote of the paths' choices (over all
    orderings' paths when permuted), `samples` holds each path, `completions` every path's texts (path after path), and
    `verifications` and `choice_logprobs` are the first path's.
    """

    question_id: str
    strategy: str
    label: str = Field(description="label of the chosen option")
    choice: str = Field(description="text of the chosen option")
    probabilities: dict[str, float] = Field(description="final probability of each option label, sums to 1")
    choice_logprobs: dict[str, float] = Field(default_factory=dict, description="raw log-probability of each label in the choice round")
    verifications: dict[str, Verification] = Field(default_factory=dict, description="VoC only: one per option label")
    completions: list[str] = Field(default_factory=list, description="raw generated texts, in round order")
    prompt_tokens: int = 0
    completion_tokens: int = 0
    context_truncated: bool = Field(default=False, description="the context was shortened to fit the model")
    rounds: list[str] = Field(default_factory=list, description="the strategy rounds computed for this answer, in order")
    orderings: list[OrderingAnswer] = Field(default_factory=list, description="one per option ordering asked; empty when asked once")
    samples: list[SampleAnswer] = Field(default_factory=list, description="one per self-consistency path; empty with one path")
    majority: str | None = Field(default=None, description="the majority vote of the paths' choices; None with one path")
    fewshot: list[str] = Field(default_factory=list, description="ids of the pool questions shown as worked examples (few-shot)")
    prompt_hash: str = Field(
        default="", description="sha256 of the first round's rendered prompts before any context shortening (a bench resume checks it)"
    )
    gold: str | None = None

    @property
    def correct(self) -> bool | None:
        return None if self.gold is None else self.label == self.gold
