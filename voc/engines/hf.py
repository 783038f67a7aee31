"""Hugging Face transformers engine: the embedded default, on CPU or GPU.

Batching: prompts are sorted by length and cut into batches, so that each batch pads little;
left padding with explicit position ids keeps batched results equal to one-by-one results.
Scoring: when every candidate is one token (option labels usually are), one forward pass over
the prompt scores all candidates at once; longer candidates are scored as continuations.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from voc.engines.base import ChatPrompt, Engine, Generation, PromptTooLongError, SamplingParams, Scores, cut_at_stop, render_chat
from voc.models import resolve_model

log = logging.getLogger(__name__)


def pick_device(device: str | None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(names)}")
    return names[dtype]


class HFEngine(Engine):
    """Batched generation and scoring with a transformers causal LM."""

    name = "hf"

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        batch_size: int = 16,
        max_model_len: int | None = None,
        trust_remote_code: bool = False,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_path = resolve_model(model)
        self.model_name = self.model_path
        self.device = pick_device(device)
        self.batch_size = batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path, trust_remote_code=trust_remote_code)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(
            self.model_path, dtype=pick_dtype(dtype, self.device), trust_remote_code=trust_remote_code, **(model_kwargs or {})
        ).to(self.device)
        self.model.eval()
        self.max_model_len = max_model_len or int(getattr(self.model.config, "max_position_embeddings", 2048))
        self._chat = bool(getattr(self.tokenizer, "chat_template", None))

    # -- text and tokens -------------------------------------------------------------------
    def render(self, prompt: ChatPrompt) -> str:
        return render_chat(self.tokenizer, prompt)

    def encode(self, text: str) -> list[int]:
        """Token ids of a rendered prompt (the chat template already holds the special tokens)."""
        return self.tokenizer(text, add_special_tokens=not self._chat)["input_ids"]

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def _check_length(self, n_tokens: int, room: int) -> None:
        if n_tokens + room > self.max_model_len:
            raise PromptTooLongError(
                f"prompt of {n_tokens} tokens + {room} new tokens exceeds the model's {self.max_model_len}-token window; "
                "shorten the input or lower max_tokens"
            )

    def _batches(self, lengths: Sequence[int]) -> Iterator[list[int]]:
        """Indices grouped into batches of similar length (longest first, so memory peaks early)."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        for start in range(0, len(order), self.batch_size):
            yield order[start : start + self.batch_size]

    def _pad(self, sequences: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Left-pad to a batch; returns input ids, attention mask and position ids."""
        width = max(len(s) for s in sequences)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(s)) + list(s) for s in sequences], device=self.device)
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in sequences], device=self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return ids, mask, positions

    def _log_softmax(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        return torch.log_softmax(logits.float(), dim=-1)

    # -- the two operations --------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, prompts: Sequence[ChatPrompt], params: SamplingParams, desc: str | None = None) -> list[Generation]:
        encoded = [self.encode(self.render(p)) for p in prompts]
        for ids in encoded:
            self._check_length(len(ids), params.max_tokens)
        results: list[Generation | None] = [None] * len(prompts)
        sampling = params.temperature > 0
        if params.seed is not None:
            torch.manual_seed(params.seed)
        eos = self.model.generation_config.eos_token_id or self.tokenizer.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos])
        batches = list(self._batches([len(e) for e in encoded]))
        with tqdm(total=len(prompts), desc=desc, disable=desc is None, unit="prompt") as bar:
            for batch in batches:
                ids, mask, _ = self._pad([encoded[i] for i in batch])
                kwargs: dict[str, Any] = {"do_sample": sampling, "max_new_tokens": params.max_tokens}
                if sampling:
                    kwargs.update(temperature=params.temperature, top_p=params.top_p)
                else:
                    kwargs.update(temperature=None, top_p=None, top_k=None)
                if params.stop:
                    kwargs.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
                out = self.model.generate(
                    input_ids=ids, attention_mask=mask, pad_token_id=self.tokenizer.pad_token_id, **kwargs
                )
                for row, index in enumerate(batch):
                    new = out[row, ids.shape[1] :].tolist()
                    n_new = next((k + 1 for k, t in enumerate(new) if t in eos_ids), len(new))
                    text = self.tokenizer.decode(new[:n_new], skip_special_tokens=True)
                    results[index] = Generation(cut_at_stop(text, params.stop), len(encoded[index]), n_new)
                bar.update(len(batch))
        self.stats.generate_calls += 1
        self.stats.prompt_tokens += sum(len(e) for e in encoded)
        self.stats.completion_tokens += sum(g.completion_tokens for g in results if g)
        return [g for g in results if g is not None]

    @torch.inference_mode()
    def score(self, prompts: Sequence[ChatPrompt], candidates: Sequence[Sequence[str]], desc: str | None = None) -> list[Scores]:
        if len(prompts) != len(candidates):
            raise ValueError(f"{len(prompts)} prompts but {len(candidates)} candidate lists; give one list per prompt")
        contexts = [self.encode(self.render(p)) for p in prompts]
        cand_ids = [[self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in cands] for cands in candidates]
        for ctx, cands in zip(contexts, cand_ids, strict=True):
            self._check_length(len(ctx), max((len(c) for c in cands), default=0))
            if any(not c for c in cands):
                raise ValueError("a candidate continuation is empty; every candidate needs at least one token")
        results: list[list[float]] = [[0.0] * len(c) for c in candidates]
        single = [i for i, cands in enumerate(cand_ids) if all(len(c) == 1 for c in cands)]
        multi = [(i, j) for i, cands in enumerate(cand_ids) if any(len(c) > 1 for c in cands) for j in range(len(cands))]
        with tqdm(total=len(single) + len(multi), desc=desc, disable=desc is None, unit="prompt") as bar:
            # One forward pass per prompt scores all single-token candidates from the last position.
            for batch in self._batches([len(contexts[i]) for i in single]):
                rows = [single[k] for k in batch]
                logprobs = self._log_softmax(*self._pad([contexts[i] for i in rows]))[:, -1]
                for r, i in enumerate(rows):
                    results[i] = [logprobs[r, c[0]].item() for c in cand_ids[i]]
                bar.update(len(rows))
            # Longer candidates: score each prompt + candidate sequence, summing the candidate's tokens.
            sequences = [contexts[i] + cand_ids[i][j] for i, j in multi]
            for batch in self._batches([len(s) for s in sequences]):
                ids, mask, positions = self._pad([sequences[k] for k in batch])
                logprobs = self._log_softmax(ids, mask, positions)
                width = ids.shape[1]
                for r, k in enumerate(batch):
                    i, j = multi[k]
                    cand = cand_ids[i][j]
                    start = width - len(cand)
                    token_lp = logprobs[r, start - 1 : width - 1].gather(-1, torch.tensor(cand, device=self.device)[:, None])
                    results[i][j] = token_lp.sum().item()
                bar.update(len(batch))
        self.stats.score_calls += 1
        self.stats.prompt_tokens += sum(len(c) for c in contexts)
        return [Scores(lp, len(ctx)) for lp, ctx in zip(results, contexts, strict=True)]

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
