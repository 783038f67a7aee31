"""The built-in datasets on the shared data files (row counts, label distributions, ids, metadata), the data root,
stratified sampling, and your own files through the same loader."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from voc.datasets import DATASETS, DataError, data_root, load_dataset, load_file, load_pubmedqa, read_jsonl, stratified_sample
from voc.types import Question

# --- the shared files ---


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


def test_pubmedqa_default_path_and_bad_split(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOC_DATA_ROOT", str(data_root))
    assert len(load_pubmedqa()) == 500 and len(load_dataset("pubmedqa:dev")) == 100
    with pytest.raises(ValueError, match="unknown split 'validation' of pubmedqa; use one of test, dev, train, all"):
        load_pubmedqa(split="validation")
    with pytest.raises(ValueError, match="unknown split 'valid' of pubmedqa; use one of test, dev, train, all"):
        load_dataset("pubmedqa:valid")
    with pytest.raises(ValueError, match="medqa is a test split; drop split='dev'"):
        load_dataset("medqa", split="dev")
    assert len(load_dataset("medqa_dev", split="dev")) == 1271 and len(load_dataset("mmlu_medical", split="test")) == 1089


@pytest.mark.parametrize(("name", "n", "options", "first_id"), [("medqa", 4, 4, "medqa-0"), ("medqa_5options", 5, 5, "medqa5-0")])
def test_medqa(data_root: Path, name: str, n: int, options: int, first_id: str) -> None:
    questions = load_dataset(name, data_root / name)
    assert len(questions) == 1273 and len({q.id for q in questions}) == 1273
    assert all(len(q.options) == options and q.gold in q.options for q in questions)
    assert questions[0].id == first_id and questions[0].metadata["meta_info"] in {"step1", "step2&3"}
    assert len(load_dataset(name, data_root / name / "test.jsonl")) == 1273  # the file itself is accepted as path too


def test_medqa_wrong_option_count_is_a_data_error(data_root: Path) -> None:
    with pytest.raises(DataError, match=r"medqa_5options/test.jsonl line 1: expected 4 options, got 5"):
        load_dataset("medqa", data_root / "medqa_5options")


@pytest.mark.parametrize(("name", "n", "options", "gold"), [("medqa_dev", 1271, 5, "ABCDE"), ("medqa_train", 1029, 4, "ABCD")])
def test_medqa_dev_and_train(data_root: Path, name: str, n: int, options: int, gold: str) -> None:
    questions = load_dataset(name, root=data_root)
    assert len(questions) == n and len({q.id for q in questions}) == n
    assert all(len(q.options) == options for q in questions) and set(Counter(q.gold for q in questions)) == set(gold)
    test = {q.question for name in ("medqa", "medqa_5options") for q in load_dataset(name, root=data_root)}
    assert not {q.question for q in questions} & test  # near-duplicates of test questions were removed from these files


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
        questions = load_dataset("medmcqa", path, skip_invalid=skip)
        assert len(questions) == 2816 and questions.report.skipped == 0
        assert {q.id for q in questions if q.duplicate_options} == set(repeated)
    assert Counter(q.gold for q in questions) == {"A": 950, "B": 735, "C": 617, "D": 514}
    assert all(len(q.options) == 4 and q.id.startswith("medmcqa-") for q in questions)
    by_id = {q.id: q for q in questions}
    assert by_id[next(i for i, line in repeated.items() if line == 108)].duplicate_options == [["A", "D"]]
    assert by_id[next(i for i, line in repeated.items() if line == 915)].duplicate_options == [["A", "B", "C", "D"]]


def test_mmlu_medical(data_root: Path) -> None:
    questions = load_dataset("mmlu_medical", data_root / "mmlu_medical")
    assert len(questions) == 1089 and len({q.id for q in questions}) == 1089
    counts = Counter(q.metadata["subject"] for q in questions)
    assert counts == {"anatomy": 135, "clinical_knowledge": 265, "college_biology": 144, "college_medicine": 173,
                      "medical_genetics": 100, "professional_medicine": 272}  # fmt: skip
    assert questions[0].id == f"mmlu-anatomy-{questions[0].metadata['realidx']}"


def test_builtin_names() -> None:
    assert set(DATASETS) == {"pubmedqa", "medqa", "medqa_5options", "medmcqa", "mmlu_medical", "medqa_dev", "medqa_train"}
    assert all(spec.description for spec in DATASETS.values())
    with pytest.raises(ValueError, match=r"unknown dataset 'medqa4'; give a built-in name \(medmcqa, medqa, medqa_5options, medqa_dev"):
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


def test_a_builtin_without_its_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no ori_pqal.json in .*pubmedqa; check the path \(or set VOC_DATA_ROOT / --data-root\)"):
        load_dataset("pubmedqa", root=tmp_path)


# --- stratified sampling ---


def _questions(counts: dict[str, int]) -> list[Question]:
    """Questions sorted by gold label (like test_ground_truth.json), so the first N are all one label."""
    out = []
    for gold, count in counts.items():
        out += [Question(question=f"q {gold} {i}", options=["w", "x", "y", "z"], gold=gold, id=f"{gold}{i}") for i in range(count)]
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


# --- your own files ---


def test_load_file_field_mapping(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    rows = [
        {"q": "Which is red?", "choices": ["sky", "blood"], "ans": "B", "key": 7, "passage": "Colours.", "src": "x"},
        {"q": "Which is wet?", "choices": {"yes": "water", "no": "sand"}, "ans": "yes", "key": 8, "src": "y"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    questions = load_file(path, question="q", options="choices", context="passage", gold="ans", id="key")
    assert [q.id for q in questions] == ["7", "8"]
    assert questions[0].options == {"A": "sky", "B": "blood"} and questions[0].gold == "B"
    assert questions[0].context == "Colours." and questions[1].context is None
    assert questions[1].options == {"yes": "water", "no": "sand"} and questions[1].gold == "yes"
    assert questions[0].metadata == {"src": "x"}
    only = load_file(path, question="q", options="choices", metadata=[])
    assert only[0].metadata == {} and only[0].gold is None and [q.id for q in only] == ["0", "1"]  # ids: the row positions


def test_load_file_option_fields(tmp_path: Path) -> None:
    path = tmp_path / "cols.jsonl"
    path.write_text(json.dumps({"question": "2+2?", "A": "3", "B": "4", "C": None, "gold": "B"}) + "\n")
    (question,) = load_file(path, options=["A", "B", "C"])
    assert question.options == {"A": "3", "B": "4"} and question.gold == "B"
    assert question.metadata == {}  # the option columns and the gold are not metadata


def test_load_csv_option_columns(tmp_path: Path) -> None:
    path = tmp_path / "mine.csv"
    path.write_text(
        'id,question,A,B,C,answer,note\n1,"Multi\nline question?",one,two,three,C,n1\n2,Second?,"x, with comma",y,,A,n2\n', encoding="utf-8"
    )
    questions = load_file(path)  # single-letter columns are the options, `answer` the gold, `id` the ids
    assert [q.id for q in questions] == ["1", "2"] and [q.gold for q in questions] == ["C", "A"]
    assert questions[0].question == "Multi\nline question?" and questions[0].options == {"A": "one", "B": "two", "C": "three"}
    assert questions[1].options == {"A": "x, with comma", "B": "y"} and questions.report.dropped_options == 1
    assert questions[0].metadata == {"note": "n1"}


def test_load_csv_json_options_column(tmp_path: Path) -> None:
    path = tmp_path / "json_opts.csv"
    path.write_text('question,opts,gold\n"Pick one","{""A"": ""left"", ""B"": ""right""}",B\n"Pick again","[""up"", ""down""]",A\n')
    questions = load_file(path, options="opts")
    assert questions[0].options == {"A": "left", "B": "right"} and questions[0].gold == "B"
    assert questions[1].options == {"A": "up", "B": "down"}


def test_load_csv_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text('question,A,B,answer\nok?,a,b,A\n\n"multi\nline",a,b,Z\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.csv line 4: answer 'Z' matches none of the options \(a; b\)"):
        load_file(path)
    with pytest.raises(DataError, match=r"bad.csv line 4: gold label 'Z' is not among the option labels \['A', 'B'\]"):
        load_file(path, gold="answer", gold_as="label")
    with pytest.raises(DataError, match=r"bad.csv line 1: no field\(s\) \['gold'\] in the header \['question', 'A', 'B', 'answer'\]; "
                       r"map them with --field KEY=FIELD"):  # fmt: skip
        load_file(path, gold="gold")
