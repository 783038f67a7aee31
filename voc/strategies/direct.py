"""`direct`: score the option labels right after the question. No free text, so nothing to parse."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from voc.engines.base import ChatPrompt, Engine
from voc.strategies.base import CANDIDATE_ROOM, Strategy, label_probabilities, make_answer
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

    def run(self, questions: Sequence[Question], engine: Engine, use_tqdm: bool = False) -> list[Answer]:
        def tokens(q: Question) -> int:
            return engine.count_tokens(engine.render(self.prompt(q)))

        fitted = [self.fit_context(q, engine, tokens, CANDIDATE_ROOM) for q in questions]
        with self.round("choose", len(fitted), use_tqdm):
            scores = engine.score([self.prompt(q) for q, _ in fitted], [self.candidates(TEMPLATE, q) for q, _ in fitted])
        return [
            make_answer(
                q,
                self.name,
                label_probabilities(q.labels, s.logprobs),
                s.logprobs,
                prompt_tokens=s.prompt_tokens,
                context_truncated=truncated,
                fewshot=self.example_ids(q),
            )
            for (q, truncated), s in zip(fitted, scores, strict=True)
        ]
