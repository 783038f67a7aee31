"""MedQA (USMLE, US): 4-option and 5-option test sets (medqa/test.jsonl, medqa_5options/test.jsonl)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from voc.datasets.common import (
    DataError,
    QuestionList,
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

FOLDERS = {4: "medqa", 5: "medqa_5options"}
ID_PREFIX = {4: "medqa", 5: "medqa5"}


def medqa_row_to_question(row: Mapping[str, Any], index: int, options: int = 4) -> Question:
    """One MedQA row (question, options {A..}, answer_idx, meta_info, realidx) -> Question.

    `index` is the 0-based row number, used for the id when the row has no realidx.
    """
    opts = get_field(row, "options", (dict, list))
    gold = get_field(row, "answer_idx", str)
    check_answer_text(row, opts, gold)
    realidx = row.get("realidx")
    number = realidx if realidx is not None else index
    question = Question(
        question=get_field(row, "question", str),
        options=opts,
        gold=gold,
        id=f"{ID_PREFIX[options]}-{number}",
        metadata={"meta_info": row.get("meta_info"), "realidx": realidx},
    )
    if len(question.options) != options:
        raise ValueError(f"expected {options} options, got {len(question.options)}")
    return question


def indexed(rows: Iterator[tuple[int, Any]]) -> Iterator[tuple[int, Any]]:
    """Pair each row with its 0-based position in the file (bad rows count too, so ids never shift)."""
    for index, (line, row) in enumerate(rows):
        yield line, row if isinstance(row, DataError) else (index, row)


def load_medqa(
    path: str | Path | None = None, options: int = 4, skip_invalid: bool = False, split: str = "test"
) -> QuestionList:
    """Load MedQA with 4 or 5 options. `path`: the test.jsonl, its folder, or a hub id; default from data_root().

    Ids are "medqa-<realidx>" (4 options) or "medqa5-<row>" (5 options). `split` is used for hub ids only.
    """
    if options not in FOLDERS:
        raise ValueError(f"MedQA comes with 4 or 5 options, not {options}")
    if is_hub_id(path):
        source = hub_source(str(path), split)
        rows = iter_hub(str(path), split)
    else:
        file = resolve_file(path, FOLDERS[options], "test.jsonl")
        source = display_name(file)
        rows = iter_jsonl(file)

    def convert(item: Any, _key: int | str) -> Question:
        index, row = item
        return medqa_row_to_question(row, index, options)

    return collect(source, indexed(rows), convert, skip_invalid=skip_invalid)


def load_medqa_5options(
    path: str | Path | None = None, skip_invalid: bool = False, split: str = "test"
) -> QuestionList:
    """Load the 5-option MedQA test set (medqa_5options/test.jsonl)."""
    return load_medqa(path, options=5, skip_invalid=skip_invalid, split=split)
