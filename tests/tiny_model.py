"""A tiny random Llama with the SmolLM2 tokenizer, built at test time (about 16 MB, runs in hf and vLLM)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def build_tiny_llama(folder: Path, seed: int = 0, heads: int = 2, kv_heads: int = 2, tokenizer: Any = None) -> Path:
    """Hidden size 128, 2 layers, head_dim 64 (vLLM's CPU attention needs 64), bf16 weights.

    `heads=4, kv_heads=2` gives a grouped-query model (2 query heads per key/value head), like SmolLM2 (9 and 3).
    `tokenizer`: the tokenizer to save with it (default: SmolLM2's); the vocabulary follows it.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from voc.models import resolve_model

    if (folder / "config.json").is_file():
        return folder
    tokenizer = tokenizer or AutoTokenizer.from_pretrained(resolve_model(None))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=64,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # larger weights than the default init, so that greedy choices are not near-ties
        for p in model.parameters():
            p.mul_(4.0)
    model.to(torch.bfloat16).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
