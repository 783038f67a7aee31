"""PubMedQA over the `pubmedqa` spec (voc/datasets/specs/pubmedqa.yaml): the loader that fine-tuning and the leakage
guard call with a folder holding ori_pqal.json and test_ground_truth.json, and those file names."""

from __future__ import annotations

from pathlib import Path

from voc.datasets.common import QuestionList
from voc.datasets.load import load_dataset

ORI_FILE = "ori_pqal.json"
GROUND_TRUTH_FILE = "test_ground_truth.json"


def load_pubmedqa(path: str | Path | None = None, split: str = "test", skip_invalid: bool = False) -> QuestionList:
    """PubMedQA PQA-L: split "test" (the official 500), "dev" (a fixed 100 of the non-test PMIDs), "train" (the other
    400 non-test PMIDs) or "all". `path`: the folder or either of its files; default <data root>/pubmedqa."""
    folder = Path(path).parent if path is not None and Path(path).is_file() else path
    return load_dataset("pubmedqa", folder, split=split, skip_invalid=skip_invalid)
