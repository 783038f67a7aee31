"""The Python API `VoC` and the `voc answer` command, on the tiny model and on the embedded default."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from voc import SamplingParams, VoC
from voc.cli import main
from voc.engines.base import Engine
from voc.types import Question

PARAMS = SamplingParams(max_tokens=6)


def test_answer_takes_a_list_or_a_dict_of_options(tiny_engine: Engine) -> None:
    voc = VoC(engine=tiny_engine, strategy="direct")
    listed = voc.answer("Is aspirin an anticoagulant?", ["yes", "no", "maybe"])
    keyed = voc.answer("Is aspirin an anticoagulant?", {"A": "yes", "B": "no", "C": "maybe"})
    assert listed.label in {"A", "B", "C"} and listed.choice == {"A": "yes", "B": "no", "C": "maybe"}[listed.label]
    assert listed.probabilities == keyed.probabilities


def test_answer_batch_equals_answering_one_by_one(tiny_engine: Engine) -> None:
    voc = VoC(engine=tiny_engine, strategy="voc", params=PARAMS)
    questions = [
        Question(question="Is the liver an organ?", options=["yes", "no"]),
        Question(question="Which is a bone?", options=["femur", "aorta", "retina"], context="Anatomy basics."),
    ]
    together = voc.answer_batch(questions)
    alone = [voc.answer(q) for q in questions]
    assert [a.label for a in together] == [a.label for a in alone]
    for a, b in zip(together, alone, strict=True):
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-3)
        assert [v.text for v in a.verifications.values()] == [v.text for v in b.verifications.values()]
    assert voc.answer_batch([]) == []


def test_one_voc_answers_with_another_strategy_and_params_per_call(tiny_engine: Engine) -> None:
    voc = VoC(engine=tiny_engine, strategy="direct")  # one object, one loaded model
    question = Question(question="Which is a bone?", options=["femur", "aorta", "retina"])
    short, sampled = SamplingParams(max_tokens=3), SamplingParams(max_tokens=5, temperature=0.8, seed=1, n=2)
    direct = voc.answer(question)
    cot = voc.answer(question, strategy="cot", params=short)
    verified = voc.answer_batch([question], "voc", sampled)[0]
    assert (direct.strategy, cot.strategy, verified.strategy) == ("direct", "cot", "voc")
    assert direct.completions == [] and cot.completion_tokens <= 3
    assert len(verified.samples) == 2 and verified.completion_tokens <= 2 * 3 * 5  # n paths, each option's budget 5
    own = VoC(engine=tiny_engine, strategy="cot", params=short).answer(question)  # as an object made for that strategy
    assert cot.completions == own.completions and cot.probabilities == pytest.approx(own.probabilities)
    assert voc.answer(question).strategy == "direct" and voc.strategy_for("cot", short) is voc.strategy_for("cot", short)


def test_answer_shows_no_loading_progress_bars_without_verbose(tiny_model_dir: Path) -> None:
    command = [sys.executable, "-m", "voc", "answer", "Is aspirin an anticoagulant?", "-o", "yes", "-o", "no",
               "--model", str(tiny_model_dir), "--max-tokens", "4"]  # fmt: skip
    quiet = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "Answer: " in quiet.stdout and "%|" not in quiet.stdout + quiet.stderr and "Loading" not in quiet.stderr
    verbose = subprocess.run([*command, "-v"], capture_output=True, text=True, timeout=600, check=False)
    assert verbose.returncode == 0 and "voc: verify" in verbose.stderr  # -v shows the round bars (and the libraries' output)
    assert verbose.stdout == quiet.stdout


def test_api_misuse_gets_clear_errors(tiny_engine: Engine) -> None:
    voc = VoC(engine=tiny_engine, strategy="direct")
    with pytest.raises(ValueError, match="options are missing"):
        voc.answer("a question without options")
    with pytest.raises(ValueError, match="not both"):
        voc.answer(Question(question="q", options=["a", "b"]), ["a", "b"])
    with pytest.raises(TypeError, match="takes Question objects, got str"):
        voc.answer_batch(["q"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="unknown engine 'tgi'"):
        VoC(engine="tgi")


def test_cli_answer_prints_json_with_verifications(tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["answer", "Is aspirin an anticoagulant?", "-o", "yes", "-o", "no", "-o", "maybe",
                 "--model", str(tiny_model_dir), "--max-tokens", "4", "--json"])
    assert code == 0
    record = json.loads(capsys.readouterr().out)
    assert record["strategy"] == "voc" and record["label"] in {"A", "B", "C"}
    assert set(record["verifications"]) == {"A", "B", "C"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["answer", "q", "-o", "only"], "at least two options"),
        (["answer", "q", "-o", "a", "-o", "a"], "same text"),
        (["answer", "q", "-o", "a", "-o", "b", "--model", "/no/such/model"], "does not exist"),
        (["answer", "q", "-o", "a", "-o", "b", "--engine", "openai"], "needs --base-url"),
    ],
)
def test_cli_bad_input_is_a_one_line_error(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("voc: error:") and message in err and "\n" not in err


@pytest.mark.slow
def test_embedded_model_answers_with_every_strategy(default_model_dir: Path) -> None:
    voc = VoC(strategy="direct", params=SamplingParams(max_tokens=24))
    question = Question(question="Is aspirin an anticoagulant?", options=["yes", "no", "maybe"])
    for strategy in ("direct", "cot", "voc"):
        answer = VoC(engine=voc.engine, strategy=strategy, params=SamplingParams(max_tokens=24)).answer(question)
        assert answer.strategy == strategy and answer.label in question.options
        assert sum(answer.probabilities.values()) == pytest.approx(1.0)
        if strategy != "direct":
            assert answer.completions and all(text.strip() for text in answer.completions)  # the real model writes text
    assert (default_model_dir / "config.json").is_file() and (default_model_dir / "model.safetensors").is_file()


@pytest.mark.slow
def test_voc_command_runs_on_the_embedded_model_as_a_user_would() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "voc", "answer", "Is aspirin an anticoagulant?", "-o", "yes", "-o", "no", "-o", "maybe",
         "--max-tokens", "16"],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "verdict P(correct)=" in result.stdout and result.stdout.count("verdict") == 3
    assert "Answer: " in result.stdout.splitlines()[-1]


@pytest.mark.slow
def test_converting_the_embedded_model_shows_no_progress_bars(default_model_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "VOC_CACHE": str(tmp_path)}  # an empty cache: the GGUF file is converted again
    result = subprocess.run(
        [sys.executable, "-m", "voc", "answer", "Is aspirin an anticoagulant?", "-o", "yes", "-o", "no", "--strategy", "direct"],
        capture_output=True, text=True, timeout=600, check=False, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Answer: " in result.stdout and "%|" not in result.stderr and "GGUF" not in result.stderr


def test_vllm_loading_bar_is_off_unless_verbose() -> None:
    """vLLM's weight-loading bar has no environment switch: `voc answer --engine vllm` turns it off unless -v."""
    from voc.cli import build_parser
    from voc.commands import engine_options

    argv = ["answer", "Is aspirin an anticoagulant?", "-o", "yes", "-o", "no", "--engine", "vllm"]
    assert engine_options(build_parser().parse_args(argv))["use_tqdm_on_load"] is False
    assert "use_tqdm_on_load" not in engine_options(build_parser().parse_args(["-v", *argv]))
    assert "use_tqdm_on_load" not in engine_options(build_parser().parse_args(argv[:-2]))  # hf: no such option
