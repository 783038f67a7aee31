"""The engine interface: two batched operations, `generate` and `score`.

Every backend (transformers, vLLM, an OpenAI-compatible server) implements these, so every
strategy runs unchanged on all of them. Prompts are chat messages plus an optional start of
the assistant's reply; engines turn them into text with the model's own chat template and into
token ids, once (`tokenize`: a `TokenizedPrompt` is used as it is). A prompt can also continue a
generation (`Continuation`): the tokens the model generated, then more text. Length checks against
the model's window happen here, in the engine.

How candidates are tokenized (the same in every engine, see `TokenizerEngine.encode_for_scoring`):
a candidate's tokens are the tokens that `encode(prompt_text + candidate)` has beyond
`encode(prompt_text)`, as lm-evaluation-harness does it, so a label is scored as the token(s) the
model would see in that place, not as the string tokenized on its own (with SentencePiece
tokenizers that add a dummy prefix, " A" alone is two tokens, after "Answer:" it is one).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from jinja2 import TemplateError
from pydantic import BaseModel, ConfigDict, Field, model_validator


class SamplingParams(BaseModel):
    """How to generate: greedy when temperature is 0 (the default).

    `n`: completions per prompt (self-consistency paths), as vLLM's `n`; more than 1 needs a temperature above 0, since
    greedy paths would all be the same. `generate` then returns the n completions of each prompt one after another, and
    sample j of the i-th prompt of a call is drawn with seed `seed + i * n + j` (`sample_seed`) on every engine, so a
    run repeats exactly with the same seed. (With n = 1 the vLLM engines seed prompt i with `seed + i` and the hf engine
    draws the call from one generator seeded with `seed`, as they always did.)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=0.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: tuple[str, ...] = ()
    n: int = Field(default=1, ge=1, description="completions per prompt (self-consistency paths)")

    @model_validator(mode="after")
    def _samples_need_a_temperature(self) -> SamplingParams:
        if self.n > 1 and self.temperature == 0:
            raise ValueError(f"{self.n} samples per prompt need a temperature above 0 (greedy decoding gives {self.n} identical paths)")
        return self


def sample_seed(seed: int, prompt_index: int, n: int, sample_index: int = 0) -> int:
    """The seed of sample `sample_index` of the `prompt_index`-th prompt of a call that draws `n` samples per prompt:
    `seed + prompt_index * n + sample_index`, so that every (prompt, sample) of a call has its own seed (with n = 1 this
    is `seed + prompt_index`, the engines' seed per prompt)."""
    return seed + prompt_index * n + sample_index


@dataclass(frozen=True)
class ChatPrompt:
    """Chat messages (dicts with `role` and `content`) and the text the assistant's reply starts with."""

    messages: tuple[dict[str, str], ...]
    response_prefix: str = ""


@dataclass(frozen=True)
class TokenizedPrompt(ChatPrompt):
    """A chat prompt already rendered with the model's chat template (`text`) and tokenized (`ids`) by
    `Engine.tokenize`. Engines take it wherever they take a `ChatPrompt` and use its ids as they are, so a prompt
    that a strategy has measured (to fit its context) is not rendered or tokenized again."""

    text: str = ""
    ids: tuple[int, ...] = ()


@dataclass
class Generation:
    """One generated completion and its token counts.

    `token_ids` are the generated tokens that make up `text`: cut before the stop string and without the
    end-of-sequence token (a token that straddles the stop string is left out, so `text` may hold a few
    more characters). `prompt_ids` are the prompt's tokens. Engines that tokenize locally fill both, so a
    `Continuation` can go on from exactly these tokens instead of re-encoding the decoded text.
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    prompt_ids: tuple[int, ...] = ()
    token_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class Continuation:
    """A prompt that goes on after a generation: the generation's prompt, the tokens the model generated
    (trailing whitespace dropped), then `text` (for example VoC's verdict prefix or cot's answer prefix)."""

    prompt: ChatPrompt
    generation: Generation
    text: str


Prompt = ChatPrompt | Continuation
NextTokenRequest = tuple[list[int], list[int]]  # (token ids, the ids whose log-probabilities at the next position are wanted)
MAX_IDS_PER_REQUEST = 128  # vLLM's MAX_LOGPROB_TOKEN_IDS (vllm/sampling_params.py in 0.32): ids one request may ask for


@dataclass
class Scores:
    """Log-probabilities of each candidate continuation of one prompt.

    `context_ids` is the token sequence the candidates were scored after and `tokens[j]` the scored tokens
    of candidate j (its part of the joint encoding), so a report or a test can show what was scored.
    """

    logprobs: list[float]
    prompt_tokens: int
    context_ids: tuple[int, ...] = ()
    tokens: list[tuple[int, ...]] = field(default_factory=list)


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
    """A batched text engine. Subclasses implement `generate`, `score`, `render` and `encode`."""

    name: str = "engine"
    model_name: str = ""
    max_model_len: int = 2048

    def __init__(self) -> None:
        self.stats = EngineStats()

    @abstractmethod
    def generate(self, prompts: Sequence[ChatPrompt], params: SamplingParams) -> list[Generation]:
        """Complete every prompt; `params.n` results per prompt (one by default), in order: the n samples of prompt i are
        results i * n to i * n + n - 1."""

    @abstractmethod
    def score(self, prompts: Sequence[Prompt], candidates: Sequence[Sequence[str]]) -> list[Scores]:
        """Log-probability of each candidate string as the continuation of its prompt."""

    @abstractmethod
    def render(self, prompt: Prompt) -> str:
        """The text fed to the model for this prompt (chat template applied); for a `Continuation`, the rendered
        prompt, the generated text and the added text (the model gets the generated token ids themselves)."""

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of a rendered prompt text (a chat template already holds the special tokens)."""

    def count_tokens(self, text: str) -> int:
        """Number of tokens of a rendered prompt text."""
        return len(self.encode(text))

    def tokenize(self, prompts: Sequence[ChatPrompt]) -> list[TokenizedPrompt]:
        """Render and tokenize each prompt once (a `TokenizedPrompt` is kept as it is); its `ids` are what the model is
        fed, so their number is what the prompt takes of the model's window."""
        tokenized = []
        for prompt in prompts:
            if not isinstance(prompt, TokenizedPrompt):
                text = self.render(prompt)
                prompt = TokenizedPrompt(prompt.messages, prompt.response_prefix, text, tuple(self.encode(text)))
            tokenized.append(prompt)
        return tokenized

    def close(self) -> None:
        """Release the model (GPU memory, worker processes)."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TokenizerEngine(Engine):
    """An engine that renders and tokenises prompts locally with a Hugging Face tokenizer.

    All three backends derive from it, so they feed the model identical text and token ids.
    Subclasses set `self.tokenizer`, `self.max_model_len` and `self.eos_ids` (`end_of_sequence_ids`) before use.
    """

    tokenizer: Any
    eos_ids: frozenset[int] = frozenset()

    def render(self, prompt: Prompt) -> str:
        if isinstance(prompt, TokenizedPrompt):
            return prompt.text
        if isinstance(prompt, Continuation):
            return self.render(prompt.prompt) + prompt.generation.text.rstrip() + prompt.text
        return render_chat(self.tokenizer, prompt)

    def encode(self, text: str) -> list[int]:
        return encode_rendered(self.tokenizer, text)

    def check_length(self, n_tokens: int, room: int) -> None:
        if n_tokens + room > self.max_model_len:
            raise PromptTooLongError(
                f"prompt of {n_tokens} tokens + {room} new tokens exceeds the model's {self.max_model_len}-token window; "
                "shorten the input or lower max_tokens"
            )

    def encode_prompts(self, prompts: Sequence[ChatPrompt], room: int) -> list[list[int]]:
        """Token ids of each prompt (rendered and tokenized here unless it is a `TokenizedPrompt`), checked to leave
        `room` new tokens in the model's window."""
        encoded = [list(p.ids) for p in self.tokenize(prompts)]
        for ids in encoded:
            self.check_length(len(ids), room)
        return encoded

    def encode_for_scoring(
        self, prompts: Sequence[Prompt], candidates: Sequence[Sequence[str]]
    ) -> tuple[list[list[int]], list[list[list[int]]]]:
        """Token ids of each prompt and of each of its candidates, from the joint encoding (see the module docstring).

        A `ChatPrompt`'s text and each candidate are encoded together; the context is what all these encodings
        share with the prompt's own encoding (normally the whole prompt) and each candidate's tokens are the rest.
        A `Continuation` is the generation's prompt and generated token ids, then its text, which is encoded
        jointly with the candidates in the same way, after a neutral anchor (`encode_after`).
        """
        if len(prompts) != len(candidates):
            raise ValueError(f"{len(prompts)} prompts but {len(candidates)} candidate lists; give one list per prompt")
        contexts, cand_ids = [], []
        for prompt, cands in zip(prompts, candidates, strict=True):
            if isinstance(prompt, Continuation):
                head = self.continuation_head(prompt)
                context, tokens = joint_encoding(lambda text: encode_after(self.tokenizer, text), prompt.text, cands)
                context = head + context
            else:
                context, tokens = joint_encoding(self.encode, self.render(prompt), cands)
            if any(not t for t in tokens):
                raise ValueError("a candidate continuation is empty; every candidate needs at least one token")
            self.check_length(len(context), max((len(t) for t in tokens), default=0))
            contexts.append(context)
            cand_ids.append(tokens)
        return contexts, cand_ids

    def continuation_head(self, prompt: Continuation) -> list[int]:
        """The prompt's ids and the generated ids of a continuation, without trailing whitespace-only tokens."""
        generation = prompt.generation
        head = list(generation.prompt_ids) if generation.prompt_ids else list(self.tokenize([prompt.prompt])[0].ids)
        return head + without_trailing_space(self.tokenizer, generation.token_ids)

    def score_next_tokens(
        self,
        prompts: Sequence[Prompt],
        candidates: Sequence[Sequence[str]],
        run: Callable[[list[NextTokenRequest]], Sequence[dict[int, float]]],
    ) -> list[Scores]:
        """Score candidates token by token with next-token requests: how the vLLM engines score, offline or served.

        For a candidate c = (c1..cn) the requests are context + c[:k] asking for c[k+1], k = 0..n-1. Candidates sharing
        a prefix share its request (single-token candidates need one request per prompt), split into requests of at most
        MAX_IDS_PER_REQUEST ids. `run` answers all of them at once (the candidates are known in advance, nothing is
        sequential) with the log-probability of every asked-for id; a candidate's log-probability is the sum over its
        tokens, the exact log P(candidate | prompt).
        """
        contexts, cand_ids = self.encode_for_scoring(prompts, candidates)
        wanted: dict[tuple[int, tuple[int, ...]], set[int]] = {}
        for i, cands in enumerate(cand_ids):
            for cand in cands:
                for k, token in enumerate(cand):
                    wanted.setdefault((i, tuple(cand[:k])), set()).add(token)
        keys, requests = [], []
        for (i, prefix), tokens in wanted.items():
            ordered = sorted(tokens)
            for start in range(0, len(ordered), MAX_IDS_PER_REQUEST):
                keys.append((i, prefix))
                requests.append(([*contexts[i], *prefix], ordered[start : start + MAX_IDS_PER_REQUEST]))
        logprob: dict[tuple[int, tuple[int, ...], int], float] = {}
        for (i, prefix), got in zip(keys, run(requests) if requests else [], strict=True):
            logprob.update({(i, prefix, token): value for token, value in got.items()})
        self.count_score(contexts)
        sums = [[sum(logprob[(i, tuple(c[:k]), c[k])] for k in range(len(c))) for c in cands] for i, cands in enumerate(cand_ids)]
        return make_scores(sums, contexts, cand_ids)

    def make_generation(self, new_tokens: Sequence[int], prompt_ids: Sequence[int], stop: Sequence[str]) -> Generation:
        """Cut generated ids at the first end-of-sequence token, decode them with the HF tokenizer (so equal
        tokens give equal text on every engine) and cut the text at the first stop string. The kept token ids
        are those whose text lies before the stop string."""
        n_new = next((k + 1 for k, t in enumerate(new_tokens) if t in self.eos_ids), len(new_tokens))
        ids = [t for t in new_tokens[:n_new] if t not in self.eos_ids]
        full = self.tokenizer.decode(ids, skip_special_tokens=True)
        text = cut_at_stop(full, stop)
        if len(text) < len(full):
            ids = ids[: self._tokens_within(ids, text)]
        return Generation(text, len(prompt_ids), n_new, tuple(prompt_ids), tuple(ids))

    def _tokens_within(self, ids: Sequence[int], text: str) -> int:
        """The largest k such that the first k ids decode to a start of `text`. Generation stops as soon as a stop
        string appears, so the search walks back from the end and takes a few steps."""
        k = len(ids)
        while k and not text.startswith(self.tokenizer.decode(list(ids[:k]), skip_special_tokens=True)):
            k -= 1
        return k

    def count_generate(self, encoded: Sequence[Sequence[int]], results: Sequence[Generation]) -> None:
        self.stats.generate_calls += 1
        self.stats.prompt_tokens += sum(len(e) for e in encoded)
        self.stats.completion_tokens += sum(g.completion_tokens for g in results)

    def count_score(self, contexts: Sequence[Sequence[int]]) -> None:
        self.stats.score_calls += 1
        self.stats.prompt_tokens += sum(len(c) for c in contexts)


def without_trailing_space(tokenizer: Any, ids: Sequence[int]) -> list[int]:
    """`ids` without the tokens at its end that decode to whitespace only (a continuation brings its own)."""
    ids = list(ids)
    while ids and not tokenizer.decode(ids[-1:]).strip():
        ids.pop()
    return ids


def end_of_sequence_ids(tokenizer: Any, model: Any = None) -> frozenset[int]:
    """The ids that end a generation on every engine (those vLLM stops at): the tokenizer's `eos_token_id` and the model's
    generation config's (one id or a list; chat models may end a turn with another token). `model`: the loaded
    `GenerationConfig`, or the model's folder to read its generation_config.json from."""
    if isinstance(model, str):
        from transformers import GenerationConfig

        try:
            model = GenerationConfig.from_pretrained(model)
        except OSError:
            model = None
    eos = getattr(model, "eos_token_id", None)
    return frozenset([tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos])]) - {None}


def encode_rendered(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a rendered prompt: special tokens are added only when there is no chat template (which holds them)."""
    return tokenizer(text, add_special_tokens=not getattr(tokenizer, "chat_template", None))["input_ids"]


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    return next((k for k in range(n) if a[k] != b[k]), n)


def joint_encoding(
    encode: Callable[[str], list[int]], text: str, candidates: Sequence[str], move_space: bool = True
) -> tuple[list[int], list[list[int]]]:
    """The context ids and each candidate's ids when `text + candidate` is encoded as one string.

    With `move_space`, the text's trailing whitespace moves onto the candidates (as lm-evaluation-harness does it
    for scoring). The context is the longest start that every joint encoding shares with the text's own encoding
    (all of it, unless the tokenizer merges across the boundary) and each candidate's ids are the rest of its joint
    encoding.
    """
    stripped = text.rstrip() if move_space else text
    space = text[len(stripped) :]
    base = encode(stripped)
    joints = [encode(stripped + space + c) for c in candidates]
    shared = min((common_prefix_length(base, j) for j in joints), default=len(base))
    return base[:shared], [j[shared:] for j in joints]


ANCHORS = ("\n", "a")  # texts that end cleanly before what follows them in every tokenizer family we test


def encode_after(tokenizer: Any, text: str) -> list[int]:
    """The ids of `text` as it is tokenized when it follows other text: no special tokens and no dummy prefix.

    Encoding `text` alone is wrong for SentencePiece layouts that prepend a space marker ("Verdict" would
    become "▁Verdict"), so it is encoded after an anchor and the anchor's own ids are dropped. An anchor is used
    only if its ids are a prefix of the joint encoding (it did not merge with the text); plain encoding is the
    last resort.
    """
    for anchor in ANCHORS:
        base = tokenizer(anchor, add_special_tokens=False)["input_ids"]
        joint = tokenizer(anchor + text, add_special_tokens=False)["input_ids"]
        if joint[: len(base)] == base:
            return joint[len(base) :]
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def make_scores(
    logprobs: Sequence[Sequence[float]], contexts: Sequence[Sequence[int]], cand_ids: Sequence[Sequence[Sequence[int]]]
) -> list[Scores]:
    """One `Scores` per prompt, with the context and candidate tokens that were scored."""
    return [
        Scores(list(lps), len(ctx), tuple(ctx), [tuple(c) for c in cands])
        for lps, ctx, cands in zip(logprobs, contexts, cand_ids, strict=True)
    ]


def render_chat(tokenizer: Any, prompt: ChatPrompt) -> str:
    """Apply a Hugging Face tokenizer's chat template; the response prefix starts the assistant's turn.

    A response prefix is rendered as a final assistant message that the template continues
    (`continue_final_message`), so templates that open the assistant turn with more than the generation
    prompt (a space after Llama-2's `[/INST]`, an empty reasoning block) stay correct; templates that drop
    such a message get the generation prompt and the prefix appended. Templates that refuse a system message
    (Gemma's) get it at the start of the first user message. Tokenizers without a chat template get a plain
    `Role: text` layout.
    """
    messages = list(prompt.messages)
    if not getattr(tokenizer, "chat_template", None):
        text = "".join(f"{m['role'].capitalize()}: {m['content']}\n\n" for m in messages) + "Assistant:"
        if prompt.response_prefix and not prompt.response_prefix.startswith((" ", "\n")):
            text += " "
        return text + prompt.response_prefix
    try:
        return _apply_template(tokenizer, messages, prompt.response_prefix)
    except TemplateError:
        if not messages or messages[0]["role"] != "system" or len(messages) < 2:
            raise
        system, first, *rest = messages
        merged = [{"role": first["role"], "content": system["content"] + "\n\n" + first["content"]}, *rest]
        return _apply_template(tokenizer, merged, prompt.response_prefix)


def _apply_template(tokenizer: Any, messages: list[dict[str, str]], response_prefix: str) -> str:
    if response_prefix:
        try:
            return tokenizer.apply_chat_template(
                [*messages, {"role": "assistant", "content": response_prefix}], tokenize=False, continue_final_message=True
            )
        except ValueError:  # the template drops or rewrites the final message: append the prefix to the generation prompt
            pass
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + response_prefix


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
