"""One batched decoding step: transformers' stock SDPA attention against the hf engine's grouped-query attention.

A batch of `--rows` left-padded prompts of `--length` tokens is prefilled, then `--steps` greedy
tokens are decoded, both times with transformers' `DynamicCache`, once with stock SDPA attention
(`repeat_kv` under the padding mask) and once with `grouped_query_attention` (voc/engines/hf.py: SDPA
with `enable_gqa`). Prints the median step time of each, their ratio, and the largest logit difference
(the two must agree). (Until the engine switched to `DynamicCache`, its row also used a KV cache written
in place; the 2.0x recorded in benchmarks/README.md was measured with both.)

    python benchmarks/decode_step.py                      # embedded SmolLM2-135M-Instruct, 27 rows x 600 tokens
    python benchmarks/decode_step.py --model /path/to/model --rows 64 --length 1000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from transformers import AutoModelForCausalLM, DynamicCache

from voc.engines.hf import pick_device, pick_dtype, use_grouped_attention, use_stock_attention
from voc.models import resolve_model


@torch.inference_mode()
def decode(model: Any, cache: Any, ids: torch.Tensor, mask: torch.Tensor, steps: int) -> tuple[list[float], torch.Tensor]:
    """Prefill, then `steps` greedy steps; the time of each step and the logits of the last one."""
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True, logits_to_keep=1)
    positions = positions[:, -1:]
    times = []
    for _ in range(steps):
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=-1)
        positions = positions + 1
        start = time.perf_counter()
        out = model(input_ids=token, attention_mask=mask, position_ids=positions, past_key_values=out.past_key_values, use_cache=True)
        if token.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times, out.logits[:, -1].float()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="HF folder, .gguf or hub id (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--rows", type=int, default=27, help="batch rows (the CPU engine's VoC verify batches hold about 27)")
    parser.add_argument("--length", type=int, default=600, help="prompt tokens per row (a PubMedQA verification prompt is ~600)")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    model = AutoModelForCausalLM.from_pretrained(resolve_model(args.model), dtype=pick_dtype(args.dtype, device)).to(device).eval()
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(100, model.config.vocab_size - 100, (args.rows, args.length), generator=generator).to(device)
    mask = torch.ones_like(ids)
    mask[::2, : args.length // 10] = 0  # every other row left-padded by a tenth, as in a real batch
    results = {}
    for _ in range(2):  # the first round warms up allocators and kernels; the second is reported
        use_stock_attention(model)
        results["stock"] = decode(model, DynamicCache(), ids, mask, args.steps)
        grouped = use_grouped_attention(model)
        results["engine"] = decode(model, DynamicCache(), ids, mask, args.steps)
    stock, engine = (statistics.median(results[k][0]) for k in ("stock", "engine"))
    diff = (results["stock"][1] - results["engine"][1]).abs().max().item()
    print(f"model {model.config.name_or_path}, {device}, {model.dtype}, {args.rows} rows x {args.length} tokens")
    print(f"stock (DynamicCache + SDPA with repeat_kv): {stock * 1000:.0f} ms per step")
    print(f"engine (DynamicCache + {'grouped-query' if grouped else 'stock'} attention): {engine * 1000:.0f} ms per step")
    print(f"speed-up {stock / engine:.2f}x; largest logit difference {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
