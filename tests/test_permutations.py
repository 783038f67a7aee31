"""Option-order permutations: the orderings, the mapping back on a hand-built question, and ensembles with fake engines
whose answer depends only on the position (flip rate 1, position-free ensemble) or only on the option text (flip rate 0)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest

from tests.text_engine import TextEngine
from voc import VoC
from voc.bench import metrics
from voc.bench.runner import answer_record
from voc.engines.base import ChatPrompt, Continuation, Generation, SamplingParams, Scores
from voc.permutations import check_permutations, ensemble, map_back, orderings, original_label, permute
from voc.types import Answer, Question

ORGANS = Question(question="Which organ makes insulin?", options={"A": "liver", "B": "pancreas", "C": "kidney"}, gold="B", id="organs")
PUBMED = Question(question="Does it work?", options=["yes", "no", "maybe"], context="An abstract.", gold="B", id="pubmed")
FOUR = Question(question="Which is a vitamin?", options=["salt", "sugar", "retinol", "water"], gold="C", id="four")


# --- orderings and the mapping back, by hand ----------------------------------------------------------------------


def test_orderings_are_identity_then_cyclic_shifts_then_distinct_seeded_shuffles() -> None:
    assert orderings(3, 1) == [(0, 1, 2)]
    assert orderings(3, 3) == [(0, 1, 2), (1, 2, 0), (2, 0, 1)]
    six = orderings(3, 10)  # only 3! = 6 exist: each once
    assert len(six) == 6 and len(set(six)) == 6 and six[:3] == orderings(3, 3)
    eight = orderings(4, 8, seed=5)
    assert eight[:4] == [(0, 1, 2, 3), (1, 2, 3, 0), (2, 3, 0, 1), (3, 0, 1, 2)] and len(set(eight)) == 8
    assert all(sorted(o) == [0, 1, 2, 3] for o in eight)
    assert orderings(4, 8, seed=5) == eight and orderings(4, 8, seed=6) != eight  # seeded
    assert orderings(2, 3) == [(0, 1), (1, 0)]
    for bad, error in ((0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError)):
        with pytest.raises(error, match="permutations must be"):
            check_permutations(bad)
    with pytest.raises(ValueError, match="at least 1"):
        VoC(engine=PositionEngine(), strategy="direct", permutations=0)


def test_a_permuted_question_moves_the_texts_keeps_the_labels_and_maps_back_by_option() -> None:
    order = (2, 0, 1)  # position A shows original C (kidney), B shows A (liver), C shows B (pancreas)
    moved = permute(ORGANS, order)
    assert moved.options == {"A": "kidney", "B": "liver", "C": "pancreas"}
    assert moved.gold == "C" and moved.id == ORGANS.id and moved.question == ORGANS.question
    assert [original_label(ORGANS, order, lab) for lab in "ABC"] == ["C", "A", "B"]
    back = map_back(ORGANS, order, {"A": 0.5, "B": 0.3, "C": 0.2})  # 0.5 on kidney, 0.3 on liver, 0.2 on pancreas
    assert back == {"A": 0.3, "B": 0.2, "C": 0.5} and list(back) == ["A", "B", "C"]
    assert permute(ORGANS, (0, 1, 2)) is ORGANS
    assert permute(PUBMED, (1, 2, 0)).options == {"A": "no", "B": "maybe", "C": "yes"}  # yes/no/maybe move too
    assert permute(PUBMED, (1, 2, 0)).gold == "A"
    with pytest.raises(ValueError, match="not a permutation"):
        permute(ORGANS, (0, 0, 1))


def test_duplicate_texts_are_mapped_back_by_position_not_by_text() -> None:
    twice = Question(question="Pick one", options=["same", "other", "same"], gold="C")
    moved = permute(twice, (2, 0, 1))  # A shows original C, B shows original A
    assert moved.gold == "A" and moved.duplicate_options == [["A", "B"]]
    assert map_back(twice, (2, 0, 1), {"A": 0.6, "B": 0.1, "C": 0.3}) == {"A": 0.1, "B": 0.3, "C": 0.6}


def test_ensemble_averages_the_mapped_back_probabilities() -> None:
    def answer(probabilities: dict[str, float]) -> Answer:
        label = max(probabilities, key=lambda k: probabilities[k])
        return Answer(question_id=ORGANS.id, strategy="direct", label=label, choice="", probabilities=probabilities, prompt_tokens=10)

    orders = [(0, 1, 2), (2, 0, 1)]
    result = ensemble(ORGANS, orders, [answer({"A": 0.2, "B": 0.7, "C": 0.1}), answer({"A": 0.5, "B": 0.3, "C": 0.2})])
    # the second ordering put 0.5 on kidney (C), 0.3 on liver (A), 0.2 on pancreas (B)
    assert result.probabilities == pytest.approx({"A": 0.25, "B": 0.45, "C": 0.3})
    assert (result.label, result.choice, result.gold, result.prompt_tokens) == ("B", "pancreas", "B", 20)
    assert [(o.order, o.label) for o in result.orderings] == [([0, 1, 2], "B"), ([2, 0, 1], "C")]
    with pytest.raises(ValueError, match="identity"):
        ensemble(ORGANS, orders[::-1], [answer({"A": 0.2, "B": 0.7, "C": 0.1})] * 2)


# --- fake engines -------------------------------------------------------------------------------------------------

OPTION_LINE = re.compile(r"^([A-Z])\. (.+)$", re.MULTILINE)


class FakeEngine(TextEngine):
    """Renders prompts as plain text, generates nothing and counts the prompts of each call."""

    max_model_len = 100_000

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, int]] = []

    def generate(self, prompts: Sequence[ChatPrompt], params: SamplingParams) -> list[Generation]:
        self.calls.append(("generate", len(prompts)))
        return [Generation(text="", prompt_tokens=1, completion_tokens=0) for _ in prompts]

    def score(self, prompts: Sequence[ChatPrompt | Continuation], candidates: Sequence[Sequence[str]]) -> list[Scores]:
        self.calls.append(("score", len(prompts)))
        return [Scores(logprobs=self.logprobs(self.render(p), list(c)), prompt_tokens=1) for p, c in zip(prompts, candidates, strict=True)]

    def logprobs(self, text: str, candidates: list[str]) -> list[float]:
        raise NotImplementedError


class PositionEngine(FakeEngine):
    """Prefers the first candidate, then the second, ...: the answer depends only on the position."""

    def logprobs(self, text: str, candidates: list[str]) -> list[float]:
        return [-float(j) for j in range(len(candidates))]


class ContentEngine(FakeEngine):
    """Prefers the label shown with the text `favourite`, whatever its position; other candidates (verdicts) tie."""

    favourite = ("pancreas", "no", "retinol")

    def logprobs(self, text: str, candidates: list[str]) -> list[float]:
        shown = dict(OPTION_LINE.findall(text))
        return [0.0 if shown.get(c.strip()) in self.favourite else -3.0 if c.strip() in shown else 0.0 for c in candidates]


# --- ensembles over fake engines ----------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["direct", "cot", "voc"])
def test_a_model_that_answers_by_position_flips_every_time_and_its_ensemble_is_position_free(strategy: str) -> None:
    questions = [ORGANS, PUBMED, FOUR]
    engine = PositionEngine()
    voc = VoC(engine=engine, strategy=strategy, permutations=4, params=SamplingParams(max_tokens=4))
    answers = voc.answer_batch(questions)
    rounds = {"direct": 1, "cot": 2, "voc": 3}[strategy]
    assert len(engine.calls) == rounds  # every ordering of every question in one engine call per round
    first_round = sum(4 * (len(q.options) if strategy == "voc" else 1) for q in questions)  # voc: one verification per option
    assert engine.calls[0][1] == first_round
    for question, answer in zip(questions, answers, strict=True):
        n = len(question.options)
        assert answer.question_id == question.id and len(answer.orderings) == 4
        assert [o.label for o in answer.orderings][:n] == [question.labels[s] for s in range(n)]  # the first position each time
        if n == 4:  # K = n cyclic shifts: every option once at every position, so the mean is uniform
            assert answer.probabilities == pytest.approx(dict.fromkeys(question.labels, 1 / n))
        assert sum(answer.probabilities.values()) == pytest.approx(1.0)
    records = [answer_record("toy", q, a) for q, a in zip(questions, answers, strict=True)]
    order = metrics.order_robustness(records)
    assert order is not None and order.flip_rate == 1.0 and order.circular_accuracy == 0.0 and order.orderings == 4
    # position-free: the same question with its options given in another order gets the same ensemble per option text
    shuffled = permute(FOUR, (3, 1, 0, 2))
    again = VoC(engine=PositionEngine(), strategy=strategy, permutations=4, params=SamplingParams(max_tokens=4)).answer(shuffled)
    by_text = {FOUR.options[lab]: p for lab, p in answers[2].probabilities.items()}
    assert {shuffled.options[lab]: p for lab, p in again.probabilities.items()} == pytest.approx(by_text)


@pytest.mark.parametrize("strategy", ["direct", "cot", "voc"])
def test_a_model_that_answers_by_content_never_flips_and_every_ordering_maps_back_to_the_same_option(strategy: str) -> None:
    questions = [ORGANS, PUBMED, FOUR]
    answers = VoC(engine=ContentEngine(), strategy=strategy, permutations=6, params=SamplingParams(max_tokens=4)).answer_batch(questions)
    for question, answer in zip(questions, answers, strict=True):
        assert {o.label for o in answer.orderings} == {question.gold}
        assert answer.label == question.gold and answer.choice in ContentEngine.favourite
        assert len({tuple(o.order) for o in answer.orderings}) == 6
        for o in answer.orderings:  # the same distribution over original options under every ordering
            assert o.probabilities == pytest.approx(answer.orderings[0].probabilities)
    records = [answer_record("toy", q, a) for q, a in zip(questions, answers, strict=True)]
    order = metrics.order_robustness(records)
    assert order is not None and (order.flip_rate, order.circular_accuracy, order.identity_accuracy, order.ensemble_accuracy) == (
        0,
        1,
        1,
        1,
    )


def test_one_ordering_is_the_plain_strategy() -> None:
    plain = VoC(engine=PositionEngine(), strategy="direct").answer(ORGANS)
    assert plain.orderings == [] and plain.label == "A"


# --- voc bench --permutations on the tiny model -------------------------------------------------------------------


def test_bench_with_permutations_records_every_ordering_resumes_and_reports(tmp_path, tiny_model_dir, tiny_engine, data_root) -> None:
    import json

    from voc.bench import BenchConfig, BenchError, run_bench
    from voc.bench.records import RunFolder

    settings = dict(
        model=str(tiny_model_dir), datasets=["pubmedqa"], strategies=["direct", "voc"], limit=3, max_tokens=2, out=str(tmp_path / "run")
    )
    outcome = run_bench(BenchConfig(**settings, permutations=3), engine=tiny_engine, progress=False)  # type: ignore[arg-type]
    assert (outcome.computed, outcome.errors) == (6, 0)
    records = RunFolder(tmp_path / "run").records.load()
    for r in records:
        assert [o.order for o in r.orderings] == [[0, 1, 2], [1, 2, 0], [2, 0, 1]]
        assert all(set(o.probabilities) == {"A", "B", "C"} and o.label in "ABC" for o in r.orderings)
        mean = {lab: sum(o.probabilities[lab] for o in r.orderings) / 3 for lab in "ABC"}
        assert r.probabilities == pytest.approx(mean) and r.label == max("ABC", key=lambda lab: mean[lab])
        if r.strategy == "voc":  # the identity ordering's verifications, all of them with a verdict
            assert set(r.verifications) == {"A", "B", "C"} and all(v.verdict_probability is not None for v in r.verifications.values())
    assert json.loads((tmp_path / "run" / "fingerprint.json").read_text())["permutations"] == 3
    again = run_bench(BenchConfig(**settings, permutations=3), engine=tiny_engine, progress=False)  # type: ignore[arg-type]
    assert (again.computed, again.reused) == (0, 6)  # nothing recomputed on resume
    with pytest.raises(BenchError, match="permutations"):
        run_bench(BenchConfig(**settings, permutations=2), engine=tiny_engine, progress=False)  # type: ignore[arg-type]
    for name in ("reliability_pubmedqa.png", "coverage_pubmedqa.png"):
        assert (tmp_path / "run" / name).stat().st_size > 1000
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Option order" in report and "CircularEval" in report and "3 option orderings per question" in report
    assert "## Calibration and selective answering" in report and "| pubmedqa | voc verdicts | 9 |" in report
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    direct = next(r for r in results["results"] if r["strategy"] == "direct")
    assert direct["order"]["orderings"] == 3 and 0 <= direct["order"]["flip_rate"] <= 1
    assert direct["calibration"]["ece"] is not None and direct["verdict_calibration"] is None


def test_a_bad_number_of_orderings_on_the_command_line_is_one_line(tmp_path, capsys) -> None:
    from voc.cli import main

    assert main(["bench", "--permutations", "0", "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "permutations" in err and "1" in err
    assert not (tmp_path / "run").exists()
