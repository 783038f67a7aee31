"""`cot`: generate step-by-step reasoning, then score the option labels after it."""

from __future__ import annotations

from collections.abc import Sequence

from voc.engines.base import ChatPrompt, Continuation, Engine
from voc.strategies.base import CANDIDATE_ROOM, Strategy, label_probabilities, make_answer
from voc.types import Answer, Question

TEMPLATE = "cot.jinja"


class ChainOfThought(Strategy):
    name = "cot"
    template_files = (TEMPLATE,)

    def reasoning_prompt(self, question: Question) -> ChatPrompt:
        return self.templates.chat(TEMPLATE, self.templates.block(TEMPLATE, "reasoning_prefix", question=question), question=question)

    def run(self, questions: Sequence[Question], engine: Engine) -> list[Answer]:
        answer_prefix = self.templates.block(TEMPLATE, "answer_prefix")
        room = self.params.max_tokens + engine.count_tokens(answer_prefix) + CANDIDATE_ROOM

        def tokens(q: Question) -> int:
            return engine.count_tokens(engine.render(self.reasoning_prompt(q)))

        fitted = [self.fit_context(q, engine, tokens, room) for q in questions]
        prompts = [self.reasoning_prompt(q) for q, _ in fitted]
        params = self.params.model_copy(update={"stop": (*self.params.stop, self.templates.block(TEMPLATE, "stop"))})
        with self.timed("reason"):
            reasonings = engine.generate(prompts, params, desc="cot: reason")
        choose = [Continuation(p, g, answer_prefix) for p, g in zip(prompts, reasonings, strict=True)]  # after the generated tokens
        with self.timed("choose"):
            scores = engine.score(choose, [self.candidates(TEMPLATE, q) for q, _ in fitted], desc="cot: choose")
        return [
            make_answer(
                q,
                self.name,
                label_probabilities(q.labels, s.logprobs),
                s.logprobs,
                completions=[g.text],
                prompt_tokens=g.prompt_tokens + s.prompt_tokens,
                completion_tokens=g.completion_tokens,
                context_truncated=truncated,
            )
            for (q, truncated), g, s in zip(fitted, reasonings, scores, strict=True)
        ]
