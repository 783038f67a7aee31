"""Dynamic few-shot (`fewshot=K`, `fewshot_pool=...`): retrieval of a known question's nearest neighbours, the leakage
guard (a pool holding test questions or the evaluated questions is refused in one line), the examples each strategy's
template renders into its prompts, composition with samples, permutations and answer_batch, and `voc bench --fewshot`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.text_engine import TextEngine
from voc import VoC
from voc.engines.base import ChatPrompt, Continuation, Engine, Generation, SamplingParams, Scores
from voc.fewshot import FewShot, FewShotPool, FewShotPoolError, load_pool
from voc.prompts import TemplateBlockError, Templates, builtin_templates_dir
from voc.strategies import make_strategy
from voc.types import Question

POOL = [
    Question(question="Which hormone lowers the blood glucose level?", options=["glucagon", "insulin"], gold="B", id="p-insulin"),
    Question(question="What is the first-line drug for anaphylaxis?", options=["adrenaline", "cetirizine"], gold="A", id="p-anaphylaxis"),
    Question(
        question="Which vitamin deficiency causes scurvy in sailors?", options=["vitamin C", "vitamin D"], gold="A", id="p-scurvy-sailors",
        metadata={"explanation": "Scurvy is caused by a lack of ascorbic acid."},
    ),
    Question(question="Which organ produces bile?", options=["liver", "spleen", "kidney"], gold="A", id="p-bile"),
    Question(question="Scurvy presents with bleeding gums and which sign?", options=["petechiae", "goitre"], gold="A", id="p-scurvy-signs"),
    Question(question="Which nutrient is made in the skin in sunlight?", options=["vitamin D", "vitamin K"], gold="A", id="p-sunlight"),
]  # fmt: skip
SCURVY = Question(question="Deficiency of which vitamin causes scurvy?", options=["A", "B1", "C", "D"], gold="C", id="q-scurvy")
GLUCOSE = Question(question="Which pancreatic hormone lowers blood glucose?", options=["insulin", "glucagon"], gold="A", id="q-glucose")


@pytest.fixture(scope="module")
def pool() -> FewShotPool:
    return load_pool(POOL, name="toy")


# --- retrieval -----------------------------------------------------------------------------------------------------


def test_the_nearest_pool_questions_of_a_known_question(pool: FewShotPool) -> None:
    # the query's words (stop words dropped): deficiency, vitamin, causes, scurvy; "sailors" shares all four, "signs" scurvy
    assert [q.id for q in pool.nearest(SCURVY, 2)] == ["p-scurvy-sailors", "p-scurvy-signs"]
    assert pool.nearest(SCURVY, 3)[2].id == "p-insulin"  # nothing else shares a word: ties go to the earlier pool question
    assert [q.id for q in pool.nearest(GLUCOSE, 1)] == ["p-insulin"]
    assert len(pool.nearest(SCURVY, 50)) == len(POOL)  # K beyond the pool: all of it, most similar first
    unrelated = Question(question="Xylophone quartet?", options=["yes", "no"])
    assert [q.id for q in pool.nearest(unrelated, 2)] == ["p-insulin", "p-anaphylaxis"]  # no similarity: ties to the earlier
    assert FewShot(pool, 0).examples(SCURVY) == []


def test_a_pool_needs_gold_answers_and_a_whole_number_of_examples(pool: FewShotPool) -> None:
    with pytest.raises(FewShotPoolError, match="no gold answer"):
        FewShotPool("unlabelled", [Question(question="Which organ?", options=["a", "b"])])
    with pytest.raises(ValueError, match="fewshot must be 0"):
        FewShot(pool, -1)
    with pytest.raises(ValueError, match="needs a pool"):
        VoC(engine=ScriptedEngine(), strategy="direct", fewshot=2)
    with pytest.raises(ValueError, match="without fewshot"):
        VoC(engine=ScriptedEngine(), strategy="direct", fewshot_pool=pool)


# --- the leakage guard ----------------------------------------------------------------------------------------------


def test_a_pool_holding_test_questions_is_refused_in_one_line(data_root: Path) -> None:
    with pytest.raises(FewShotPoolError) as refused:
        load_pool("pubmedqa", root=data_root)  # the test split itself
    message = str(refused.value)
    assert len(message.splitlines()) == 1 and "PubMedQA's test split" in message and "500 of 500" in message
    from voc.datasets import load_dataset

    test_question = next(iter(load_dataset("medqa", root=data_root)))
    renamed = test_question.model_copy(update={"id": "my-own-7"})  # a test question under another id
    with pytest.raises(FewShotPoolError, match="medqa test question"):
        load_pool([*POOL, renamed], root=data_root)
    assert len(load_pool("pubmedqa:train", root=data_root)) == 400  # a training split passes


def test_a_pool_holding_the_evaluated_questions_is_refused(pool: FewShotPool) -> None:
    voc = VoC(engine=ScriptedEngine(), strategy="direct", fewshot=1, fewshot_pool=pool)
    copy = POOL[3].model_copy(update={"id": "exam-12"})  # the same question and options under another id
    with pytest.raises(FewShotPoolError) as refused:
        voc.answer_batch([SCURVY, copy])
    message = str(refused.value)
    assert len(message.splitlines()) == 1 and "question exam-12" in message and "the few-shot pool toy" in message
    same_stem = Question(question=POOL[3].question, options=["heart", "lung", "brain"], id="other")  # other options: another question
    assert voc.answer(same_stem).fewshot == ["p-bile"]


def test_bench_refuses_a_pool_that_overlaps_the_evaluated_split(
    tmp_path: Path, data_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from voc.cli import main

    out = tmp_path / "run"
    args = ["bench", "--dataset", "pubmedqa:dev", "--limit", "2", "--fewshot", "1", "--out", str(out), "--no-progress"]
    assert main([*args, "--fewshot-pool", "pubmedqa:dev"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "few-shot pool" in err and "pubmedqa:dev" in err and not out.exists()
    assert main([*args, "--fewshot-pool", "pubmedqa"]) == 2  # the test split as a pool
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "test split" in err and not out.exists()
    assert main(args) == 2  # --fewshot without a pool
    assert "--fewshot-pool" in capsys.readouterr().err


# --- the examples in the prompts -------------------------------------------------------------------------------------


def test_each_strategy_renders_the_examples_with_its_template(pool: FewShotPool) -> None:
    fewshot = FewShot(pool, 2)
    direct = make_strategy("direct", fewshot=fewshot).prompt(SCURVY).messages[-1]["content"]
    assert direct.startswith("Worked examples of similar questions")
    assert "Example 1:\nQuestion: Which vitamin deficiency causes scurvy in sailors?" in direct
    assert "A. vitamin C\nB. vitamin D\nAnswer: A\n" in direct and "Example 2:\nQuestion: Scurvy presents" in direct
    assert direct.index("Now the question to answer.") < direct.index("Question: Deficiency of which vitamin causes scurvy?")

    cot = make_strategy("cot", fewshot=fewshot).reasoning_prompt(SCURVY).messages[-1]["content"]
    # cot_target.jinja's reasoning from the gold answer (with the pool question's explanation), then the answer
    assert (
        "Let's think step by step. Scurvy is caused by a lack of ascorbic acid. The correct option is A (vitamin C).\n"
        "Therefore, the answer is A" in cot
    )

    voc = make_strategy("voc", fewshot=fewshot)
    verify = voc.verify_prompt(SCURVY, "C").messages[-1]["content"]
    # voc_verify_target.jinja's verifications of every option from the gold answer, with their verdicts
    assert "Option A (vitamin C): Evidence for and against option A: Scurvy is caused by a lack of ascorbic acid. " in verify
    assert "This supports option A (vitamin C).\nVerdict: option A is correct." in verify
    assert "This speaks against option B (vitamin D) and for option A (vitamin C).\nVerdict: option B is incorrect." in verify
    shown = [{"label": lab, "option_text": t, "text": "x", "verdict_probability": 0.5} for lab, t in SCURVY.options.items()]
    choose = voc.choose_prompt(SCURVY, shown)
    assert "Verdict: option B is incorrect.\nAnswer: A\n" in choose.messages[-1]["content"]  # the last option, then the answer

    plain = make_strategy("direct").prompt(SCURVY).messages[-1]["content"]
    assert "Worked examples" not in plain and direct.endswith(plain)  # without few-shot the prompt is the question alone


def test_a_template_folder_changes_the_examples_and_one_without_them_is_refused(pool: FewShotPool, tmp_path: Path) -> None:
    (tmp_path / "direct.jinja").write_text(
        (builtin_templates_dir() / "direct.jinja").read_text().replace(
            '{% block example %}{% include "_example_question.jinja" %}{{ example.answer }}{% endblock %}',
            "{% block example %}Q: {{ example.question.question }} => {{ example.gold.text }}{% endblock %}",
        )
    )
    prompt = make_strategy("direct", Templates(tmp_path), fewshot=FewShot(pool, 1)).prompt(GLUCOSE).messages[-1]["content"]
    assert "Example 1:\nQ: Which hormone lowers the blood glucose level? => insulin\n" in prompt
    old = tmp_path / "old"
    old.mkdir()
    (old / "direct.jinja").write_text(
        '{% block system %}S{% endblock %}{% block user %}{% include "_question.jinja" %}{% endblock %}'
        "{% block answer_prefix %}Answer:{% endblock %}{% block candidate %} {{ label }}{% endblock %}"
    )
    make_strategy("direct", Templates(old))  # fine without few-shot
    with pytest.raises(TemplateBlockError, match="cannot show few-shot examples"):
        make_strategy("direct", Templates(old), fewshot=FewShot(pool, 1))


class ScriptedEngine(TextEngine):
    """Counts the prompts of each call; generates `path <j>` and prefers the first candidate."""

    max_model_len = 100_000

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, int]] = []
        self.prompts: list[str] = []

    def generate(self, prompts: Sequence[ChatPrompt], params: SamplingParams) -> list[Generation]:
        self.calls.append(("generate", len(prompts) * params.n))
        self.prompts += [self.render(p) for p in prompts]
        return [Generation(text=f"path {j}", prompt_tokens=5, completion_tokens=2) for _ in prompts for j in range(params.n)]

    def score(self, prompts: Sequence[ChatPrompt | Continuation], candidates: Sequence[Sequence[str]]) -> list[Scores]:
        self.calls.append(("score", len(prompts)))
        self.prompts += [self.render(p) for p in prompts]
        return [Scores([-float(j) for j in range(len(c))], prompt_tokens=3) for c in candidates]


@pytest.mark.parametrize("strategy", ["direct", "cot", "voc"])
def test_fewshot_composes_with_samples_permutations_and_answer_batch(pool: FewShotPool, strategy: str) -> None:
    engine = ScriptedEngine()
    voc = VoC(
        engine=engine, strategy=strategy, fewshot=1, fewshot_pool=pool, samples=2, permutations=2,
        params=SamplingParams(temperature=0.7, max_tokens=4),
    )  # fmt: skip
    answers = voc.answer_batch([SCURVY, GLUCOSE])
    assert len(engine.calls) == {"direct": 1, "cot": 2, "voc": 3}[strategy]  # all questions, orderings and paths: one call a round
    assert [a.fewshot for a in answers] == [["p-scurvy-sailors"], ["p-insulin"]]
    assert all(len(a.orderings) == 2 for a in answers)
    if strategy != "direct":
        assert all(len(a.samples) == 2 and a.majority is not None for a in answers)
    scurvy_prompts = [p for p in engine.prompts if "Deficiency of which vitamin" in p]
    assert scurvy_prompts and all("Question: Which vitamin deficiency causes scurvy in sailors?" in p for p in scurvy_prompts)


# --- voc bench --fewshot on the tiny model -----------------------------------------------------------------------------


def test_bench_with_fewshot_records_the_examples_resumes_and_fingerprints_the_pool(
    tmp_path: Path, tiny_model_dir: Path, tiny_engine: Engine, data_root: Path
) -> None:
    from voc.bench import BenchConfig, BenchError, run_bench
    from voc.bench.records import RunFolder

    settings = dict(
        model=str(tiny_model_dir), datasets=["pubmedqa"], strategies=["direct", "voc"], limit=2, max_tokens=2, out=str(tmp_path / "run"),
        fewshot_pool="pubmedqa:train",
    )  # fmt: skip
    outcome = run_bench(BenchConfig(**settings, fewshot=1), engine=tiny_engine, progress=False)  # type: ignore[arg-type]
    assert (outcome.computed, outcome.errors) == (4, 0)
    records = RunFolder(tmp_path / "run").records.load()
    assert all(len(r.fewshot) == 1 and r.fewshot[0].startswith("pubmedqa-") for r in records)
    assert len({tuple(r.fewshot) for r in records}) == 2  # each question its own nearest example
    fingerprint = json.loads((tmp_path / "run" / "fingerprint.json").read_text())
    assert (fingerprint["fewshot"], fingerprint["fewshot_pool"]) == (1, "pubmedqa:train") and len(fingerprint["fewshot_pool_hash"]) == 64
    again = run_bench(BenchConfig(**settings, fewshot=1), engine=tiny_engine, progress=False)  # type: ignore[arg-type]
    assert (again.computed, again.reused) == (0, 4)
    with pytest.raises(BenchError, match="fewshot"):
        run_bench(BenchConfig(**settings, fewshot=2), engine=tiny_engine, progress=False)  # type: ignore[arg-type]
    assert "1 worked example(s) per question from `pubmedqa:train`" in (tmp_path / "run" / "report.md").read_text()
