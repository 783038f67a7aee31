"""The engine interface: two batched operations, `generate` and `score`.

Every backend (transformers, vLLM, an OpenAI-compatible server) implements these, so every
strategy runs unchanged on all of them. Prompts are chat messages plus an optional start of
the assistant's reply; engines turn them into text with the model's own chat template.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class SamplingParams(BaseModel):
    """How to generate: greedy when temperature is 0 (the default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=0.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChatPrompt:
    """Chat messages (dicts with `role` and `content`) and the text the assistant's reply starts with."""

    messages: tuple[dict[str, str], ...]
    response_prefix: str = ""

    def with_response_prefix(self, prefix: str) -> ChatPrompt:
        return ChatPrompt(self.messages, prefix)


@dataclass
class Generation:
    """One generated completion and its token counts."""

    text: str
    prompt_tokens: int
    completion_tokens: int


@dataclass
class Scores:
    """Log-probabilities of each candidate continuation of one prompt."""

    logprobs: list[float]
    prompt_tokens: int


@dataclass
class EngineStats:
    """Counters an engine keeps over its lifetime (for throughput reports)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    generate_calls: int = 0
    score_calls: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class PromptTooLongError(ValueError):
    """The prompt does not fit the model's context window even after shortening the context."""


class Engine(ABC):
    """A batched text engine. Subclasses implement `generate`, `score` and `render`."""

    name: str = "engine"
    model_name: str = ""
    max_model_len: int = 2048

    def __init__(self) -> None:
        self.stats = EngineStats()

    @abstractmethod
    def generate(self, prompts: Sequence[ChatPrompt], params: SamplingParams, desc: str | None = None) -> list[Generation]:
        """Complete every prompt; one result per prompt, in order."""

    @abstractmethod
    def score(self, prompts: Sequence[ChatPrompt], candidates: Sequence[Sequence[str]], desc: str | None = None) -> list[Scores]:
        """Log-probability of each candidate string as the continuation of its prompt."""

    @abstractmethod
    def render(self, prompt: ChatPrompt) -> str:
        """The exact text fed to the model for this prompt (chat template applied)."""

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """Number of tokens of a rendered prompt text."""

    def close(self) -> None:
        """Release the model (GPU memory, worker processes)."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TokenizerEngine(Engine):
    """An engine that renders and tokenises prompts locally with a Hugging Face tokenizer.

    All three backends derive from it, so they feed the model identical text and token ids.
    Subclasses set `self.tokenizer`, `self.max_model_len` and `self.eos_ids` before use.
    """

    tokenizer: Any
    eos_ids: frozenset[int] = frozenset()

    def render(self, prompt: ChatPrompt) -> str:
        return render_chat(self.tokenizer, prompt)

    def encode(self, text: str) -> list[int]:
        """Token ids of a rendered prompt (a chat template already holds the special tokens)."""
        return self.tokenizer(text, add_special_tokens=not getattr(self.tokenizer, "chat_template", None))["input_ids"]

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def check_length(self, n_tokens: int, room: int) -> None:
        if n_tokens + room > self.max_model_len:
            raise PromptTooLongError(
                f"prompt of {n_tokens} tokens + {room} new tokens exceeds the model's {self.max_model_len}-token window; "
                "shorten the input or lower max_tokens"
            )

    def encode_prompts(self, prompts: Sequence[ChatPrompt], room: int) -> list[list[int]]:
        """Token ids of each prompt, checked to leave `room` new tokens in the model's window."""
        encoded = [self.encode(self.render(p)) for p in prompts]
        for ids in encoded:
            self.check_length(len(ids), room)
        return encoded

    def encode_for_scoring(
        self, prompts: Sequence[ChatPrompt], candidates: Sequence[Sequence[str]]
    ) -> tuple[list[list[int]], list[list[list[int]]]]:
        """Token ids of each prompt and of each of its candidates (validated: one non-empty list per prompt)."""
        if len(prompts) != len(candidates):
            raise ValueError(f"{len(prompts)} prompts but {len(candidates)} candidate lists; give one list per prompt")
        contexts = [self.encode(self.render(p)) for p in prompts]
        cand_ids = [[self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in cands] for cands in candidates]
        for ctx, cands in zip(contexts, cand_ids, strict=True):
            self.check_length(len(ctx), max((len(c) for c in cands), default=0))
            if any(not c for c in cands):
                raise ValueError("a candidate continuation is empty; every candidate needs at least one token")
        return contexts, cand_ids

    def make_generation(self, new_tokens: Sequence[int], prompt_tokens: int, stop: Sequence[str]) -> Generation:
        """Cut generated ids at the first end-of-sequence token, decode them with the HF tokenizer (so equal
        tokens give equal text on every engine) and cut the text at the first stop string."""
        n_new = next((k + 1 for k, t in enumerate(new_tokens) if t in self.eos_ids), len(new_tokens))
        text = self.tokenizer.decode(list(new_tokens[:n_new]), skip_special_tokens=True)
        return Generation(cut_at_stop(text, stop), prompt_tokens, n_new)

    def count_generate(self, encoded: Sequence[Sequence[int]], results: Sequence[Generation]) -> None:
        self.stats.generate_calls += 1
        self.stats.prompt_tokens += sum(len(e) for e in encoded)
        self.stats.completion_tokens += sum(g.completion_tokens for g in results)

    def count_score(self, contexts: Sequence[Sequence[int]]) -> None:
        self.stats.score_calls += 1
        self.stats.prompt_tokens += sum(len(c) for c in contexts)


def next_token_requests(cand_ids: Sequence[Sequence[Sequence[int]]]) -> dict[tuple[int, tuple[int, ...]], list[int]]:
    """For token-by-token scoring: (prompt index, candidate prefix) -> the token ids wanted right after it.

    Candidates sharing a prefix share its request; single-token candidates need one request per prompt.
    """
    requests: dict[tuple[int, tuple[int, ...]], set[int]] = {}
    for i, cands in enumerate(cand_ids):
        for cand in cands:
            for k, token in enumerate(cand):
                requests.setdefault((i, tuple(cand[:k])), set()).add(token)
    return {key: sorted(tokens) for key, tokens in requests.items()}


def sum_token_logprobs(
    cand_ids: Sequence[Sequence[Sequence[int]]], contexts: Sequence[Sequence[int]], logprob: dict[tuple[int, tuple[int, ...], int], float]
) -> list[Scores]:
    """Each candidate's log-probability: the sum over its tokens of log P(token | prompt + earlier tokens)."""
    return [
        Scores([sum(logprob[(i, tuple(c[:k]), c[k])] for k in range(len(c))) for c in cands], len(contexts[i]))
        for i, cands in enumerate(cand_ids)
    ]


def render_chat(tokenizer: Any, prompt: ChatPrompt) -> str:
    """Apply a Hugging Face tokenizer's chat template, then append the response prefix.

    Tokenizers without a chat template get a plain `Role: text` layout.
    """
    messages = list(prompt.messages)
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        text = "".join(f"{m['role'].capitalize()}: {m['content']}\n\n" for m in messages) + "Assistant:"
        if prompt.response_prefix and not prompt.response_prefix.startswith((" ", "\n")):
            text += " "
    return text + prompt.response_prefix


def softmax(logprobs: Sequence[float]) -> list[float]:
    """Normalise log-scores into probabilities that sum to 1."""
    top = max(logprobs)
    weights = [math.exp(lp - top) for lp in logprobs]
    total = sum(weights)
    return [w / total for w in weights]


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """Cut a completion at the first stop string (the stop string itself is dropped)."""
    cut = len(text)
    for s in stop:
        index = text.find(s)
        if index != -1:
            cut = min(cut, index)
    return text[:cut]
