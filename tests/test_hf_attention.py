"""The transformers engine's grouped-query attention and its DynamicCache helpers give transformers' results."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache

from tests.test_hf_engine_cache import verify_prompts
from tests.tiny_model import build_tiny_llama
from voc.engines.base import SamplingParams
from voc.engines.hf import HFEngine, new_cache, selected_rows, stacked_cache, use_grouped_attention, use_stock_attention


@pytest.fixture(scope="module")
def gqa_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny grouped-query Llama: 4 query heads, 2 key/value heads."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-gqa-llama"), heads=4, kv_heads=2)


def decode_logits(model, cache, steps: int = 6) -> torch.Tensor:
    """Prefill a left-padded batch of two prompts, then decode greedily; the logits of every step."""
    ids = torch.tensor([[0, 0, 0, 11, 12, 13, 14], [21, 22, 23, 24, 25, 26, 27]])
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1], [1] * 7])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = []
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True)
        for _ in range(steps):
            logits.append(out.logits[:, -1])
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            mask = torch.cat([mask, mask.new_ones(2, 1)], dim=-1)
            positions = positions[:, -1:] + 1
            out = model(input_ids=token, attention_mask=mask, position_ids=positions, past_key_values=out.past_key_values, use_cache=True)
    return torch.stack(logits)


def test_grouped_attention_matches_transformers_defaults(gqa_model_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(gqa_model_dir, dtype=torch.float32).eval()
    stock = decode_logits(model, DynamicCache())
    assert use_grouped_attention(model)
    torch.testing.assert_close(decode_logits(model, new_cache()), stock, atol=1e-4, rtol=0)


def test_selected_rows_are_copies_and_the_original_cache_is_unchanged() -> None:
    cache = new_cache()
    keys = torch.arange(2 * 1 * 3 * 2, dtype=torch.float32).view(2, 1, 3, 2)
    cache.update(keys, -keys, layer_idx=0)
    picked = selected_rows(cache, torch.tensor([1, 1]))
    picked.update(torch.ones(2, 1, 1, 2), torch.ones(2, 1, 1, 2), layer_idx=0)
    assert cache.get_seq_length() == 3 and picked.get_seq_length() == 4
    torch.testing.assert_close(cache.layers[0].keys, keys)
    torch.testing.assert_close(picked.layers[0].keys[:, :, :3], keys[[1, 1]])
    cache.batch_select_indices(torch.tensor([0]))
    torch.testing.assert_close(cache.layers[0].values, -keys[:1])


def test_stacked_caches_are_left_padded_with_zeros_row_after_row() -> None:
    short, long = new_cache(), new_cache()
    short_keys, long_keys = torch.ones(1, 1, 2, 2), torch.full((2, 1, 3, 2), 2.0)
    for idx in range(2):  # two layers
        short.update(short_keys, -short_keys, layer_idx=idx)
        long.update(long_keys, -long_keys, layer_idx=idx)
    stacked = stacked_cache([short, long], width=4)
    assert len(stacked.layers) == 2 and stacked.get_seq_length() == 4
    expected = torch.zeros(3, 1, 4, 2)
    expected[0, :, 2:], expected[1:, :, 1:] = 1.0, 2.0
    for layer in stacked.layers:
        torch.testing.assert_close(layer.keys, expected)
        torch.testing.assert_close(layer.values, -expected)
    stacked.update(torch.ones(3, 1, 1, 2), torch.ones(3, 1, 1, 2), layer_idx=0)
    torch.testing.assert_close(short.layers[0].keys, short_keys)  # the parts are left as they are


def test_engine_on_a_grouped_query_model_gives_stock_transformers_results(gqa_model_dir: Path) -> None:
    engine = HFEngine(str(gqa_model_dir), batch_size=8)
    assert engine.grouped_attention
    prompts = verify_prompts()
    params = SamplingParams(max_tokens=10, stop=("Verdict:",))
    candidates = [[" correct", " incorrect", " not sure at all"]] * len(prompts)
    fast_texts = [g.text for g in engine.generate(prompts, params)]
    fast_scores = engine.score(prompts, candidates)
    use_stock_attention(engine.model)
    assert [g.text for g in engine.generate(prompts, params)] == fast_texts
    for fast, stock in zip(fast_scores, engine.score(prompts, candidates), strict=True):
        assert fast.logprobs == pytest.approx(stock.logprobs, abs=1e-4)
