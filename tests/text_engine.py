"""A base for the scripted engines of the strategy tests: prompts rendered as plain text, tokens counted as words."""

from __future__ import annotations

from voc.engines.base import ChatPrompt, Continuation, Engine


class TextEngine(Engine):
    """Renders a chat prompt as its messages' contents joined by newlines (plus the reply prefix), a continuation as
    its prompt, generated text and appended text; counts words as tokens. Subclasses script generate and score."""

    def render(self, prompt: ChatPrompt | Continuation) -> str:
        if isinstance(prompt, Continuation):
            return self.render(prompt.prompt) + prompt.generation.text + prompt.text
        return "\n".join(m["content"] for m in prompt.messages) + prompt.response_prefix

    def encode(self, text: str) -> list[int]:
        return list(range(len(text.split())))  # one id per word: only their number matters here
