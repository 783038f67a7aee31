"""The transformers engine: scores are real log-probabilities, and batching does not change results."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from voc.engines.base import ChatPrompt, PromptTooLongError, SamplingParams
from voc.engines.hf import HFEngine


def chat(text: str, prefix: str = "Answer:") -> ChatPrompt:
    return ChatPrompt(({"role": "user", "content": text},), prefix)


PROMPTS = [
    chat("Which vitamin deficiency causes scurvy?\nA. C\nB. D\nC. K"),
    chat("Is the heart a muscle?"),
    chat("Name the largest organ of the human body, with a long question text to make the prompts differ in length a lot."),
]


def reference_logprob(engine: HFEngine, prompt: ChatPrompt, continuation: str) -> float:
    """log P(continuation | prompt) from one plain, unbatched forward pass."""
    context = engine.encode(engine.render(prompt))
    cont = engine.tokenizer(continuation, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([context + cont])
    with torch.no_grad():
        logprobs = torch.log_softmax(engine.model(ids).logits.float(), dim=-1)[0]
    return sum(logprobs[len(context) + k - 1, t].item() for k, t in enumerate(cont))


def test_single_token_scores_match_a_plain_forward_pass(tiny_engine: HFEngine) -> None:
    candidates = [[" A", " B", " C"]] * len(PROMPTS)
    scores = tiny_engine.score(PROMPTS, candidates)
    for prompt, cands, result in zip(PROMPTS, candidates, scores, strict=True):
        expected = [reference_logprob(tiny_engine, prompt, c) for c in cands]
        assert result.logprobs == pytest.approx(expected, abs=1e-4)
        assert all(lp < 0 for lp in result.logprobs)


def test_multi_token_scores_match_a_plain_forward_pass(tiny_engine: HFEngine) -> None:
    candidates = [[" vitamin C deficiency", " no"], [" yes, it is", " no"], [" the skin", " the liver is"]]
    scores = tiny_engine.score(PROMPTS, candidates)
    for prompt, cands, result in zip(PROMPTS, candidates, scores, strict=True):
        assert result.logprobs == pytest.approx([reference_logprob(tiny_engine, prompt, c) for c in cands], abs=1e-4)


def test_batched_scores_equal_one_by_one(tiny_engine: HFEngine) -> None:
    candidates = [[" A", " B"], [" yes", " no way"], [" skin", " liver"]]
    batched = tiny_engine.score(PROMPTS, candidates)
    for prompt, cands, together in zip(PROMPTS, candidates, batched, strict=True):
        alone = tiny_engine.score([prompt], [cands])[0]
        assert together.logprobs == pytest.approx(alone.logprobs, abs=1e-4)


def test_batched_greedy_generation_equals_one_by_one(tiny_engine: HFEngine) -> None:
    params = SamplingParams(max_tokens=8)
    batched = tiny_engine.generate(PROMPTS, params)
    alone = [tiny_engine.generate([p], params)[0] for p in PROMPTS]
    assert [g.text for g in batched] == [g.text for g in alone]
    assert all(g.completion_tokens <= 8 and g.prompt_tokens > 0 for g in batched)


def test_generation_is_cut_at_stop_strings(tiny_engine: HFEngine) -> None:
    free = tiny_engine.generate([PROMPTS[0]], SamplingParams(max_tokens=12))[0].text
    assert len(free) > 4
    stop = free[2:4]
    cut = tiny_engine.generate([PROMPTS[0]], SamplingParams(max_tokens=12, stop=(stop,)))[0].text
    assert stop not in cut and free.startswith(cut)


def test_render_applies_the_chat_template_and_appends_the_prefix(tiny_engine: HFEngine) -> None:
    text = tiny_engine.render(chat("hello", "Answer:"))
    assert "<|im_start|>user\nhello<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\nAnswer:")


def test_too_long_prompt_raises_a_clear_error(tiny_model_dir: Path) -> None:
    engine = HFEngine(str(tiny_model_dir), max_model_len=64)
    with pytest.raises(PromptTooLongError, match="exceeds the model's 64-token window"):
        engine.generate([chat("word " * 100)], SamplingParams(max_tokens=4))
    with pytest.raises(ValueError, match="one list per prompt"):
        engine.score([chat("a"), chat("b")], [[" A"]])
