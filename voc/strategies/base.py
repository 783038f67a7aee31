"""What every strategy shares: preparing questions, running rounds, and turning label scores into an `Answer`.

A strategy answers a batch of questions in a few rounds. It first prepares each question (`prepare`): its first
round's prompts are rendered and tokenized once, and a context too long for the model's window is cut (`fit_context`).
Then each round is one batched engine call over the prompts of ALL questions: `generate_round` or `score_round`,
which flatten the questions' prompts into that call and hand the results back per question. Rounds are timed in
`round_seconds` (for throughput reports) and, with `use_tqdm`, shown as a progress bar.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from tqdm.auto import tqdm

from voc.engines.base import ChatPrompt, Engine, Generation, Prompt, PromptTooLongError, SamplingParams, Scores, TokenizedPrompt, softmax
from voc.fewshot import FewShot
from voc.prompts import TemplateBlockError, Templates
from voc.selfconsistency import chosen, majority_vote, mean_probabilities
from voc.types import Answer, Question, SampleAnswer, explanation_of

CANDIDATE_ROOM = 8  # tokens kept free for a scored candidate such as " A"
TRUNCATION_MARK = " ..."  # ends a shortened context, so the model sees that text is missing
T = TypeVar("T")


@dataclass
class Prepared:
    """A question ready for a strategy's rounds: its context fitted to the model's window, its first round's prompts
    rendered and tokenized (once), and the hash of those prompts as first built, before any shortening."""

    question: Question
    prompts: list[TokenizedPrompt]
    truncated: bool
    prompt_hash: str


class Strategy:
    """Base class: subclasses implement `run(questions, engine, use_tqdm)`."""

    name: ClassVar[str] = "strategy"
    template_files: ClassVar[tuple[str, ...]] = ()

    def __init__(self, templates: Templates | None = None, params: SamplingParams | None = None, fewshot: FewShot | None = None) -> None:
        self.templates = templates or Templates()
        self.params = params or SamplingParams()
        self.fewshot = fewshot if fewshot is not None and fewshot.k > 0 else None
        self.round_seconds: dict[str, float] = {}
        self._example_texts: dict[tuple[str, int], str] = {}  # (template, id of the pool question) -> its rendered example
        self.check_templates()

    def check_templates(self) -> None:
        """Render every block of this strategy's templates once with a sample question (with and without
        context), so that a broken user template fails when the strategy is made, not in the middle of a run.
        With few-shot examples, each template must also have an `example` block and show the examples in its user message."""
        sample = Question(question="Sample question?", options={"A": "first", "B": "second"}, context="Sample context.")
        for question in (sample, sample.model_copy(update={"context": None})):
            variables = {
                "question": question,
                "option": {"label": "A", "text": "first"},
                "label": "A",
                "verifications": [
                    {"label": lab, "option_text": text, "text": "Sample.", "verdict_probability": 0.5}
                    for lab, text in question.options.items()
                ],
                "examples": [],
                "example": sample_example(question),
            }
            for name in self.template_files:
                for block in self.templates.get(name).blocks:
                    self.templates.block(name, block, **variables)
        if self.fewshot is None:
            return
        marker = "<<a worked example>>"
        for name in self.template_files:
            template = self.templates.get(name)
            shown = self.templates.block(name, "user", **{**variables, "examples": [marker]}) if "user" in template.blocks else ""
            if "example" not in template.blocks or marker not in shown:
                raise TemplateBlockError(
                    f"template {template.filename or name} cannot show few-shot examples: it needs an `example` block and "
                    f"`{{% include \"_examples.jinja\" %}}` in its user block (see the built-in {name})"
                )

    # -- few-shot examples ---------------------------------------------------------------------------------------
    def examples(self, question: Question, template: str) -> list[str]:
        """The worked examples shown with `question` in `template`'s prompt: its nearest pool questions, each rendered by
        the template's `example` block (empty without few-shot)."""
        if self.fewshot is None:
            return []
        texts = []
        for example in self.fewshot.examples(question):
            key = (template, id(example))
            if key not in self._example_texts:
                fields = {"question": example, "gold": gold_of(example), "explanation": explanation_of(example)}
                fields.update(self.example_fields(example, template))
                self._example_texts[key] = self.templates.block(template, "example", example=fields).strip()
            texts.append(self._example_texts[key])
        return texts

    def example_fields(self, example: Question, template: str) -> dict[str, Any]:
        """What a strategy's `example` block gets about one pool question besides question, gold and explanation."""
        return {}

    def gold_candidate(self, template: str, question: Question) -> str:
        """The `candidate` block of `template` for the question's gold label (e.g. " B")."""
        return self.templates.block(template, "candidate", label=gold_of(question)["label"])

    def run(self, questions: Sequence[Question], engine: Engine, use_tqdm: bool = False) -> list[Answer]:
        """Answer `questions`, each round one batched engine call; `use_tqdm`: show a progress bar per round."""
        raise NotImplementedError

    # -- preparing questions -------------------------------------------------------------------------------------
    def first_round_prompts(self, question: Question) -> list[ChatPrompt]:
        """The prompts the strategy's first round sends for `question` (what `Answer.prompt_hash` identifies)."""
        raise NotImplementedError

    def tokens_needed(self, question: Question, prompts: Sequence[TokenizedPrompt], engine: Engine) -> int:
        """The most tokens any of the question's rounds needs in the model's window, given its tokenized first-round
        prompts: by default the longest of them and room for a scored label."""
        return max(len(p.ids) for p in prompts) + CANDIDATE_ROOM

    def prepare(self, questions: Sequence[Question], engine: Engine) -> list[Prepared]:
        """Each question with its first round's prompts tokenized once and its context cut to fit (`fit_context`);
        every measurement is one `engine.tokenize` call, and the last one's prompts are those the round sends."""

        def measure(question: Question) -> tuple[int, list[TokenizedPrompt]]:
            prompts = engine.tokenize(self.first_round_prompts(question))
            return self.tokens_needed(question, prompts, engine), prompts

        prepared = []
        for question in questions:
            first = measure(question)
            fitted, prompts, truncated = fit_context(question, measure, engine.max_model_len, first)
            prepared.append(Prepared(fitted, prompts, truncated, prompts_hash([p.text for p in first[1]])))
        return prepared

    # -- rounds ----------------------------------------------------------------------------------------------------
    def generate_round(
        self, name: str, engine: Engine, prompts: Sequence[Sequence[ChatPrompt]], params: SamplingParams, use_tqdm: bool
    ) -> list[list[Generation]]:
        """One generate round: the prompts of every question (`prompts[i]`: question i's) in one engine call. Returns
        per question its generations in prompt order, `params.n` samples per prompt one after another."""
        flat = [p for question_prompts in prompts for p in question_prompts]
        with self.round(name, len(flat), use_tqdm):
            generations = engine.generate(flat, params)
        return split(generations, [len(question_prompts) * params.n for question_prompts in prompts])

    def score_round(
        self, name: str, engine: Engine, requests: Sequence[Sequence[tuple[Prompt, Sequence[str]]]], use_tqdm: bool
    ) -> list[list[Scores]]:
        """One score round: every question's (prompt, candidates) requests in one engine call; per question, its scores."""
        flat = [r for question_requests in requests for r in question_requests]
        with self.round(name, len(flat), use_tqdm):
            scores = engine.score([p for p, _ in flat], [c for _, c in flat])
        return split(scores, [len(question_requests) for question_requests in requests])

    @contextmanager
    def round(self, name: str, prompts: int, use_tqdm: bool) -> Iterator[None]:
        """Time one round (`round_seconds`) and, with `use_tqdm`, show a bar `<strategy>: <round>` around its engine call."""
        start = time.perf_counter()
        with tqdm(total=prompts, desc=f"{self.name}: {name}", unit="prompt", disable=not use_tqdm, leave=False) as bar:
            yield
            bar.update(prompts)
        self.round_seconds[name] = self.round_seconds.get(name, 0.0) + time.perf_counter() - start

    def candidates(self, template: str, question: Question) -> list[str]:
        return [self.templates.block(template, "candidate", label=label) for label in question.labels]

    # -- answers ---------------------------------------------------------------------------------------------------
    def answer(self, prepared: Prepared, paths: Sequence[SampleAnswer], choice_logprobs: Sequence[float] = (), **fields: Any) -> Answer:
        """The `Answer` to a prepared question from its self-consistency paths: one path is the answer itself (`samples`
        stays empty); several are averaged, with their majority vote beside (voc.selfconsistency). The most probable
        label wins (ties go to the earlier option). `choice_logprobs`: the first path's label scores in the choice
        round, empty when there was none."""
        question = prepared.question
        if len(paths) == 1:
            probabilities = paths[0].probabilities
        else:
            probabilities = mean_probabilities(question.labels, [p.probabilities for p in paths])
            fields.update(samples=list(paths), majority=majority_vote(question.labels, [p.label for p in paths], probabilities))
        label = chosen(question.labels, probabilities)
        return Answer(
            question_id=question.id,
            strategy=self.name,
            label=label,
            choice=question.options[label],
            probabilities=probabilities,
            choice_logprobs=dict(zip(question.labels, choice_logprobs, strict=True)) if choice_logprobs else {},
            gold=question.gold,
            fewshot=[e.id for e in self.fewshot.examples(question)] if self.fewshot is not None else [],
            context_truncated=prepared.truncated,
            prompt_hash=prepared.prompt_hash,
            **fields,
        )


def fit_context(
    question: Question, measure: Callable[[Question], tuple[int, T]], limit: int, first: tuple[int, T] | None = None
) -> tuple[Question, T, bool]:
    """Make a question fit the model's window: `measure(q)` gives the tokens q needs (its longest prompt and the room
    it must leave) and what it built for them (the tokenized prompts, kept for use); `first`: `measure(question)` when
    the caller has it already.

    The policy: the question and options are never changed; when the prompt is too long the context is cut from its
    end (at a word boundary when there is one nearby, marked with " ...") or dropped when nothing of it fits. The cut is
    proportional, not a search: the context takes (need - need without it) tokens for its characters, so the share of
    them that fits is kept, and a measurement or two more settle it. Returns the question to use, what `measure` built
    for it, and whether the context was shortened (`Answer.context_truncated`). Raises PromptTooLongError when even the
    question and options alone do not fit.
    """
    need, built = first or measure(question)
    if need <= limit:
        return question, built, False
    bare = question.model_copy(update={"context": None})
    bare_need, bare_built = measure(bare) if question.context else (need, built)
    if bare_need > limit:
        raise PromptTooLongError(
            f"question {question.id}: the question and options alone need {bare_need} tokens (with the room for the reply), "
            f"more than the model's {limit}; shorten them, lower max_tokens or use a model with a longer window"
        )
    context = question.context or ""
    chars = len(context)
    while True:
        chars = min(chars - 1, chars * (limit - bare_need) // (need - bare_need))
        text = cut_text(context, chars) if chars > 0 else None
        if text is None:
            return bare, bare_built, True
        shortened = question.model_copy(update={"context": text})
        need, built = measure(shortened)
        if need <= limit:
            return shortened, built, True


def prompts_hash(texts: Sequence[str]) -> str:
    """sha256 of rendered prompt texts: which prompts an answer came from (`Answer.prompt_hash`)."""
    return hashlib.sha256("\0".join(texts).encode()).hexdigest()


def split(items: Sequence[Any], sizes: Sequence[int]) -> list[list[Any]]:
    """A flat list cut into consecutive pieces of the given sizes (one piece per question)."""
    pieces, start = [], 0
    for size in sizes:
        pieces.append(list(items[start : start + size]))
        start += size
    return pieces


def cut_text(text: str, n: int) -> str | None:
    """The first `n` characters of `text` plus TRUNCATION_MARK, ended at the last word boundary if it is in
    the second half (so words are not split, yet texts without spaces still keep a start); None if empty."""
    head = text[:n]
    if n < len(text) and not text[n].isspace():
        boundary = re.search(r"\s\S*$", head)
        if boundary and boundary.start() > n // 2:
            head = head[: boundary.start()]
    head = head.rstrip()
    return head + TRUNCATION_MARK if head else None


def gold_of(question: Question) -> dict[str, str]:
    """The gold option of a (pool) question as templates get it: {"label", "text"}."""
    if question.gold is None:
        raise ValueError(f"question {question.id} has no gold answer; a worked example needs one")
    return {"label": question.gold, "text": question.options[question.gold]}


def sample_example(question: Question) -> dict[str, Any]:
    """A worked example for test-rendering templates (`Strategy.check_templates`)."""
    return {
        "question": question,
        "gold": {"label": "A", "text": question.options["A"]},
        "explanation": "Sample explanation.",
        "answer": "Answer: A",
        "reasoning": "Sample reasoning.",
        "verifications": [
            {"label": lab, "option_text": text, "text": "Sample verification.", "verdict": f"Verdict: option {lab} is correct"}
            for lab, text in question.options.items()
        ],
    }


def scored_path(question: Question, logprobs: Sequence[float], completions: Sequence[str] = ()) -> SampleAnswer:
    """One path whose answer is the label scores `logprobs` (after its completions, if any)."""
    probabilities = dict(zip(question.labels, softmax(logprobs), strict=True))
    return SampleAnswer(label=chosen(question.labels, probabilities), probabilities=probabilities, completions=list(completions))
