"""Hugging Face transformers engine: the embedded default, on CPU or GPU.

This module holds the engine (`HFEngine`), its prefix grouping and batching, three small helpers over
transformers' stock `DynamicCache` (a fresh cache, several caches stacked row-wise, a copy of some rows)
and the grouped-query attention function it switches SDPA models to.

How it stays fast without changing results:
- Shared prefixes: prompts that start with the same long run of tokens (the k verification prompts
  of one VoC question share system + context + question + options) form a group. The shared prefix
  is run once per group; its key/value cache is copied to each member, and only the member's own
  suffix is run on top of it.
- Batching by length and by token budget: groups are sorted by length and packed into batches of at
  most `batch_size` rows and `max_batch_tokens` padded tokens (prompt + room for new tokens), so long
  prompts do not run out of memory and short ones batch widely. On CPU, where a padding token costs
  as much as a real one, each group's prefix runs on its own and its members' suffixes in runs of
  similar length; the caches are merged (left-padded) for decoding. On GPU a batch is prefilled at once.
- Padding (left of the prefix, and between prefix and suffix) is masked out and every row gets
  explicit position ids, so batched results equal one-by-one results up to float rounding.
- Grouped-query models (several query heads per key/value head, e.g. SmolLM2: 9 query heads, 3 KV
  heads) attend through torch's SDPA with `enable_gqa=True`, which reads each key/value head once.
  transformers' own SDPA path copies keys and values per query head (`repeat_kv`) whenever there is an
  attention mask (transformers 5.19 and 5.20 on CPU and CUDA), which a batched decoding step always has.
  On the embedded model on CPU that makes VoC's verification round 2.44x faster (`benchmarks/README.md`).
  The KV cache is transformers' `DynamicCache` (a hand-built cache that wrote tokens in place gained
  0.99-1.27x over it in `benchmarks/hf_mechanisms.py` runs, under the 1.3x that would keep it, and was dropped).
- Generation is a plain greedy/sampling loop over the KV cache: only the last position's logits
  are computed, stop strings are checked on the last few decoded tokens, and finished rows are
  dropped from the batch.
- Scoring: one forward pass gives the log-probabilities of every single-token candidate (option
  labels usually are); for longer candidates the prompt is run once and its cache is reused for
  all candidates, so only the candidate tokens themselves are run again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import AttentionInterface, AutoModelForCausalLM, AutoTokenizer, DynamicCache
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from voc.engines.base import (
    ChatPrompt,
    Generation,
    Prompt,
    SamplingParams,
    Scores,
    TokenizerEngine,
    common_prefix_length,
    end_of_sequence_ids,
    make_scores,
    sample_seed,
)
from voc.models import resolve_model

log = logging.getLogger(__name__)

MIN_SHARED_PREFIX = 32  # prompts sharing fewer leading tokens are run separately
# On CPU a padding token costs as much as a real one, and batching long prompts gains nothing (the
# matrix products are already compute-bound), so a run of suffixes may waste at most this many padding
# tokens per row, or 5% of its tokens if that is more: short suffixes (VoC's per-option parts) still
# batch, long ones (whole direct prompts) run one by one.
PAD_TOLERANCE_TOKENS = 8
Generators = torch.Generator | list[torch.Generator] | None  # one generator for a batch, or one per row


def pick_device(device: str | None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    names = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(names)}")
    return names[dtype]


# -- key/value caches: transformers' DynamicCache, built layer by layer with `update` --------------------
def new_cache() -> DynamicCache:
    """An empty cache of plain `DynamicLayer`s, made without the model's config: those keep every position (a
    sliding-window layer would drop old ones), which `stacked_cache` needs to align rows of different caches."""
    return DynamicCache()


def stacked_cache(caches: Sequence[DynamicCache], width: int) -> DynamicCache:
    """The rows of `caches` one after another, each left-padded with zeros to `width` positions."""

    def padded(states: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(states, (0, 0, width - states.shape[-2], 0))

    stacked = new_cache()
    for idx, layers in enumerate(zip(*(c.layers for c in caches), strict=True)):
        stacked.update(torch.cat([padded(layer.keys) for layer in layers]), torch.cat([padded(layer.values) for layer in layers]), idx)
    return stacked


def selected_rows(cache: DynamicCache, rows: torch.Tensor) -> DynamicCache:
    """A new cache holding copies of the given rows (`cache` is left as it is)."""
    selected = new_cache()
    for idx, layer in enumerate(cache.layers):
        selected.update(layer.keys[rows], layer.values[rows], idx)
    return selected


# -- grouped-query attention ---------------------------------------------------------------------------
GROUPED_ATTENTION = "voc_grouped_sdpa"


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


def use_grouped_attention(model: Any) -> bool:
    """Switch a model from transformers' SDPA attention to `grouped_query_attention`; False if it uses another kind.
    The function is registered with transformers here, on first use, not when this module is imported."""
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    AttentionInterface.register(GROUPED_ATTENTION, grouped_query_attention)  # idempotent: sets one name
    AttentionMaskInterface.register(GROUPED_ATTENTION, sdpa_mask)
    model.set_attn_implementation(GROUPED_ATTENTION)
    return True


def use_stock_attention(model: Any) -> None:
    """Undo `use_grouped_attention` (benchmarks run their baselines on transformers' own attention)."""
    if getattr(model.config, "_attn_implementation", None) == GROUPED_ATTENTION:
        model.set_attn_implementation("sdpa")


@dataclass
class PrefixGroup:
    """Prompts (by index) that start with the same `prefix` tokens."""

    prefix: list[int]
    members: list[int] = field(default_factory=list)


def group_by_prefix(sequences: Sequence[Sequence[int]], min_shared: int = MIN_SHARED_PREFIX) -> list[PrefixGroup]:
    """Group sequences that share a long token prefix (a member joins when that saves compute).

    Sequences are sorted lexicographically, so prompts with a common start are neighbours whatever
    their order in the call. Every member of a group of two or more keeps at least one token of its
    own after the prefix (its last position must be run to get its next-token logits); a group of
    one has the whole sequence as prefix.
    """
    groups: list[PrefixGroup] = []
    for i in sorted(range(len(sequences)), key=lambda k: sequences[k]):
        seq = sequences[i]
        if groups:
            group = groups[-1]
            members = len(group.members)
            # a group of one holds its whole sequence as prefix: keep one token of it out
            shared = min(common_prefix_length(group.prefix, seq), len(seq) - 1, len(group.prefix) - (members == 1))
            saving_before = (members - 1) * len(group.prefix)
            if shared >= min_shared and members * shared >= saving_before:
                group.prefix = list(seq[:shared])
                group.members.append(i)
                continue
        groups.append(PrefixGroup(list(seq), [i]))
    return groups


class HFEngine(TokenizerEngine):
    """Batched generation and scoring with a transformers causal LM."""

    name = "hf"

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        batch_size: int = 64,
        max_batch_tokens: int | None = None,
        share_prefixes: bool = True,
        pack_prefill: bool | None = None,
        max_model_len: int | None = None,
        trust_remote_code: bool = False,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model_path = resolve_model(model)
        self.model_name = self.model_path
        self.device = pick_device(device)
        self.batch_size = batch_size
        # Padded tokens (prompt + new tokens) held by one batch: bounds the KV cache and activations.
        self.max_batch_tokens = max_batch_tokens or (65536 if self.device.type == "cuda" else 16384)
        self.share_prefixes = share_prefixes
        self.pack_prefill = self.device.type == "cpu" if pack_prefill is None else pack_prefill
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path, trust_remote_code=trust_remote_code)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(
            self.model_path, dtype=pick_dtype(dtype, self.device), trust_remote_code=trust_remote_code, **(model_kwargs or {})
        ).to(self.device)
        self.model.eval()
        self.grouped_attention = use_grouped_attention(self.model)
        self.max_model_len = max_model_len or int(getattr(self.model.config, "max_position_embeddings", 2048))
        self.eos_ids = end_of_sequence_ids(self.tokenizer, self.model.generation_config)
        self.stats.extra.update(prefix_tokens_reused=0, prompt_tokens_run=0)
        self._pieces: dict[int, str] = {}  # token id -> its text alone (for the stop-string pre-check)

    # -- batching --------------------------------------------------------------------------
    def _groups(self, sequences: Sequence[Sequence[int]]) -> list[PrefixGroup]:
        """Prefix groups, split so that no group has more members than a batch has rows."""
        groups = group_by_prefix(sequences) if self.share_prefixes else [PrefixGroup(list(s), [i]) for i, s in enumerate(sequences)]
        split: list[PrefixGroup] = []
        for g in groups:
            g.members.sort(key=lambda i: len(sequences[i]))  # similar suffix lengths pad less
            for start in range(0, len(g.members), self.batch_size):
                split.append(PrefixGroup(g.prefix, g.members[start : start + self.batch_size]))
        return split

    def _batches(self, sequences: Sequence[Sequence[int]], room: int = 0) -> Iterator[list[PrefixGroup]]:
        """Groups packed into batches (longest first, so memory peaks early) within the row and token budgets."""
        groups = self._groups(sequences)
        groups.sort(key=lambda g: -max(len(sequences[i]) for i in g.members))
        batch: list[PrefixGroup] = []
        rows = prefix_width = suffix_width = 0
        for g in groups:
            p = len(g.prefix)
            s = max(len(sequences[i]) - p for i in g.members)
            new_rows, new_p, new_s = rows + len(g.members), max(prefix_width, p), max(suffix_width, s)
            if batch and (new_rows > self.batch_size or new_rows * (new_p + new_s + room) > self.max_batch_tokens):
                yield batch
                batch, new_rows, new_p, new_s = [], len(g.members), p, s
            batch.append(g)
            rows, prefix_width, suffix_width = new_rows, new_p, new_s
        if batch:
            yield batch

    def _pad(
        self, rows: Sequence[Sequence[int]], start: torch.Tensor | int = 0, left: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Token rows padded to one width, on the left (prompts, suffixes) or on the right (candidate tokens): input ids,
        attention mask (1 on the real tokens) and position ids that count the real tokens from `start`."""
        width = max(len(r) for r in rows)
        fill = [[self.tokenizer.pad_token_id] * (width - len(r)) for r in rows]
        ids = torch.tensor([f + list(r) if left else list(r) + f for f, r in zip(fill, rows, strict=True)], device=self.device)
        lengths = torch.tensor([len(r) for r in rows], device=self.device)[:, None]
        columns = torch.arange(width, device=self.device)
        mask = (columns >= width - lengths if left else columns < lengths).long()
        return ids, mask, (start + mask.cumsum(-1) - 1).clamp(min=0)

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any, last_only: bool) -> Any:
        kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "position_ids": positions, "use_cache": True}
        if cache is not None:
            kwargs["past_key_values"] = cache
        if last_only:
            kwargs["logits_to_keep"] = 1
        return self.model(**kwargs)

    def _prefill(
        self, batch: Sequence[PrefixGroup], sequences: Sequence[Sequence[int]], need_cache: bool = True
    ) -> tuple[list[int], torch.Tensor, Any, torch.Tensor, torch.Tensor]:
        """Run the prompts of a batch of prefix groups; each group's prefix runs once.

        Returns the prompt index of each row, the next-token logits of each row [rows, vocab], the KV cache, the
        attention mask over the cache and each row's next position. On CPU, where padding costs as much as real tokens,
        each group's prefix runs on its own and its members' suffixes in runs of similar length; the caches are merged
        afterwards (left-padded to one width). On GPU all prefixes run as one padded batch, then all suffixes.
        """
        if self.pack_prefill:
            parts = [
                part
                for g in batch
                for part in self._prefill_group_runs([g], [run.members for run in self._similar_lengths(g, sequences)], sequences)
            ]
        else:
            parts = self._prefill_group_runs(batch, [[i for g in batch for i in g.members]], sequences)
        rows = [i for part in parts for i in part[0]]
        logits = torch.cat([part[1] for part in parts])
        if not need_cache:
            return rows, logits, None, torch.empty(0), torch.empty(0)
        if len(parts) == 1:
            return parts[0]
        width = max(part[3].shape[1] for part in parts)
        cache = stacked_cache([part[2] for part in parts], width)
        mask = torch.cat([torch.nn.functional.pad(part[3], (width - part[3].shape[1], 0)) for part in parts])
        positions = torch.cat([part[4] for part in parts])
        return rows, logits, cache, mask, positions

    @staticmethod
    def _similar_lengths(group: PrefixGroup, sequences: Sequence[Sequence[int]]) -> Iterator[PrefixGroup]:
        """Split a group's members (sorted by length) into runs whose suffixes waste little padding."""
        run: list[int] = []
        total = 0
        for i in group.members:
            suffix = len(sequences[i]) - len(group.prefix)
            padded = (len(run) + 1) * suffix
            if run and padded - (total + suffix) > max(PAD_TOLERANCE_TOKENS * (len(run) + 1), 0.05 * padded):
                yield PrefixGroup(group.prefix, run)
                run, total = [], 0
            run.append(i)
            total += suffix
        if run:
            yield PrefixGroup(group.prefix, run)

    def _prefill_group_runs(
        self, groups: Sequence[PrefixGroup], runs: Sequence[list[int]], sequences: Sequence[Sequence[int]]
    ) -> list[tuple[list[int], torch.Tensor, Any, torch.Tensor, torch.Tensor]]:
        """Run the prefixes of `groups` as one padded batch, then each run of their members' suffixes on top.

        `runs` split the groups' members (prompt indices); each run is one padded batch of suffixes over
        copies of its members' prefix caches. Returns one part (rows, logits, cache, mask, next positions) per run.
        """
        ids, mask, positions = self._pad([g.prefix for g in groups])
        out = self._forward(ids, mask, positions, new_cache(), last_only=True)
        cache, logits = out.past_key_values, out.logits[:, -1]
        self.stats.extra["prompt_tokens_run"] += sum(len(g.prefix) for g in groups)
        if all(len(g.members) == 1 and len(sequences[g.members[0]]) == len(g.prefix) for g in groups):
            return [([g.members[0] for g in groups], logits, cache, mask, mask.sum(-1))]
        self.stats.extra["prefix_tokens_reused"] += sum(len(g.prefix) * (len(g.members) - 1) for g in groups)
        group_of = {i: k for k, g in enumerate(groups) for i in g.members}
        parts = []
        for run in runs:
            owner = torch.tensor([group_of[i] for i in run], device=self.device)
            if len(runs) == 1:
                cache.batch_select_indices(owner)  # the only run: copy each prefix cache to its members in place
                run_cache = cache
            else:
                run_cache = selected_rows(cache, owner)
            suffixes = [list(sequences[i][len(groups[group_of[i]].prefix) :]) for i in run]
            parts.append((list(run), *self._run_suffixes(suffixes, run_cache, mask[owner], logits[owner])))
        return parts

    def _run_suffixes(
        self, suffixes: Sequence[list[int]], cache: Any, prefix_mask: torch.Tensor, prefix_logits: torch.Tensor
    ) -> tuple[torch.Tensor, Any, torch.Tensor, torch.Tensor]:
        """Run each row's own suffix on top of its prefix cache: logits, cache, mask and next positions."""
        suffix_ids, suffix_mask, suffix_positions = self._pad(suffixes, start=prefix_mask.sum(-1, keepdim=True))
        full_mask = torch.cat([prefix_mask, suffix_mask], dim=-1)
        out = self._forward(suffix_ids, full_mask, suffix_positions, cache, last_only=True)
        has_suffix = torch.tensor([len(s) > 0 for s in suffixes], device=self.device)
        logits = torch.where(has_suffix[:, None], out.logits[:, -1], prefix_logits)
        self.stats.extra["prompt_tokens_run"] += sum(len(s) for s in suffixes)
        return logits, out.past_key_values, full_mask, full_mask.sum(-1)

    # -- generation ----------------------------------------------------------------------
    def _next_tokens(self, logits: torch.Tensor, params: SamplingParams, generator: Generators) -> torch.Tensor:
        """The next token of each row: greedy, or sampled with one generator for the batch or one per row (a list)."""
        if params.temperature == 0:
            return logits.argmax(-1)
        probs = torch.softmax(logits.float() / params.temperature, dim=-1)
        if params.top_p < 1.0:
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            drop = sorted_probs.cumsum(-1) - sorted_probs > params.top_p
            sorted_probs = sorted_probs.masked_fill(drop, 0.0)
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
        if isinstance(generator, list):  # each row from its own generator: its tokens do not depend on the other rows
            return torch.cat([torch.multinomial(probs[k], 1, generator=g) for k, g in enumerate(generator)])
        return torch.multinomial(probs, 1, generator=generator)[:, 0]

    def _stopped(self, tokens: list[int], stop: Sequence[str], window: int) -> bool:
        """Whether the last token completed a stop string (only the last `window` tokens are decoded)."""
        last = {s[-1] for s in stop}
        if not any(c.isspace() for c in last):  # cheap pre-check: the new token must hold a stop string's last character
            piece = self._pieces.get(tokens[-1])
            if piece is None:
                piece = self._pieces[tokens[-1]] = self.tokenizer.decode(tokens[-1:], skip_special_tokens=True)
            if "\ufffd" not in piece and not any(c in piece for c in last):
                return False
        tail = self.tokenizer.decode(tokens[-window:], skip_special_tokens=True)
        return any(s in tail for s in stop)

    def _decode(
        self,
        logits: torch.Tensor,
        cache: Any,
        mask: torch.Tensor,
        positions: torch.Tensor,
        params: SamplingParams,
        generator: Generators,
    ) -> list[list[int]]:
        """Greedy or sampled decoding from prefilled rows; returns the new tokens of each row. `generator`: one for the
        batch, or a list with one per row (kept with its row when finished rows are dropped)."""
        n_rows = logits.shape[0]
        outputs: list[list[int]] = [[] for _ in range(n_rows)]
        live = list(range(n_rows))  # output row of each cache row
        running = [True] * n_rows
        window = 2 * max((len(s) for s in params.stop), default=0) + 4
        for step in range(params.max_tokens):
            chosen = self._next_tokens(logits, params, [generator[r] for r in live] if isinstance(generator, list) else generator)
            for k, token in enumerate(chosen.tolist()):
                r = live[k]
                if not running[r]:
                    continue
                outputs[r].append(token)
                if token in self.eos_ids or (params.stop and self._stopped(outputs[r], params.stop, window)):
                    running[r] = False
            alive = [k for k, r in enumerate(live) if running[r]]
            if not alive or step == params.max_tokens - 1:
                break
            if len(alive) <= 0.75 * len(live):  # drop finished rows once enough of them pile up
                keep = torch.tensor(alive, device=self.device)
                cache.batch_select_indices(keep)
                chosen, mask, positions = chosen[keep], mask[keep], positions[keep]
                live = [live[k] for k in alive]
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=-1)
            out = self._forward(chosen[:, None], mask, positions[:, None], cache, last_only=True)
            cache, logits, positions = out.past_key_values, out.logits[:, -1], positions + 1
        return outputs

    def _generator(self, seed: int | None) -> torch.Generator:
        generator = torch.Generator(device=self.device)
        if seed is not None:
            generator.manual_seed(seed)
        else:
            generator.seed()
        return generator

    @torch.inference_mode()
    def generate(self, prompts: Sequence[ChatPrompt], params: SamplingParams) -> list[Generation]:
        """Complete every prompt, `params.n` times each (the samples of a prompt one after another).

        Sampling with n = 1 draws every row of the call from one generator seeded with `params.seed`. With n > 1 each
        sample is a row of its own, with its own generator seeded with `sample_seed(seed, i, n, j)`, so a sample's
        tokens depend only on its prompt and seed, not on how the rows are batched; the n copies of a prompt form one
        prefix group, so the prompt is prefilled once and only its last token is run per sample.
        """
        n = params.n
        encoded = self.encode_prompts(prompts, params.max_tokens)
        rows_ids = [ids for ids in encoded for _ in range(n)] if n > 1 else encoded
        results: list[Generation | None] = [None] * len(rows_ids)
        generator: Generators = None
        if params.temperature > 0 and n > 1:
            seeds = [None if params.seed is None else sample_seed(params.seed, k // n, n, k % n) for k in range(len(rows_ids))]
            generator = [self._generator(seed) for seed in seeds]
        elif params.temperature > 0:
            generator = self._generator(params.seed)
        for batch in self._batches(rows_ids, room=params.max_tokens):
            rows, logits, cache, mask, positions = self._prefill(batch, rows_ids)
            row_generators = [generator[i] for i in rows] if isinstance(generator, list) else generator
            new_tokens = self._decode(logits, cache, mask, positions, params, row_generators)
            del cache
            for index, new in zip(rows, new_tokens, strict=True):
                results[index] = self.make_generation(new, rows_ids[index], params.stop)
        done = [g for g in results if g is not None]
        self.count_generate(encoded, done)
        return done

    # -- scoring -------------------------------------------------------------------------
    @torch.inference_mode()
    def score(self, prompts: Sequence[Prompt], candidates: Sequence[Sequence[str]]) -> list[Scores]:
        contexts, cand_ids = self.encode_for_scoring(prompts, candidates)
        results: list[list[float]] = [[0.0] * len(c) for c in candidates]
        room = max((len(c) for cands in cand_ids for c in cands), default=1)
        for batch in self._batches(contexts, room=room):
            multi = any(len(c) > 1 for g in batch for i in g.members for c in cand_ids[i])
            rows, logits, cache, mask, positions = self._prefill(batch, contexts, need_cache=multi)
            first = torch.log_softmax(logits.float(), dim=-1)  # the next-token distribution after each prompt
            for r, i in enumerate(rows):
                results[i] = [first[r, c[0]].item() for c in cand_ids[i]]
            self._score_continuations(rows, cand_ids, results, cache, mask, positions)
            del cache
        self.count_score(contexts)
        return make_scores(results, contexts, cand_ids)

    def _score_continuations(
        self,
        rows: list[int],
        cand_ids: Sequence[Sequence[Sequence[int]]],
        results: list[list[float]],
        cache: Any,
        mask: torch.Tensor,
        positions: torch.Tensor,
    ) -> None:
        """Add the log-probabilities of the second and later tokens of multi-token candidates, reusing the prompt cache."""
        todo = [(r, j) for r, i in enumerate(rows) for j, c in enumerate(cand_ids[i]) if len(c) > 1]
        if not todo:
            return
        width = mask.shape[1]
        longest = max(len(cand_ids[rows[r]][j]) for r, j in todo)
        per_chunk = max(1, self.max_batch_tokens // (width + longest))
        for start in range(0, len(todo), per_chunk):
            chunk = todo[start : start + per_chunk]
            owner = torch.tensor([r for r, _ in chunk], device=self.device)
            cands = [cand_ids[rows[r]][j] for r, j in chunk]
            # Feed all candidate tokens but the last (right padding: later pads cannot affect earlier tokens).
            ids, cand_mask, pos = self._pad([c[:-1] for c in cands], start=positions[owner][:, None], left=False)
            out = self._forward(ids, torch.cat([mask[owner], cand_mask], dim=-1), pos, selected_rows(cache, owner), last_only=False)
            logprobs = torch.log_softmax(out.logits.float(), dim=-1)
            for k, ((r, j), c) in enumerate(zip(chunk, cands, strict=True)):
                targets = torch.tensor(c[1:], device=self.device)
                results[rows[r]][j] += logprobs[k, : len(c) - 1].gather(-1, targets[:, None]).sum().item()

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


__all__ = [
    "GROUPED_ATTENTION",
    "HFEngine",
    "PrefixGroup",
    "group_by_prefix",
    "pick_device",
    "pick_dtype",
    "use_grouped_attention",
    "use_stock_attention",
]
