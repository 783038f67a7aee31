"""Datasets as specs: the built-in specs load the same questions as the per-dataset loaders they replaced (a digest of
their output, tests/data/builtin_digests.json, frozen before they were replaced); your own files (recognised layouts,
field overrides, formats, globs), spec files, placeholder options, gold given as text or index, hub ids, bad input."""

from __future__ import annotations

import hashlib
import json
import sys
import types
from collections import Counter
from pathlib import Path

import pytest

from voc.datasets import DataError, DatasetSpec, dataset_name, load_dataset, load_file, load_spec, read_spec
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
    name = key.partition(":")[0]
    if key == "pubmedqa:train":  # frozen when "train" meant all 500 non-test PMIDs: now dev + train
        questions = [*load_dataset("pubmedqa:dev", root=data_root), *load_dataset("pubmedqa:train", root=data_root)]
    else:
        questions = list(load_dataset(name, data_root / name))
    frozen = DIGESTS[key]
    assert len(questions) == frozen["n"]
    assert dict(Counter(q.gold for q in questions)) == frozen["gold"]
    assert digest(questions) == frozen["sha256"]
    assert metadata_digest(questions) == frozen["metadata_sha256"]


# --- your own files: recognised layouts, overrides, spec files ---


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def medqa_row(i: int, options: int = 4, gold: str = "B") -> dict:
    opts = {label: f"option {label} of {i}" for label in "ABCDE"[:options]}
    return {"question": f"Question {i}?", "options": opts, "answer_idx": gold, "answer": opts[gold], "meta_info": "step1"}


def test_field_mapping(tmp_path: Path) -> None:
    rows = [
        {"q": "Which is red?", "choices": ["sky", "blood"], "ans": "B", "key": 7, "passage": "Colours.", "src": "x"},
        {"q": "Which is wet?", "choices": {"yes": "water", "no": "sand"}, "ans": "yes", "key": 8, "src": "y"},
    ]
    path = _jsonl(tmp_path / "mine.jsonl", rows)
    questions = load_file(path, question="q", options="choices", context="passage", gold="ans", id="key")
    assert [q.id for q in questions] == ["7", "8"]
    assert questions[0].options == {"A": "sky", "B": "blood"} and questions[0].gold == "B"
    assert questions[0].context == "Colours." and questions[1].context is None
    assert questions[1].options == {"yes": "water", "no": "sand"} and questions[1].gold == "yes"
    assert questions[0].metadata == {"src": "x"}
    only = load_file(path, question="q", options="choices", metadata=[])
    assert only[0].metadata == {} and only[0].gold is None and [q.id for q in only] == ["0", "1"]  # ids: the row positions
    (question,) = load_file(_jsonl(tmp_path / "cols.jsonl", [{"question": "2+2?", "A": "3", "B": "4", "C": None, "gold": "B"}]))
    assert question.options == {"A": "3", "B": "4"} and question.gold == "B"  # option columns A, B, C; a null one is dropped
    assert question.metadata == {}  # the option columns and the gold are not metadata


def test_csv_option_columns_recognised_or_mapped(tmp_path: Path) -> None:
    path = tmp_path / "mine.csv"
    path.write_text('id,question,A,B,C,answer,note\n1,"Multi\nline question?",one,two,three,C,n1\n2,Second?,"x, with comma",y,,A,n2\n')
    questions = load_file(path)  # single-letter columns are the options, `answer` the gold, `id` the ids
    assert [q.id for q in questions] == ["1", "2"] and [q.gold for q in questions] == ["C", "A"]
    assert questions[0].question == "Multi\nline question?" and questions[0].options == {"A": "one", "B": "two", "C": "three"}
    assert questions[1].options == {"A": "x, with comma", "B": "y"} and questions.report.dropped_options == 1
    assert questions[0].metadata == {"note": "n1"}
    path = tmp_path / "exam.csv"
    path.write_text("qid,stem,opa,opb,opc,opd,key,topic\n7,Which?,w,x,y,z,2,anatomy\n8,What?,p,q,r,s,0,physiology\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"exam.csv line 1: no field\(s\) \['question', 'options'\] in the header"):
        load_file(path)
    options = ["opa", "opb", "opc", "opd"]
    questions = load_file(path, question="stem", options=options, gold="key", gold_as="index", id="exam-{qid}", subject="topic")
    assert [(q.id, q.gold, q.metadata["subject"]) for q in questions] == [("exam-7", "C", "anatomy"), ("exam-8", "A", "physiology")]
    assert questions[0].options == {"A": "w", "B": "x", "C": "y", "D": "z"} and questions[0].metadata == {"subject": "anatomy"}
    with pytest.raises(ValueError, match=r"--field: unknown key 'qestion'"):
        load_file(path, qestion="stem")


def test_csv_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text('question,A,B,answer\nok?,a,b,A\n\n"multi\nline",a,b,Z\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.csv line 4: answer 'Z' matches none of the options \(a; b\)"):
        load_file(path)
    with pytest.raises(DataError, match=r"bad.csv line 4: gold label 'Z' is not among the option labels \['A', 'B'\]"):
        load_file(path, gold="answer", gold_as="label")
    with pytest.raises(DataError, match=r"bad.csv line 1: no field\(s\) \['gold'\] in the header \['question', 'A', 'B', 'answer'\]; "
                       r"map them with --field KEY=FIELD"):  # fmt: skip
        load_file(path, gold="gold")


def test_a_medqa_layout_file_needs_no_flags(tmp_path: Path, data_root: Path) -> None:
    rows = [row for _, row in zip(range(30), map(json.loads, (data_root / "medqa" / "test.jsonl").open()), strict=False)]
    questions = load_file(_jsonl(tmp_path / "mine.jsonl", rows))
    builtin = load_dataset("medqa", root=data_root)[:30]
    assert [(q.question, q.options, q.gold) for q in questions] == [(q.question, q.options, q.gold) for q in builtin]
    assert questions[0].id == "0" and "meta_info" in questions[0].metadata  # realidx is the id; unmapped fields are metadata
    shifted = [{**rows[0], "answer_idx": "A"}]  # `answer` then names another option: a shifted label is caught
    with pytest.raises(DataError, match=r"mine2.jsonl line 1: answer '.*' is not the text of the gold option 'A'"):
        load_file(_jsonl(tmp_path / "mine2.jsonl", shifted))


def test_placeholder_options_are_dropped_and_counted(tmp_path: Path) -> None:
    """174 rows, 77 of them 4-option questions padded with a fifth option 'n/a' (as a public set ships them)."""
    rows = []
    for i in range(174):
        row = medqa_row(i, options=5, gold="D")
        if i % 2 == 0 and i < 154:  # 77 of the 174 rows
            row["options"]["E"] = ["n/a", "N/A", " n/a ", "None given"][i % 4]
        rows.append(row)
    questions = load_file(_jsonl(tmp_path / "padded.jsonl", rows))
    assert len(questions) == 174 and questions.report.dropped_options == 77 and questions.report.rows_with_dropped == 77
    assert Counter(len(q.options) for q in questions) == {4: 77, 5: 97}
    assert "dropped 77 empty or placeholder options in 77 rows" in questions.report.summary()
    rows[5]["options"] = {"A": "x", "B": "", "C": "y", "D": "z"}  # labels stay as in the source: C is still C
    rows[5]["answer_idx"], rows[5]["answer"] = "C", "y"
    assert load_file(_jsonl(tmp_path / "padded.jsonl", rows))[5].options == {"A": "x", "C": "y", "D": "z"}
    rows[8]["answer_idx"], rows[8]["answer"] = "E", rows[8]["options"]["E"]
    with pytest.raises(DataError, match=r"padded.jsonl line 9: the gold option 'E' is a placeholder \('n/a'\); fix the row's gold"):
        load_file(_jsonl(tmp_path / "padded.jsonl", rows))
    _jsonl(tmp_path / "own.jsonl", [{"question": "Q?", "options": {"A": "x", "B": "-", "C": "n/a"}, "answer_idx": "C"}])
    spec = DatasetSpec(source=str(tmp_path / "own.jsonl"), infer=True, placeholders=["-"])  # the list is configurable
    (question,) = load_spec(spec)
    assert question.options == {"A": "x", "C": "n/a"} and question.gold == "C"


def test_gold_as_text_and_as_index(tmp_path: Path) -> None:
    rows = [{"question": "Q1?", "options": ["red", "Blue ", "green"], "answer": "blue"},
            {"question": "Q2?", "options": ["one", "two", "three"], "answer": "Three"}]  # fmt: skip
    questions = load_file(_jsonl(tmp_path / "text.jsonl", rows))  # `answer` that is no label is matched to an option's text
    assert [q.gold for q in questions] == ["B", "C"]
    rows[1]["answer"] = "four"
    with pytest.raises(DataError, match=r"text.jsonl line 2: answer 'four' matches none of the options \(one; two; three\); give the"):
        load_file(_jsonl(tmp_path / "text.jsonl", rows))
    rows[1] = {"question": "Q2?", "options": ["same", "other", "SAME"], "answer": "same"}
    with pytest.raises(DataError, match=r"line 2: answer 'same' matches options A and C \(same; other; SAME\); give the gold as a label"):
        load_file(_jsonl(tmp_path / "text.jsonl", rows))
    indexed = [{"question": "Q?", "choices": ["a", "b", "c"], "label": 2}, {"question": "R?", "choices": ["a", "b"], "label": 0}]
    assert [q.gold for q in load_file(_jsonl(tmp_path / "index.jsonl", indexed))] == ["C", "A"]  # choices + an int label
    with pytest.raises(DataError, match=r"index.jsonl line 2: label 0 is out of range for 2 options"):
        load_file(tmp_path / "index.jsonl", gold="label", gold_as="index1")


def test_other_formats_and_globs(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [medqa_row(i) for i in range(3)]
    (tmp_path / "part").mkdir()
    _jsonl(tmp_path / "part" / "a.jsonl", rows[:2])
    _jsonl(tmp_path / "part" / "b.jsonl", rows[2:])
    (tmp_path / "list.json").write_text(json.dumps(rows))
    pq.write_table(pa.Table.from_pylist([{**r, "options": json.dumps(r["options"])} for r in rows]), tmp_path / "q.parquet")
    for given in ("list.json", "q.parquet", "part/*.jsonl"):
        questions = load_file(tmp_path / given)
        assert [(q.id, q.question) for q in questions] == [("0", "Question 0?"), ("1", "Question 1?"), ("2", "Question 2?")]
    (tmp_path / "list.json").write_text(json.dumps([rows[0], 5]))
    with pytest.raises(DataError, match=r"list.json record 2: expected a JSON object, got int"):
        load_file(tmp_path / "list.json")


def test_a_spec_file(tmp_path: Path, data_root: Path) -> None:
    (tmp_path / "exam.csv").write_text("stem,A,B,C,right,why\nWhich?,w,x,y,x,because\n", encoding="utf-8")
    spec_file = tmp_path / "exam.yaml"
    spec_file.write_text(
        "name: my_exam\ndescription: my exam\nsource: ./exam.csv\nn_options: 3\n"
        "fields: {question: stem, options: [A, B, C], gold: right, gold_as: text, id: 'exam-{_index}', metadata: [why]}\n"
    )
    (question,) = load_dataset(str(spec_file))
    assert (question.id, question.gold, question.metadata) == ("exam-0", "B", {"why": "because"})
    assert dataset_name(str(spec_file)) == "my_exam"
    (tmp_path / "yes_no.csv").write_text("q,ans\nIs it?,no\n", encoding="utf-8")  # fixed options: no options column
    fields = "fields: {question: q, gold: ans, gold_as: text}\n"
    (tmp_path / "yes_no.yaml").write_text("source: ./yes_no.csv\noptions: {A: 'yes', B: 'no'}\n" + fields)
    (question,) = load_dataset(str(tmp_path / "yes_no.yaml"))
    assert (question.options, question.gold) == ({"A": "yes", "B": "no"}, "B")
    (tmp_path / "medqa5.yaml").write_text("source: medqa_5options/test.jsonl\nfields: {gold: answer_idx, id: 'x-{_index}'}\n")
    assert len(load_dataset(str(tmp_path / "medqa5.yaml"), root=data_root)) == 1273  # plain paths are under the data root


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("source: x.jsonl\nfields: {qestion: q}\n", r"bad.yaml: unknown key 'fields.qestion'"),
        ("sourc: {path: x.jsonl}\n", r"bad.yaml: unknown key 'sourc'"),
        ("description: no source\n", r"bad.yaml: source: Field required"),
        ("source: {path: x.jsonl}\n", r"bad.yaml: source: Input should be a valid string"),
        ("source: x.jsonl\nsplits: {a: [1], b: rest}\ndefault_split: c\n", r"bad.yaml: default_split must be one of \[.a., .b.\]"),
        ("source: x.jsonl\nfields: {gold_as: letter}\n", r"bad.yaml: fields.gold_as: Input should be 'label', 'index'"),
        ("source: [unclosed\n", r"bad.yaml line 2: not valid YAML"),
        ("- a list\n", r"bad.yaml: a spec is a YAML mapping with at least `source`"),
    ],
)
def test_bad_spec_files_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(DataError, match=message) as caught:
        read_spec(tmp_path / "bad.yaml")
    assert "\n" not in str(caught.value)


def test_unknown_names_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown dataset 'my_questions'; give a built-in name .*, a spec file \(.yaml\), a data file"):
        load_dataset("my_questions")
    with pytest.raises(FileNotFoundError, match=r"no data file missing.jsonl; check the path"):
        load_file("missing.jsonl")
    with pytest.raises(FileNotFoundError, match=r"no ori_pqal.json in .*pubmedqa; check the path \(or set VOC_DATA_ROOT / --data-root\)"):
        load_dataset("pubmedqa", root=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no nope.jsonl in .*; check the path"):
        load_dataset("medqa", tmp_path / "nope.jsonl")
    with pytest.raises(FileNotFoundError, match=r"no spec file .*none.yaml; check the path"):
        load_dataset(str(tmp_path / "none.yaml"))
    (tmp_path / "glob.yaml").write_text("source: ./nothing/*.jsonl\n")
    with pytest.raises(FileNotFoundError, match=r"no files match .*nothing/\*.jsonl; check the spec's source path"):
        load_dataset(str(tmp_path / "glob.yaml"))


# --- hub ids ---


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[dict]]:
    """A stand-in `datasets` module (no network here); HF_DATASETS_OFFLINE skips the reachability check."""
    tables: dict[str, list[dict]] = {}
    calls: list[tuple] = []

    def fake_load_dataset(hub_id: str, name: str | None = None, split: str | None = None) -> list[dict]:
        calls.append((hub_id, name, split))
        return tables[hub_id]

    module = types.ModuleType("datasets")
    module.load_dataset = fake_load_dataset  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", module)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    tables["_calls"] = calls  # type: ignore[assignment]
    return tables


def test_hub_ids_load_with_field_overrides(fake_hub: dict[str, list[dict]]) -> None:
    row = {"question": "Q?", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": 1, "id": "u1", "subject_name": "Anatomy"}
    fake_hub["someone/medmcqa"] = [row]
    overrides = {"options": ["opa", "opb", "opc", "opd"], "gold": "cop", "gold_as": "index", "id": "medmcqa-{id}"}
    overrides["subject"] = "subject_name"
    (question,) = load_dataset("hf:someone/medmcqa@validation", fields=overrides)
    assert (question.id, question.gold, question.metadata) == ("medmcqa-u1", "B", {"subject": "Anatomy"})
    fake_hub["cais/mmlu"] = [{"question": "Q?", "subject": "anatomy", "choices": ["a", "b", "c", "d"], "answer": 3}]
    (mmlu,) = load_dataset("hf:cais/mmlu:anatomy")  # choices + an int answer are recognised
    assert mmlu.gold == "D" and mmlu.metadata["subject"] == "anatomy"
    assert fake_hub["_calls"][-2:] == [("someone/medmcqa", None, "validation"), ("cais/mmlu", "anatomy", "test")]
    fake_hub["someone/bad"] = [{"question": "Q?", "options": {"A": "a", "B": "b"}, "answer_idx": "E"}]
    with pytest.raises(DataError, match=r"hf:someone/bad\[test\] row 1: gold label 'E' is not among the option labels"):
        load_dataset("hf:someone/bad")
    assert dataset_name("hf:someone/bad@dev") == "hf:someone_bad@dev"
