"""voc bench: metrics on hand-made examples, the records file, resume, fingerprints, engine faults, a full disk,
a torn last line, kill -9 and resume, and the report; on the tiny model with tiny limits."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from voc.bench import BenchConfig, BenchError, RecordStore, RecordsWriteError, ResultRecord, metrics, run_bench
from voc.bench.records import RECORDS_FILE, latest_by_key
from voc.bench.report import compare_runs
from voc.cli import main
from voc.engines.base import ChatPrompt, Engine, Generation, SamplingParams, Scores

REPO = Path(__file__).resolve().parents[1]
STRATEGIES = ["direct", "cot", "voc"]


# --- metrics on hand-made examples ------------------------------------------------------------------------------


def test_bootstrap_ci_contains_the_estimate_and_narrows_with_more_questions() -> None:
    values = [1.0] * 30 + [0.0] * 20
    low, high = metrics.bootstrap_ci(values)
    assert low < 0.6 < high
    assert low > 0.4 and high < 0.8  # the normal approximation gives about [0.46, 0.74]
    big_low, big_high = metrics.bootstrap_ci(values * 10)
    assert big_low < 0.6 < big_high and big_high - big_low < (high - low) / 2
    assert metrics.bootstrap_ci([1.0, 1.0, 1.0]) == (1.0, 1.0)
    assert metrics.bootstrap_ci([]) is None
    assert metrics.bootstrap_ci(values, seed=3) == metrics.bootstrap_ci(values, seed=3)


def test_mcnemar_on_a_known_table() -> None:
    result = metrics.mcnemar(10, 2)  # 10 pairs only the first got right, 2 only the second
    assert result.p_exact == pytest.approx(2 * (1 + 12 + 66) / 2**12)  # 2 * P(X <= 2), X ~ Binomial(12, 1/2)
    assert result.statistic == pytest.approx((10 - 2 - 1) ** 2 / 12)
    assert result.p_chi2 == pytest.approx(0.04331, abs=1e-4)  # chi-square(1) survival at 4.083
    assert metrics.mcnemar(2, 10).p_exact == pytest.approx(result.p_exact)
    assert metrics.mcnemar(5, 5).p_exact == 1.0
    assert metrics.mcnemar(0, 0).p_exact == 1.0


def test_macro_f1_matches_a_hand_computation() -> None:
    gold = ["A", "A", "A", "B", "B", "C"]
    predicted = ["A", "A", "B", "B", "C", "C"]
    # A: P 2/2, R 2/3 -> F1 0.8; B: P 1/2, R 1/2 -> 0.5; C: P 1/2, R 1/1 -> 2/3
    assert metrics.macro_f1(gold, predicted) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    # a class that is never predicted counts as F1 0
    assert metrics.macro_f1(["A", "B"], ["A", "A"]) == pytest.approx((2 / 3 + 0) / 2)
    assert metrics.confusion_matrix(gold, predicted, ["A", "B", "C"]) == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert metrics.position_distribution([0, 0, 1, 2], 4) == [0.5, 0.25, 0.25, 0.0]


def test_paired_comparison_counts_discordant_pairs() -> None:
    first = [True, True, True, False, False]
    second = [True, False, False, False, True]
    result = metrics.paired_comparison("x", "y", first, second)
    assert result.difference == pytest.approx(0.2)
    assert (result.mcnemar.b, result.mcnemar.c) == (2, 1)
    assert result.ci is not None and result.ci[0] <= 0.2 <= result.ci[1]


def record(qid: str, strategy: str, label: str | None, gold: str = "A", **fields: object) -> ResultRecord:
    error = None if label is not None else "RuntimeError: boom"
    return ResultRecord(
        question_id=qid,
        dataset="toy",
        strategy=strategy,
        labels=["A", "B"],
        gold=gold,
        label=label,
        correct=None if label is None else label == gold,
        error=error,
        **fields,
    )


def test_summary_leaves_errors_out_and_pairs_only_questions_both_answered() -> None:
    records = [record(f"q{i}", "direct", "A") for i in range(4)]
    records += [record("q0", "voc", "A"), record("q1", "voc", "B"), record("q2", "voc", None), record("q3", "voc", "A")]
    summary = metrics.summarise(records, ["direct", "voc"])
    voc = summary.result("toy", "voc")
    assert voc is not None and (voc.n, voc.errors, voc.correct) == (3, 1, 2)
    (pair,) = summary.comparisons["toy"]
    assert (pair.first, pair.second, pair.n, pair.mcnemar.b, pair.mcnemar.c) == ("direct", "voc", 3, 1, 0)


# --- the records file -------------------------------------------------------------------------------------------


def test_torn_last_line_is_dropped_and_the_next_append_starts_clean(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / RECORDS_FILE)
    first, second, torn, later = (record(f"q{i}", "direct", "A") for i in range(4))
    store.append([first, second])
    with open(store.path, "ab") as handle:  # what a kill in the middle of a write leaves
        handle.write(torn.model_dump_json().encode()[:40])
    assert [r.record_id for r in store.load()] == [first.record_id, second.record_id]
    assert store.dropped_bytes == 40
    store.append([later])
    assert [r.record_id for r in store.load()] == [first.record_id, second.record_id, later.record_id]
    assert store.dropped_bytes == 0


def test_a_corrupt_complete_line_is_refused_and_left_alone(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / RECORDS_FILE)
    store.append([record("q0", "direct", "A")])
    with open(store.path, "ab") as handle:
        handle.write(b'{"not": "a record"}\n')
    store.append([record("q1", "direct", "A")])
    before = store.path.read_bytes()
    with pytest.raises(BenchError, match="line 2 is not a valid result record"):
        store.load()
    assert store.path.read_bytes() == before


def fail_half_way(fd: int, payload: bytes) -> None:
    """A write that stops half-way because the disk is full."""
    os.write(fd, payload[: len(payload) // 2])
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_leaves_earlier_records_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = RecordStore(tmp_path / RECORDS_FILE)
    store.append([record("q0", "direct", "A")])
    before = store.path.read_bytes()
    monkeypatch.setattr(RecordStore, "_write_all", staticmethod(fail_half_way))
    with pytest.raises(RecordsWriteError, match="disk is full"):
        store.append([record("q1", "direct", "A"), record("q2", "direct", "B")])
    assert store.path.read_bytes() == before


def test_a_success_is_never_replaced_by_a_later_error() -> None:
    ok, failed, fixed = record("q0", "voc", "A"), record("q0", "voc", None), record("q1", "voc", None)
    later_ok = record("q1", "voc", "B")
    latest = latest_by_key([ok, failed, fixed, later_ok])
    assert latest[("toy", "voc", "q0")].record_id == ok.record_id
    assert latest[("toy", "voc", "q1")].record_id == later_ok.record_id


# --- runs on the tiny model -------------------------------------------------------------------------------------


class FaultyEngine(Engine):
    """Wraps an engine; raises RuntimeError on the first `failures` calls (None: always), or on calls whose
    prompts contain `poison`."""

    def __init__(self, inner: Engine, failures: int | None = 0, poison: str | None = None) -> None:
        super().__init__()
        self.inner, self.failures, self.poison = inner, failures, poison
        self.model_name, self.max_model_len = inner.model_name, inner.max_model_len
        self.calls = 0

    def _maybe_fail(self, prompts: Sequence[ChatPrompt]) -> None:
        self.calls += 1
        if self.poison is not None:
            if any(self.poison in self.inner.render(p) for p in prompts):
                raise RuntimeError("simulated engine fault on a poisoned prompt")
            return
        if self.failures is None or self.failures > 0:
            if self.failures:
                self.failures -= 1
            raise RuntimeError("simulated engine fault")

    def generate(self, prompts: Sequence[ChatPrompt], params: SamplingParams) -> list[Generation]:
        self._maybe_fail(prompts)
        return self.inner.generate(prompts, params)

    def score(self, prompts: Sequence[ChatPrompt], candidates: Sequence[Sequence[str]]) -> list[Scores]:
        self._maybe_fail(prompts)
        return self.inner.score(prompts, candidates)

    def render(self, prompt: ChatPrompt) -> str:
        return self.inner.render(prompt)

    def encode(self, text: str) -> list[int]:
        return self.inner.encode(text)


def config(model_dir: Path, out: Path, **changes: object) -> BenchConfig:
    base: dict[str, object] = dict(
        model=str(model_dir),
        datasets=["pubmedqa", "mmlu_medical"],
        strategies=STRATEGIES,
        limit=4,
        max_tokens=4,
        chunk_size=3,
        batch_size=8,
        out=str(out),
    )
    base.update(changes)
    return BenchConfig(**base)  # type: ignore[arg-type]


def lines_of(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / RECORDS_FILE).read_text().splitlines()]


@pytest.fixture(scope="module")
def base_run(tiny_model_dir: Path, tiny_engine: Engine, data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished run: pubmedqa and mmlu_medical, 4 questions each, all three strategies."""
    out = tmp_path_factory.mktemp("bench") / "run"
    outcome = run_bench(config(tiny_model_dir, out), engine=tiny_engine, progress=False)
    assert (outcome.planned, outcome.computed, outcome.errors) == (24, 24, 0)
    return out


@pytest.fixture
def run_copy(base_run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(base_run, target)
    return target


def test_a_run_writes_complete_records_and_a_report(base_run: Path, data_root: Path) -> None:
    from voc.datasets import load_dataset

    for name in (
        "records.jsonl",
        "fingerprint.json",
        "run.json",
        "results.json",
        "report.md",
        "accuracy.png",
        "accuracy_mmlu_subjects.png",
        "confusion_pubmedqa.png",
        "confusion_mmlu_medical.png",
        "reliability_pubmedqa.png",
        "coverage_mmlu_medical.png",
    ):
        assert (base_run / name).is_file(), name
    rows = lines_of(base_run)
    assert len(rows) == 24
    for dataset in ("pubmedqa", "mmlu_medical"):  # every strategy saw the same questions
        ids = [{r["question_id"] for r in rows if r["dataset"] == dataset and r["strategy"] == s} for s in STRATEGIES]
        assert len(ids[0]) == 4 and ids[0] == ids[1] == ids[2]
    pubmed = [r for r in rows if r["dataset"] == "pubmedqa" and r["strategy"] == "direct"]
    first_four = [q.id for q in load_dataset("pubmedqa")[:4]]  # the test file is ordered by label: not a sample
    assert {r["question_id"] for r in pubmed} != set(first_four)
    assert {r["gold"] for r in pubmed} == {"A", "B", "C"}  # stratified by label
    for r in rows:
        assert r["error"] is None and r["label"] in r["labels"] and r["correct"] == (r["label"] == r["gold"])
        assert len(r["prompt_hash"]) == 64 and r["seconds"] > 0 and r["prompt_tokens"] > 0
        assert sum(r["probabilities"].values()) == pytest.approx(1.0)
        if r["strategy"] == "voc":
            assert set(r["verifications"]) == set(r["labels"]) and len(r["completions"]) == len(r["labels"])
        if r["strategy"] == "cot":
            assert len(r["completions"]) == 1 and r["completion_tokens"] > 0
    results = json.loads((base_run / "results.json").read_text())
    groups = {(r["group"], r["strategy"]): r for r in results["results"]}
    subjects = [r for (g, s), r in groups.items() if g.startswith("mmlu_medical/") and s == "voc"]
    assert subjects and sum(r["n"] for r in subjects) == groups[("mmlu_medical", "voc")]["n"] == 4
    for r in results["results"]:
        low, high = r["ci"]
        assert low <= r["accuracy"] <= high
    assert len(results["comparisons"]["pubmedqa"]) == 3  # direct-cot, direct-voc, cot-voc
    report = (base_run / "report.md").read_text()
    assert "published, not measured here" in report and "AntGLM-Med-10B" in report and "McNemar" in report
    assert "## Calibration and selective answering" in report and "| pubmedqa | voc verdicts | 12 |" in report
    assert "## Option order" not in report and all(r["order"] is None for r in results["results"])  # asked once


def test_resume_computes_only_what_is_missing(run_copy: Path, tiny_model_dir: Path, tiny_engine: Engine) -> None:
    rows = (run_copy / RECORDS_FILE).read_text().splitlines(keepends=True)
    (run_copy / RECORDS_FILE).write_text("".join(rows[:-5]))
    kept = {json.loads(line)["record_id"] for line in rows[:-5]}
    outcome = run_bench(config(tiny_model_dir, run_copy), engine=tiny_engine, progress=False)
    assert (outcome.reused, outcome.computed) == (19, 5)
    after = lines_of(run_copy)
    assert kept <= {r["record_id"] for r in after} and len(after) == 24
    assert len({(r["dataset"], r["strategy"], r["question_id"]) for r in after}) == 24
    counting = FaultyEngine(tiny_engine)
    again = run_bench(config(tiny_model_dir, run_copy), engine=counting, progress=False)
    assert (again.computed, counting.calls, len(lines_of(run_copy))) == (0, 0, 24)


def test_a_changed_configuration_is_refused_unless_forced(
    run_copy: Path, tiny_model_dir: Path, tiny_engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (run_copy / RECORDS_FILE).read_bytes()
    with pytest.raises(BenchError, match=r"another configuration \(changed: params\)"):
        run_bench(config(tiny_model_dir, run_copy, max_tokens=5), engine=tiny_engine, progress=False)
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "direct.jinja").write_text((REPO / "templates" / "direct.jinja").read_text().replace("letter", "single letter"))
    with pytest.raises(BenchError, match="templates_hash"):
        run_bench(config(tiny_model_dir, run_copy, templates=str(templates)), engine=tiny_engine, progress=False)
    code = main(
        [
            "bench",
            "--model",
            str(tiny_model_dir),
            "--dataset",
            "pubmedqa",
            "mmlu_medical",
            "--limit",
            "4",
            "--seed",
            "1",
            "--max-tokens",
            "4",
            "--out",
            str(run_copy),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "changed: questions, seed" in err and "--force" in err
    assert (run_copy / RECORDS_FILE).read_bytes() == before
    forced = run_bench(
        config(tiny_model_dir, run_copy, datasets=["pubmedqa"], strategies=["direct"], force=True), engine=tiny_engine, progress=False
    )
    assert (forced.reused, forced.computed) == (0, 4)
    (aside,) = run_copy.glob("records.*.jsonl")
    assert aside.read_bytes() == before  # the old records are kept aside, not deleted


@pytest.mark.usefixtures("data_root")  # skipped, not failed, where the shared data is absent
def test_a_failing_batch_is_retried_once(tmp_path: Path, tiny_model_dir: Path, tiny_engine: Engine) -> None:
    engine = FaultyEngine(tiny_engine, failures=1)
    outcome = run_bench(
        config(tiny_model_dir, tmp_path / "run", datasets=["pubmedqa"], strategies=["direct"]), engine=engine, progress=False
    )
    assert (outcome.computed, outcome.errors) == (4, 0)
    assert [r["attempts"] for r in lines_of(tmp_path / "run")] == [2, 2, 2, 1]  # chunk 1 needed a retry


@pytest.mark.usefixtures("data_root")  # skipped, not failed, where the shared data is absent
def test_a_batch_that_keeps_failing_becomes_error_records_and_the_run_completes(
    tmp_path: Path, tiny_model_dir: Path, tiny_engine: Engine
) -> None:
    out = tmp_path / "run"
    settings = config(tiny_model_dir, out, datasets=["pubmedqa"], strategies=["direct", "cot"])
    outcome = run_bench(settings, engine=FaultyEngine(tiny_engine, failures=None), progress=False)
    assert (outcome.computed, outcome.errors) == (0, 8)
    rows = lines_of(out)
    assert len(rows) == 8 and all(r["error"] == "RuntimeError: simulated engine fault" and r["label"] is None for r in rows)
    results = json.loads((out / "results.json").read_text())
    assert results["errors"] == 8
    assert "simulated engine fault" in (out / "report.md").read_text()
    healed = run_bench(settings, engine=tiny_engine, progress=False)  # a re-run retries the failed questions
    assert (healed.reused, healed.computed, healed.errors) == (0, 8, 0)
    assert json.loads((out / "results.json").read_text())["errors"] == 0


def test_only_the_question_that_fails_is_recorded_as_an_error(
    tmp_path: Path, tiny_model_dir: Path, tiny_engine: Engine, data_root: Path
) -> None:
    from voc.datasets import load_dataset, stratified_sample

    bad = stratified_sample(load_dataset("pubmedqa"), 4, 0)[1]
    engine = FaultyEngine(tiny_engine, poison=bad.question)
    outcome = run_bench(
        config(tiny_model_dir, tmp_path / "run", datasets=["pubmedqa"], strategies=["direct"]), engine=engine, progress=False
    )
    assert (outcome.computed, outcome.errors) == (3, 1)
    errors = [r["question_id"] for r in lines_of(tmp_path / "run") if r["error"]]
    assert errors == [bad.id]


def test_a_torn_last_line_is_dropped_on_resume(run_copy: Path, tiny_model_dir: Path, tiny_engine: Engine) -> None:
    rows = (run_copy / RECORDS_FILE).read_text().splitlines(keepends=True)
    (run_copy / RECORDS_FILE).write_text("".join(rows[:-1]) + rows[-1][: len(rows[-1]) // 2])
    outcome = run_bench(config(tiny_model_dir, run_copy), engine=tiny_engine, progress=False)
    assert outcome.dropped_torn_line and (outcome.reused, outcome.computed) == (23, 1)
    assert len(lines_of(run_copy)) == 24  # every line parses


@pytest.mark.usefixtures("data_root")  # skipped, not failed, where the shared data is absent
def test_a_full_disk_stops_the_run_and_a_rerun_completes_it(
    tmp_path: Path, tiny_model_dir: Path, tiny_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    settings = config(tiny_model_dir, out, datasets=["pubmedqa"], strategies=["direct"])
    writes: list[int] = []
    real = RecordStore._write_all

    def full_on_second_write(fd: int, payload: bytes) -> None:
        writes.append(len(payload))
        (real if len(writes) == 1 else fail_half_way)(fd, payload)

    monkeypatch.setattr(RecordStore, "_write_all", staticmethod(full_on_second_write))
    with pytest.raises(RecordsWriteError, match="intact"):
        run_bench(settings, engine=tiny_engine, progress=False)
    assert len(lines_of(out)) == 3  # the first chunk, complete; nothing of the second
    monkeypatch.setattr(RecordStore, "_write_all", staticmethod(real))
    outcome = run_bench(settings, engine=tiny_engine, progress=False)
    assert (outcome.reused, outcome.computed) == (3, 1)


class InterruptingEngine(FaultyEngine):
    """Ctrl-C arrives during the second engine call."""

    def _maybe_fail(self, prompts: Sequence[ChatPrompt]) -> None:
        self.calls += 1
        if self.calls == 2:
            raise KeyboardInterrupt


@pytest.mark.usefixtures("data_root")  # skipped, not failed, where the shared data is absent
def test_ctrl_c_keeps_finished_chunks_and_is_not_retried(tmp_path: Path, tiny_model_dir: Path, tiny_engine: Engine) -> None:
    out = tmp_path / "run"
    settings = config(tiny_model_dir, out, datasets=["pubmedqa"], strategies=["direct"], chunk_size=2)
    engine = InterruptingEngine(tiny_engine)
    with pytest.raises(KeyboardInterrupt):
        run_bench(settings, engine=engine, progress=False)
    assert engine.calls == 2 and len(lines_of(out)) == 2  # the first chunk is kept; Ctrl-C is not an engine fault
    assert json.loads((out / "run.json").read_text())["sessions"][-1]["status"] == "interrupted"
    assert run_bench(settings, engine=tiny_engine, progress=False).computed == 2


def test_bad_input_gives_one_line_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in (
        (["--dataset", "pubmedqa", "nosuch"], "unknown dataset 'nosuch'"),
        (["--strategy", "direct", "guess"], "unknown strategy 'guess'"),
        (["--data-root", str(tmp_path / "empty")], "no ori_pqal.json"),
    ):
        (tmp_path / "empty").mkdir(exist_ok=True)
        assert main(["bench", *argv, "--out", str(tmp_path / "run"), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
        assert not (tmp_path / "run").exists()


def test_malformed_rows_stop_the_run_unless_skipping_is_asked_for(
    tmp_path: Path, tiny_model_dir: Path, data_root: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    lines = (data_root / "medmcqa" / "test.jsonl").read_text().splitlines()[:8]
    lines[4] = lines[4][: len(lines[4]) // 2]  # a row torn in the middle
    lines[6] = json.dumps({**json.loads(lines[6]), "answer_idx": "E"})  # a gold label that is not an option
    root = tmp_path / "data"
    (root / "medmcqa").mkdir(parents=True)
    (root / "medmcqa" / "test.jsonl").write_text("\n".join(lines) + "\n")
    argv = ["bench", "--model", str(tiny_model_dir), "--dataset", "medmcqa", "--strategy", "direct", "--limit", "3", "--no-progress"]
    argv += ["--data-root", str(root)]
    assert main([*argv, "--out", str(tmp_path / "strict")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "medmcqa/test.jsonl line 5: invalid JSON" in err and "--skip-invalid" in err
    assert main([*argv, "--out", str(tmp_path / "lenient"), "--skip-invalid"]) == 0
    assert len(lines_of(tmp_path / "lenient")) == 3
    assert "medmcqa: skipped 2 invalid rows in medmcqa/test.jsonl (first: line 5" in caplog.text  # counted, not dropped silently


def test_report_puts_runs_side_by_side(base_run: Path, run_copy: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    page = compare_runs([base_run, run_copy])
    assert "run 1" in page and "run 2" in page
    assert "| pubmedqa | voc | 2 - 1 | 4 | 0.0 |" in page  # the same answers: no difference
    assert main(["report", str(base_run), str(run_copy), "--out", str(tmp_path / "side.md")]) == 0
    assert (tmp_path / "side.md").read_text() == page


# --- kill -9 in the middle of a run, then resume ------------------------------------------------------------------


def wait_for(condition: Callable[[], bool], timeout: float, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"voc bench ended (code {process.returncode}) before it could be killed: {log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("no records appeared in time")
        time.sleep(0.02)


def complete_lines(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    data = path.read_bytes()
    return [json.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines()]


def test_kill_9_then_rerun_keeps_finished_records_and_completes(tiny_model_dir: Path, data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "voc",
        "bench",
        "--model",
        str(tiny_model_dir),
        "--dataset",
        "pubmedqa",
        "--strategy",
        "direct",
        "cot",
        "--limit",
        "8",
        "--max-tokens",
        "16",
        "--chunk-size",
        "2",
        "--batch-size",
        "2",
        "--out",
        str(out),
        "--no-progress",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = tmp_path / "stderr.txt"
    with open(log, "w") as stderr:
        process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    records = out / RECORDS_FILE
    wait_for(lambda: len(complete_lines(records)) >= 2, 240, process, log)
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    before = complete_lines(records)
    assert 2 <= len(before) < 16, "the run finished before it was killed; give it more work"
    rerun = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    after = complete_lines(records)
    assert records.read_bytes().endswith(b"\n")
    by_id = {r["record_id"]: r for r in after}
    assert all(by_id.get(r["record_id"]) == r for r in before)  # finished records kept as they were
    keys = [(r["strategy"], r["question_id"]) for r in after]
    assert len(keys) == len(set(keys)) == 16  # nothing computed twice, nothing missing
    assert f"{16 - len(before)} answered, {len(before)} reused" in rerun.stdout
    assert (out / "report.md").is_file()
