"""MedMCQA labelled questions (medmcqa/test.jsonl, as distributed by MedAgentsBench).

14 rows of the distributed file have two (or more) options with the same text. Answers are scored by label,
so they are kept and flagged (`Question.duplicate_options`, `metadata["duplicate_options"]`); benchmark reports
count them per dataset.
"""

from __future__ import annotations

from collections.abc import Mapping
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
from voc.types import Question

_HUB_OPTION_FIELDS = ("opa", "opb", "opc", "opd")


def _from_hub_schema(row: Mapping[str, Any]) -> dict[str, Any]:
    """openlifescienceai/medmcqa rows (opa..opd, cop 0-3, id, subject_name) -> the local schema."""
    cop = row.get("cop")
    if not isinstance(cop, int) or isinstance(cop, bool):
        raise RowError(f"field 'cop' must be int, got {type(cop).__name__}")
    return {
        "question": row.get("question"),
        "options": {label: row.get(name) for label, name in zip("ABCD", _HUB_OPTION_FIELDS, strict=True)},
        "answer_idx": "ABCD"[cop] if 0 <= cop < 4 else None,
        "realidx": row.get("id"),
        "subject": row.get("subject_name"),
    }


def medmcqa_row_to_question(row: Mapping[str, Any], line: int | str = 0) -> Question:
    """One MedMCQA row (question, options {A..D}, answer_idx, answer, realidx) -> Question (id "medmcqa-<realidx>")."""
    if "opa" in row and "options" not in row:
        row = _from_hub_schema(row)
    opts = get_field(row, "options", (dict, list))
    gold = row.get("answer_idx")
    if gold is not None and not isinstance(gold, str):
        raise RowError(f"field 'answer_idx' must be str, got {type(gold).__name__}")
    if gold is not None:
        check_answer_text(row, opts, gold)
    realidx = get_field(row, "realidx", (str, int))
    metadata: dict[str, Any] = {"realidx": realidx}
    if row.get("subject") is not None:
        metadata["subject"] = row["subject"]
    return Question(
        question=get_field(row, "question", str), options=opts, gold=gold, id=f"medmcqa-{realidx}", metadata=metadata
    )


def load_medmcqa(path: str | Path | None = None, skip_invalid: bool = False, split: str = "test") -> QuestionList:
    """Load MedMCQA. `path`: test.jsonl, its folder, or a hub id (`split` applies to hub ids only)."""
    if is_hub_id(path):
        source, rows = hub_source(str(path), split), iter_hub(str(path), split)
    else:
        file = resolve_file(path, "medmcqa", "test.jsonl")
        source, rows = display_name(file), iter_jsonl(file)
    return collect(source, rows, medmcqa_row_to_question, skip_invalid=skip_invalid)
