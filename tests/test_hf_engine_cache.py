"""Shared-prefix KV reuse in the transformers engine gives the same results as running every prompt in full."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from voc.engines.base import ChatPrompt, SamplingParams
from voc.engines.hf import HFEngine, group_by_prefix
from voc.strategies import make_strategy
from voc.types import Question

QUESTIONS = [
    Question(
        id="q1",
        question="Does regular aerobic exercise lower resting blood pressure in adults with hypertension?",
        context="In a randomised trial of 240 adults with stage 1 hypertension, participants who walked briskly for 30 minutes "
        "five days a week for six months had lower systolic pressure than controls (mean difference 7 mmHg).",
        options=["yes", "no", "maybe"],
    ),
    Question(
        id="q2",
        question="Is vitamin C deficiency the cause of scurvy?",
        options={"A": "yes, through impaired collagen synthesis", "B": "no", "C": "only in children", "D": "maybe"},
    ),
]


@contextmanager
def prefix_sharing(engine: HFEngine, on: bool, pack: bool | None = None) -> Iterator[HFEngine]:
    """Switch prefix sharing (and, optionally, per-run prefill with merged caches) for a block."""
    before = engine.share_prefixes, engine.pack_prefill
    engine.share_prefixes = on
    engine.pack_prefill = before[1] if pack is None else pack
    try:
        yield engine
    finally:
        engine.share_prefixes, engine.pack_prefill = before


def verify_prompts() -> list[ChatPrompt]:
    """The VoC round-1 prompts: one per option, sharing system + context + question + options."""
    strategy = make_strategy("voc")
    return [strategy.verify_prompt(q, label) for q in QUESTIONS for label in q.labels]


def test_prompts_of_one_question_share_a_prefix_group() -> None:
    shared = list(range(100))
    sequences = [[*shared, 7, 8], [5] * 50, [*shared, 9], [*shared, 7, 8, 9, 10], [5] * 10 + [6] * 40]
    groups = {tuple(sorted(g.members)): len(g.prefix) for g in group_by_prefix(sequences, min_shared=32)}
    assert groups[(0, 2, 3)] == 100
    assert groups[(1,)] == 50 and groups[(4,)] == 50  # sharing 10 tokens is below the threshold


def test_every_group_member_keeps_a_token_of_its_own() -> None:
    sequences = [[1] * 40, [1] * 40, [1] * 41]  # duplicates, and one sequence that is a prefix of another
    (group,) = group_by_prefix(sequences, min_shared=32)
    assert sorted(group.members) == [0, 1, 2]
    assert len(group.prefix) == 39


@pytest.mark.parametrize("pack", [True, False], ids=["packed-prefill", "padded-prefill"])
def test_greedy_generation_with_shared_prefixes_equals_full_prompts(tiny_engine: HFEngine, pack: bool) -> None:
    prompts = [*verify_prompts(), ChatPrompt(({"role": "user", "content": "A short unrelated prompt."},), "Answer:")]
    params = SamplingParams(max_tokens=10, stop=("Verdict:",))
    reused_before = tiny_engine.stats.extra["prefix_tokens_reused"]
    with prefix_sharing(tiny_engine, True, pack):
        shared = tiny_engine.generate(prompts, params)
    assert tiny_engine.stats.extra["prefix_tokens_reused"] > reused_before  # the shared path really ran
    with prefix_sharing(tiny_engine, False):
        full = tiny_engine.generate(prompts, params)
    assert [g.text for g in shared] == [g.text for g in full]
    assert [g.completion_tokens for g in shared] == [g.completion_tokens for g in full]
    assert [g.prompt_tokens for g in shared] == [g.prompt_tokens for g in full]


@pytest.mark.parametrize("pack", [True, False], ids=["packed-prefill", "padded-prefill"])
def test_scores_with_shared_prefixes_equal_full_prompts(tiny_engine: HFEngine, pack: bool) -> None:
    prompts = verify_prompts()
    candidates = [[" correct", " incorrect", " not sure at all"]] * len(prompts)
    with prefix_sharing(tiny_engine, True, pack):
        shared = tiny_engine.score(prompts, candidates)
    with prefix_sharing(tiny_engine, False):
        full = tiny_engine.score(prompts, candidates)
    for a, b in zip(shared, full, strict=True):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)


def test_small_token_budget_splits_batches_without_changing_results(tiny_model_dir) -> None:
    prompts = verify_prompts()
    params = SamplingParams(max_tokens=6)
    wide = HFEngine(str(tiny_model_dir), batch_size=64).generate(prompts, params)
    narrow_engine = HFEngine(str(tiny_model_dir), batch_size=64, max_batch_tokens=1)  # one group per batch
    narrow = narrow_engine.generate(prompts, params)
    assert [g.text for g in narrow] == [g.text for g in wide]


@pytest.mark.slow
def test_embedded_model_voc_round_one_is_unchanged_by_prefix_reuse(default_model_dir) -> None:
    engine = HFEngine(str(default_model_dir))
    prompts = verify_prompts()
    params = SamplingParams(max_tokens=12, stop=("Verdict:",))
    with prefix_sharing(engine, True):
        shared = engine.generate(prompts, params)
    assert engine.stats.extra["prefix_tokens_reused"] > 0
    with prefix_sharing(engine, False):
        full = engine.generate(prompts, params)
    assert [g.text for g in shared] == [g.text for g in full]
