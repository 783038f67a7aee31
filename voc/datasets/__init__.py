"""Dataset loaders: each returns a list of `voc.types.Question` (a `QuestionList` carrying a `LoadReport`).

Bad rows raise `DataError` naming the file and line, or with `skip_invalid=True` are skipped and counted.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from voc.datasets.common import (
    DataError,
    LoadReport,
    QuestionList,
    data_root,
    read_jsonl,
    stratified_sample,
)
from voc.datasets.generic import load_csv, load_jsonl
from voc.datasets.medmcqa import load_medmcqa
from voc.datasets.medqa import load_medqa, load_medqa_5options
from voc.datasets.mmlu_medical import MMLU_MEDICAL_SUBJECTS, load_mmlu_medical
from voc.datasets.pubmedqa import load_pubmedqa, pubmedqa_test_ids

DATASETS: dict[str, Callable[..., QuestionList]] = {
    "pubmedqa": load_pubmedqa,
    "medqa": load_medqa,
    "medqa_5options": load_medqa_5options,
    "medmcqa": load_medmcqa,
    "mmlu_medical": load_mmlu_medical,
}


def load_dataset(name: str, path: str | Path | None = None, **kwargs: Any) -> QuestionList:
    """Load a named dataset (a key of DATASETS); `path` and keyword arguments go to its loader."""
    try:
        loader = DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None
    return loader(path, **kwargs)


__all__ = [
    "DATASETS",
    "MMLU_MEDICAL_SUBJECTS",
    "DataError",
    "LoadReport",
    "QuestionList",
    "data_root",
    "load_csv",
    "load_dataset",
    "load_jsonl",
    "load_medmcqa",
    "load_medqa",
    "load_medqa_5options",
    "load_mmlu_medical",
    "load_pubmedqa",
    "pubmedqa_test_ids",
    "read_jsonl",
    "stratified_sample",
]
