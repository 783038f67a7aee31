"""Strategies: which prompts reach the engine, in how many batched calls, and how scores become answers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pytest

from voc.engines.base import ChatPrompt, Engine, Generation, SamplingParams, Scores
from voc.prompts import Templates
from voc.strategies import VerificationOfChoice, make_strategy
from voc.strategies.voc import combine, position_prior
from voc.types import Question

QUESTIONS = [
    Question(question="Does smoking raise the risk of lung cancer?", options=["yes", "no", "maybe"], context="A cohort study.", gold="A"),
    Question(question="Which organ makes insulin?", options={"A": "liver", "B": "pancreas", "C": "kidney", "D": "spleen"}, gold="B"),
]


class RecordingEngine(Engine):
    """Wraps a real engine and records every call, so tests can see the batches the strategies send."""

    def __init__(self, inner: Engine) -> None:
        super().__init__()
        self.inner = inner
        self.max_model_len = inner.max_model_len
        self.calls: list[tuple[str, list[ChatPrompt], list]] = []

    def generate(self, prompts: Sequence[ChatPrompt], params: SamplingParams) -> list[Generation]:
        self.calls.append(("generate", list(prompts), []))
        return self.inner.generate(prompts, params)

    def score(self, prompts: Sequence[ChatPrompt], candidates: Sequence[Sequence[str]]) -> list[Scores]:
        self.calls.append(("score", list(prompts), [list(c) for c in candidates]))
        return self.inner.score(prompts, candidates)

    def render(self, prompt: ChatPrompt) -> str:
        return self.inner.render(prompt)

    def encode(self, text: str) -> list[int]:
        return self.inner.encode(text)


@pytest.fixture
def engine(tiny_engine: Engine) -> RecordingEngine:
    return RecordingEngine(tiny_engine)


PARAMS = SamplingParams(max_tokens=6)


def test_direct_is_one_scoring_call_and_probabilities_are_the_softmax_of_label_scores(engine: RecordingEngine) -> None:
    answers = make_strategy("direct", params=PARAMS).run(QUESTIONS, engine)
    assert [kind for kind, _, _ in engine.calls] == ["score"]
    _, prompts, candidates = engine.calls[0]
    assert candidates == [[" A", " B", " C"], [" A", " B", " C", " D"]]
    for answer, q in zip(answers, QUESTIONS, strict=True):
        lps = list(answer.choice_logprobs.values())
        total = sum(math.exp(lp) for lp in lps)
        assert answer.probabilities == pytest.approx({lab: math.exp(lp) / total for lab, lp in answer.choice_logprobs.items()})
        assert answer.label == max(answer.probabilities, key=answer.probabilities.get)
        assert answer.choice == q.options[answer.label] and answer.gold == q.gold
    assert "Options:\nA. liver\nB. pancreas\nC. kidney\nD. spleen" in prompts[1].messages[-1]["content"]


def test_cot_generates_reasoning_then_scores_labels_after_it(engine: RecordingEngine) -> None:
    answers = make_strategy("cot", params=PARAMS).run(QUESTIONS, engine)
    assert [kind for kind, _, _ in engine.calls] == ["generate", "score"]
    reason_prompts, choose_prompts = engine.calls[0][1], engine.calls[1][1]
    for answer, first, second in zip(answers, reason_prompts, choose_prompts, strict=True):
        assert second.prompt == first  # the answer is scored after the reasoning's own tokens, then the answer prefix
        assert second.generation.text == answer.completions[0]
        assert second.text == "\nTherefore, the answer is"


def test_voc_verifies_each_option_once_in_one_batch_then_scores_verdicts_and_choices_in_one_batch_each(engine: RecordingEngine) -> None:
    answers = VerificationOfChoice(params=PARAMS).run(QUESTIONS, engine)
    assert [kind for kind, _, _ in engine.calls] == ["generate", "score", "score"]
    verify_prompts = engine.calls[0][1]
    assert len(verify_prompts) == sum(len(q.options) for q in QUESTIONS)  # one prompt per option
    cursor = 0
    for q in QUESTIONS:
        texts = [engine.render(p) for p in verify_prompts[cursor : cursor + len(q.options)]]
        cursor += len(q.options)
        common = next(i for i, chars in enumerate(zip(*texts, strict=False)) if len(set(chars)) > 1)
        shared = texts[0][:common]
        assert q.question in shared and all(text in shared for text in q.options.values())  # shared part first
        for (label, text), rendered in zip(q.options.items(), texts, strict=True):
            assert f'Verify option {label} ("{text}")' in rendered
            assert f'{label} ("{text}")' in rendered[common:]  # the option's own part comes last
    (_, verdict_prompts, candidates), (_, choose_prompts, _) = engine.calls[1:]
    n_options = sum(len(q.options) for q in QUESTIONS)
    assert len(verdict_prompts) == n_options and len(choose_prompts) == len(QUESTIONS)
    assert candidates == [[" correct", " incorrect"]] * n_options
    for answer, q in zip(answers, QUESTIONS, strict=True):
        assert set(answer.verifications) == set(q.options)
        assert all(0.0 < v.verdict_probability < 1.0 for v in answer.verifications.values())
        assert sum(answer.probabilities.values()) == pytest.approx(1.0)
        assert answer.rounds == ["verify", "verdict", "choose"]
    choose_text = choose_prompts[0].messages[-1]["content"]
    for label, verification in answers[0].verifications.items():
        assert f"Option {label} ({QUESTIONS[0].options[label]}): {verification.text}" in choose_text


def test_voc_final_rules_combine_choice_and_verdicts() -> None:
    choice, verdicts = [0.6, 0.3, 0.1], [0.2, 0.9, 0.1]
    assert combine("choice", choice, verdicts) == choice
    assert combine("verdicts", choice, verdicts) == pytest.approx([0.2 / 1.2, 0.9 / 1.2, 0.1 / 1.2])
    combined = combine("combined", choice, verdicts)
    products = [c * v for c, v in zip(choice, verdicts, strict=True)]
    assert combined == pytest.approx([p / sum(products) for p in products])
    with pytest.raises(ValueError, match="unknown final rule 'vote'"):
        VerificationOfChoice(final_rule="vote")  # type: ignore[arg-type]


def test_calibrated_verdicts_divide_out_the_batch_position_bias() -> None:
    """A model that calls option A correct more readily than B or C, whatever the question: dividing each position's
    normalised verdict by its batch mean leaves the content, so a B that is judged better than usual wins."""
    batch = [[0.9, 0.5, 0.4]] * 7 + [[0.9, 0.8, 0.1]]  # 8 questions: A is always judged highly
    prior = position_prior(batch)
    assert prior is not None and prior[0] == pytest.approx((7 * 0.9 / 1.8 + 0.9 / 1.8) / 8)
    assert prior[1] == pytest.approx((7 * 0.5 / 1.8 + 0.8 / 1.8) / 8)
    last = combine("calibrated_verdicts", None, batch[-1], prior)
    assert last.index(max(last)) == 1  # B, though A's raw verdict is higher
    assert combine("verdicts", None, batch[-1]).index(max(combine("verdicts", None, batch[-1]))) == 0
    expected = [v / 1.8 / p for v, p in zip(batch[-1], prior, strict=True)]
    assert last == pytest.approx([e / sum(expected) for e in expected])
    assert position_prior(batch[:7]) is None  # too few questions: plain verdicts
    assert combine("calibrated_verdicts", None, batch[-1], None) == combine("verdicts", None, batch[-1])


@pytest.mark.parametrize(
    ("final_rule", "choose_prompt", "rounds"),
    [
        ("verdicts", "full", ["verify", "verdict"]),
        ("choice", "full", ["verify", "choose"]),
        ("combined", "full", ["verify", "verdict", "choose"]),
        ("choice", "compact", ["verify", "verdict", "choose"]),  # the compact prompt shows the verdicts
        ("calibrated_verdicts", "full", ["verify", "verdict"]),
    ],
)
def test_voc_runs_only_the_rounds_its_final_rule_uses(engine: RecordingEngine, final_rule: str, choose_prompt: str, rounds: list) -> None:
    strategy = VerificationOfChoice(params=PARAMS, final_rule=final_rule, choose_prompt=choose_prompt)  # type: ignore[arg-type]
    answers = strategy.run(QUESTIONS, engine)
    assert len(engine.calls) == len(rounds)  # one engine call per round
    n_options = sum(len(q.options) for q in QUESTIONS)
    assert [len(prompts) for _, prompts, _ in engine.calls] == [{"verify": n_options, "verdict": n_options, "choose": 2}[r] for r in rounds]
    for answer in answers:
        assert answer.rounds == rounds
        assert (answer.choice_logprobs != {}) == ("choose" in rounds)
        assert all((v.verdict_probability is not None) == ("verdict" in rounds) for v in answer.verifications.values())
        assert sum(answer.probabilities.values()) == pytest.approx(1.0)
    if final_rule == "verdicts":  # the answer is the normalised verdicts
        for answer in answers:
            total = sum(v.verdict_probability for v in answer.verifications.values())
            assert answer.probabilities == pytest.approx({k: v.verdict_probability / total for k, v in answer.verifications.items()})


def test_the_compact_choose_prompt_shows_each_verdict_and_a_bounded_start_of_each_verification(engine: RecordingEngine) -> None:
    q = QUESTIONS[0]
    answers = VerificationOfChoice(params=SamplingParams(max_tokens=120), choose_prompt="compact").run([q], engine)
    compact = engine.calls[-1][1][0].messages[-1]["content"]
    shown = [{"label": lab, "option_text": q.options[lab], "text": v.text} for lab, v in answers[0].verifications.items()]
    full = VerificationOfChoice().choose_prompt(q, shown).messages[-1]["content"]
    for label, v in answers[0].verifications.items():
        line = next(line for line in compact.splitlines() if line.startswith(f"Option {label} ({q.options[label]}): "))
        assert line.startswith(f"Option {label} ({q.options[label]}): {100 * v.verdict_probability:.0f}% likely correct. ")
        assert v.text.replace("\n", " ")[:40] in line and len(line) < len(q.options[label]) + 300  # a bounded start
    assert len(compact) < len(full)


def test_a_user_template_folder_overrides_the_built_in_prompt(tmp_path: Path, engine: RecordingEngine) -> None:
    (tmp_path / "direct.jinja").write_text(
        "{% block system %}Be brief.{% endblock %}{% block user %}Q: {{ question.question }}{% endblock %}"
        "{% block answer_prefix %}Letter:{% endblock %}{% block candidate %} ({{ label }}){% endblock %}"
    )
    make_strategy("direct", Templates(tmp_path)).run(QUESTIONS[:1], engine)
    _, prompts, candidates = engine.calls[0]
    assert prompts[0].messages == ({"role": "system", "content": "Be brief."}, {"role": "user", "content": f"Q: {QUESTIONS[0].question}"})
    assert prompts[0].response_prefix == "Letter:" and candidates == [[" (A)", " (B)", " (C)"]]


def test_unknown_strategy_and_missing_template_folder_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown strategy 'tot'; use one of direct, cot, voc"):
        make_strategy("tot")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Templates(tmp_path / "missing")


def test_final_rule_accuracy_recomputes_each_rule_from_stored_records() -> None:
    from voc.bench.metrics import final_rule_accuracy
    from voc.bench.records import ResultRecord, VerificationRecord

    def record(qid: str, gold: str, choice: list[float], verdicts: list[float], chunk: int = 0) -> ResultRecord:
        labels = ["A", "B", "C"]
        return ResultRecord(
            question_id=qid, dataset="d", strategy="voc", labels=labels, gold=gold, label="A", chunk=chunk,
            choice_logprobs={lab: math.log(p) for lab, p in zip(labels, choice, strict=True)},
            verifications={lab: VerificationRecord(text="", verdict_probability=v) for lab, v in zip(labels, verdicts, strict=True)},
        )  # fmt: skip

    records = [
        record("1", "A", [0.6, 0.3, 0.1], [0.2, 0.9, 0.1]),  # choice A, verdicts B, combined 0.12 : 0.27 : 0.01 -> B
        record("2", "B", [0.5, 0.4, 0.1], [0.5, 0.6, 0.5]),  # choice A, verdicts B, combined 0.156 : 0.150 : 0.031 -> A
        record("3", "C", [0.5, 0.1, 0.4], [0.1, 0.1, 0.8]),  # choice A, verdicts C, combined 0.05 : 0.01 : 0.32 -> C
    ]
    # three questions in a call are too few for position means: calibrated_verdicts is plain verdicts
    expected = {"choice": 1 / 3, "verdicts": 2 / 3, "combined": 1 / 3, "calibrated_verdicts": 2 / 3}
    assert final_rule_accuracy(records) == pytest.approx(expected)
    no_verdicts = records[0].model_copy(update={"verifications": {}})
    assert final_rule_accuracy([no_verdicts]) == {"choice": None, "verdicts": None, "combined": None, "calibrated_verdicts": None}
    # a call of 8 questions whose verdicts always favour A (see test_calibrated_verdicts_...): calibrated, 7 x C and 1 x B
    uniform = [1 / 3] * 3
    biased = [record(f"c{i}", "C", uniform, [0.9, 0.5, 0.4], chunk=5) for i in range(7)]
    biased.append(record("b", "B", uniform, [0.9, 0.8, 0.1], chunk=5))
    rules = final_rule_accuracy(biased)
    assert rules["verdicts"] == 0.0 and rules["calibrated_verdicts"] == 1.0
    # position means come from each record's own call: the same 8 records split over two calls are 4 + 4, too few
    split_calls = [r.model_copy(update={"chunk": i % 2}) for i, r in enumerate(biased)]
    assert final_rule_accuracy(split_calls)["calibrated_verdicts"] == 0.0


def test_under_final_rule_answers_from_the_stored_rounds_or_says_it_cannot() -> None:
    from voc.bench.metrics import under_final_rule
    from voc.bench.records import ResultRecord, VerificationRecord

    labels = ["A", "B", "C"]
    verdicts_run = ResultRecord(
        question_id="1", dataset="d", strategy="voc", labels=labels, gold="B", label="B", correct=True,
        probabilities={"A": 0.2, "B": 0.7, "C": 0.1}, round_seconds={"verify": 3.0, "verdict": 0.5}, seconds=3.6,
        verifications={lab: VerificationRecord(text="", verdict_probability=v) for lab, v in zip(labels, [0.2, 0.7, 0.1], strict=True)},
    )  # fmt: skip
    assert under_final_rule([verdicts_run], "choice") is None  # no choice round was run
    (same,) = under_final_rule([verdicts_run], "verdicts") or []
    assert same.label == "B" and same.correct and same.seconds == 3.5  # the rounds the rule needs
    choice_logprobs = {"A": math.log(0.8), "B": math.log(0.1), "C": math.log(0.1)}
    rounds = {"verify": 3.0, "verdict": 0.5, "choose": 2.0}
    combined_run = verdicts_run.model_copy(update={"choice_logprobs": choice_logprobs, "round_seconds": rounds})
    (choice,) = under_final_rule([combined_run], "choice") or []
    assert choice.label == "A" and choice.correct is False and choice.seconds == 5.0
    assert choice.probabilities["A"] == pytest.approx(0.8)


def test_verification_tokens_bound_each_verification(engine: RecordingEngine) -> None:
    long = SamplingParams(max_tokens=24)
    free = VerificationOfChoice(params=long).run(QUESTIONS, engine)
    bounded = VerificationOfChoice(params=long, verification_tokens=5).run(QUESTIONS, engine)
    for a, b, q in zip(free, bounded, QUESTIONS, strict=True):
        assert b.completion_tokens <= 5 * len(q.options) < a.completion_tokens
        for label in q.labels:  # greedy: the bounded verification is the start of the free one
            assert a.verifications[label].text.startswith(b.verifications[label].text.strip()[:10])
    with pytest.raises(ValueError, match="verification_tokens must be at least 1"):
        VerificationOfChoice(verification_tokens=0)
