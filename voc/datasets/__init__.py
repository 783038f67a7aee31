"""Datasets as declarative specs (voc/datasets/specs/*.yaml, or `DatasetSpec`) read by one loader (load.py)."""

from __future__ import annotations

from voc.datasets.common import DataError, LoadReport, QuestionList, data_root, iter_jsonl, read_jsonl, stratified_sample
from voc.datasets.load import dataset_name, load_dataset, load_file, load_pubmedqa, load_spec, resolve
from voc.datasets.spec import DATASETS, DatasetSpec, Fields, read_spec

__all__ = [
    "DATASETS", "DataError", "DatasetSpec", "Fields", "LoadReport", "QuestionList", "data_root", "dataset_name", "iter_jsonl",
    "load_dataset", "load_file", "load_pubmedqa", "load_spec", "read_jsonl", "read_spec", "resolve", "stratified_sample",
]  # fmt: skip
