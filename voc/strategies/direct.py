"""`direct`: score the option labels right after the question. No free text, so nothing to parse."""

from __future__ import annotations

from collections.abc import Sequence

from voc.engines.base import ChatPrompt, Engine
from voc.strategies.base import CANDIDATE_ROOM, Strategy, label_probabilities, make_answer
from voc.types import Answer, Question


class Direct(Strategy):
    name = "direct"
    template_files = ("direct.jinja",)

    def prompt(self, question: Question) -> ChatPrompt:
        return self.templates.chat(
            "direct.jinja", self.templates.block("direct.jinja", "answer_prefix", question=question), question=question
        )

    def run(self, questions: Sequence[Question], engine: Engine) -> list[Answer]:
        def tokens(q: Question) -> int:
            return engine.count_tokens(engine.render(self.prompt(q)))

        fitted = [self.fit_context(q, engine, tokens, CANDIDATE_ROOM) for q in questions]
        with self.timed("choose"):
            scores = engine.score(
                [self.prompt(q) for q, _ in fitted],
                [self.candidates("direct.jinja", q) for q, _ in fitted],
                desc="direct: choose",
            )
        return [
            make_answer(
                q,
                self.name,
                label_probabilities(q.labels, s.logprobs),
                s.logprobs,
                prompt_tokens=s.prompt_tokens,
                context_truncated=truncated,
            )
            for (q, truncated), s in zip(fitted, scores, strict=True)
        ]
