"""The dataset loaders on the shared data files, stratified sampling, and the generic JSONL/CSV loaders."""

from __future__ import annotations

import json
import sys
import types
from collections import Counter
from pathlib import Path

import pytest

from voc.datasets import (
    DATASETS,
    MMLU_MEDICAL_SUBJECTS,
    DataError,
    data_root,
    load_csv,
    load_dataset,
    load_jsonl,
    load_medmcqa,
    load_medqa,
    load_mmlu_medical,
    load_pubmedqa,
    pubmedqa_test_ids,
    read_jsonl,
    stratified_sample,
)
from voc.types import Question

# --- the shared files ---


def test_pubmedqa_test_split(data_root: Path) -> None:
    questions = load_pubmedqa(data_root / "pubmedqa")
    assert len(questions) == 500
    assert Counter(q.gold for q in questions) == {"A": 276, "B": 169, "C": 55}
    first = questions[0]
    assert first.options == {"A": "yes", "B": "no", "C": "maybe"}
    assert first.id == f"pubmedqa-{first.metadata['pmid']}"
    assert first.metadata["split"] == "test"
    assert first.context and first.context.split("\n")[0].split(": ", 1)[0].isupper()
    assert set(first.metadata) >= {"pmid", "split", "long_answer", "year", "meshes"}
    assert {q.metadata["pmid"] for q in questions} == pubmedqa_test_ids(data_root / "pubmedqa")
    # the ground-truth file is ordered by label; the loader keeps ori_pqal.json's mixed order
    assert {q.gold for q in questions[:50]} == {"A", "B", "C"}


def test_pubmedqa_train_split_is_disjoint(data_root: Path) -> None:
    train = load_pubmedqa(data_root / "pubmedqa", split="train")
    test_ids = pubmedqa_test_ids(data_root / "pubmedqa")
    assert len(train) == 500
    assert not {q.metadata["pmid"] for q in train} & test_ids
    assert {q.metadata["split"] for q in train} == {"train"}
    every = load_pubmedqa(data_root / "pubmedqa", split="all")
    assert len(every) == 1000 and len({q.id for q in every}) == 1000


def test_pubmedqa_default_path_and_bad_split(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOC_DATA_ROOT", str(data_root))
    assert len(load_pubmedqa()) == 500
    assert len(load_pubmedqa(data_root / "pubmedqa" / "ori_pqal.json", split="train")) == 500
    with pytest.raises(ValueError, match="split"):
        load_pubmedqa(split="validation")  # type: ignore[arg-type]


@pytest.mark.parametrize(("options", "folder"), [(4, "medqa"), (5, "medqa_5options")])
def test_medqa(data_root: Path, options: int, folder: str) -> None:
    questions = load_medqa(data_root / folder, options=options)
    assert len(questions) == 1273
    assert all(len(q.options) == options for q in questions)
    assert all(q.gold in q.options for q in questions)
    assert len({q.id for q in questions}) == 1273
    assert questions[0].metadata["meta_info"] in {"step1", "step2&3"}
    # the file itself is accepted as path too
    assert len(load_medqa(data_root / folder / "test.jsonl", options=options)) == 1273


def test_medqa_ids(data_root: Path) -> None:
    four = load_medqa(data_root / "medqa")
    assert four[0].id == "medqa-0" and four[0].metadata["realidx"] == 0
    assert load_medqa(data_root / "medqa_5options", options=5)[0].id == "medqa5-0"
    with pytest.raises(ValueError, match="4 or 5"):
        load_medqa(data_root / "medqa", options=3)


def test_medqa_wrong_option_count_is_a_data_error(data_root: Path) -> None:
    with pytest.raises(DataError, match=r"medqa_5options/test.jsonl line 1: expected 4 options, got 5"):
        load_medqa(data_root / "medqa_5options", options=4)


def test_medmcqa(data_root: Path) -> None:
    path = data_root / "medmcqa"
    assert sum(1 for _ in read_jsonl(path / "test.jsonl")) == 2816
    # rows whose options repeat a text (ignoring case and spacing), counted straight from the file
    repeated = {}
    for line, row in read_jsonl(path / "test.jsonl"):
        texts = [" ".join(text.split()).casefold() for text in row["options"].values()]
        if len(set(texts)) < len(texts):
            repeated[f"medmcqa-{row['realidx']}"] = line
    assert len(repeated) == 14 and sorted(repeated.values())[:3] == [108, 140, 210]
    # they are kept (answers are scored by label) and flagged, with and without skip_invalid
    for skip in (False, True):
        questions = load_medmcqa(path, skip_invalid=skip)
        assert len(questions) == 2816 and questions.report.skipped == 0
        assert {q.id for q in questions if q.duplicate_options} == set(repeated)
    assert all(len(q.options) == 4 and q.id.startswith("medmcqa-") for q in questions)
    by_id = {q.id: q for q in questions}
    assert by_id[next(i for i, line in repeated.items() if line == 108)].duplicate_options == [["A", "D"]]
    assert by_id[next(i for i, line in repeated.items() if line == 915)].duplicate_options == [["A", "B", "C", "D"]]


def test_mmlu_medical(data_root: Path) -> None:
    questions = load_mmlu_medical(data_root / "mmlu_medical")
    assert len(questions) == 1089
    counts = Counter(q.metadata["subject"] for q in questions)
    assert set(counts) == set(MMLU_MEDICAL_SUBJECTS) and len(MMLU_MEDICAL_SUBJECTS) == 6
    assert counts["anatomy"] == 135 and counts["professional_medicine"] == 272
    assert len({q.id for q in questions}) == 1089
    some = load_mmlu_medical(data_root / "mmlu_medical", subjects=["anatomy", "Medical Genetics"])
    assert len(some) == 235 and {q.metadata["subject"] for q in some} == {"anatomy", "medical_genetics"}
    with pytest.raises(ValueError, match="unknown MMLU medical subject"):
        load_mmlu_medical(data_root / "mmlu_medical", subjects=["astronomy"])


def test_registry(data_root: Path) -> None:
    assert set(DATASETS) == {"pubmedqa", "medqa", "medqa_5options", "medmcqa", "mmlu_medical"}
    assert len(load_dataset("medqa_5options", data_root / "medqa_5options")) == 1273
    assert len(load_dataset("pubmedqa", data_root / "pubmedqa", split="train")) == 500
    with pytest.raises(ValueError, match="unknown dataset 'medqa4'; known: pubmedqa, medqa, medqa_5options"):
        load_dataset("medqa4")


# --- data root ---


def test_data_root_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOC_DATA_ROOT", str(tmp_path))
    assert data_root() == tmp_path
    monkeypatch.setenv("VOC_DATA_ROOT", str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="VOC_DATA_ROOT"):
        data_root()


def test_data_root_relative_to_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VOC_DATA_ROOT", raising=False)
    (tmp_path / "shared" / "data").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert data_root() == (tmp_path / "shared" / "data").resolve()


# --- stratified sampling ---


def _questions(counts: dict[str, int]) -> list[Question]:
    """Questions sorted by gold label (like test_ground_truth.json), so the first N are all one label."""
    out = []
    for gold, count in counts.items():
        out += [
            Question(question=f"q {gold} {i}", options=["w", "x", "y", "z"], gold=gold, id=f"{gold}{i}")
            for i in range(count)
        ]
    return out


def test_stratified_sample_keeps_proportions() -> None:
    pool = _questions({"A": 276, "B": 169, "C": 55})
    sample = stratified_sample(pool, 100, seed=0)
    assert len(sample) == 100
    assert Counter(q.gold for q in sample) == {"A": 55, "B": 34, "C": 11}  # 55.2, 33.8, 11.0
    assert sample != pool[:100]
    positions = [pool.index(q) for q in sample]
    assert positions == sorted(positions)  # original order kept


def test_stratified_sample_on_pubmedqa(data_root: Path) -> None:
    pool = load_pubmedqa(data_root / "pubmedqa")
    sample = stratified_sample(pool, 50, seed=1)
    assert Counter(q.gold for q in sample) == {"A": 28, "B": 17, "C": 5}  # 27.6, 16.9, 5.5 -> largest remainders
    assert sample != list(pool[:50])


def test_stratified_sample_seeds() -> None:
    pool = _questions({"A": 60, "B": 30, "C": 10})
    assert stratified_sample(pool, 20, seed=3) == stratified_sample(pool, 20, seed=3)
    assert stratified_sample(pool, 20, seed=3) != stratified_sample(pool, 20, seed=4)
    assert stratified_sample(pool, 500, seed=0) == pool
    assert stratified_sample(pool, 0, seed=0) == []
    with pytest.raises(ValueError):
        stratified_sample(pool, -1, seed=0)


def test_stratified_sample_exact_size_for_many_n() -> None:
    pool = _questions({"A": 7, "B": 3, "C": 1, "D": 2})
    for n in range(len(pool) + 1):
        sample = stratified_sample(pool, n, seed=n)
        assert len(sample) == n and len({q.id for q in sample}) == n


# --- generic loaders ---


def test_load_jsonl_field_mapping(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    rows = [
        {"q": "Which is red?", "choices": ["sky", "blood"], "ans": "B", "key": 7, "passage": "Colours.", "src": "x"},
        {"q": "Which is wet?", "choices": {"yes": "water", "no": "sand"}, "ans": "yes", "key": 8, "src": "y"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    questions = load_jsonl(
        path, question_field="q", options_field="choices", context_field="passage", gold_field="ans", id_field="key"
    )
    assert [q.id for q in questions] == ["7", "8"]
    assert questions[0].options == {"A": "sky", "B": "blood"} and questions[0].gold == "B"
    assert questions[0].context == "Colours." and questions[1].context is None
    assert questions[1].options == {"yes": "water", "no": "sand"}
    assert questions[0].metadata == {"src": "x"}
    only = load_jsonl(path, question_field="q", options_field="choices", metadata_fields=[])
    assert only[0].metadata == {} and only[0].gold is None and len(only[0].id) == 12


def test_load_jsonl_option_fields(tmp_path: Path) -> None:
    path = tmp_path / "cols.jsonl"
    path.write_text(json.dumps({"question": "2+2?", "A": "3", "B": "4", "C": None, "gold": "B"}) + "\n")
    (question,) = load_jsonl(path, option_fields=["A", "B", "C"], gold_field="gold")
    assert question.options == {"A": "3", "B": "4"} and question.gold == "B"


def test_load_csv_option_columns(tmp_path: Path) -> None:
    path = tmp_path / "mine.csv"
    path.write_text(
        "id,question,A,B,C,answer,note\n"
        '1,"Multi\nline question?",one,two,three,C,n1\n'
        '2,Second?,"x, with comma",y,,A,n2\n',
        encoding="utf-8",
    )
    questions = load_csv(path, option_fields=["A", "B", "C"], gold_field="answer", id_field="id")
    assert [q.id for q in questions] == ["1", "2"]
    assert questions[0].question == "Multi\nline question?" and questions[0].gold == "C"
    assert questions[1].options == {"A": "x, with comma", "B": "y"}
    assert questions[0].metadata == {"note": "n1"}
    # single-letter columns are found without option_fields
    assert load_csv(path, gold_field="answer", id_field="id")[0].options == {"A": "one", "B": "two", "C": "three"}


def test_load_csv_json_options_column(tmp_path: Path) -> None:
    path = tmp_path / "json_opts.csv"
    path.write_text(
        'question,opts,gold\n"Pick one","{""A"": ""left"", ""B"": ""right""}",B\n"Pick again","[""up"", ""down""]",A\n',
        encoding="utf-8",
    )
    questions = load_csv(path, options_field="opts", gold_field="gold")
    assert questions[0].options == {"A": "left", "B": "right"} and questions[0].gold == "B"
    assert questions[1].options == {"A": "up", "B": "down"}


def test_load_csv_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text('question,A,B,answer\nok?,a,b,A\n\n"multi\nline",a,b,Z\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.csv line 4: .*gold label 'Z'"):
        load_csv(path, gold_field="answer")
    with pytest.raises(DataError, match=r"bad.csv line 1: no column\(s\) \['gold'\]"):
        load_csv(path, gold_field="gold")


# --- hub ids (no network here: a stand-in `datasets` module) ---


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[dict]]:
    tables: dict[str, list[dict]] = {}

    def fake_load_dataset(hub_id: str, name: str | None = None, split: str | None = None) -> list[dict]:
        return tables[hub_id]

    module = types.ModuleType("datasets")
    module.load_dataset = fake_load_dataset  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", module)
    return tables


def test_hub_ids_use_the_same_row_mapping(fake_hub: dict[str, list[dict]]) -> None:
    fake_hub["someone/medqa"] = [
        {
            "question": "Q?",
            "options": {"A": "a", "B": "b", "C": "c", "D": "d"},
            "answer_idx": "C",
            "answer": "c",
            "meta_info": "step1",
        }
    ]
    fake_hub["someone/medmcqa"] = [
        {
            "question": "Q?",
            "opa": "a",
            "opb": "b",
            "opc": "c",
            "opd": "d",
            "cop": 1,
            "id": "u1",
            "subject_name": "Anatomy",
        }
    ]
    fake_hub["someone/mmlu"] = [
        {"question": "Q?", "subject": "anatomy", "choices": ["a", "b", "c", "d"], "answer": 3},
        {"question": "Q2?", "subject": "astronomy", "choices": ["a", "b", "c", "d"], "answer": 0},
    ]
    (medqa,) = load_medqa("someone/medqa")
    assert medqa.gold == "C" and medqa.id == "medqa-0"
    (medmcqa,) = load_medmcqa("someone/medmcqa")
    assert medmcqa.gold == "B" and medmcqa.id == "medmcqa-u1"
    (mmlu,) = load_mmlu_medical("someone/mmlu")
    assert mmlu.gold == "D" and mmlu.metadata["subject"] == "anatomy"
    fake_hub["someone/bad"] = [
        {"question": "Q?", "options": {"A": "a", "B": "b", "C": "c", "D": "d"}, "answer_idx": "E"}
    ]
    with pytest.raises(DataError, match=r"hub:someone/bad\[test\] line 1: gold label 'E'"):
        load_medqa("someone/bad")


def test_hub_pubmedqa(fake_hub: dict[str, list[dict]], data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOC_DATA_ROOT", str(data_root))
    test_pmid = sorted(pubmedqa_test_ids())[0]
    fake_hub["qiaojin/PubMedQA"] = [
        {
            "pubid": int(test_pmid),
            "question": "Q?",
            "context": {"contexts": ["c1"], "labels": ["AIM"], "meshes": []},
            "long_answer": "la",
            "final_decision": "yes",
        },
        {
            "pubid": 1,
            "question": "Q2?",
            "context": {"contexts": ["c"], "labels": ["AIM"], "meshes": ["m"]},
            "long_answer": "la",
            "final_decision": "no",
        },
    ]
    (train,) = load_pubmedqa("qiaojin/PubMedQA", split="train")
    assert train.id == "pubmedqa-1" and train.gold == "B" and train.context == "AIM: c"
