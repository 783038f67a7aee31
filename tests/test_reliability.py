"""Reliability and safety (issue 5): hostile text and templates, long prompts, model loading, determinism.

Everything runs on the tiny random model with a few new tokens, so the whole file takes seconds.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest
from jinja2.exceptions import SecurityError

from voc.engines.base import ChatPrompt, Engine, Generation, PromptTooLongError, SamplingParams, Scores
from voc.models import ModelNotFoundError, resolve_model
from voc.prompts import TemplateBlockError, Templates, TemplateVariableError, builtin_templates_dir
from voc.strategies import make_strategy
from voc.strategies.base import TRUNCATION_MARK, cut_text
from voc.types import Question

STRATEGIES = ("direct", "cot", "voc")
SHORT_WINDOW = 300  # tokens: a model window small enough that a PubMedQA-like abstract does not fit


class RecordingEngine(Engine):
    """Passes every call to a real engine and keeps what it was asked, to check the prompts a strategy sends."""

    def __init__(self, inner: Engine) -> None:
        super().__init__()
        self.inner = inner
        self.max_model_len = inner.max_model_len
        self.generated: list[tuple[str, SamplingParams]] = []  # rendered prompt, params
        self.scored: list[tuple[str, list[str]]] = []  # rendered prompt, candidates

    def generate(self, prompts: Sequence[ChatPrompt], params: SamplingParams) -> list[Generation]:
        self.generated += [(self.render(p), params) for p in prompts]
        return self.inner.generate(prompts, params)

    def score(self, prompts: Sequence[ChatPrompt], candidates: Sequence[Sequence[str]]) -> list[Scores]:
        self.scored += [(self.render(p), list(c)) for p, c in zip(prompts, candidates, strict=True)]
        return self.inner.score(prompts, candidates)

    def render(self, prompt: ChatPrompt) -> str:
        return self.inner.render(prompt)

    def encode(self, text: str) -> list[int]:
        return self.inner.encode(text)

    @property
    def prompts(self) -> list[str]:
        return [p for p, _ in self.generated] + [p for p, _ in self.scored]


@pytest.fixture(scope="module")
def short_engine(tiny_model_dir: Path):
    """The tiny model with a 300-token window."""
    from voc.engines.hf import HFEngine

    return HFEngine(str(tiny_model_dir), batch_size=4, max_model_len=SHORT_WINDOW)


def few_tokens(**update: object) -> SamplingParams:
    return SamplingParams(max_tokens=6, **update)  # type: ignore[arg-type]


# -- template syntax in user text is plain text ------------------------------------------------

HOSTILE = ("{{ 7*7 }}", "{% for x in range(3) %}loop{% endfor %}", "{# hidden #}", "{% raw %}", "{{ ''.__class__.__mro__ }}")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_template_syntax_in_question_context_and_options_is_shown_verbatim(tiny_engine: Engine, strategy: str) -> None:
    question = Question(
        question=f"Which is right, {HOSTILE[0]} or {HOSTILE[2]}?",
        context=f"Study notes {HOSTILE[1]} and {HOSTILE[3]}.",
        options={"A": f"the {HOSTILE[0]} one", "B": HOSTILE[1], "C": HOSTILE[4], "D": f"{HOSTILE[2]} {HOSTILE[3]}"},
    )
    engine = RecordingEngine(tiny_engine)
    (answer,) = make_strategy(strategy, params=few_tokens()).run([question], engine)
    assert answer.label in question.options
    assert engine.prompts
    for prompt in engine.prompts:
        assert question.question in prompt and question.context in prompt  # type: ignore[operator]
        for label, text in question.options.items():
            assert f"\n{label}. {text}\n" in prompt


def write_user_templates(folder: Path, name: str, old: str, new: str) -> Path:
    """A user templates folder holding the built-in `name` with `old` replaced by `new`."""
    source = (builtin_templates_dir() / name).read_text()
    assert old in source
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(source.replace(old, new))
    return folder


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_misspelt_variable_in_user_template_fails_when_the_strategy_is_made(tmp_path: Path, strategy: str) -> None:
    folder = write_user_templates(tmp_path, "_question.jinja", "{{ question.question }}", "{{ question.questoin }}")
    with pytest.raises(TemplateVariableError) as caught:
        make_strategy(strategy, Templates(folder))
    message = str(caught.value)
    assert "\n" not in message
    assert "_question.jinja line" in message and "questoin" in message and "question" in message


def test_misspelt_top_level_variable_names_file_and_line(tmp_path: Path) -> None:
    folder = write_user_templates(tmp_path, "direct.jinja", "{% block answer_prefix %}Answer:", "{% block answer_prefix %}{{ answr }}")
    with pytest.raises(TemplateVariableError, match=r"direct\.jinja line \d+ \(block 'answer_prefix'\): 'answr' is undefined"):
        make_strategy("direct", Templates(folder))


@pytest.mark.parametrize(("strategy", "name"), [("cot", "cot.jinja"), ("voc", "voc_verify.jinja")])
def test_empty_stop_block_in_user_template_fails_when_the_strategy_is_made(tmp_path: Path, strategy: str, name: str) -> None:
    source = (builtin_templates_dir() / name).read_text()
    start = source.index("{% block stop %}") + len("{% block stop %}")
    builtin_stop = source[start : source.index("{% endblock %}", start)]
    folder = write_user_templates(tmp_path, name, "{% block stop %}" + builtin_stop, "{% block stop %}")
    with pytest.raises(TemplateBlockError) as caught:
        make_strategy(strategy, Templates(folder))
    message = str(caught.value)
    assert "\n" not in message and str(folder / name) in message and "(block 'stop') is empty" in message
    assert repr(builtin_stop) in message and "write the text that ends a generation" in message
    newline = write_user_templates(tmp_path / "ok", name, "{% block stop %}" + builtin_stop, "{% block stop %}\n")
    assert make_strategy(strategy, Templates(newline)).templates.block(name, "stop") == "\n"  # a line end is a valid stop


@pytest.mark.parametrize(
    "escape",
    ["{{ ''.__class__.__mro__ }}", "{{ question.__class__.__init__ }}", "{{ cycler.__init__.__globals__ }}", "{{ label.__len__() }}"],
)
def test_user_template_cannot_escape_the_sandbox(tmp_path: Path, escape: str) -> None:
    folder = write_user_templates(tmp_path, "direct.jinja", "{% block candidate %} {{ label }}", "{% block candidate %} " + escape)
    with pytest.raises(SecurityError):
        make_strategy("direct", Templates(folder))


# -- long prompts ------------------------------------------------------------------------------

ABSTRACT = " ".join(
    f"{section}: In {n} patients the {{{{ dose }}}} of drug {n} reduced mortality by {n % 7} percent (p=0.0{n % 9})."
    for n, section in enumerate(["BACKGROUND", "METHODS", "RESULTS", "CONCLUSIONS"] * 12)
)


def assert_fits(engine: RecordingEngine) -> None:
    """Every prompt the strategy sent, with its room for new tokens or candidates, fits the window."""
    for prompt, params in engine.generated:
        assert engine.count_tokens(prompt) + params.max_tokens <= SHORT_WINDOW
    for prompt, candidates in engine.scored:
        assert engine.count_tokens(prompt) + max(engine.count_tokens(c) for c in candidates) <= SHORT_WINDOW


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_long_context_is_cut_from_the_end_and_flagged(short_engine: Engine, strategy: str) -> None:
    long = Question(question="Does the drug reduce mortality?", options=["yes", "no", "maybe"], context=ABSTRACT, id="long")
    short = Question(question="Is water wet?", options=["yes", "no"], context="Water is a liquid.", id="short")
    assert short_engine.count_tokens(ABSTRACT) > SHORT_WINDOW
    engine = RecordingEngine(short_engine)
    answers = make_strategy(strategy, params=few_tokens()).run([long, short], engine)
    assert [a.question_id for a in answers] == ["long", "short"]
    assert [a.context_truncated for a in answers] == [True, False]
    for answer, question in zip(answers, (long, short), strict=True):
        assert answer.label in question.options and abs(sum(answer.probabilities.values()) - 1) < 1e-6
    assert_fits(engine)
    long_prompts = [p for p in engine.prompts if long.question in p]
    assert long_prompts
    for prompt in long_prompts:  # the start of the abstract is kept, its end is cut and marked
        assert ABSTRACT[:200] in prompt and ABSTRACT[-50:] not in prompt and TRUNCATION_MARK + "\n" in prompt


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_question_that_cannot_fit_raises_before_any_engine_call(short_engine: Engine, strategy: str) -> None:
    question = Question(question="Why? " * 400, options=["yes", "no"], context="Some context.", id="huge")
    engine = RecordingEngine(short_engine)
    with pytest.raises(PromptTooLongError) as caught:
        make_strategy(strategy, params=few_tokens()).run([question], engine)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("question huge: the question and options alone need") and f"more than the model's {SHORT_WINDOW}" in message
    assert not engine.generated and not engine.scored


def test_context_without_spaces_keeps_its_start(short_engine: Engine) -> None:
    context = "肝" * 2000  # no word boundaries at all
    question = Question(question="Is it the liver?", options=["yes", "no"], context=context)
    engine = RecordingEngine(short_engine)
    (answer,) = make_strategy("direct").run([question], engine)
    assert answer.context_truncated
    (prompt,) = engine.prompts
    assert "肝" * 20 + TRUNCATION_MARK in prompt
    assert_fits(engine)


def test_cut_text_prefers_word_boundaries() -> None:
    assert cut_text("alpha beta gamma", 13) == "alpha beta" + TRUNCATION_MARK  # "gam" is not kept
    assert cut_text("alpha beta gamma", 11) == "alpha beta" + TRUNCATION_MARK
    assert cut_text("abcdefghij", 4) == "abcd" + TRUNCATION_MARK  # no boundary: cut inside the word
    assert cut_text("alpha", 0) is None


def test_engine_refuses_prompts_longer_than_its_window(short_engine: Engine) -> None:
    long = ChatPrompt(({"role": "user", "content": "word " * 400},))
    with pytest.raises(PromptTooLongError, match=rf"exceeds the model's {SHORT_WINDOW}-token window"):
        short_engine.generate([long], few_tokens())
    with pytest.raises(PromptTooLongError, match=rf"exceeds the model's {SHORT_WINDOW}-token window"):
        short_engine.score([long], [[" A", " B"]])
    # a prompt that fits alone, but not with the tokens asked for
    almost = ChatPrompt(({"role": "user", "content": "word " * 250},))
    n = short_engine.count_tokens(short_engine.render(almost))
    assert n < SHORT_WINDOW
    with pytest.raises(PromptTooLongError):
        short_engine.generate([almost], SamplingParams(max_tokens=SHORT_WINDOW - n + 1))
    assert len(short_engine.generate([almost], SamplingParams(max_tokens=SHORT_WINDOW - n))) == 1


# -- loading models ----------------------------------------------------------------------------


def test_models_load_without_remote_code_unless_asked(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers

    from voc import VoC
    from voc.engines.hf import HFEngine

    calls: list[tuple[str, dict[str, object]]] = []

    def recording(cls: type) -> object:
        original = cls.from_pretrained

        def from_pretrained(*args: object, **kwargs: object) -> object:
            calls.append((cls.__name__, kwargs))
            return original(*args, **kwargs)

        return from_pretrained

    for cls in (transformers.AutoTokenizer, transformers.AutoModelForCausalLM):
        monkeypatch.setattr(cls, "from_pretrained", recording(cls))
    HFEngine(str(tiny_model_dir)).close()
    VoC(tiny_model_dir, strategy="direct").close()
    assert {name for name, _ in calls} == {"AutoTokenizer", "AutoModelForCausalLM"} and len(calls) == 4
    assert all(kwargs.get("trust_remote_code", False) is False for _, kwargs in calls)
    calls.clear()
    HFEngine(str(tiny_model_dir), trust_remote_code=True).close()
    assert len(calls) == 2 and all(kwargs["trust_remote_code"] is True for _, kwargs in calls)


def model_folder(tmp_path: Path, tiny_model_dir: Path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    return folder


def no_config(folder: Path) -> None:
    (folder / "config.json").unlink()


def bad_config(folder: Path) -> None:
    (folder / "config.json").write_text('{"model_type": "llama",')


def no_weights(folder: Path) -> None:
    for weights in folder.glob("*.safetensors"):
        weights.unlink()


@pytest.mark.parametrize(
    ("damage", "message"),
    [(no_config, "has no config.json"), (bad_config, "config.json is not valid JSON"), (no_weights, "has no weight files")],
)
def test_damaged_model_folder_is_refused_with_a_clear_message(tmp_path: Path, tiny_model_dir: Path, damage, message: str) -> None:
    from voc.engines.hf import HFEngine

    folder = model_folder(tmp_path, tiny_model_dir)
    assert resolve_model(folder) == str(folder)
    damage(folder)
    with pytest.raises(ModelNotFoundError, match=message) as caught:
        HFEngine(str(folder))
    assert "\n" not in str(caught.value) and str(folder) in str(caught.value)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing-folder", None, "does not exist"),
        ("missing.gguf", None, "does not exist"),
        ("weights.txt", b"hello", "is a file but not a .gguf model"),
        ("model.gguf", b"<html>404 Not Found</html>", "is not a GGUF file"),
        ("empty.gguf", b"", "is not a GGUF file"),
    ],
)
def test_missing_or_wrong_model_file_is_refused(tmp_path: Path, name: str, content: bytes | None, message: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelNotFoundError, match=message) as caught:
        resolve_model(path)
    assert "\n" not in str(caught.value) and name in str(caught.value)


@pytest.mark.parametrize("kind", ["gguf file", "model folder"])
def test_unreadable_model_is_refused(tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    if kind == "gguf file":
        path = tmp_path / "model.gguf"
        path.write_bytes(b"GGUF" + bytes(60))
    else:
        path = model_folder(tmp_path, tiny_model_dir)
    path.chmod(0)
    if os.geteuid() == 0:  # root reads anything: make the permission check see what a normal user would
        real_access = os.access
        monkeypatch.setattr("voc.models.os.access", lambda p, mode: Path(p).resolve() != path.resolve() and real_access(p, mode))
    try:
        with pytest.raises(ModelNotFoundError, match="is not readable; check its permissions") as caught:
            resolve_model(path)
        assert "\n" not in str(caught.value) and str(path) in str(caught.value)
    finally:
        path.chmod(0o755)


# -- determinism -------------------------------------------------------------------------------

QUESTIONS = [
    Question(question="Which organ makes insulin?", options=["liver", "pancreas", "kidney", "spleen"], id="q1"),
    Question(question="Is aspirin an anticoagulant?", options=["yes", "no", "maybe"], context="Aspirin inhibits COX-1.", id="q2"),
    Question(question="Which vitamin is made in the skin?", options={"a": "A", "d": "D"}, id="q3"),
]


def dumps(strategy: str, engine: Engine, params: SamplingParams, questions: Sequence[Question] = QUESTIONS) -> list[dict[str, object]]:
    return [a.model_dump() for a in make_strategy(strategy, params=params).run(questions, engine)]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_greedy_runs_are_bit_identical(tiny_engine: Engine, strategy: str) -> None:
    first = dumps(strategy, tiny_engine, few_tokens())
    assert first == dumps(strategy, tiny_engine, few_tokens())


@pytest.mark.parametrize("strategy", ["cot", "voc"])
def test_sampling_reproduces_with_its_seed(tiny_engine: Engine, strategy: str) -> None:
    import torch

    questions = QUESTIONS[:2]
    first = dumps(strategy, tiny_engine, few_tokens(temperature=1.0, seed=1), questions)
    torch.manual_seed(12345)  # the global random state must not matter
    assert dumps(strategy, tiny_engine, few_tokens(temperature=1.0, seed=1), questions) == first
    other = dumps(strategy, tiny_engine, few_tokens(temperature=1.0, seed=2), questions)
    assert [a["completions"] for a in other] != [a["completions"] for a in first]


def test_batched_scores_equal_one_by_one(tiny_engine: Engine) -> None:
    prompts = [
        ChatPrompt(({"role": "user", "content": "Short?"},), "Answer:"),
        ChatPrompt(({"role": "user", "content": "A much longer prompt, " * 12},), "Answer:"),
        ChatPrompt(({"role": "user", "content": "Medium length prompt here."},), "The answer is"),
        ChatPrompt(({"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}), ""),
        ChatPrompt(({"role": "user", "content": "Five of them, so batches of 4 split."},), "Answer:"),
    ]
    candidates = [[" A", " B"], [" yes", " no", " maybe not"], [" correct", " incorrect"], [" A", " hello there"], [" x", " y"]]
    batched = tiny_engine.score(prompts, candidates)
    for prompt, cands, together in zip(prompts, candidates, batched, strict=True):
        (alone,) = tiny_engine.score([prompt], [cands])
        assert alone.prompt_tokens == together.prompt_tokens
        assert alone.logprobs == pytest.approx(together.logprobs, abs=1e-4)
