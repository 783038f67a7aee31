"""`voc bench --dataset` with your own question sets (a MedQA-layout file without flags, a CSV with field flags, a spec
file, a hub id), dev splits, per-subject tables for any dataset with subjects, one-line errors for bad input, and
`voc datasets`; on the tiny random model with tiny limits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from voc.cli import main


def bench(model: Path, out: Path, *args: str) -> int:
    return main(["bench", "--model", str(model), "--out", str(out), "--max-tokens", "4", "--no-progress", *args])


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]


@pytest.fixture
def medqa_file(data_root: Path, tmp_path: Path) -> Path:
    """40 MedQA test rows (question / options / answer_idx / answer / meta_info / realidx) as a user's own file."""
    path = tmp_path / "mine" / "my_questions.jsonl"
    path.parent.mkdir()
    path.write_text("".join((data_root / "medqa" / "test.jsonl").read_text().splitlines(keepends=True)[:40]))
    return path


def test_a_medqa_layout_file_runs_without_flags(tiny_model_dir: Path, medqa_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert bench(tiny_model_dir, out, "--dataset", str(medqa_file), "--strategy", "direct", "voc", "--limit", "8") == 0
    rows = records(out)
    assert len(rows) == 16 and {r["dataset"] for r in rows} == {"my_questions.jsonl"} and all(r["error"] is None for r in rows)
    assert {r["strategy"] for r in rows} == {"direct", "voc"} and all(r["labels"] == ["A", "B", "C", "D"] for r in rows)
    report = (out / "report.md").read_text()
    assert f"- Questions: my_questions.jsonl 8 (`{medqa_file}`) (seeded label-stratified sample, limit 8" in report
    assert (out / "confusion_my_questions.jsonl.png").is_file()
    results = json.loads((out / "results.json").read_text())
    assert {(r["group"], r["strategy"]) for r in results["results"]} == {("my_questions.jsonl", "direct"), ("my_questions.jsonl", "voc")}


def test_a_csv_with_one_column_per_option_runs_with_field_flags(tiny_model_dir: Path, tmp_path: Path) -> None:
    csv = tmp_path / "exam.csv"
    rows = [f"{i},Question {i}?,w{i},x{i},y{i},z{i},{i % 4},{['anatomy', 'physiology'][i % 2]}" for i in range(8)]
    csv.write_text("qid,stem,opa,opb,opc,opd,key,topic\n" + "\n".join(rows) + "\n")
    out = tmp_path / "run"
    flags = ["--field", "question=stem", "--field", "options=opa,opb,opc,opd", "--field", "gold=key", "--field", "gold_as=index",
             "--field", "id=exam-{qid}", "--field", "subject=topic"]  # fmt: skip
    assert bench(tiny_model_dir, out, "--dataset", str(csv), "--strategy", "direct", *flags) == 0
    got = records(out)
    assert len(got) == 8 and {r["question_id"] for r in got} == {f"exam-{i}" for i in range(8)}
    assert [r["gold"] for r in sorted(got, key=lambda r: r["question_id"])] == ["A", "B", "C", "D"] * 2
    report = (out / "report.md").read_text()
    assert "### Per subject: exam.csv" in report and "| anatomy | direct | 4 |" in report and "| physiology | direct | 4 |" in report
    assert (out / "accuracy_subjects_exam.csv.png").is_file()


def test_a_spec_file_and_dev_splits_run(tiny_model_dir: Path, medqa_file: Path, data_root: Path, tmp_path: Path) -> None:
    spec = medqa_file.parent / "mine.yaml"
    spec.write_text("name: mine\nsource: ./my_questions.jsonl\nn_options: 4\nfields: {gold: answer_idx, id: 'mine-{realidx}'}\n")
    out = tmp_path / "run"
    args = ["--dataset", str(spec), "pubmedqa:dev", "medqa_dev", "--strategy", "direct", "--limit", "3", "--data-root", str(data_root)]
    assert bench(tiny_model_dir, out, *args) == 0
    rows = records(out)
    assert {r["dataset"] for r in rows} == {"mine", "pubmedqa:dev", "medqa_dev"} and len(rows) == 9
    assert {r["question_id"].split("-")[0] for r in rows if r["dataset"] == "mine"} == {"mine"}
    assert "| pubmedqa:dev / direct | A yes | B no | C maybe |" in (out / "report.md").read_text()  # PubMedQA's option names


def test_a_hub_id_offline_is_one_line_and_writes_nothing(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    assert bench(tiny_model_dir, tmp_path / "run", "--dataset", "hf:someone/questions", "--strategy", "direct") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("voc: error: hf:someone/questions[test]: the Hugging Face hub is not reachable")
    assert "a hub dataset needs network access, or give a local path" in err
    assert not (tmp_path / "run").exists()


def _bad_files(folder: Path, data_root: Path) -> dict[str, Path]:
    lines = (data_root / "medqa" / "test.jsonl").read_text().splitlines()[:5]
    torn = folder / "torn.jsonl"
    torn.write_text("\n".join([*lines[:2], lines[2][:40], *lines[3:]]) + "\n")
    wrong = json.loads(lines[1])
    wrong["answer_idx"], wrong["answer"] = "Z", "not an option"
    nomatch = folder / "nomatch.jsonl"
    nomatch.write_text("\n".join([lines[0], json.dumps(wrong)]) + "\n")
    return {"torn": torn, "nomatch": nomatch, "ok": folder / "ok.jsonl"}


@pytest.mark.parametrize(
    ("given", "flags", "message"),
    [
        ("ok", ["--field", "question=stem"], r"ok.jsonl line 1: no field(s) ['stem'] in the first records ["),
        ("missing", [], "no data file "),
        ("torn", [], "torn.jsonl line 3: invalid JSON (Unterminated string starting at: column 28); truncated line?; fix the row or pass"),
        ("nomatch", [], "nomatch.jsonl line 2: gold label 'Z' is not among the option labels ['A', 'B', 'C', 'D']; fix the row or pass"),
        ("nomatch", ["--field", "gold=answer"], "nomatch.jsonl line 2: answer 'not an option' matches none of the options ("),
        ("ok", ["--field", "qestion=stem"], "bad --field 'qestion=stem'; give KEY=FIELD with KEY one of question, options"),
        ("pubmedqa", ["--field", "gold=answer"], "--field maps the fields of data files and hub ids; change a built-in dataset"),
        ("pubmedqa:valid", [], "unknown split 'valid' of pubmedqa; use one of test, dev, train, all"),
    ],
)
def test_bad_input_is_one_line_naming_file_line_and_what_to_do(
    given: str, flags: list[str], message: str, data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = _bad_files(tmp_path, data_root)
    files["ok"].write_text((data_root / "medqa" / "test.jsonl").read_text().splitlines()[0] + "\n")
    dataset = str(files[given]) if given in files else str(tmp_path / "missing.jsonl") if given == "missing" else given
    code = main(["bench", "--dataset", dataset, *flags, "--data-root", str(data_root), "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "run").exists()


def test_voc_datasets_lists_what_is_under_the_data_root(data_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["datasets", "--data-root", str(data_root)]) == 0
    out = capsys.readouterr().out
    for line in ("pubmedqa           500 questions  gold A 276, B 169, C 55", "pubmedqa:dev       100 questions",
                 "pubmedqa:train     400 questions", "medqa_dev         1271 questions", "medqa_train       1029 questions",
                 "medmcqa           2816 questions", "mmlu_medical      1089 questions"):  # fmt: skip
        assert line in out, out
    assert "medquad/medquad.jsonl: 16407 records; not recognised as questions (no field(s) ['options']" in out
