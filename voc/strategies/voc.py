"""`voc`, Verification-of-Choice: verify each option separately, then choose in the light of all.

Round 1 (`verify`): for every option of every question, generate a verification (evidence for
and against that option). Round 2 (`choose`): one scoring call that reads, for every option,
the probability of the verdict "correct" after its verification, and, for every question, the
probability of each label after a prompt that shows all verifications.

The final rule combines them:
- `choice`: the choice round alone (the paper's method);
- `verdicts`: the verdict probabilities alone, normalised over the options;
- `combined` (default): the product of both distributions, normalised.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from voc.engines.base import ChatPrompt, Continuation, Engine, SamplingParams, softmax
from voc.prompts import Templates
from voc.strategies.base import CANDIDATE_ROOM, Strategy, make_answer
from voc.types import Answer, Question, Verification

VERIFY = "voc_verify.jinja"
CHOOSE = "voc_choose.jinja"
FinalRule = Literal["choice", "verdicts", "combined"]
FINAL_RULES: tuple[str, ...] = ("choice", "verdicts", "combined")
VERIFICATION_OVERHEAD = 24  # tokens the choose template adds around each verification


class VerificationOfChoice(Strategy):
    name = "voc"
    template_files = (VERIFY, CHOOSE)

    def __init__(
        self, templates: Templates | None = None, params: SamplingParams | None = None, final_rule: FinalRule = "combined"
    ) -> None:
        if final_rule not in FINAL_RULES:
            raise ValueError(f"unknown final rule {final_rule!r}; use one of {', '.join(FINAL_RULES)}")
        super().__init__(templates, params)
        self.final_rule = final_rule

    def verify_prompt(self, question: Question, label: str) -> ChatPrompt:
        option = {"label": label, "text": question.options[label]}
        prefix = self.templates.block(VERIFY, "verification_prefix", question=question, option=option)
        return self.templates.chat(VERIFY, prefix, question=question, option=option)

    def choose_prompt(self, question: Question, verifications: Sequence[dict[str, str]]) -> ChatPrompt:
        prefix = self.templates.block(CHOOSE, "answer_prefix", question=question)
        return self.templates.chat(CHOOSE, prefix, question=question, verifications=verifications)

    def run(self, questions: Sequence[Question], engine: Engine) -> list[Answer]:
        max_tokens = self.params.max_tokens

        def tokens(q: Question) -> int:  # the choose prompt is the longest: it holds every verification
            longest = max(engine.count_tokens(engine.render(self.verify_prompt(q, lab))) for lab in q.labels)
            empty = [{"label": lab, "option_text": q.options[lab], "text": ""} for lab in q.labels]
            choose = engine.count_tokens(engine.render(self.choose_prompt(q, empty))) + len(q.labels) * (max_tokens + VERIFICATION_OVERHEAD)
            return max(longest + max_tokens, choose)

        fitted = [self.fit_context(q, engine, tokens, CANDIDATE_ROOM) for q in questions]
        pairs = [(q, lab) for q, _ in fitted for lab in q.labels]
        verify_prompts = [self.verify_prompt(q, lab) for q, lab in pairs]
        params = self.params.model_copy(update={"stop": (*self.params.stop, self.templates.block(VERIFY, "stop"))})
        with self.timed("verify"):
            generations = engine.generate(verify_prompts, params, desc="voc: verify")

        verdict_prompts, verdict_candidates = [], []
        for (q, lab), prompt, g in zip(pairs, verify_prompts, generations, strict=True):
            option = {"label": lab, "text": q.options[lab]}
            verdict_prefix = self.templates.block(VERIFY, "verdict_prefix", question=q, option=option)
            verdict_prompts.append(Continuation(prompt, g, verdict_prefix))  # scored after the generated tokens, not re-encoded text
            verdict_candidates.append([self.templates.block(VERIFY, f"verdict_{v}", option=option) for v in ("true", "false")])

        by_question: list[list[dict[str, str]]] = []
        cursor = 0
        for q, _ in fitted:
            items = []
            for lab in q.labels:
                items.append({"label": lab, "option_text": q.options[lab], "text": generations[cursor].text.strip()})
                cursor += 1
            by_question.append(items)
        choose_prompts = [self.choose_prompt(q, items) for (q, _), items in zip(fitted, by_question, strict=True)]
        choose_candidates = [self.candidates(CHOOSE, q) for q, _ in fitted]

        with self.timed("choose"):  # verdicts and choices go to the engine as one batch
            scores = engine.score(verdict_prompts + choose_prompts, verdict_candidates + choose_candidates, desc="voc: choose")
        verdict_scores, choice_scores = scores[: len(pairs)], scores[len(pairs) :]

        answers, cursor = [], 0
        for (q, truncated), choice in zip(fitted, choice_scores, strict=True):
            k = len(q.labels)
            gens, verdicts = generations[cursor : cursor + k], verdict_scores[cursor : cursor + k]
            cursor += k
            verdict_p = [softmax(v.logprobs)[0] for v in verdicts]
            probabilities = self.combine(softmax(choice.logprobs), verdict_p)
            answers.append(
                make_answer(
                    q,
                    self.name,
                    dict(zip(q.labels, probabilities, strict=True)),
                    choice.logprobs,
                    verifications={
                        lab: Verification(label=lab, text=g.text.strip(), verdict_probability=p)
                        for lab, g, p in zip(q.labels, gens, verdict_p, strict=True)
                    },
                    completions=[g.text for g in gens],
                    prompt_tokens=sum(g.prompt_tokens for g in gens) + sum(v.prompt_tokens for v in verdicts) + choice.prompt_tokens,
                    completion_tokens=sum(g.completion_tokens for g in gens),
                    context_truncated=truncated,
                )
            )
        return answers

    def combine(self, choice: Sequence[float], verdicts: Sequence[float]) -> list[float]:
        """The final distribution over options under `final_rule`."""
        total = sum(verdicts)
        verdict_dist = [v / total for v in verdicts] if total > 0 else [1 / len(verdicts)] * len(verdicts)
        if self.final_rule == "choice":
            return list(choice)
        if self.final_rule == "verdicts":
            return verdict_dist
        return softmax([math.log(max(c, 1e-300)) + math.log(max(v, 1e-300)) for c, v in zip(choice, verdict_dist, strict=True)])
