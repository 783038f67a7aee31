"""Engines behind one interface: `hf` (transformers), `vllm` (offline vLLM) and `openai` (a `vllm serve` endpoint)."""

from __future__ import annotations

from typing import Any

from voc.engines.base import ChatPrompt, Engine, Generation, PromptTooLongError, SamplingParams, Scores, TokenizedPrompt

ENGINES = ("hf", "vllm", "openai")


def make_engine(name: str = "hf", model: str | None = None, **options: Any) -> Engine:
    """Start the engine called `name` on `model` (None = the embedded default model).

    Backends are imported only when asked for, so `hf` works without vLLM installed.
    """
    if name == "hf":
        from voc.engines.hf import HFEngine

        return HFEngine(model, **options)
    if name == "vllm":
        from voc.engines.vllm import VLLMEngine

        return VLLMEngine(model, **options)
    if name == "openai":
        from voc.engines.openai import OpenAIEngine

        return OpenAIEngine(model, **options)
    raise ValueError(f"unknown engine {name!r}; use one of {', '.join(ENGINES)}")


__all__ = [
    "ENGINES", "ChatPrompt", "Engine", "Generation", "PromptTooLongError", "SamplingParams", "Scores", "TokenizedPrompt", "make_engine"
]  # fmt: skip
