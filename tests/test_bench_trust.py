"""voc bench results that cannot come from a stale or leaked configuration (issue 11): the model is identified by its
content, resumed records must match the current prompts, only errors that can pass are retried, --force never
overwrites set-aside records, and dataset rows with repeated option texts are kept and counted."""

from __future__ import annotations

import errno
import json
import shutil
import socket
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import pytest
from jinja2 import TemplateSyntaxError
from jinja2.exceptions import SecurityError

from voc.bench import BenchConfig, BenchError, RunFingerprint, RunFolder, run_bench
from voc.bench.records import RECORDS_FILE, ResultRecord, latest_by_key
from voc.bench.runner import answer_chunk, is_transient, plan_questions
from voc.cli import main
from voc.engines.base import ChatPrompt, Engine, Generation, PromptTooLongError, SamplingParams, Scores
from voc.engines.openai import ServerError
from voc.models import FULL_HASH_LIMIT, file_digest, model_fingerprint
from voc.prompts import TemplateVariableError
from voc.types import Answer, Question

# --- the model is identified by content -------------------------------------------------------------------------


def settings(model: Path, out: Path, **changes: object) -> BenchConfig:
    base: dict[str, object] = dict(
        model=str(model), datasets=["pubmedqa"], strategies=["direct"], limit=3, max_tokens=4, chunk_size=3, out=str(out)
    )
    base.update(changes)
    return BenchConfig(**base)  # type: ignore[arg-type]


def bench_argv(model: Path, out: Path) -> list[str]:
    return ["bench", "--model", str(model), "--dataset", "pubmedqa", "--strategy", "direct", "--limit", "3", "--max-tokens", "4",
            "--chunk-size", "3", "--out", str(out), "--no-progress"]  # fmt: skip


@pytest.fixture
def own_model(tmp_path: Path) -> Path:
    """A tiny model folder of this test's own, so that it can be re-trained (rewritten) in place."""
    from tests.tiny_model import build_tiny_llama

    return build_tiny_llama(tmp_path / "model", seed=0)


@pytest.mark.usefixtures("data_root")
def test_retraining_a_model_into_the_same_folder_is_a_changed_configuration(
    own_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.tiny_model import build_tiny_llama

    out = tmp_path / "run"
    assert main(bench_argv(own_model, out)) == 0
    before = (out / RECORDS_FILE).read_bytes()
    assert json.loads((out / "fingerprint.json").read_text())["model"] == model_fingerprint(own_model)
    shutil.rmtree(own_model)
    build_tiny_llama(own_model, seed=1)  # the same path, config and tokenizer; other weights
    capsys.readouterr()
    assert main(bench_argv(own_model, out)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("voc: error:")
    assert "another configuration (changed: model)" in err and "--force" in err
    assert (out / RECORDS_FILE).read_bytes() == before  # nothing was reused, nothing was lost
    with pytest.raises(BenchError, match=r"\(changed: model\)"):
        run_bench(settings(own_model, out), progress=False)


@pytest.mark.usefixtures("data_root")
def test_the_same_model_in_another_folder_resumes(tiny_model_dir: Path, tiny_engine: Engine, tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = run_bench(settings(tiny_model_dir, out), engine=tiny_engine, progress=False)
    assert (first.computed, first.reused) == (3, 0)
    moved = tmp_path / "elsewhere" / "copy-of-the-model"
    shutil.copytree(tiny_model_dir, moved)
    (moved / "README.md").write_text("notes are not model content\n")
    again = run_bench(settings(moved, out), engine=tiny_engine, progress=False)
    assert (again.computed, again.reused, again.stale) == (0, 3, 0)
    assert model_fingerprint(moved) == model_fingerprint(tiny_model_dir)


def test_model_fingerprint_covers_tokenizer_chat_template_and_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    base = model_fingerprint(tiny_model_dir)
    assert base.startswith("sha256:") and model_fingerprint("org/some-hub-model") == "org/some-hub-model"
    for name, change in (
        ("tokenizer_config.json", lambda text: text.replace("}", ', "model_max_length": 77}', 1)),
        ("config.json", lambda text: text.replace("}", ', "voc_test": 1}', 1)),
    ):
        copy = tmp_path / name
        shutil.copytree(tiny_model_dir, copy)
        (copy / name).write_text(change((copy / name).read_text()))
        assert model_fingerprint(copy) != base, name
    extra = tmp_path / "template"
    shutil.copytree(tiny_model_dir, extra)
    (extra / "chat_template.jinja").write_text("{{ messages }}")
    assert model_fingerprint(extra) != base
    bin_copy = tmp_path / "trainer-leftovers"
    shutil.copytree(tiny_model_dir, bin_copy)
    (bin_copy / "training_args.bin").write_bytes(b"not weights")
    assert model_fingerprint(bin_copy) == base


def test_large_weight_files_are_sampled_at_the_edges_header_and_throughout(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    size = FULL_HASH_LIMIT + 5 * 2**20
    header = b'{"w": {"dtype": "BF16", "shape": [1], "data_offsets": [0, 2]}}'
    with path.open("wb") as handle:
        handle.write(len(header).to_bytes(8, "little") + header)
        handle.truncate(size)
    base = file_digest(path, sampled=True)

    def digest_after(offset: int) -> str:
        copy = tmp_path / f"changed-{offset}.safetensors"
        shutil.copy(path, copy)
        with copy.open("r+b") as handle:
            handle.seek(offset)
            handle.write(b"\x01")
        return file_digest(copy, sampled=True)

    assert digest_after(20) != base  # the header
    assert digest_after(size - 1) != base  # the last MiB
    step = (size - 2 * 2**20) // 65
    assert digest_after(2**20 + 10 * step + 5) != base  # one of the slices in between
    assert file_digest(path, sampled=True) == base


# --- prompt hashes are checked on resume --------------------------------------------------------------------------


class CountingEngine(Engine):
    """Passes calls to a real engine, counting generate/score calls; `suffix` changes what `render` returns (as a
    changed chat template would)."""

    def __init__(self, inner: Engine, suffix: str = "") -> None:
        super().__init__()
        self.inner, self.suffix = inner, suffix
        self.model_name, self.max_model_len = inner.model_name, inner.max_model_len
        self.questions_scored = 0

    def generate(self, prompts: Sequence[ChatPrompt], params: SamplingParams) -> list[Generation]:
        return self.inner.generate(prompts, params)

    def score(self, prompts: Sequence[ChatPrompt], candidates: Sequence[Sequence[str]]) -> list[Scores]:
        self.questions_scored += len(prompts)
        return self.inner.score(prompts, candidates)

    def render(self, prompt: ChatPrompt) -> str:
        return self.inner.render(prompt) + self.suffix

    def encode(self, text: str) -> list[int]:
        return self.inner.encode(text)


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / RECORDS_FILE).read_text().splitlines()]


@pytest.mark.usefixtures("data_root")
def test_resume_recomputes_records_whose_prompt_hash_differs(tiny_model_dir: Path, tiny_engine: Engine, tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = settings(tiny_model_dir, out, strategies=["direct", "voc"])
    assert run_bench(config, engine=tiny_engine, progress=False).computed == 6
    lines = (out / RECORDS_FILE).read_text().splitlines()
    tampered = json.loads(lines[1])
    tampered["prompt_hash"] = "0" * 64  # a record made from other prompts
    lines[1] = json.dumps(tampered)
    (out / RECORDS_FILE).write_text("\n".join(lines) + "\n")

    counting = CountingEngine(tiny_engine)
    outcome = run_bench(config, engine=counting, progress=False)
    assert (outcome.stale, outcome.computed, outcome.reused) == (1, 1, 5)
    assert counting.questions_scored == 1  # only that question was answered again
    latest = latest_by_key(ResultRecord.model_validate(r) for r in rows(out))
    redone = latest[(tampered["dataset"], tampered["strategy"], tampered["question_id"])]
    assert redone.prompt_hash != tampered["prompt_hash"] and redone.session != tampered["session"]
    info = json.loads((out / "run.json").read_text())
    assert info["sessions"][-1]["stale_prompt_hash"] == 1
    assert "Recomputed on resume: 1 earlier result" in (out / "report.md").read_text()

    same = run_bench(config, engine=CountingEngine(tiny_engine), progress=False)
    assert (same.stale, same.computed, same.reused) == (0, 0, 6)
    # the engine renders prompts differently now (say its chat template changed): nothing earlier is reused
    changed = CountingEngine(tiny_engine, suffix=" ")
    outcome = run_bench(config, engine=changed, progress=False)
    assert (outcome.stale, outcome.computed, outcome.reused) == (6, 6, 0)


def test_a_stale_success_is_superseded_even_by_an_error() -> None:
    def record(phash: str, label: str | None) -> ResultRecord:
        return ResultRecord(question_id="q", dataset="d", strategy="direct", labels=["A", "B"], label=label,
                            error=None if label else "RuntimeError: boom", prompt_hash=phash)  # fmt: skip

    ok = record("a", "A")
    assert latest_by_key([ok, record("a", None)])[("d", "direct", "q")] is ok  # a transient failure of the same prompt
    newer = record("b", None)
    assert latest_by_key([ok, newer])[("d", "direct", "q")] is newer  # the success came from other prompts


# --- retries: only errors that can pass ---------------------------------------------------------------------------


def questions(n: int) -> list[Question]:
    return [Question(question=f"Question {i}?", options=["yes", "no"], id=f"q{i}") for i in range(n)]


def fake_answer_batch(fail: Callable[[list[Question], int], BaseException | None]) -> tuple[Callable[[list[Question]], list[Answer]], list]:
    """An answer_batch that raises `fail(questions, call number)` when it is not None; returns it and its call log."""
    calls: list[list[str]] = []

    def answer_batch(batch: list[Question]) -> list[Answer]:
        calls.append([q.id for q in batch])
        error = fail(batch, len(calls))
        if error is not None:
            raise error
        return [Answer(question_id=q.id, strategy="direct", label="A", choice="yes", probabilities={"A": 0.6, "B": 0.4}) for q in batch]

    return answer_batch, calls


DETERMINISTIC = [
    PromptTooLongError("question q0: the question and options alone need 900 tokens"),
    TemplateVariableError("template direct.jinja line 3 (block 'user'): 'questoin' is undefined"),
    ValueError("a candidate continuation is empty"),
    KeyError("A"),
    TypeError("unsupported operand"),
    TemplateSyntaxError("unexpected '}'", 3),
    SecurityError("access to attribute '__class__' of 'str' object is unsafe"),
    FileNotFoundError(errno.ENOENT, "No such file or directory"),
    NotImplementedError("score"),
    ServerError("the server at http://h/v1 does not serve 'x'; it serves ['y']"),
    ServerError("POST http://h/v1/completions failed with HTTP 400: bad request", 400),
    httpx.HTTPStatusError("404", request=httpx.Request("GET", "http://h"), response=httpx.Response(404)),
]
TRANSIENT = [
    RuntimeError("the vllm engine is closed; start a new one"),
    MemoryError(),
    ConnectionError("cannot reach the OpenAI-compatible server"),
    ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
    TimeoutError("timed out"),
    socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"),
    OSError(errno.EPIPE, "Broken pipe"),
    httpx.ConnectError("refused"),
    httpx.ReadTimeout("slow"),
    httpx.HTTPStatusError("503", request=httpx.Request("GET", "http://h"), response=httpx.Response(503)),
    ServerError("POST http://h/v1/completions failed with HTTP 502: bad gateway", 502),
    TimeoutError("the server at http://h/v1 did not answer in time (read timeout); raise timeout= or check it"),
]


@pytest.mark.parametrize("error", DETERMINISTIC, ids=lambda e: type(e).__name__)
def test_a_deterministic_error_is_recorded_once_and_not_rerun(error: BaseException) -> None:
    assert not is_transient(error)
    answer_batch, calls = fake_answer_batch(lambda batch, n: error)
    outcome = answer_chunk(answer_batch, questions(1))
    assert len(calls) == 1 and outcome.attempts == [1]
    assert outcome.answers == [f"{type(error).__name__}: {' '.join(str(error).split())}".rstrip(": ")]


@pytest.mark.parametrize("error", TRANSIENT, ids=lambda e: type(e).__name__)
def test_an_error_that_can_pass_is_retried(error: BaseException) -> None:
    assert is_transient(error)
    answer_batch, calls = fake_answer_batch(lambda batch, n: error if n == 1 else None)
    outcome = answer_chunk(answer_batch, questions(3))
    assert len(calls) == 2 and outcome.attempts == [2, 2, 2] and all(isinstance(a, Answer) for a in outcome.answers)
    always, calls = fake_answer_batch(lambda batch, n: error)
    outcome = answer_chunk(always, questions(1))
    assert len(calls) == 2 and outcome.attempts == [2] and isinstance(outcome.answers[0], str)


def test_one_deterministic_failure_in_a_chunk_costs_no_chunk_retry() -> None:
    bad = PromptTooLongError("question q1: too long")
    answer_batch, calls = fake_answer_batch(lambda batch, n: bad if any(q.id == "q1" for q in batch) else None)
    outcome = answer_chunk(answer_batch, questions(3))
    assert calls == [["q0", "q1", "q2"], ["q0"], ["q1"], ["q2"]]  # no second try of the chunk: each question alone once
    assert [isinstance(a, Answer) for a in outcome.answers] == [True, False, True]
    assert outcome.answers[1] == "PromptTooLongError: question q1: too long" and outcome.attempts == [2, 2, 2]
    flaky, calls = fake_answer_batch(lambda batch, n: RuntimeError("engine died"))
    outcome = answer_chunk(flaky, questions(3))
    assert len(calls) == 2 + 3 and outcome.attempts == [3, 3, 3]  # the chunk twice, then each question alone


# --- --force twice in one second ----------------------------------------------------------------------------------


def fingerprint(seed: int) -> RunFingerprint:
    return RunFingerprint(model="sha256:m", engine="hf", datasets=["d"], questions={"d": "h"}, limit=None, seed=seed, params={},
                          templates_hash="t", final_rule="combined")  # fmt: skip


def test_two_forced_runs_in_the_same_second_keep_both_set_aside_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("voc.bench.records.aside_stamp", lambda: "20261125T101500")  # the clock does not move
    folder = RunFolder(tmp_path / "run")
    contents = []
    for seed in range(3):
        folder.claim(fingerprint(seed), force=True)
        record = ResultRecord(question_id=f"q{seed}", dataset="d", strategy="direct", labels=["A", "B"], label="A")
        folder.records.append([record])
        contents.append(folder.records.path.read_bytes())
    folder.claim(fingerprint(9), force=True)
    aside = sorted(folder.path.glob("records.*.jsonl"))
    assert [p.name for p in aside] == [f"records.20261125T101500{n}.jsonl" for n in (".1", ".2", "")]
    assert {p.read_bytes() for p in aside} == set(contents)
    assert not folder.records.exists()


# --- repeated option texts: kept, flagged and counted -------------------------------------------------------------


def test_medmcqa_plans_every_row_and_flags_the_repeated_options(data_root: Path, tmp_path: Path) -> None:
    plan = plan_questions(BenchConfig(datasets=["medmcqa"], data_root=str(data_root), out=str(tmp_path)))
    assert len(plan["medmcqa"]) == 2816 and sum(1 for q in plan["medmcqa"] if q.duplicate_options) == 14


def test_the_report_counts_flagged_questions(
    data_root: Path, tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = (data_root / "medmcqa" / "test.jsonl").read_text().splitlines()
    flagged = [line for line in lines if len(set(json.loads(line)["options"].values())) < 4]
    assert len(flagged) == 14
    root = tmp_path / "data"
    (root / "medmcqa").mkdir(parents=True)
    (root / "medmcqa" / "test.jsonl").write_text("\n".join(lines[:6] + flagged) + "\n")
    out = tmp_path / "run"
    argv = ["bench", "--model", str(tiny_model_dir), "--dataset", "medmcqa", "--strategy", "direct", "--data-root", str(root),
            "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert "medmcqa: 14 question(s) have options with the same text" in capsys.readouterr().out
    records = rows(out)
    assert len(records) == 20 and sum(1 for r in records if r["duplicate_options"]) == 14
    assert all(r["label"] in r["labels"] for r in records)  # answered like any other question
    assert json.loads((out / "results.json").read_text())["run"]["duplicate_options"] == {"medmcqa": 14}
    assert "same text; kept, since answers are scored by label): medmcqa 14" in (out / "report.md").read_text()
