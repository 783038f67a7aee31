"""What every strategy shares: turning label scores into an `Answer`, and fitting long contexts.

A strategy is a few rounds; each round sends the prompts of ALL questions to the engine in one
batched call, timed in `round_seconds` (for throughput reports) and, with `use_tqdm`, shown as a progress bar.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

from tqdm.auto import tqdm

from voc.engines.base import Engine, PromptTooLongError, SamplingParams, softmax
from voc.fewshot import FewShot
from voc.prompts import TemplateBlockError, Templates
from voc.selfconsistency import majority_vote, mean_probabilities
from voc.types import Answer, Question, SampleAnswer, explanation_of

CANDIDATE_ROOM = 8  # tokens kept free for a scored candidate such as " A"
TRUNCATION_MARK = " ..."  # ends a shortened context, so the model sees that text is missing


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

    def example_ids(self, question: Question) -> list[str]:
        """Ids of the pool questions shown as examples with `question` (`Answer.fewshot`)."""
        return [e.id for e in self.fewshot.examples(question)] if self.fewshot is not None else []

    def example_fields(self, example: Question, template: str) -> dict[str, Any]:
        """What a strategy's `example` block gets about one pool question besides question, gold and explanation."""
        return {}

    def gold_candidate(self, template: str, question: Question) -> str:
        """The `candidate` block of `template` for the question's gold label (e.g. " B")."""
        return self.templates.block(template, "candidate", label=gold_of(question)["label"])

    def run(self, questions: Sequence[Question], engine: Engine, use_tqdm: bool = False) -> list[Answer]:
        """Answer `questions`, each round one batched engine call; `use_tqdm`: show a progress bar per round."""
        raise NotImplementedError

    def answer_from_paths(
        self, question: Question, paths: Sequence[SampleAnswer], choice_logprobs: Sequence[float] = (), **fields: Any
    ) -> Answer:
        return answer_from_paths(question, self.name, paths, choice_logprobs, fewshot=self.example_ids(question), **fields)

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

    # -- long contexts -------------------------------------------------------------------------
    def fit_context(self, question: Question, engine: Engine, prompt_tokens: Callable[[Question], int], room: int) -> tuple[Question, bool]:
        """Make the question's prompts fit the model: `prompt_tokens(question) + room <= engine.max_model_len`.

        The policy: the question and options are never changed; when the prompt is too long the context
        is cut from its end (at a word boundary when there is one nearby, marked with " ...") to the
        longest start that fits, or dropped when nothing of it fits. Returns the question to use and
        whether the context was shortened (recorded as `Answer.context_truncated`). Raises
        PromptTooLongError when even the question and options alone do not fit.
        """
        limit = engine.max_model_len
        if prompt_tokens(question) + room <= limit:
            return question, False
        bare = question.model_copy(update={"context": None})
        need = prompt_tokens(bare) + room
        if need > limit or not question.context:
            raise PromptTooLongError(
                f"question {question.id}: the question and options alone need {need} tokens (with {room} for the reply), "
                f"more than the model's {limit}; shorten them, lower max_tokens or use a model with a longer window"
            )
        context = question.context

        def fits(n: int) -> bool:
            return prompt_tokens(question.model_copy(update={"context": cut_text(context, n)})) + room <= limit

        low, high = 0, len(context) - 1  # the longest start (in characters) that fits, by bisection
        while low < high:
            mid = (low + high + 1) // 2
            if fits(mid):
                low = mid
            else:
                high = mid - 1
        return question.model_copy(update={"context": cut_text(context, low) if low else None}), True


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


def label_probabilities(labels: Sequence[str], logprobs: Sequence[float]) -> dict[str, float]:
    return dict(zip(labels, softmax(logprobs), strict=True))


def answer_from_paths(
    question: Question, strategy: str, paths: Sequence[SampleAnswer], choice_logprobs: Sequence[float] = (), **fields: Any
) -> Answer:
    """The `Answer` from one or more self-consistency paths: one path is the answer itself (`samples` stays empty);
    several are averaged, with their majority vote beside (voc.selfconsistency). `choice_logprobs`: the first path's."""
    if len(paths) == 1:
        return make_answer(question, strategy, paths[0].probabilities, choice_logprobs, **fields)
    probabilities = mean_probabilities(question.labels, [p.probabilities for p in paths])
    majority = majority_vote(question.labels, [p.label for p in paths], probabilities)
    return make_answer(question, strategy, probabilities, choice_logprobs, samples=list(paths), majority=majority, **fields)


def make_answer(
    question: Question,
    strategy: str,
    probabilities: dict[str, float],
    choice_logprobs: Sequence[float] = (),
    **fields: Any,
) -> Answer:
    """Build the `Answer`: the most probable label wins (ties go to the earlier option). `choice_logprobs`: the label
    scores of the choice round, empty when there was none."""
    label = max(question.labels, key=lambda lab: probabilities[lab])
    return Answer(
        question_id=question.id,
        strategy=strategy,
        label=label,
        choice=question.options[label],
        probabilities=probabilities,
        choice_logprobs=dict(zip(question.labels, choice_logprobs, strict=True)) if choice_logprobs else {},
        gold=question.gold,
        **fields,
    )
