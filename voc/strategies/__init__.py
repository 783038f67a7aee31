"""Prompt strategies: `direct`, `cot` and `voc` (Verification-of-Choice)."""

from __future__ import annotations

from voc.engines.base import SamplingParams
from voc.fewshot import FewShot
from voc.prompts import Templates
from voc.strategies.base import Strategy
from voc.strategies.cot import ChainOfThought
from voc.strategies.direct import Direct
from voc.strategies.voc import CHOOSE_PROMPTS, FINAL_RULES, ChoosePrompt, FinalRule, VerificationOfChoice

STRATEGIES: dict[str, type[Strategy]] = {"direct": Direct, "cot": ChainOfThought, "voc": VerificationOfChoice}


def make_strategy(
    name: str,
    templates: Templates | None = None,
    params: SamplingParams | None = None,
    final_rule: FinalRule = "combined",
    choose_prompt: ChoosePrompt = "full",
    verification_tokens: int | None = None,
    fewshot: FewShot | None = None,
) -> Strategy:
    """The strategy called `name` (one of direct, cot, voc); `final_rule`, `choose_prompt` and `verification_tokens`
    apply to voc; `fewshot` shows worked examples from a pool in every strategy's prompts."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; use one of {', '.join(STRATEGIES)}")
    if name == "voc":
        return VerificationOfChoice(templates, params, final_rule, choose_prompt, verification_tokens, fewshot)
    return STRATEGIES[name](templates, params, fewshot)


__all__ = ["CHOOSE_PROMPTS", "FINAL_RULES", "STRATEGIES", "ChainOfThought", "Direct", "Strategy", "VerificationOfChoice", "make_strategy"]
