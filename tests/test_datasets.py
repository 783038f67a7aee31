"""The built-in datasets on the shared data files (row counts, label distributions, splits, ids, metadata; the frozen
digests of their questions are in test_dataset_specs.py), the data root and stratified sampling."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from voc.datasets import DATASETS, DataError, data_root, dataset_name, load_dataset, load_pubmedqa, read_jsonl, stratified_sample
from voc.types import Question


def test_pubmedqa_test_split(data_root: Path) -> None:
    questions = load_dataset("pubmedqa", data_root / "pubmedqa")
    assert len(questions) == 500
    assert Counter(q.gold for q in questions) == {"A": 276, "B": 169, "C": 55}
    first = questions[0]
    assert first.options == {"A": "yes", "B": "no", "C": "maybe"}
    assert first.id == f"pubmedqa-{first.metadata['pmid']}"
    assert first.metadata["split"] == "test"
    assert first.context and first.context.split("\n")[0].split(": ", 1)[0].isupper()
    assert set(first.metadata) >= {"pmid", "split", "long_answer", "year", "meshes"}
    truth = json.loads((data_root / "pubmedqa" / "test_ground_truth.json").read_text())
    assert {q.metadata["pmid"] for q in questions} == set(truth)
    assert all(q.options[q.gold] == truth[q.metadata["pmid"]] for q in questions)  # the official labels are the gold
    # the ground-truth file is ordered by label; the loader keeps ori_pqal.json's mixed order
    assert {q.gold for q in questions[:50]} == {"A", "B", "C"}


def test_pubmedqa_splits_partition_the_labelled_set(data_root: Path) -> None:
    test, dev, train = (load_pubmedqa(data_root / "pubmedqa", split=s) for s in ("test", "dev", "train"))
    every = load_pubmedqa(data_root / "pubmedqa" / "ori_pqal.json", split="all")  # the file itself is accepted as path too
    assert (len(test), len(dev), len(train), len(every)) == (500, 100, 400, 1000)
    ids = [{q.id for q in part} for part in (test, dev, train)]
    assert not ids[0] & ids[1] and not ids[0] & ids[2] and not ids[1] & ids[2]
    assert ids[0] | ids[1] | ids[2] == {q.id for q in every}
    assert [{q.metadata["split"] for q in part} for part in (test, dev, train)] == [{"test"}, {"dev"}, {"train"}]
    assert Counter(q.metadata["split"] for q in every) == {"test": 500, "train": 400, "dev": 100}
    # dev is the fixed sample documented in pubmedqa.yaml: how its list was drawn
    assert Counter(q.options[q.gold] for q in dev) == {"yes": 55, "no": 34, "maybe": 11}
    non_test = [q for q in every if q.metadata["split"] != "test"]
    assert [q.id for q in stratified_sample(non_test, 100, seed=0)] == [q.id for q in dev]


def test_names_splits_and_bad_splits(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOC_DATA_ROOT", str(data_root))
    assert len(load_pubmedqa()) == 500 and len(load_dataset("pubmedqa:dev")) == 100 and len(load_dataset("pubmedqa:train")) == 400
    assert dataset_name("pubmedqa:dev") == "pubmedqa:dev" and dataset_name("pubmedqa:test") == "pubmedqa"
    with pytest.raises(ValueError, match="unknown split 'validation' of pubmedqa; use one of test, dev, train, all"):
        load_pubmedqa(split="validation")
    with pytest.raises(ValueError, match="unknown split 'valid' of pubmedqa; use one of test, dev, train, all"):
        load_dataset("pubmedqa:valid")
    with pytest.raises(ValueError, match="medqa is a test split; drop split='dev'"):
        load_dataset("medqa", split="dev")
    assert len(load_dataset("medqa:test")) == 1273 and len(load_dataset("mmlu_medical", split="test")) == 1089
    assert set(DATASETS) == {"pubmedqa", "medqa", "medqa_5options", "medmcqa", "mmlu_medical", "medqa_dev", "medqa_train"}
    assert all(spec.description for spec in DATASETS.values())
    with pytest.raises(ValueError, match=r"unknown dataset 'medqa4'; give a built-in name \(medmcqa, medqa, medqa_5options, medqa_dev"):
        load_dataset("medqa4")


def test_medqa_path_is_a_folder_or_the_file(data_root: Path) -> None:
    for name, first_id in (("medqa", "medqa-0"), ("medqa_5options", "medqa5-0")):
        questions = load_dataset(name, data_root / name / "test.jsonl")
        assert len(questions) == 1273 and questions[0].id == first_id and questions[0].metadata["meta_info"] in {"step1", "step2&3"}
    with pytest.raises(DataError, match=r"medqa_5options/test.jsonl line 1: expected 4 options, got 5"):
        load_dataset("medqa", data_root / "medqa_5options")


@pytest.mark.parametrize(("name", "n", "options", "gold"), [("medqa_dev", 1271, 5, "ABCDE"), ("medqa_train", 1029, 4, "ABCD")])
def test_medqa_dev_and_train(data_root: Path, name: str, n: int, options: int, gold: str) -> None:
    questions = load_dataset(name, root=data_root)
    assert len(questions) == n and len({q.id for q in questions}) == n
    assert all(len(q.options) == options for q in questions) and set(Counter(q.gold for q in questions)) == set(gold)
    test = {q.question for name in ("medqa", "medqa_5options") for q in load_dataset(name, root=data_root)}
    assert not {q.question for q in questions} & test  # near-duplicates of test questions were removed from these files


def test_medmcqa_keeps_and_flags_options_with_the_same_text(data_root: Path) -> None:
    repeated = {}  # rows whose options repeat a text (ignoring case and spacing), counted straight from the file
    for line, row in read_jsonl(data_root / "medmcqa" / "test.jsonl"):
        texts = [" ".join(text.split()).casefold() for text in row["options"].values()]
        repeated.update({line: f"medmcqa-{row['realidx']}"} if len(set(texts)) < len(texts) else {})
    assert len(repeated) == 14 and sorted(repeated)[:3] == [108, 140, 210]
    for skip in (False, True):  # kept (answers are scored by label) and flagged, with and without skip_invalid
        questions = load_dataset("medmcqa", data_root / "medmcqa", skip_invalid=skip)
        assert len(questions) == 2816 and questions.report.skipped == 0
        assert {q.id for q in questions if q.duplicate_options} == set(repeated.values())
    assert Counter(q.gold for q in questions) == {"A": 950, "B": 735, "C": 617, "D": 514}
    by_id = {q.id: q for q in questions}
    assert by_id[repeated[108]].duplicate_options == [["A", "D"]] and by_id[repeated[915]].duplicate_options == [["A", "B", "C", "D"]]


def test_mmlu_medical(data_root: Path) -> None:
    questions = load_dataset("mmlu_medical", data_root / "mmlu_medical")
    assert len(questions) == 1089 and len({q.id for q in questions}) == 1089
    counts = Counter(q.metadata["subject"] for q in questions)
    assert counts == {"anatomy": 135, "clinical_knowledge": 265, "college_biology": 144, "college_medicine": 173,
                      "medical_genetics": 100, "professional_medicine": 272}  # fmt: skip
    assert questions[0].id == f"mmlu-anatomy-{questions[0].metadata['realidx']}"


# --- data root ---


def test_data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOC_DATA_ROOT", str(tmp_path))
    assert data_root() == tmp_path
    monkeypatch.setenv("VOC_DATA_ROOT", str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="VOC_DATA_ROOT"):
        data_root()
    monkeypatch.delenv("VOC_DATA_ROOT")
    (tmp_path / "shared" / "data").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert data_root() == (tmp_path / "shared" / "data").resolve()  # relative to the working folder


# --- stratified sampling ---


def _questions(counts: dict[str, int]) -> list[Question]:
    """Questions sorted by gold label (like test_ground_truth.json), so the first N are all one label."""
    out = []
    for gold, count in counts.items():
        out += [Question(question=f"q {gold} {i}", options=["w", "x", "y", "z"], gold=gold, id=f"{gold}{i}") for i in range(count)]
    return out


def test_stratified_sample_keeps_proportions_and_order(data_root: Path) -> None:
    pool = _questions({"A": 276, "B": 169, "C": 55})
    sample = stratified_sample(pool, 100, seed=0)
    assert Counter(q.gold for q in sample) == {"A": 55, "B": 34, "C": 11}  # 55.2, 33.8, 11.0
    assert sample != pool[:100]
    positions = [pool.index(q) for q in sample]
    assert positions == sorted(positions)  # original order kept
    sample = stratified_sample(load_pubmedqa(data_root / "pubmedqa"), 50, seed=1)
    assert Counter(q.gold for q in sample) == {"A": 28, "B": 17, "C": 5}  # 27.6, 16.9, 5.5 -> largest remainders


def test_stratified_sample_seeds_and_sizes() -> None:
    pool = _questions({"A": 60, "B": 30, "C": 10})
    assert stratified_sample(pool, 20, seed=3) == stratified_sample(pool, 20, seed=3)
    assert stratified_sample(pool, 20, seed=3) != stratified_sample(pool, 20, seed=4)
    assert stratified_sample(pool, 500, seed=0) == pool
    assert stratified_sample(pool, 0, seed=0) == []
    with pytest.raises(ValueError):
        stratified_sample(pool, -1, seed=0)
    pool = _questions({"A": 7, "B": 3, "C": 1, "D": 2})
    for n in range(len(pool) + 1):
        sample = stratified_sample(pool, n, seed=n)
        assert len(sample) == n and len({q.id for q in sample}) == n
