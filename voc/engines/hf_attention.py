"""Key/value cache and attention for the transformers engine: same results, less memory traffic.

Two pieces replace transformers' defaults inside `HFEngine` (a model used elsewhere is untouched
unless it is handed to `use_grouped_attention`):

- `ReservedKVCache`: every layer's keys and values live in a buffer with room reserved for the
  tokens still to come, and each step writes its new token in place. transformers' `DynamicLayer`
  concatenates instead, i.e. copies the whole cache of every layer at every generated token.
- `grouped_query_attention`: for grouped-query models (several query heads per key/value head,
  e.g. SmolLM2: 9 query heads, 3 KV heads) torch's SDPA with `enable_gqa=True` reads each key/value
  head once. transformers' stock SDPA path copies keys and values once per query head (`repeat_kv`)
  whenever there is an attention mask, which a batched decoding step always has (left padding).
  (The engine used to fold query heads into the query axis by hand; torch's `enable_gqa` was as fast,
  0.90-1.02x, in `benchmarks/hf_mechanisms.py`.)

On a 2-core CPU a 27-row decoding step of SmolLM2-135M over 600 cached tokens takes about 180 ms with
both against about 360 ms without (`benchmarks/README.md`, measured with the hand-folded attention).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AttentionInterface
from transformers.cache_utils import Cache, DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

GROUPED_ATTENTION = "voc_grouped_sdpa"


class ReservedKVLayer(DynamicLayer):
    """One layer's keys and values in a buffer with `room` free positions; new tokens are written in place.

    `keys`/`values` are views of the filled part, so everything that reads a `DynamicLayer` works
    unchanged. When the room runs out the buffer is reallocated once with `room` more positions.
    """

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = max(room, 1)
        self.length = 0
        self.key_buffer: torch.Tensor | None = None
        self.value_buffer: torch.Tensor | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start, end = self.length, self.length + key_states.shape[-2]
        if self.key_buffer is None or self.value_buffer is None or end > self.key_buffer.shape[-2]:
            self._reserve(key_states, value_states, end + self.room)
        assert self.key_buffer is not None and self.value_buffer is not None
        self.key_buffer[:, :, start:end] = key_states
        self.value_buffer[:, :, start:end] = value_states
        self.length = end
        self._expose()
        return self.keys, self.values

    def _reserve(self, key_states: torch.Tensor, value_states: torch.Tensor, capacity: int) -> None:
        keys = key_states.new_empty((*key_states.shape[:2], capacity, key_states.shape[-1]))
        values = value_states.new_empty((*value_states.shape[:2], capacity, value_states.shape[-1]))
        if self.length and self.key_buffer is not None and self.value_buffer is not None:
            keys[:, :, : self.length] = self.key_buffer[:, :, : self.length]
            values[:, :, : self.length] = self.value_buffer[:, :, : self.length]
        self.key_buffer, self.value_buffer = keys, values

    def _expose(self) -> None:
        assert self.key_buffer is not None and self.value_buffer is not None
        self.keys = self.key_buffer[:, :, : self.length]
        self.values = self.value_buffer[:, :, : self.length]

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.key_buffer is None or self.value_buffer is None:
            return
        self.key_buffer, self.value_buffer = self.key_buffer[indices], self.value_buffer[indices]
        self._expose()

    def get_seq_length(self) -> int:
        return self.length

    def selected(self, indices: torch.Tensor) -> ReservedKVLayer:
        """A new layer holding copies of the given rows (this one is left as it is)."""
        layer = ReservedKVLayer(self.room)
        if self.key_buffer is not None and self.value_buffer is not None:
            layer.lazy_initialization(self.key_buffer, self.value_buffer)
            layer.key_buffer, layer.value_buffer, layer.length = self.key_buffer[indices], self.value_buffer[indices], self.length
            layer._expose()
        return layer


class ReservedKVCache(Cache):
    """A cache of `ReservedKVLayer`s (layers are added as the model first writes to them)."""

    def __init__(self, room: int) -> None:
        super().__init__(layers=[])
        self.room = room

    @classmethod
    def stacked(cls, caches: list[ReservedKVCache], width: int, room: int) -> ReservedKVCache:
        """The rows of `caches` one after another, each left-padded with zeros to `width` positions (one copy)."""
        stacked = cls(room)
        for parts in zip(*(cache.layers for cache in caches), strict=True):
            first = parts[0].keys
            rows = sum(part.keys.shape[0] for part in parts)
            layer = ReservedKVLayer(room)
            layer.lazy_initialization(first, first)
            layer.key_buffer = first.new_zeros((rows, first.shape[1], width + room, first.shape[3]))
            layer.value_buffer = torch.zeros_like(layer.key_buffer)
            row = 0
            for part in parts:
                n, length = part.keys.shape[0], part.get_seq_length()
                layer.key_buffer[row : row + n, :, width - length : width] = part.keys
                layer.value_buffer[row : row + n, :, width - length : width] = part.values
                row += n
            layer.length = width
            layer._expose()
            stacked.layers.append(layer)
        return stacked

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        while len(self.layers) <= layer_idx:
            self.layers.append(ReservedKVLayer(self.room))
        return self.layers[layer_idx].update(key_states, value_states)

    def selected(self, rows: torch.Tensor) -> ReservedKVCache:
        """A new cache holding copies of the given rows (this one is left as it is)."""
        cache = ReservedKVCache(self.room)
        cache.layers = [layer.selected(rows) for layer in self.layers]
        return cache


def grouped_query_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' SDPA path, except that grouped-query keys/values go to torch's SDPA as they are
    (`enable_gqa=True`) even under a padding mask, where transformers copies them per query head (`repeat_kv`).

    query [batch, heads, q, dim], key/value [batch, kv_heads, kv, dim], mask [batch, 1, q, kv]. Position biases and
    attention sinks go to transformers' own SDPA function.
    """
    if kwargs.get("position_bias") is not None or kwargs.get("s_aux") is not None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    q_len = query.shape[2]
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    causal = bool(q_len > 1 and attention_mask is None and causal)
    if causal and key.shape[2] > q_len:  # an empty static cache's prefill, as transformers' own SDPA path handles it
        key, value = key[:, :, :q_len], value[:, :, :q_len]
    out = torch.nn.functional.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        dropout_p=dropout,
        scale=scaling,
        is_causal=causal,
        enable_gqa=key.shape[1] != query.shape[1],
    )
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(GROUPED_ATTENTION, grouped_query_attention)
AttentionMaskInterface.register(GROUPED_ATTENTION, sdpa_mask)


def use_grouped_attention(model: Any) -> bool:
    """Switch a model from transformers' SDPA attention to `grouped_query_attention`; False if it uses another kind."""
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    model.set_attn_implementation(GROUPED_ATTENTION)
    return True


def use_stock_attention(model: Any) -> None:
    """Undo `use_grouped_attention` (benchmarks run their baselines on transformers' own attention)."""
    if getattr(model.config, "_attn_implementation", None) == GROUPED_ATTENTION:
        model.set_attn_implementation("sdpa")


__all__ = [
    "GROUPED_ATTENTION",
    "ReservedKVCache",
    "ReservedKVLayer",
    "grouped_query_attention",
    "use_grouped_attention",
    "use_stock_attention",
]
