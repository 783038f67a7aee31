"""`direct`: score the option labels right after the question. No free text, so nothing to parse."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from voc.engines.base import ChatPrompt, Engine
from voc.strategies.base import Strategy, scored_path
from voc.types import Answer, Question

TEMPLATE = "direct.jinja"


class Direct(Strategy):
    name = "direct"
    template_files = (TEMPLATE,)

    def prompt(self, question: Question) -> ChatPrompt:
        return self.templates.chat(
            TEMPLATE,
            self.templates.block(TEMPLATE, "answer_prefix", question=question),
            question=question,
            examples=self.examples(question, TEMPLATE),
        )

    def example_fields(self, example: Question, template: str) -> dict[str, Any]:
        """A worked example's answer: the answer prefix and the gold label, as the label is scored."""
        return {"answer": self.templates.block(TEMPLATE, "answer_prefix", question=example) + self.gold_candidate(TEMPLATE, example)}

    def first_round_prompts(self, question: Question) -> list[ChatPrompt]:
        return [self.prompt(question)]

    def run(self, questions: Sequence[Question], engine: Engine, use_tqdm: bool = False) -> list[Answer]:
        """One round: score the labels after each question's prompt."""
        prepared = self.prepare(questions, engine)
        requests = [[(p.prompts[0], self.candidates(TEMPLATE, p.question))] for p in prepared]
        scores = self.score_round("choose", engine, requests, use_tqdm)
        return [
            self.answer(p, [scored_path(p.question, s.logprobs)], s.logprobs, prompt_tokens=s.prompt_tokens)
            for p, (s,) in zip(prepared, scores, strict=True)
        ]
