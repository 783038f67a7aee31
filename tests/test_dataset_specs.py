"""The built-in datasets load the same questions as the loaders they replaced: ids, question, context, options and gold
labels (and the metadata the rest of voc reads) are compared with tests/data/builtin_digests.json, a digest of the
per-dataset loaders' output frozen before they were replaced by specs."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest

from voc.datasets import load_dataset
from voc.types import Question

DIGESTS = json.loads((Path(__file__).parent / "data" / "builtin_digests.json").read_text())
METADATA_KEYS = ("subject", "pmid", "meta_info", "realidx", "long_answer", "year", "meshes")


def digest(questions: list[Question]) -> str:
    h = hashlib.sha256()
    for q in sorted(questions, key=lambda q: q.id):
        h.update(json.dumps([q.id, q.question, q.context, list(q.options.items()), q.gold], ensure_ascii=False).encode() + b"\n")
    return h.hexdigest()


def metadata_digest(questions: list[Question]) -> str:
    h = hashlib.sha256()
    for q in sorted(questions, key=lambda q: q.id):
        kept = {k: q.metadata[k] for k in METADATA_KEYS if k in q.metadata}
        h.update(json.dumps([q.id, kept], ensure_ascii=False, sort_keys=True).encode() + b"\n")
    return h.hexdigest()


@pytest.mark.parametrize("key", sorted(DIGESTS))
def test_builtin_datasets_load_the_frozen_questions(data_root: Path, key: str) -> None:
    name, _, split = key.partition(":")
    questions = list(load_dataset(name, data_root / name, split=split) if split else load_dataset(name, data_root / name))
    frozen = DIGESTS[key]
    assert len(questions) == frozen["n"]
    assert dict(Counter(q.gold for q in questions)) == frozen["gold"]
    assert digest(questions) == frozen["sha256"]
    assert metadata_digest(questions) == frozen["metadata_sha256"]
