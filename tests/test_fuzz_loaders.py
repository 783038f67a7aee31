"""Malformed files fed to the loader through a built-in spec and a recognised layout (every built-in spec goes through
the same loader): each loads correctly, raises DataError naming the file and the line (the PMID in PubMedQA's
JSON-object files), or with skip_invalid=True skips the bad rows and counts them."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voc.datasets import DataError, QuestionList, load_dataset, load_file, load_pubmedqa, read_jsonl


def load_medqa(path: Path, **kw: Any) -> QuestionList:
    return load_dataset("medqa", path, **kw)


def _medqa_row(i: int) -> dict[str, Any]:
    options = {label: f"option {label} of {i}" for label in "ABCD"}
    return {"question": f"Question {i}?", "options": options, "answer_idx": "B", "answer": options["B"], "meta_info": "step1", "realidx": i}


def _generic_row(i: int) -> dict[str, Any]:
    return {"question": f"Question {i}?", "options": [f"one {i}", f"two {i}", f"three {i}"], "answer_idx": "C"}


# a valid row maker and its loader: a built-in spec, and the question / options / answer_idx layout recognised unmapped
JSONL_LOADERS: dict[str, tuple[Callable[[int], dict[str, Any]], Callable[..., QuestionList]]] = {
    "medqa": (_medqa_row, load_medqa),
    "generic": (_generic_row, load_file),
}
BAD_ROWS: dict[str, Callable[[dict[str, Any]], str]] = {
    "truncated": lambda row: json.dumps(row)[:25],
    "not_object": lambda row: "[1, 2, 3]",
    "number": lambda row: "42",
    "question_type": lambda row: json.dumps({**row, "question": 5}),
    "options_type": lambda row: json.dumps({**row, "options": "A or B"}),
    "missing_options": lambda row: json.dumps({k: v for k, v in row.items() if k != "options"}),
    "missing_question": lambda row: json.dumps({k: v for k, v in row.items() if k != "question"}),
    "unknown_gold": lambda row: json.dumps({**row, "answer_idx": "Z"}),
    "gold_type": lambda row: json.dumps({**row, "answer_idx": 1}),
    "duplicate_key": lambda row: json.dumps(row)[:-1] + ', "question": "again?"}',
    "nan": lambda row: json.dumps(row)[:-1] + ', "x": NaN}',
    "one_option": lambda row: json.dumps({**row, "options": {"B": "only"}, "answer": "only"}),
}


def _write(path: Path, lines: list[str], newline: str = "\n", bom: bool = False) -> Path:
    data = newline.join(lines) + newline if lines else ""
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data.encode("utf-8"))
    return path


def _rows(make: Callable[[int], dict[str, Any]], n: int = 3) -> list[str]:
    return [json.dumps(make(i)) for i in range(n)]


def _assert_names(error: DataError, file_name: str, where: str) -> None:
    message = str(error)
    assert file_name in message and where in message, message
    assert "\n" not in message


@pytest.fixture(params=sorted(JSONL_LOADERS))
def jsonl_loader(request: pytest.FixtureRequest) -> tuple[Callable[[int], dict[str, Any]], Callable[..., QuestionList]]:
    return JSONL_LOADERS[request.param]


# --- JSON Lines ---


def test_bom_crlf_and_blank_lines_load(tmp_path: Path, jsonl_loader: Any) -> None:
    make, load = jsonl_loader
    lines = _rows(make, 3)
    path = _write(tmp_path / "test.jsonl", [lines[0], "", "   ", lines[1], lines[2], ""], newline="\r\n", bom=True)
    questions = load(path)
    assert len(questions) == 3 and questions.report.skipped == 0
    assert questions[0].question == "Question 0?"
    assert [n for n, _ in read_jsonl(path)] == [1, 4, 5]


@pytest.mark.parametrize("kind", BAD_ROWS)
def test_bad_jsonl_row(tmp_path: Path, jsonl_loader: Any, kind: str) -> None:
    make, load = jsonl_loader
    good = _rows(make, 3)
    path = _write(tmp_path / "test.jsonl", [good[0], "", BAD_ROWS[kind](make(1)), good[2]])
    with pytest.raises(DataError) as caught:
        load(path)
    _assert_names(caught.value, f"{tmp_path.name}/test.jsonl", "line 3")
    assert caught.value.line == 3 and "skip_invalid=True" in str(caught.value)
    questions = load(path, skip_invalid=True)
    assert [q.question for q in questions] == ["Question 0?", "Question 2?"]
    assert questions.report.skipped == 1 and questions.report.errors[0].line == 3


def test_a_row_with_two_options_of_the_same_text_is_kept_and_flagged(tmp_path: Path, jsonl_loader: Any) -> None:
    make, load = jsonl_loader
    row = make(1)
    first = next(iter(row["options"].values())) if isinstance(row["options"], dict) else row["options"][0]
    row["options"] = {**row["options"], "B": first} if isinstance(row["options"], dict) else [first, first, *row["options"][2:]]
    row.update({"answer": first} if "answer" in row else {})
    questions = load(_write(tmp_path / "test.jsonl", [json.dumps(make(0)), json.dumps(row), json.dumps(make(2))]))
    assert [q.question for q in questions] == ["Question 0?", "Question 1?", "Question 2?"]  # scored by label: still well defined
    assert questions.report.skipped == 0 and [q.duplicate_options for q in questions] == [[], [["A", "B"]], []]
    assert questions[1].metadata["duplicate_options"] == [["A", "B"]]


def test_row_messages(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = [_medqa_row(0), {k: v for k, v in _medqa_row(1).items() if k != "options"}]
    with pytest.raises(DataError, match=r"^\S+/test.jsonl line 2: missing field 'options'; fix the row or pass "
                                        r"skip_invalid=True \(voc bench: --skip-invalid\)$"):  # fmt: skip
        load_medqa(_write(tmp_path / "test.jsonl", [json.dumps(r) for r in rows]))
    with pytest.raises(DataError, match=r"test.jsonl line 2: duplicate question id 'medqa-0' \(also at line 1\)"):
        load_medqa(_write(tmp_path / "test.jsonl", [json.dumps(_medqa_row(0)), json.dumps({**_medqa_row(1), "realidx": 0})]))
    questions = load_medqa(_write(tmp_path / "test.jsonl", [json.dumps(_medqa_row(0)), "{oops", "[]"]), skip_invalid=True)
    assert len(questions) == 1 and questions.report.skipped == 2
    assert "skipped 2 invalid rows in" in caplog.text and "(first: line 2: invalid JSON" in caplog.text


def test_invalid_utf8_line(tmp_path: Path, jsonl_loader: Any) -> None:
    make, load = jsonl_loader
    good = _rows(make, 2)
    path = tmp_path / "test.jsonl"
    path.write_bytes(good[0].encode() + b"\n" + b'{"question": "\xff\xfe"}\n' + good[1].encode() + b"\n")
    with pytest.raises(DataError, match=r"test.jsonl line 2: not valid UTF-8"):
        load(path)
    assert load(path, skip_invalid=True).report.skipped == 1


@pytest.mark.parametrize("content", [b"", b"\n\n  \n", b"\xef\xbb\xbf", b"\r\n", b"{\n[]\n"])
def test_empty_or_all_bad_file(tmp_path: Path, jsonl_loader: Any, content: bytes) -> None:
    _, load = jsonl_loader
    path = tmp_path / "test.jsonl"
    path.write_bytes(content)
    for skip in (False, True):
        with pytest.raises(DataError) as caught:
            load(path, skip_invalid=skip)
        _assert_names(caught.value, "test.jsonl", "line 1")
    if content.startswith(b"{"):
        assert "all 2 rows are invalid (first: line 1:" in str(caught.value)


garbage_line = st.one_of(
    st.text(min_size=1, max_size=40).filter(lambda s: "\n" not in s and s.strip() != ""),
    st.integers(min_value=1, max_value=60).map(lambda n: json.dumps(_medqa_row(99))[: n % 60 + 1]),
    st.sampled_from(["[]", "null", "true", "3.5", '"text"', "{}", '{"question": 1}', "{,}", "]"]),
    st.dictionaries(
        st.sampled_from(["question", "options", "answer_idx"]),
        st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=3)),
    ).map(json.dumps),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    loader=st.sampled_from(sorted(JSONL_LOADERS)),
    n_valid=st.integers(min_value=1, max_value=6),
    garbage=st.lists(st.tuples(st.integers(min_value=0, max_value=10), garbage_line), min_size=0, max_size=5),
    crlf=st.booleans(),
    bom=st.booleans(),
)
def test_garbage_lines_property(loader: str, n_valid: int, garbage: list[tuple[int, str]], crlf: bool, bom: bool) -> None:
    make, load = JSONL_LOADERS[loader]
    lines: list[tuple[str, bool]] = [(line, True) for line in _rows(make, n_valid)]
    for position, text in garbage:
        lines.insert(position % (len(lines) + 1), (text, False))
    bad_lines = [number for number, (_, ok) in enumerate(lines, start=1) if not ok]
    with tempfile.TemporaryDirectory() as folder:
        path = _write(Path(folder) / "test.jsonl", [text for text, _ in lines], "\r\n" if crlf else "\n", bom)
        if bad_lines:
            with pytest.raises(DataError) as caught:
                load(path)
            assert caught.value.line == bad_lines[0]
            _assert_names(caught.value, "test.jsonl", f"line {bad_lines[0]}")
        else:
            assert len(load(path)) == n_valid
        questions = load(path, skip_invalid=True)
    assert [q.question for q in questions] == [f"Question {i}?" for i in range(n_valid)]
    assert questions.report.skipped == len(bad_lines)
    assert [e.line for e in questions.report.errors] == bad_lines


# --- PubMedQA: JSON-object files, errors name the file and the PMID ---


def _pqa_entry(i: int, decision: str = "yes") -> dict[str, Any]:
    return {"QUESTION": f"Does {i} work?", "CONTEXTS": [f"Background {i}.", f"Result {i}."], "LABELS": ["BACKGROUND", "RESULTS"],
            "MESHES": ["Humans"], "YEAR": "2001", "reasoning_required_pred": "yes", "reasoning_free_pred": "yes",
            "final_decision": decision, "LONG_ANSWER": "It does."}  # fmt: skip


def _pubmedqa_folder(folder: Path, ori: dict[str, Any] | str | bytes, truth: dict[str, Any] | str | bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in (("ori_pqal.json", ori), ("test_ground_truth.json", truth)):
        content = json.dumps(content, indent=2) if isinstance(content, dict) else content
        (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    return folder


def _valid_pubmedqa() -> tuple[dict[str, Any], dict[str, str]]:
    ori = {"101": _pqa_entry(1, "yes"), "102": _pqa_entry(2, "no"), "103": _pqa_entry(3, "maybe"), "104": _pqa_entry(4, "no")}
    return ori, {"101": "yes", "103": "maybe"}


def test_pubmedqa_small_valid_with_bom_and_crlf(tmp_path: Path) -> None:
    ori, truth = _valid_pubmedqa()
    crlf = json.dumps(ori, indent=2).replace("\n", "\r\n").encode()
    folder = _pubmedqa_folder(tmp_path / "pubmedqa", b"\xef\xbb\xbf" + crlf, b"\xef\xbb\xbf" + json.dumps(truth).encode())
    test = load_pubmedqa(folder)
    assert [q.id for q in test] == ["pubmedqa-101", "pubmedqa-103"] and [q.gold for q in test] == ["A", "C"]
    assert test[0].context == "BACKGROUND: Background 1.\nRESULTS: Result 1."
    assert test[0].metadata == {"pmid": "101", "split": "test", "long_answer": "It does.", "year": "2001", "meshes": ["Humans"]}
    train = load_pubmedqa(folder, split="train")
    assert [q.id for q in train] == ["pubmedqa-102", "pubmedqa-104"] and [q.gold for q in train] == ["B", "B"]
    assert len(load_pubmedqa(folder, split="all")) == 4


@pytest.mark.parametrize(
    ("ori_text", "where"),
    [
        ('{"101": {"QUESTION": "x",\n  "CONTEXTS": [', "line 2"),  # truncated
        ('{"101": {"QUESTION": "x"},\n\n "102": }', "line 3"),  # invalid value
        ("[1, 2]", "record 1"),  # a list: no PMIDs
        ("", "line 1"),  # empty file
        ('{"101": {}, "101": {}}', "'101'"),  # duplicate PMID key
    ],
)
def test_pubmedqa_broken_ori_file(tmp_path: Path, ori_text: str, where: str) -> None:
    folder = _pubmedqa_folder(tmp_path / "pubmedqa", ori_text, {"101": "yes"})
    for skip in (False, True):  # a broken file cannot be skipped row by row
        with pytest.raises(DataError) as caught:
            load_pubmedqa(folder, split="all", skip_invalid=skip)
        _assert_names(caught.value, "pubmedqa/ori_pqal.json", where)
    if ori_text.startswith("["):
        assert "the record has no key (the file must be an object keyed by PMID)" in str(caught.value)


@pytest.mark.parametrize("truth_text", ['{"101": "yes",', "[]", "", '{"101": "yes", "101": "no"}'])
def test_pubmedqa_broken_ground_truth_file(tmp_path: Path, truth_text: str) -> None:
    folder = _pubmedqa_folder(tmp_path / "pubmedqa", _valid_pubmedqa()[0], truth_text)
    with pytest.raises(DataError) as caught:
        load_pubmedqa(folder, skip_invalid=True)
    assert "pubmedqa/test_ground_truth.json" in str(caught.value)


BROKEN_ENTRIES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "missing_question": lambda e: {k: v for k, v in e.items() if k != "QUESTION"},
    "question_type": lambda e: {**e, "QUESTION": ["x"]},
    "contexts_type": lambda e: {**e, "CONTEXTS": 7},
    "labels_mismatch": lambda e: {**e, "LABELS": ["ONLY"]},
    "bad_decision": lambda e: {**e, "final_decision": "perhaps"},
    "missing_decision": lambda e: {k: v for k, v in e.items() if k != "final_decision"},
    "not_object": lambda e: "just text",
    "empty_question": lambda e: {**e, "QUESTION": "  "},
}


@pytest.mark.parametrize("kind", BROKEN_ENTRIES)
@pytest.mark.parametrize("split", ["train", "all"])
def test_pubmedqa_bad_entry(tmp_path: Path, kind: str, split: str) -> None:
    ori, truth = _valid_pubmedqa()
    ori["105"] = BROKEN_ENTRIES[kind](_pqa_entry(1))  # not a test PMID
    folder = _pubmedqa_folder(tmp_path / "pubmedqa", ori, truth)
    with pytest.raises(DataError) as caught:
        load_pubmedqa(folder, split=split)
    _assert_names(caught.value, "pubmedqa/ori_pqal.json", "PMID 105")
    questions = load_pubmedqa(folder, split=split, skip_invalid=True)
    assert questions.report.skipped == 1 and "105" not in {q.metadata["pmid"] for q in questions}
    assert len(load_pubmedqa(folder, split="test")) == 2  # the test split does not read the broken entry


@pytest.mark.parametrize(
    ("pmid", "label", "message"),
    [
        ("999", "no", "PMID 999: listed in split 'test' but missing from pubmedqa/ori_pqal.json"),
        ("abc", "yes", "PMID abc: listed in split 'test' but missing from pubmedqa/ori_pqal.json"),
    ],
)
def test_pubmedqa_bad_ground_truth_entry(tmp_path: Path, pmid: str, label: str, message: str) -> None:
    ori, truth = _valid_pubmedqa()
    folder = _pubmedqa_folder(tmp_path / "pubmedqa", ori, {**truth, pmid: label})
    with pytest.raises(DataError) as caught:
        load_pubmedqa(folder)
    assert f"pubmedqa/test_ground_truth.json {message}" in str(caught.value)
    assert load_pubmedqa(folder, skip_invalid=True).report.skipped == 1
    assert [q.metadata["pmid"] for q in load_pubmedqa(folder, split="train")] == [p for p in ("102", "104") if p != pmid]


# --- CSV ---

CSV_HEADER = "id,question,A,B,C,D,answer"


def _csv_row(i: int, gold: str = "B") -> str:
    return f'{i},"Question {i}?",a{i},b{i},c{i},d{i},{gold}'


def _load_csv(path: Path, **kw: Any) -> QuestionList:
    return load_file(path, options=["A", "B", "C", "D"], gold="answer", gold_as="label", id="id", **kw)


def test_csv_bom_crlf_load(tmp_path: Path) -> None:
    path = _write(tmp_path / "q.csv", [CSV_HEADER, _csv_row(0), "", _csv_row(1)], newline="\r\n", bom=True)
    questions = _load_csv(path)
    assert [q.id for q in questions] == ["0", "1"] and questions[1].options["D"] == "d1"


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ('2,"Question 2?",a,b,c,d,B,extra', "row has 8 fields, the header has 7"),
        ('2,"Question 2?",a,b', "row has 4 fields"),
        ('2,"Question 2?",a2,b2,c2,d2,Z', "gold label 'Z'"),
        ('2,"",a2,b2,c2,d2,A', "question is empty"),
        ('2,"Question 2?"x,a2,b2,c2,d2,A', "bad CSV"),
        ('0,"Question 2?",a2,b2,c2,d2,A', "duplicate question id '0'"),
        ('2,"Question 2?",a2,,,,A', "at least 2 options"),
    ],
)
def test_csv_bad_row(tmp_path: Path, bad: str, reason: str) -> None:
    path = _write(tmp_path / "q.csv", [CSV_HEADER, _csv_row(0), '1,"multi\nline?",a,b,c,d,A', bad, _csv_row(3)])
    with pytest.raises(DataError) as caught:
        _load_csv(path)
    _assert_names(caught.value, f"{tmp_path.name}/q.csv", "line 5")
    assert reason in str(caught.value)
    questions = _load_csv(path, skip_invalid=True)
    assert [q.id for q in questions] == ["0", "1", "3"] and questions.report.skipped == 1


def test_csv_unterminated_quote_is_reported(tmp_path: Path) -> None:
    path = _write(tmp_path / "q.csv", [CSV_HEADER, _csv_row(0), _csv_row(1), '2,"Question 2?,a,b,c,d,A'])
    with pytest.raises(DataError, match=r"q.csv line 4: bad CSV \(unterminated quote"):
        _load_csv(path)
    questions = _load_csv(path, skip_invalid=True)
    assert [q.id for q in questions] == ["0", "1"] and questions.report.skipped == 1
    # mid-file, the open quote swallows the next line into the same bad record, reported at its first line
    path = _write(tmp_path / "q.csv", [CSV_HEADER, _csv_row(0), '1,"Question 1?,a,b,c,d,A', _csv_row(2), _csv_row(3)])
    with pytest.raises(DataError, match=r"q.csv line 3: bad CSV"):
        _load_csv(path)
    questions = _load_csv(path, skip_invalid=True)
    assert [q.id for q in questions] == ["0", "3"] and questions.report.skipped == 1


@pytest.mark.parametrize(
    ("content", "fields", "where", "reason"),
    [
        (b"", {}, "line 1", "empty"),
        (b"\xef\xbb\xbf\r\n", {}, "line 1", "empty"),
        (CSV_HEADER.encode() + b"\n", {}, "line 1", "no rows"),
        (b"id,question,answer\n1,Q?,A\n", {}, "line 1", "no field(s) ['options'] in the header ['id', 'question', 'answer']"),
        (b"id,question,A,A,answer\n", {}, "line 1", "duplicate columns"),
        (CSV_HEADER.encode() + b"\n" + _csv_row(0).encode() + b"\n2,\xff,a,b,c,d,A\n", {}, "line 3", "UTF-8"),
        (f"{CSV_HEADER}\n{_csv_row(0)}\n".encode(), {"context": "context"}, "line 1", "no field(s) ['context'] in the header"),
    ],
)
def test_csv_broken_file(tmp_path: Path, content: bytes, fields: dict[str, str], where: str, reason: str) -> None:
    path = tmp_path / "q.csv"
    path.write_bytes(content)
    for skip in (False, True):
        with pytest.raises(DataError) as caught:
            load_file(path, gold="answer", skip_invalid=skip, **fields)
        _assert_names(caught.value, "q.csv", where)
        assert reason in str(caught.value)


def test_csv_options_as_json_in_one_column(tmp_path: Path) -> None:
    path = _write(tmp_path / "q.csv", ["question,opts,gold", '"Pick one","{""A"": ""left"", ""B"": ""right""}",B',
                                       '"Pick again","[""up"", ""down""]",A', '"Q3?","[""a"", ""b""",A'])  # fmt: skip
    with pytest.raises(DataError, match=r"q.csv line 4: field 'opts' must be a JSON list or object"):
        load_file(path, options="opts")
    questions = load_file(path, options="opts", skip_invalid=True)
    assert questions.report.skipped == 1 and [q.gold for q in questions] == ["B", "A"]
    assert questions[0].options == {"A": "left", "B": "right"} and questions[1].options == {"A": "up", "B": "down"}


@settings(max_examples=60, deadline=None)
@given(
    n_valid=st.integers(min_value=1, max_value=5),
    garbage=st.lists(st.tuples(st.integers(0, 10), st.integers(1, 12).filter(lambda n: n != 7)), max_size=4),
)
def test_csv_wrong_field_count_property(n_valid: int, garbage: list[tuple[int, int]]) -> None:
    lines: list[tuple[str, bool]] = [(_csv_row(i), True) for i in range(n_valid)]
    for position, fields in garbage:
        lines.insert(position % (len(lines) + 1), (",".join(["x"] * fields), False))
    bad_lines = [number for number, (_, ok) in enumerate(lines, start=2) if not ok]
    with tempfile.TemporaryDirectory() as folder:
        path = _write(Path(folder) / "q.csv", [CSV_HEADER, *(text for text, _ in lines)])
        if bad_lines:
            with pytest.raises(DataError) as caught:
                _load_csv(path)
            assert caught.value.line == bad_lines[0]
        questions = _load_csv(path, skip_invalid=True)
    assert [q.id for q in questions] == [str(i) for i in range(n_valid)]
    assert [e.line for e in questions.report.errors] == bad_lines
