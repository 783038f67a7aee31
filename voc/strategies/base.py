"""What every strategy shares: turning label scores into an `Answer`, and fitting long contexts.

A strategy is a few rounds; each round sends the prompts of ALL questions to the engine in one
batched call. Round timings are kept in `round_seconds` for throughput reports.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

from voc.engines.base import Engine, PromptTooLongError, SamplingParams, softmax
from voc.prompts import Templates
from voc.types import Answer, Question

CANDIDATE_ROOM = 8  # tokens kept free for a scored candidate such as " A"


class Strategy:
    """Base class: subclasses implement `run(questions, engine)`."""

    name: ClassVar[str] = "strategy"
    template_files: ClassVar[tuple[str, ...]] = ()

    def __init__(self, templates: Templates | None = None, params: SamplingParams | None = None) -> None:
        self.templates = templates or Templates()
        self.params = params or SamplingParams()
        self.round_seconds: dict[str, float] = {}
        for name in self.template_files:
            self.templates.get(name)  # fail now, not in the middle of a run

    def run(self, questions: Sequence[Question], engine: Engine) -> list[Answer]:
        raise NotImplementedError

    @contextmanager
    def timed(self, round_name: str) -> Any:
        start = time.perf_counter()
        yield
        self.round_seconds[round_name] = self.round_seconds.get(round_name, 0.0) + time.perf_counter() - start

    def candidates(self, template: str, question: Question) -> list[str]:
        return [self.templates.block(template, "candidate", label=label) for label in question.labels]

    # -- long contexts -------------------------------------------------------------------------
    def fit_context(
        self, question: Question, engine: Engine, prompt_tokens: Callable[[Question], int], room: int
    ) -> tuple[Question, bool]:
        """Shorten the context (from the end) until `prompt_tokens(question) + room` fits the model.

        Returns the question to use and whether the context was truncated. Raises
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
        words = question.context.split(" ")
        low, high = 0, len(words)  # the longest prefix of words that fits, by bisection
        while low < high:
            mid = (low + high + 1) // 2
            if prompt_tokens(question.model_copy(update={"context": " ".join(words[:mid]) + " ..."})) + room <= limit:
                low = mid
            else:
                high = mid - 1
        context = " ".join(words[:low]) + " ..." if low else None
        return question.model_copy(update={"context": context}), True


def label_probabilities(labels: Sequence[str], logprobs: Sequence[float]) -> dict[str, float]:
    return dict(zip(labels, softmax(logprobs), strict=True))


def make_answer(
    question: Question,
    strategy: str,
    probabilities: dict[str, float],
    choice_logprobs: Sequence[float],
    **fields: Any,
) -> Answer:
    """Build the `Answer`: the most probable label wins (ties go to the earlier option)."""
    label = max(question.labels, key=lambda lab: probabilities[lab])
    return Answer(
        question_id=question.id,
        strategy=strategy,
        label=label,
        choice=question.options[label],
        probabilities=probabilities,
        choice_logprobs=dict(zip(question.labels, choice_logprobs, strict=True)),
        gold=question.gold,
        **fields,
    )
