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

from voc.engines.base import ChatPrompt, Continuation, Engine, SamplingParams, softmax
from voc.fewshot import FewShot
from voc.prompts import Templates
from voc.selfconsistency import chosen
from voc.strategies.base import CANDIDATE_ROOM, Strategy, gold_of
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

    def verdict_prompt(self, question: Question, label: str, prompt: ChatPrompt, generation: Any) -> tuple[Continuation, list[str]]:
        """The verdict prefix after the verification's own tokens, and the two verdict candidates (true first)."""
        option = {"label": label, "text": question.options[label]}
        prefix = self.templates.block(VERIFY, "verdict_prefix", question=question, option=option)
        candidates = [self.templates.block(VERIFY, f"verdict_{v}", option=option) for v in ("true", "false")]
        return Continuation(prompt, generation, prefix), candidates

    @property
    def verify_params(self) -> SamplingParams:
        """Sampling of the verify round: the stop text, and `verification_tokens` (if set) as each verification's budget."""
        update: dict[str, Any] = {"stop": (*self.params.stop, self.templates.block(VERIFY, "stop"))}
        if self.verification_tokens is not None:
            update["max_tokens"] = self.verification_tokens
        return self.params.model_copy(update=update)

    def run(self, questions: Sequence[Question], engine: Engine, use_tqdm: bool = False) -> list[Answer]:
        params, rounds = self.verify_params, self.rounds
        max_tokens = params.max_tokens

        def tokens(q: Question) -> int:  # the longest prompt: a verification, or the choose prompt holding all of them
            longest = max(engine.count_tokens(engine.render(self.verify_prompt(q, lab))) for lab in q.labels) + max_tokens
            if "choose" not in rounds:
                return longest
            empty = [{"label": lab, "option_text": q.options[lab], "text": "", "verdict_probability": 0.5} for lab in q.labels]
            choose = engine.count_tokens(engine.render(self.choose_prompt(q, empty))) + len(q.labels) * (max_tokens + VERIFICATION_OVERHEAD)
            return max(longest, choose)

        fitted = [self.fit_context(q, engine, tokens, CANDIDATE_ROOM) for q in questions]
        pairs = [(q, lab) for q, _ in fitted for lab in q.labels]
        n = params.n  # self-consistency paths: path j of a question is the j-th sampled verification of each of its options

        verify_prompts = [self.verify_prompt(q, lab) for q, lab in pairs]
        with self.round("verify", len(verify_prompts), use_tqdm):
            generations = engine.generate(verify_prompts, params)  # sample j of pair p at p * n + j

        verdict_p: list[float | None] = [None] * len(generations)
        verdict_tokens = [0] * len(generations)
        if "verdict" in rounds:
            requests = [self.verdict_prompt(*pairs[k // n], verify_prompts[k // n], g) for k, g in enumerate(generations)]
            with self.round("verdict", len(requests), use_tqdm):
                scores = engine.score([r[0] for r in requests], [r[1] for r in requests])
            verdict_p = [softmax(s.logprobs)[0] for s in scores]
            verdict_tokens = [s.prompt_tokens for s in scores]

        # per question, per path: its options' generations, verdicts and verdict-round tokens (in option order)
        sizes = [len(q.labels) * n for q, _ in fitted]
        per_question = [
            (q, truncated, by_path(gens, n), by_path(ps, n), by_path(toks, n))
            for (q, truncated), gens, ps, toks in zip(
                fitted, split(generations, sizes), split(verdict_p, sizes), split(verdict_tokens, sizes), strict=True
            )
        ]
        prior = position_prior([ps for _, _, _, path_ps, _ in per_question for ps in path_ps]) if self.final_rule == CALIBRATED else None
        choices: list[Any] = [None] * (len(fitted) * n)
        if "choose" in rounds:
            prompts = [
                self.choose_prompt(q, [self.shown(q, lab, g, p) for lab, g, p in zip(q.labels, gens, ps, strict=True)])
                for q, _, path_gens, path_ps, _ in per_question
                for gens, ps in zip(path_gens, path_ps, strict=True)
            ]
            candidates = [self.candidates(self.choose_template, q) for q, _ in fitted for _ in range(n)]
            with self.round("choose", len(prompts), use_tqdm):
                choices = engine.score(prompts, candidates)  # path j of question i at i * n + j

        answers = []
        for i, (q, truncated, path_gens, path_ps, path_tokens) in enumerate(per_question):
            paths, prompt_tokens = [], 0
            for j, (gens, ps, n_verdict) in enumerate(zip(path_gens, path_ps, path_tokens, strict=True)):
                choice = choices[i * n + j]
                choice_p = softmax(choice.logprobs) if choice is not None else None
                probabilities = dict(zip(q.labels, combine(self.final_rule, choice_p, ps, prior), strict=True))
                paths.append(
                    SampleAnswer(
                        label=chosen(q.labels, probabilities),
                        probabilities=probabilities,
                        completions=[g.text for g in gens],
                        verdicts={lab: p for lab, p in zip(q.labels, ps, strict=True) if p is not None},
                    )
                )
                prompt_tokens += sum(g.prompt_tokens for g in gens) + sum(n_verdict) + (choice.prompt_tokens if choice is not None else 0)
            first = choices[i * n]
            answers.append(
                self.answer_from_paths(
                    q,
                    paths,
                    first.logprobs if first is not None else (),
                    verifications={
                        lab: Verification(label=lab, text=g.text.strip(), verdict_probability=p)
                        for lab, g, p in zip(q.labels, path_gens[0], path_ps[0], strict=True)
                    },
                    completions=[g.text for gens in path_gens for g in gens],
                    prompt_tokens=prompt_tokens,
                    completion_tokens=sum(g.completion_tokens for gens in path_gens for g in gens),
                    context_truncated=truncated,
                    rounds=list(rounds),
                )
            )
        return answers

    @staticmethod
    def shown(question: Question, label: str, generation: Any, verdict_probability: float | None) -> dict[str, Any]:
        """What the choose template gets about one option's verification."""
        text = generation.text.strip()
        return {"label": label, "option_text": question.options[label], "text": text, "verdict_probability": verdict_probability}


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


def split(items: Sequence[Any], sizes: Sequence[int]) -> list[list[Any]]:
    """A flat list cut into consecutive pieces of the given sizes (per question: one item per option)."""
    pieces, start = [], 0
    for size in sizes:
        pieces.append(list(items[start : start + size]))
        start += size
    return pieces
