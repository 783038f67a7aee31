"""Tokenizers of the families people evaluate, built at test time, each with a real chat-template style.

- `bpe-chatml`: byte-level BPE (SmolLM2's own tokenizer, the layout of Llama-3 and Qwen too) with its own
  ChatML template: the model is tests/tiny_model.py's tiny Llama.
- `llama2-sp`: the Llama-2 `tokenizer.json` layout (BPE with byte fallback, normalizer `Prepend("▁")` +
  `Replace(" ", "▁")`, so a text encoded alone gets a dummy "▁" in front), Llama-2's `[INST]` template
  (the assistant turn opens with a space after `[/INST]`).
- `gemma-sp`: a SentencePiece layout without the dummy prefix (Gemma's), Gemma's template, which refuses
  a system message.
- `multi-token`: byte-level with no merges, so every character is a token: option labels (" A") and
  verdicts (" correct") are several tokens; Llama-3's template.

The SentencePiece-style tokenizers are trained with the `tokenizers` package on text rendered from the
project's own templates (a second or so). Each family gets a tiny random Llama (same shape as
tests/tiny_model.py: hidden 128, 2 layers, head_dim 64, so vLLM's CPU attention runs it too).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from voc.engines.base import Engine

FAMILIES = ("bpe-chatml", "llama2-sp", "gemma-sp", "multi-token")

LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}"
    "{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)
GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}"
    "{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

QUESTIONS_TEXT = [
    ("Does smoking raise the risk of lung cancer?", ["yes", "no", "maybe"], "A cohort study of 5000 adults."),
    ("Which organ makes insulin?", ["liver", "pancreas", "kidney", "spleen"], None),
]
SP_VOCAB = 1500  # trained vocabulary of the SentencePiece-style families


def training_text() -> list[str]:
    """Text in the shape of voc's prompts: the built-in templates rendered with a few medical questions."""
    from voc.prompts import Templates
    from voc.strategies import make_strategy
    from voc.types import Question

    more = [
        ("Is aspirin an anticoagulant?", ["yes", "no", "maybe"], None),
        ("Which vitamin deficiency causes scurvy?", ["vitamin A", "vitamin B12", "vitamin C", "vitamin D", "vitamin K"], None),
    ]
    questions = [Question(question=q, options=o, context=c) for q, o, c in [*QUESTIONS_TEXT, *more]]
    templates = Templates()
    lines: list[str] = []
    for name in ("direct", "cot", "voc"):
        strategy = make_strategy(name)
        for q in questions:
            for block_file in strategy.template_files:
                template = templates.get(block_file)
                for block in (b for b in template.blocks if b != "example"):  # few-shot examples: no new vocabulary
                    variables = {"question": q, "option": {"label": "A", "text": q.options["A"]}, "label": "B", "examples": [],
                                 "verifications": [{"label": k, "option_text": v, "text": "It fits."} for k, v in q.options.items()]}
                    lines += templates.block(block_file, block, **variables).splitlines()
    lines += ["The patient was treated with insulin and the verdict is correct.", "Evidence against option B: it is incorrect."] * 3
    return [line for line in lines if line.strip()]


def _sentencepiece_tokenizer(dummy_prefix: bool, specials: list[str]) -> Any:
    """A BPE with byte fallback in the SentencePiece layout (Llama-2's with `dummy_prefix`, Gemma's without)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    trainer_tokenizer = Tokenizer(models.BPE())
    trainer_tokenizer.normalizer = normalizers.Replace(" ", "▁")
    trainer_tokenizer.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")  # pieces never span a word start
    trainer = trainers.BpeTrainer(vocab_size=SP_VOCAB, show_progress=False)
    trainer_tokenizer.train_from_iterator(training_text(), trainer)
    learned = trainer_tokenizer.get_vocab()
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in _merges(trainer_tokenizer)]

    vocab: dict[str, int] = {}
    for token in [*specials, *(f"<0x{b:02X}>" for b in range(256)), *sorted(learned, key=learned.get)]:
        vocab.setdefault(token, len(vocab))
    model = models.BPE(vocab=vocab, merges=merges, byte_fallback=True, unk_token=specials[0], fuse_unk=True)
    tokenizer = Tokenizer(model)
    steps = [normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")] if dummy_prefix else [normalizers.Replace(" ", "▁")]
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.pre_tokenizer = None
    pieces = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    tokenizer.decoder = decoders.Sequence([*pieces, decoders.Strip(" ", 1, 0)] if dummy_prefix else pieces)
    return tokenizer


def _merges(tokenizer: Any) -> list[Any]:
    import json

    return json.loads(tokenizer.to_str())["model"]["merges"]


def _with_bos(tokenizer: Any, bos: str) -> None:
    from tokenizers import processors

    bos_id = tokenizer.token_to_id(bos)
    tokenizer.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)])


def _char_level_tokenizer(specials: list[str]) -> Any:
    """Byte-level BPE with no merges: every byte is one token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {token: i for i, token in enumerate([*specials, *sorted(alphabet)])}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def build_tokenizer(family: str) -> Any:
    """A transformers fast tokenizer of `family`, with its chat template and special tokens set."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from voc.models import resolve_model

    if family == "bpe-chatml":
        return AutoTokenizer.from_pretrained(resolve_model(None))
    if family == "llama2-sp":
        raw = _sentencepiece_tokenizer(True, ["<unk>", "<s>", "</s>"])
        _with_bos(raw, "<s>")
        names = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "</s>"}
        template = LLAMA2
    elif family == "gemma-sp":
        raw = _sentencepiece_tokenizer(False, ["<unk>", "<pad>", "<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"])
        _with_bos(raw, "<bos>")
        names = {"unk_token": "<unk>", "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>"}
        template = GEMMA
    elif family == "multi-token":
        specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
        raw = _char_level_tokenizer(specials)
        names = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "pad_token": "<|end_of_text|>"}
        template = LLAMA3
    else:
        raise ValueError(f"unknown tokenizer family {family!r}; use one of {FAMILIES}")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, **names)
    extra = [t for t in ("<start_of_turn>", "<end_of_turn>", "<|start_header_id|>", "<|end_header_id|>") if raw.token_to_id(t) is not None]
    if extra:
        tokenizer.add_special_tokens({"additional_special_tokens": extra})
    tokenizer.chat_template = template
    return tokenizer


def build_family_model(folder: Path, family: str, seed: int = 0) -> Path:
    """A tiny random Llama (tests/tiny_model.py) with the `family` tokenizer in `folder` (built once)."""
    from tests.tiny_model import build_tiny_llama

    if family == "bpe-chatml":  # SmolLM2's own tokenizer: the tiny model as it is
        return build_tiny_llama(folder, seed=seed)
    return build_tiny_llama(folder, seed=seed, tokenizer=None if (folder / "config.json").is_file() else build_tokenizer(family))


# --- checking an engine against a plain forward pass ---------------------------------------------------------------

TOLERANCE = 1e-4  # float32 engines against a float32 forward pass
NEAR_TIE = 1e-3  # label choices are compared only where the reference's best two candidates differ by more


def questions() -> list[Any]:
    from voc.types import Question

    return [Question(question=q, options=o, context=c) for q, o, c in QUESTIONS_TEXT]


class ScoreRecorder(Engine):
    """Stands in for an engine and keeps every scoring call's prompts, candidates and `Scores`."""

    def __init__(self, inner: Any) -> None:
        super().__init__()
        self.inner = inner
        self.max_model_len = inner.max_model_len
        self.calls: list[tuple[list[Any], list[list[str]], list[Any]]] = []

    def generate(self, prompts: Any, params: Any) -> Any:
        return self.inner.generate(prompts, params)

    def score(self, prompts: Any, candidates: Any) -> Any:
        scores = self.inner.score(prompts, candidates)
        self.calls.append((list(prompts), [list(c) for c in candidates], scores))
        return scores

    def render(self, prompt: Any) -> str:
        return self.inner.render(prompt)

    def encode(self, text: str) -> list[int]:
        return self.inner.encode(text)


class ForwardPass:
    """The reference: stock transformers (float32 on the CPU unless told), one plain forward pass per scored sequence."""

    def __init__(self, folder: Path, device: str = "cpu", dtype: str = "float32") -> None:
        import torch
        from transformers import AutoModelForCausalLM

        self.device = device
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype), attn_implementation="eager")
        self.model = model.to(device).eval()

    def logprob(self, context: Any, tokens: Any) -> float:
        """log P(tokens | context), summed over the candidate's tokens."""
        import torch

        ids = torch.tensor([[*context, *tokens]], device=self.device)
        with torch.no_grad():
            logprobs = torch.log_softmax(self.model(ids).logits[0].float(), dim=-1)
        return sum(logprobs[len(context) - 1 + k, t].item() for k, t in enumerate(tokens))


def expected_encoding(engine: Any, prompt: Any, candidate: str, tokens_scored: tuple[int, ...], context: tuple[int, ...]) -> None:
    """Assert that `context + tokens_scored` is the joint encoding the README promises for `prompt` + `candidate`."""
    from voc.engines.base import Continuation

    tokenizer = engine.tokenizer
    if isinstance(prompt, Continuation):  # prompt ids, the generated ids as generated, then the text and the candidate
        generated = list(prompt.generation.token_ids)
        while generated and not tokenizer.decode(generated[-1:]).strip():
            generated.pop()
        head = [*prompt.generation.prompt_ids, *generated]
        assert list(context[: len(head)]) == head, "a continuation must go on from the generated token ids"
        tail = [*context[len(head) :], *tokens_scored]
        assert tokenizer.decode(tail) == prompt.text + candidate
        before = tokenizer.decode(generated) or "."  # the text tokenized as it is after the generated text
        alone, joint = (tokenizer(t, add_special_tokens=False)["input_ids"] for t in (before, before + prompt.text + candidate))
        if joint[: len(alone)] == alone:  # (unless the tokenizer merges across that boundary)
            assert tail == joint[len(alone) :]
    else:  # lm-evaluation-harness's rule: encode(prompt_text + candidate), split after encode(prompt_text)
        text = engine.render(prompt)
        assert list(context) == engine.encode(text)
        assert [*context, *tokens_scored] == engine.encode(text + candidate)


def compare_strategy_scores(engine: Any, reference: ForwardPass, strategy: str, max_tokens: int = 8) -> tuple[float, int, int]:
    """Run `strategy` on `engine` and score every scored sequence again with `reference`. Checks the encoding of every
    candidate (`expected_encoding`); returns the largest difference in log-probability, the number of scoring prompts
    whose best candidate differs from the reference's (near-ties aside) and the number of scoring prompts."""
    from voc.engines.base import SamplingParams
    from voc.strategies import make_strategy

    recorder = ScoreRecorder(engine)
    make_strategy(strategy, params=SamplingParams(max_tokens=max_tokens)).run(questions(), recorder)  # type: ignore[arg-type]
    assert recorder.calls, f"{strategy} made no scoring call"
    worst, other_choice, n = 0.0, 0, 0
    for prompts, candidates, scores in recorder.calls:
        for prompt, cands, score in zip(prompts, candidates, scores, strict=True):
            for cand, tokens in zip(cands, score.tokens, strict=True):
                expected_encoding(engine, prompt, cand, tokens, score.context_ids)
            reference_lps = [reference.logprob(score.context_ids, tokens) for tokens in score.tokens]
            worst = max(worst, *(abs(a - b) for a, b in zip(score.logprobs, reference_lps, strict=True)))
            ranked = sorted(reference_lps, reverse=True)
            clear = len(ranked) < 2 or ranked[0] - ranked[1] > NEAR_TIE
            other_choice += clear and score.logprobs.index(max(score.logprobs)) != reference_lps.index(ranked[0])
            n += 1
    return worst, other_choice, n


def check_strategy_scores(engine: Any, reference: ForwardPass, strategy: str, max_tokens: int = 8) -> float:
    """Every score of `strategy` on `engine` equals the reference forward pass over the scored tokens (within TOLERANCE)
    and picks the same candidate. Returns the largest difference seen."""
    worst, other_choice, n = compare_strategy_scores(engine, reference, strategy, max_tokens)
    assert worst < TOLERANCE, f"{strategy}: a score is {worst:.2e} away from the forward pass"
    assert other_choice == 0, f"{strategy}: {other_choice} of {n} scoring prompts chose another candidate than the forward pass"
    return worst
