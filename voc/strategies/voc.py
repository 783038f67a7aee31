"""`voc`, Verification-of-Choice: verify each option separately, then choose in the light of all.

Rounds (each one batched engine call over all questions):
1. `verify`: for every option of every question, generate a verification (evidence for and against it),
   of at most `verification_tokens` tokens (default: the sampling params' max_tokens; with k options VoC
   generates up to k verifications per question where CoT generates one reasoning).
2. `verdict`: the probability of the verdict "correct" (against "incorrect"), scored right after each
   verification's own tokens.
3. `choose`: the probability of each label after a prompt that shows all verifications: in full
   (`choose_prompt="full"`, voc_choose.jinja) or each option's verdict and the start of its verification
   (`"compact"`, voc_choose_compact.jinja: a short prompt, so the round costs far less prefill).

The final rule decides the answer, and only the rounds it needs are run:
- `choice`: the choice round alone (the paper's method): verify, choose (no verdicts, unless the compact
  prompt shows them);
- `verdicts`: the verdict probabilities alone, normalised over the options: verify, verdict (no choose prompt);
- `combined` (default): the product of both distributions, normalised: all three rounds.
`Answer.rounds` says which rounds were computed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

from voc.engines.base import ChatPrompt, Continuation, Engine, Generation, SamplingParams, Scores, TokenizedPrompt, softmax
from voc.fewshot import FewShot
from voc.prompts import Templates
from voc.selfconsistency import chosen
from voc.strategies.base import CANDIDATE_ROOM, Prepared, Strategy, gold_of
from voc.types import Answer, Question, SampleAnswer, Verification, explanation_of

VERIFY = "voc_verify.jinja"
VERIFY_TARGET = "voc_verify_target.jinja"  # the verifications a worked example shows (also fine-tuning's targets)
CHOOSE = "voc_choose.jinja"
CHOOSE_TEMPLATES = {"full": CHOOSE, "compact": "voc_choose_compact.jinja"}
FinalRule = Literal["choice", "verdicts", "combined", "calibrated_verdicts"]
ChoosePrompt = Literal["full", "compact"]
FINAL_RULES: tuple[str, ...] = ("choice", "verdicts", "combined", "calibrated_verdicts")
MIN_CALIBRATION_BATCH = 8  # calibrated_verdicts: fewer questions in one call give no reliable position means (plain verdicts)
CHOOSE_PROMPTS: tuple[str, ...] = tuple(CHOOSE_TEMPLATES)
VERIFICATION_OVERHEAD = 24  # tokens the choose template adds around each verification


class VerificationOfChoice(Strategy):
    name = "voc"

    def __init__(
        self,
        templates: Templates | None = None,
        params: SamplingParams | None = None,
        final_rule: FinalRule = "combined",
        choose_prompt: ChoosePrompt = "full",
        verification_tokens: int | None = None,
        fewshot: FewShot | None = None,
    ) -> None:
        if verification_tokens is not None and verification_tokens < 1:
            raise ValueError(f"verification_tokens must be at least 1, got {verification_tokens}")
        if final_rule not in FINAL_RULES:
            raise ValueError(f"unknown final rule {final_rule!r}; use one of {', '.join(FINAL_RULES)}")
        if choose_prompt not in CHOOSE_TEMPLATES:
            raise ValueError(f"unknown choose prompt {choose_prompt!r}; use one of {', '.join(CHOOSE_PROMPTS)}")
        self.final_rule = final_rule
        self.verification_tokens = verification_tokens
        self.choose_prompt_style = choose_prompt
        self.choose_template = CHOOSE_TEMPLATES[choose_prompt]
        self.template_files = (VERIFY, self.choose_template)
        super().__init__(templates, params, fewshot)

    @property
    def rounds(self) -> tuple[str, ...]:
        """The rounds this final rule and choose prompt need, in order."""
        return rule_rounds(self.final_rule, self.choose_prompt_style)

    def verify_prompt(self, question: Question, label: str) -> ChatPrompt:
        option = {"label": label, "text": question.options[label]}
        prefix = self.templates.block(VERIFY, "verification_prefix", question=question, option=option)
        return self.templates.chat(VERIFY, prefix, question=question, option=option, examples=self.examples(question, VERIFY))

    def choose_prompt(self, question: Question, verifications: Sequence[dict[str, Any]]) -> ChatPrompt:
        """The choice round's prompt; `verifications`: per option its label, option_text, text and verdict_probability."""
        template = self.choose_template
        prefix = self.templates.block(template, "answer_prefix", question=question)
        return self.templates.chat(
            template, prefix, question=question, verifications=verifications, examples=self.examples(question, template)
        )

    def example_fields(self, example: Question, template: str) -> dict[str, Any]:
        """A worked example: a verification of every option built from the gold answer by voc_verify_target.jinja (as
        fine-tuning builds its targets) after the verification prefix, its verdict (the verdict prefix and the true or
        false verdict, as the strategy scores it), and the answer (the choose prompt's answer prefix and the gold label)."""
        gold, explanation = gold_of(example), explanation_of(example)
        verifications = []
        for label, text in example.options.items():
            option, correct = {"label": label, "text": text}, label == example.gold
            target = self.templates.block(
                VERIFY_TARGET, "verification", question=example, option=option, gold=gold, correct=correct, explanation=explanation
            )
            prefix = self.templates.block(VERIFY, "verification_prefix", question=example, option=option)
            verdict = self.templates.block(VERIFY, "verdict_prefix", question=example, option=option)
            verdict += self.templates.block(VERIFY, "verdict_true" if correct else "verdict_false", option=option)
            verifications.append({"label": label, "option_text": text, "text": (prefix + target).strip(), "verdict": verdict.strip()})
        answer = self.templates.block(self.choose_template, "answer_prefix", question=example)
        return {"verifications": verifications, "answer": answer + self.gold_candidate(self.choose_template, example)}

    def verdict_request(self, prepared: Prepared, option: int, generation: Generation) -> tuple[Continuation, list[str]]:
        """The verdict prefix after the verification's own tokens (of the question's `option`-th option), and the two
        verdict candidates (true first)."""
        label = prepared.question.labels[option]
        variables = {"question": prepared.question, "option": {"label": label, "text": prepared.question.options[label]}}
        prefix = self.templates.block(VERIFY, "verdict_prefix", **variables)
        candidates = [self.templates.block(VERIFY, f"verdict_{v}", **variables) for v in ("true", "false")]
        return Continuation(prepared.prompts[option], generation, prefix), candidates

    @property
    def verify_params(self) -> SamplingParams:
        """Sampling of the verify round: the stop text, and `verification_tokens` (if set) as each verification's budget."""
        update: dict[str, Any] = {"stop": (*self.params.stop, self.templates.block(VERIFY, "stop"))}
        if self.verification_tokens is not None:
            update["max_tokens"] = self.verification_tokens
        return self.params.model_copy(update=update)

    def first_round_prompts(self, question: Question) -> list[ChatPrompt]:
        return [self.verify_prompt(question, label) for label in question.labels]

    def tokens_needed(self, question: Question, prompts: Sequence[TokenizedPrompt], engine: Engine) -> int:
        """The longest verification prompt with its verification and verdict, or, when the choose round runs, the choose
        prompt holding every verification (its size estimated from the prompt with empty verifications)."""
        budget = self.verify_params.max_tokens
        need = max(len(p.ids) for p in prompts) + budget
        if "choose" in self.rounds:
            empty = [{"label": lab, "option_text": text, "text": "", "verdict_probability": 0.5} for lab, text in question.options.items()]
            (choose,) = engine.tokenize([self.choose_prompt(question, empty)])
            need = max(need, len(choose.ids) + len(question.labels) * (budget + VERIFICATION_OVERHEAD))
        return need + CANDIDATE_ROOM

    def run(self, questions: Sequence[Question], engine: Engine, use_tqdm: bool = False) -> list[Answer]:
        """Verify every option (a generate round), then the score rounds the final rule needs: each verdict after its
        verification, and the labels after a prompt that shows all verifications."""
        prepared = self.prepare(questions, engine)  # the first round's prompts: one verification prompt per option
        n, rounds = self.params.n, self.rounds
        # per question: its options' verifications, n samples of each option one after another
        generations = self.generate_round("verify", engine, [p.prompts for p in prepared], self.verify_params, use_tqdm)
        verdicts: list[list[float | None]] = [[None] * len(gens) for gens in generations]
        verdict_tokens = [0] * len(prepared)
        if "verdict" in rounds:
            verdict_requests = [
                [self.verdict_request(p, k // n, g) for k, g in enumerate(gens)] for p, gens in zip(prepared, generations, strict=True)
            ]
            scores = self.score_round("verdict", engine, verdict_requests, use_tqdm)
            verdicts = [[softmax(s.logprobs)[0] for s in question_scores] for question_scores in scores]
            verdict_tokens = [sum(s.prompt_tokens for s in question_scores) for question_scores in scores]
        # path j of a question: the j-th sampled verification of each of its options, with their verdicts
        paths = [(by_path(gens, n), by_path(ps, n)) for gens, ps in zip(generations, verdicts, strict=True)]
        prior = position_prior([ps for _, path_ps in paths for ps in path_ps]) if self.final_rule == CALIBRATED else None
        choices: list[list[Scores | None]] = [[None] * n for _ in prepared]
        if "choose" in rounds:
            requests = [
                [(self.choose_prompt(p.question, self.shown(p.question, gens, ps)), self.candidates(self.choose_template, p.question))
                 for gens, ps in zip(path_gens, path_ps, strict=True)]
                for p, (path_gens, path_ps) in zip(prepared, paths, strict=True)
            ]  # fmt: skip
            choices = self.score_round("choose", engine, requests, use_tqdm)
        return [
            self.final_answer(p, path_gens, path_ps, question_choices, tokens, prior)
            for p, (path_gens, path_ps), question_choices, tokens in zip(prepared, paths, choices, verdict_tokens, strict=True)
        ]

    def final_answer(
        self,
        prepared: Prepared,
        path_gens: list[list[Generation]],
        path_ps: list[list[float | None]],
        choices: Sequence[Scores | None],
        verdict_tokens: int,
        prior: Sequence[float] | None,
    ) -> Answer:
        """A question's answer from its paths' verifications, verdicts and choice scores, by the final rule."""
        q = prepared.question
        paths = []
        for gens, ps, choice in zip(path_gens, path_ps, choices, strict=True):
            choice_p = softmax(choice.logprobs) if choice is not None else None
            probabilities = dict(zip(q.labels, combine(self.final_rule, choice_p, ps, prior), strict=True))
            verdict_of = {lab: p for lab, p in zip(q.labels, ps, strict=True) if p is not None}
            label, completions = chosen(q.labels, probabilities), [g.text for g in gens]
            paths.append(SampleAnswer(label=label, probabilities=probabilities, completions=completions, verdicts=verdict_of))
        all_gens = [g for gens in path_gens for g in gens]
        choice_tokens = sum(c.prompt_tokens for c in choices if c is not None)
        return self.answer(
            prepared,
            paths,
            choices[0].logprobs if choices[0] is not None else (),
            verifications={
                lab: Verification(label=lab, text=g.text.strip(), verdict_probability=p)
                for lab, g, p in zip(q.labels, path_gens[0], path_ps[0], strict=True)
            },
            completions=[g.text for g in all_gens],
            prompt_tokens=sum(g.prompt_tokens for g in all_gens) + verdict_tokens + choice_tokens,
            completion_tokens=sum(g.completion_tokens for g in all_gens),
            rounds=list(self.rounds),
        )

    @staticmethod
    def shown(question: Question, generations: Sequence[Generation], verdicts: Sequence[float | None]) -> list[dict[str, Any]]:
        """What the choose template gets about each option's verification (in option order)."""
        return [
            {"label": label, "option_text": question.options[label], "text": g.text.strip(), "verdict_probability": p}
            for label, g, p in zip(question.labels, generations, verdicts, strict=True)
        ]


CALIBRATED = "calibrated_verdicts"


def rule_rounds(final_rule: str, choose_prompt: str = "full") -> tuple[str, ...]:
    """The rounds a final rule needs, in order (the compact choose prompt shows the verdicts, so it needs them too)."""
    choose = final_rule in ("choice", "combined")
    verdict = final_rule != "choice" or choose_prompt == "compact"
    return ("verify", *(("verdict",) if verdict else ()), *(("choose",) if choose else ()))


def normalised(verdicts: Sequence[float]) -> list[float]:
    total = sum(verdicts)
    return [v / total for v in verdicts] if total > 0 else [1 / len(verdicts)] * len(verdicts)


def position_prior(batch: Sequence[Sequence[float | None]]) -> list[float] | None:
    """How readily the model calls the option at each position correct in this batch: the mean, over the batch's
    questions, of the verdicts normalised over each question's options (position i over the questions that have an
    i-th option). None when the batch has fewer than MIN_CALIBRATION_BATCH questions or a verdict is missing."""
    if len(batch) < MIN_CALIBRATION_BATCH or any(v is None for verdicts in batch for v in verdicts):
        return None
    sums: list[float] = []
    counts: list[int] = []
    for verdicts in batch:
        for i, v in enumerate(normalised([float(v) for v in verdicts if v is not None])):
            if i == len(sums):
                sums.append(0.0)
                counts.append(0)
            sums[i] += v
            counts[i] += 1
    return [total / count for total, count in zip(sums, counts, strict=True)]


def combine(
    final_rule: str, choice: Sequence[float] | None, verdicts: Sequence[float | None], prior: Sequence[float] | None = None
) -> list[float]:
    """The final distribution over options: the choice round's (`choice`), the verdicts normalised over the options
    (`verdicts`), their normalised product (`combined`), or the normalised verdicts divided by the batch's mean at
    each option position (`calibrated_verdicts`, with `prior` from `position_prior`; without one, plain verdicts).
    A rule's inputs must have been computed."""
    if final_rule == "choice":
        if choice is None:
            raise ValueError("the choice rule needs the choice round's probabilities")
        return list(choice)
    if any(v is None for v in verdicts):
        raise ValueError(f"the {final_rule} rule needs every option's verdict probability")
    verdict_dist = normalised([float(v) for v in verdicts if v is not None])
    if final_rule == "verdicts" or (final_rule == CALIBRATED and prior is None):
        return verdict_dist
    if final_rule == CALIBRATED:
        assert prior is not None
        return normalised([v / max(p, 1e-12) for v, p in zip(verdict_dist, prior, strict=False)])
    if choice is None:
        raise ValueError("the combined rule needs the choice round's probabilities")
    return softmax([math.log(max(c, 1e-300)) + math.log(max(v, 1e-300)) for c, v in zip(choice, verdict_dist, strict=True)])


def by_path(items: Sequence[Any], n: int) -> list[list[Any]]:
    """One question's items, option-major with n samples per option (option l, sample j at l * n + j), as n paths of one
    item per option: path j holds the j-th sample of every option."""
    return [list(items[j::n]) for j in range(n)]
