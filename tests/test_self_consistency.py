"""Self-consistency (`samples=N`): the hf engine's per-sample seeding on the tiny model, averaging against the majority
vote on hand-made path scores (cot and voc through a scripted engine), composition with permutations, and
`voc bench --samples` on the tiny model (records keep every path, resume recomputes nothing, the report)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.text_engine import TextEngine
from voc import VoC
from voc.bench import metrics
from voc.bench.runner import answer_record
from voc.engines.base import ChatPrompt, Continuation, Generation, SamplingParams, Scores, sample_seed
from voc.engines.hf import HFEngine
from voc.selfconsistency import agreement, check_samples, majority_vote, mean_probabilities
from voc.strategies import make_strategy
from voc.types import Question

TWO = Question(question="Which organ makes insulin?", options={"A": "liver", "B": "pancreas"}, gold="B", id="two")
SAMPLED = SamplingParams(max_tokens=8, temperature=1.0, seed=11)


# --- the hf engine's seeding, on the tiny model ------------------------------------------------------------------------


def prompts() -> list[ChatPrompt]:
    return [
        ChatPrompt(({"role": "user", "content": "Name an organ of the body and say what it does."},), "Answer:"),
        ChatPrompt(({"role": "user", "content": "What does insulin do? " * 6},), "It"),
    ]


def texts(generations: Sequence[Generation]) -> list[str]:
    return [g.text for g in generations]


def test_hf_samples_repeat_with_their_seed_and_differ_with_another(tiny_engine: HFEngine) -> None:
    import torch

    params = SAMPLED.model_copy(update={"n": 3})
    first = tiny_engine.generate(prompts(), params)
    assert len(first) == 6 and all(g.completion_tokens > 0 for g in first)
    torch.manual_seed(987)  # the global random state must not matter
    assert texts(tiny_engine.generate(prompts(), params)) == texts(first)
    assert len(set(texts(first[:3]))) > 1  # the paths of one prompt differ from each other
    other = tiny_engine.generate(prompts(), params.model_copy(update={"seed": 12}))
    assert texts(other) != texts(first)
    # sample j of prompt i is drawn with seed + i * n + j whatever else is in the call: prompt 1 asked alone with the seed
    # that puts it where it stood gives the same paths
    alone = tiny_engine.generate(prompts()[1:], params.model_copy(update={"seed": sample_seed(11, 1, 3)}))
    assert texts(alone) == texts(first[3:])
    # the n copies of a prompt share one prefill: the prompt's tokens are run once, not three times
    run = tiny_engine.stats.extra["prompt_tokens_run"]
    tiny_engine.generate(prompts()[:1], params)
    prompt_len = first[0].prompt_tokens
    assert tiny_engine.stats.extra["prompt_tokens_run"] - run <= prompt_len + 3


def test_samples_need_a_temperature_and_a_whole_number() -> None:
    with pytest.raises(ValueError, match="temperature above 0"):
        SamplingParams(n=3)
    with pytest.raises(ValueError, match="temperature above 0"):
        VoC(engine=ScriptedEngine({}), strategy="cot", samples=3)
    with pytest.raises(ValueError, match="disagree"):
        VoC(engine=ScriptedEngine({}), strategy="cot", samples=3, params=SamplingParams(temperature=1.0, n=2))
    for bad, error in ((0, ValueError), (2.5, TypeError), (True, TypeError)):
        with pytest.raises(error, match="samples must be"):
            check_samples(bad)


# --- averaging against the majority vote, by hand ----------------------------------------------------------------------


def test_mean_and_majority_on_hand_made_paths() -> None:
    labels = ["A", "B", "C"]
    paths = [{"A": 0.4, "B": 0.6, "C": 0.0}, {"A": 0.4, "B": 0.6, "C": 0.0}, {"A": 0.99, "B": 0.01, "C": 0.0}]
    mean = mean_probabilities(labels, paths)
    assert mean == pytest.approx({"A": 0.5967, "B": 0.4033, "C": 0.0}, abs=1e-4)
    assert max(labels, key=mean.__getitem__) == "A"  # the average trusts the one sure path
    assert majority_vote(labels, ["B", "B", "A"], mean) == "B"  # the vote counts heads
    assert majority_vote(labels, ["A", "B"], {"A": 0.3, "B": 0.7, "C": 0.0}) == "B"  # a tie goes to the higher mean
    assert majority_vote(labels, ["C", "A"], {"A": 0.5, "B": 0.0, "C": 0.5}) == "A"  # then to the earlier option
    assert agreement(["B", "B", "A"], "B") == pytest.approx(2 / 3)


class ScriptedEngine(TextEngine):
    """Generates `path <j>` for sample j of every prompt and scores each candidate by the path it follows:
    `script[j]` maps an option label (the candidate's text) to a log-probability; verdict candidates tie."""

    max_model_len = 100_000

    def __init__(self, script: dict[int, dict[str, float]]) -> None:
        super().__init__()
        self.script = script
        self.calls: list[tuple[str, int]] = []

    def generate(self, prompts: Sequence[ChatPrompt], params: SamplingParams) -> list[Generation]:
        self.calls.append(("generate", len(prompts) * params.n))
        return [Generation(text=f"path {j}", prompt_tokens=5, completion_tokens=2) for _ in prompts for j in range(params.n)]

    def score(self, prompts: Sequence[ChatPrompt | Continuation], candidates: Sequence[Sequence[str]]) -> list[Scores]:
        self.calls.append(("score", len(prompts)))
        results = []
        for prompt, cands in zip(prompts, candidates, strict=True):
            text = self.render(prompt)
            path = int(text.rsplit("path ", 1)[1][0]) if "path " in text else 0
            results.append(Scores([self.script.get(path, {}).get(c.strip(), 0.0) for c in cands], prompt_tokens=3))
        return results


# path 0 and 1 lean to B (0.6), path 2 is sure of A (0.99): mean A 0.597, majority B
SCRIPT = {0: {"A": -0.9163, "B": -0.5108}, 1: {"A": -0.9163, "B": -0.5108}, 2: {"A": -0.01005, "B": -4.6052}}


def test_cot_averages_its_paths_and_reports_the_majority_beside() -> None:
    engine = ScriptedEngine(SCRIPT)
    answer = VoC(engine=engine, strategy="cot", samples=3, params=SamplingParams(temperature=0.7, max_tokens=4)).answer(TWO)
    assert engine.calls == [("generate", 3), ("score", 3)]  # every path of the round in one engine call
    assert [s.label for s in answer.samples] == ["B", "B", "A"]
    assert [s.completions for s in answer.samples] == [["path 0"], ["path 1"], ["path 2"]]
    assert answer.samples[0].probabilities == pytest.approx({"A": 0.4, "B": 0.6}, abs=1e-4)
    assert answer.probabilities == pytest.approx({"A": 0.5967, "B": 0.4033}, abs=1e-3)
    assert (answer.label, answer.majority, answer.correct) == ("A", "B", False)
    assert answer.completions == ["path 0", "path 1", "path 2"] and answer.completion_tokens == 6
    assert answer.choice_logprobs == pytest.approx(SCRIPT[0])  # the first path's raw label scores


def test_voc_verifies_each_option_n_times_and_chooses_once_per_path() -> None:
    engine = ScriptedEngine(SCRIPT)
    voc = VoC(engine=engine, strategy="voc", final_rule="choice", samples=3, params=SamplingParams(temperature=0.7, max_tokens=4))
    answer = voc.answer(TWO)
    assert engine.calls == [("generate", 6), ("score", 3)]  # 2 options x 3 verifications; one choose prompt per path
    assert [s.completions for s in answer.samples] == [["path 0", "path 0"], ["path 1", "path 1"], ["path 2", "path 2"]]
    assert [s.label for s in answer.samples] == ["B", "B", "A"] and (answer.label, answer.majority) == ("A", "B")
    assert answer.verifications["A"].text == "path 0"  # the first path's verifications
    combined = VoC(engine=ScriptedEngine(SCRIPT), strategy="voc", samples=2, params=SamplingParams(temperature=0.7, max_tokens=4))
    both = combined.answer(TWO)
    assert all(set(s.verdicts) == {"A", "B"} for s in both.samples)  # each path's own verdicts
    assert both.rounds == ["verify", "verdict", "choose"]


def test_direct_ignores_samples() -> None:
    """direct generates nothing: N paths would be N copies of its exact scores, so it answers once."""
    engine = ScriptedEngine(SCRIPT)
    answer = VoC(engine=engine, strategy="direct", samples=3, params=SamplingParams(temperature=0.7)).answer(TWO)
    assert engine.calls == [("score", 1)] and answer.samples == [] and answer.majority is None


def test_samples_and_permutations_compose() -> None:
    engine = ScriptedEngine(SCRIPT)
    voc = VoC(engine=engine, strategy="cot", samples=3, permutations=2, params=SamplingParams(temperature=0.7, max_tokens=4))
    answer = voc.answer(TWO)
    assert engine.calls == [("generate", 6), ("score", 6)]  # 2 orderings x 3 paths, each round one call
    # under the swapped ordering the script's labels point at the other option: paths choose A, A, B (original labels)
    assert [[s.label for s in o.samples] for o in answer.orderings] == [["B", "B", "A"], ["A", "A", "B"]]
    assert answer.probabilities == pytest.approx({"A": 0.5, "B": 0.5}, abs=1e-3)
    record = answer_record("toy", TWO, answer)
    votes = metrics.path_choices(record)
    assert votes == ["B", "B", "A", "A", "A", "B"]  # every ordering's paths vote
    assert answer.majority == majority_vote(["A", "B"], votes, answer.probabilities)  # 3 each: the tie goes to the higher mean


def test_one_path_is_the_plain_strategy(tiny_engine: HFEngine) -> None:
    questions = [TWO, Question(question="Is aspirin an anticoagulant?", options=["yes", "no", "maybe"], context="COX-1.", id="q2")]
    for strategy in ("cot", "voc"):
        plain = make_strategy(strategy, params=SamplingParams(max_tokens=6)).run(questions, tiny_engine)
        one = VoC(engine=tiny_engine, strategy=strategy, samples=1, params=SamplingParams(max_tokens=6)).answer_batch(questions)
        assert [a.model_dump() for a in one] == [a.model_dump() for a in plain]
        assert all(a.samples == [] and a.majority is None for a in one)


# --- voc bench --samples on the tiny model --------------------------------------------------------------------------


def test_bench_with_samples_records_every_path_resumes_and_reports(
    tmp_path: Path, tiny_model_dir: Path, tiny_engine: HFEngine, data_root: Path
) -> None:
    from voc.bench import BenchConfig, BenchError, run_bench
    from voc.bench.records import RunFolder

    settings = dict(
        model=str(tiny_model_dir), datasets=["pubmedqa"], strategies=["direct", "cot", "voc"], limit=3, max_tokens=3,
        temperature=0.8, out=str(tmp_path / "run"),
    )  # fmt: skip
    outcome = run_bench(BenchConfig(**settings, samples=2), engine=tiny_engine, progress=False)  # type: ignore[arg-type]
    assert (outcome.computed, outcome.errors) == (9, 0)
    records = RunFolder(tmp_path / "run").records.load()
    for r in records:
        if r.strategy == "direct":
            assert r.samples == [] and r.majority is None
            continue
        assert len(r.samples) == 2 and r.majority in "ABC"
        mean = {lab: sum(s.probabilities[lab] for s in r.samples) / 2 for lab in "ABC"}
        assert r.probabilities == pytest.approx(mean)
        assert len(r.completions) == (2 if r.strategy == "cot" else 6) and all(s.completions for s in r.samples)
    fingerprint = json.loads((tmp_path / "run" / "fingerprint.json").read_text())
    assert fingerprint["samples"] == 2 and "n" not in fingerprint["params"]
    again = run_bench(BenchConfig(**settings, samples=2), engine=tiny_engine, progress=False)  # type: ignore[arg-type]
    assert (again.computed, again.reused) == (0, 9)  # nothing recomputed on resume
    with pytest.raises(BenchError, match="samples"):
        run_bench(BenchConfig(**settings, samples=3), engine=tiny_engine, progress=False)  # type: ignore[arg-type]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Self-consistency" in report and "2 sampled paths per question" in report
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    by_strategy = {r["strategy"]: r for r in results["results"] if r["group"] == "pubmedqa"}
    assert by_strategy["direct"]["consistency"] is None and by_strategy["cot"]["consistency"]["samples"] == 2


def test_samples_without_a_temperature_on_the_command_line_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from voc.cli import main

    assert main(["bench", "--samples", "3", "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--samples 3 needs --temperature" in err
    assert not (tmp_path / "run").exists()
