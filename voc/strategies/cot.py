"""`cot`: generate step-by-step reasoning, then score the option labels after it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from voc.engines.base import ChatPrompt, Continuation, Engine, TokenizedPrompt
from voc.strategies.base import CANDIDATE_ROOM, Strategy, gold_of, scored_path
from voc.types import Answer, Question, explanation_of

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

    def first_round_prompts(self, question: Question) -> list[ChatPrompt]:
        return [self.reasoning_prompt(question)]

    def tokens_needed(self, question: Question, prompts: Sequence[TokenizedPrompt], engine: Engine) -> int:
        """The reasoning prompt, the reasoning, the answer prefix and a label."""
        answer_prefix = engine.count_tokens(self.templates.block(TEMPLATE, "answer_prefix"))
        return len(prompts[0].ids) + self.params.max_tokens + answer_prefix + CANDIDATE_ROOM

    def run(self, questions: Sequence[Question], engine: Engine, use_tqdm: bool = False) -> list[Answer]:
        """Reason (`params.n` sampled paths per question, one generate round), then score the labels after each reasoning
        (one score round); with several paths the answer is their mean (see voc.selfconsistency)."""
        prepared = self.prepare(questions, engine)
        params = self.params.model_copy(update={"stop": (*self.params.stop, self.templates.block(TEMPLATE, "stop"))})
        reasonings = self.generate_round("reason", engine, [p.prompts for p in prepared], params, use_tqdm)
        answer_prefix = self.templates.block(TEMPLATE, "answer_prefix")
        requests = [  # the answer prefix after each reasoning's generated tokens
            [(Continuation(p.prompts[0], g, answer_prefix), self.candidates(TEMPLATE, p.question)) for g in gens]
            for p, gens in zip(prepared, reasonings, strict=True)
        ]
        scores = self.score_round("choose", engine, requests, use_tqdm)
        return [
            self.answer(
                p,
                [scored_path(p.question, s.logprobs, [g.text]) for g, s in zip(gens, path_scores, strict=True)],
                path_scores[0].logprobs,
                completions=[g.text for g in gens],
                prompt_tokens=sum(g.prompt_tokens + s.prompt_tokens for g, s in zip(gens, path_scores, strict=True)),
                completion_tokens=sum(g.completion_tokens for g in gens),
            )
            for p, gens, path_scores in zip(prepared, reasonings, scores, strict=True)
        ]
