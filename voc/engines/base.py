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
