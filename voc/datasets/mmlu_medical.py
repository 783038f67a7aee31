"""MMLU test questions of the six medical subjects (mmlu_medical/test.jsonl)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from voc.datasets.common import (
    QuestionList,
    RowError,
    check_answer_text,
    collect,
    display_name,
    get_field,
    hub_source,
    is_hub_id,
    iter_hub,
    iter_jsonl,
    resolve_file,
)
from voc.types import Question, default_labels

MMLU_MEDICAL_SUBJECTS: tuple[str, ...] = (
    "anatomy",
    "clinical_knowledge",
    "college_biology",
    "college_medicine",
    "medical_genetics",
    "professional_medicine",
)


def _normalise_subject(subject: str) -> str:
    return "_".join(subject.strip().lower().replace("-", " ").split())


def _from_hub_schema(row: Mapping[str, Any]) -> dict[str, Any]:
    """cais/mmlu rows (question, subject, choices [..], answer 0-3) -> the local schema."""
    choices = row.get("choices")
    answer = row.get("answer")
    if not isinstance(choices, list):
        raise RowError(f"field 'choices' must be list, got {type(choices).__name__}")
    if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < len(choices):
        raise RowError(f"field 'answer' must be an index into choices, got {answer!r}")
    labels = default_labels(len(choices))
    return {
        "question": row.get("question"),
        "options": dict(zip(labels, choices, strict=True)),
        "answer_idx": labels[answer],
        "subject": row.get("subject"),
        "realidx": row.get("realidx"),
    }


def mmlu_row_to_question(row: Mapping[str, Any], line: int | str = 0) -> Question:
    """One row (question, options {A..D}, answer_idx, subject, realidx) -> Question (id "mmlu-<subject>-<realidx>")."""
    if "choices" in row and "options" not in row:
        row = _from_hub_schema(row)
    opts = get_field(row, "options", (dict, list))
    gold = get_field(row, "answer_idx", str)
    check_answer_text(row, opts, gold)
    subject = get_field(row, "subject", str)
    realidx = row.get("realidx")
    number = realidx if realidx is not None else line
    return Question(
        question=get_field(row, "question", str),
        options=opts,
        gold=gold,
        id=f"mmlu-{subject}-{number}",
        metadata={"subject": subject, "realidx": realidx},
    )


def load_mmlu_medical(
    path: str | Path | None = None,
    subjects: Iterable[str] | None = None,
    skip_invalid: bool = False,
    split: str = "test",
    hub_name: str | None = "all",
) -> QuestionList:
    """Load MMLU medical questions, only those of `subjects` (default: the six of MMLU_MEDICAL_SUBJECTS).

    `path`: test.jsonl, its folder, or a hub id such as "cais/mmlu" (with `split` and config `hub_name`).
    """
    wanted = set(MMLU_MEDICAL_SUBJECTS if subjects is None else (_normalise_subject(s) for s in subjects))
    unknown = sorted(wanted - set(MMLU_MEDICAL_SUBJECTS))
    if unknown:
        raise ValueError(f"unknown MMLU medical subject(s) {unknown}; choose from {list(MMLU_MEDICAL_SUBJECTS)}")
    if is_hub_id(path):
        source, rows = hub_source(str(path), split), iter_hub(str(path), split, hub_name)
    else:
        file = resolve_file(path, "mmlu_medical", "test.jsonl")
        source, rows = display_name(file), iter_jsonl(file)

    def convert(row: Mapping[str, Any], line: int | str) -> Question | None:
        subject = row.get("subject")
        if isinstance(subject, str) and subject not in wanted:
            return None  # another subject: left out on purpose, not a bad row
        return mmlu_row_to_question(row, line)

    return collect(source, rows, convert, skip_invalid=skip_invalid)
