"""`cot`: generate step-by-step reasoning, then score the option labels after it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from voc.engines.base import ChatPrompt, Continuation, Engine
from voc.selfconsistency import chosen
from voc.strategies.base import CANDIDATE_ROOM, Strategy, gold_of, label_probabilities
from voc.types import Answer, Question, SampleAnswer, explanation_of

TEMPLATE = "cot.jinja"
TARGET = "cot_target.jinja"  # the reasoning a worked example shows (also fine-tuning's target)


class ChainOfThought(Strategy):
    name = "cot"
    template_files = (TEMPLATE,)

    def reasoning_prompt(self, question: Question) -> ChatPrompt:
        return self.templates.chat(
            TEMPLATE,
            self.templates.block(TEMPLATE, "reasoning_prefix", question=question),
            question=question,
            examples=self.examples(question, TEMPLATE),
        )

    def example_fields(self, example: Question, template: str) -> dict[str, Any]:
        """A worked example's reasoning (the reasoning prefix, then cot_target.jinja's reasoning from the gold answer) and
        its answer (the answer prefix and the gold label), as the strategy continues a generated reasoning."""
        reasoning = self.templates.block(
            TARGET, "reasoning", question=example, gold=gold_of(example), explanation=explanation_of(example)
        )
        return {
            "reasoning": self.templates.block(TEMPLATE, "reasoning_prefix", question=example) + reasoning.rstrip(),
            "answer": self.templates.block(TEMPLATE, "answer_prefix") + self.gold_candidate(TEMPLATE, example),
        }

    def run(self, questions: Sequence[Question], engine: Engine, use_tqdm: bool = False) -> list[Answer]:
        """Reason (`params.n` sampled paths per question, one engine call), then score the labels after each reasoning
        (one engine call); with several paths the answer is their mean (see voc.selfconsistency)."""
        answer_prefix = self.templates.block(TEMPLATE, "answer_prefix")
        room = self.params.max_tokens + engine.count_tokens(answer_prefix) + CANDIDATE_ROOM
        n = self.params.n

        def tokens(q: Question) -> int:
            return engine.count_tokens(engine.render(self.reasoning_prompt(q)))

        fitted = [self.fit_context(q, engine, tokens, room) for q in questions]
        prompts = [self.reasoning_prompt(q) for q, _ in fitted]
        params = self.params.model_copy(update={"stop": (*self.params.stop, self.templates.block(TEMPLATE, "stop"))})
        with self.round("reason", len(prompts), use_tqdm):
            reasonings = engine.generate(prompts, params)  # the n paths of question i at i * n + j
        choose = [Continuation(prompts[k // n], g, answer_prefix) for k, g in enumerate(reasonings)]  # after the generated tokens
        with self.round("choose", len(choose), use_tqdm):
            scores = engine.score(choose, [self.candidates(TEMPLATE, fitted[k // n][0]) for k in range(len(choose))])
        answers = []
        for i, (q, truncated) in enumerate(fitted):
            gens, path_scores = reasonings[i * n : (i + 1) * n], scores[i * n : (i + 1) * n]
            paths = []
            for g, s in zip(gens, path_scores, strict=True):
                probabilities = label_probabilities(q.labels, s.logprobs)
                paths.append(SampleAnswer(label=chosen(q.labels, probabilities), probabilities=probabilities, completions=[g.text]))
            answers.append(
                self.answer_from_paths(
                    q,
                    paths,
                    path_scores[0].logprobs,
                    completions=[g.text for g in gens],
                    prompt_tokens=sum(g.prompt_tokens + s.prompt_tokens for g, s in zip(gens, path_scores, strict=True)),
                    completion_tokens=sum(g.completion_tokens for g in gens),
                    context_truncated=truncated,
                )
            )
        return answers
