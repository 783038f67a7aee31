"""Exact option scores on every tokenizer family (transformers engine), and prompts rendered the template's own way.

The families, built at test time, are described in tests/tokenizer_families.py. The vLLM and OpenAI engines run
the same checks in tests/test_vllm_engine.py and tests/test_openai_engine.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tokenizer_families import FAMILIES, TOLERANCE, ForwardPass, build_family_model, build_tokenizer, check_strategy_scores, questions
from voc.engines.base import ChatPrompt, Continuation, Engine, SamplingParams, render_chat
from voc.strategies import make_strategy

MESSAGES = ({"role": "system", "content": "You are a doctor."}, {"role": "user", "content": "Question: Is it?\nA. yes\nB. no"})


@pytest.fixture(scope="module", params=FAMILIES)
def family(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    return request.param, build_family_model(tmp_path_factory.mktemp(request.param), request.param)


@pytest.fixture(scope="module")
def hf_engine(family: tuple[str, Path]):
    from voc.engines.hf import HFEngine

    return HFEngine(str(family[1]), dtype="float32", batch_size=4)


@pytest.fixture(scope="module")
def reference(family: tuple[str, Path]) -> ForwardPass:
    return ForwardPass(family[1])


@pytest.mark.parametrize("strategy", ["direct", "cot", "voc"])
def test_every_strategy_scores_the_joint_encoding_exactly(hf_engine, reference: ForwardPass, strategy: str) -> None:
    assert check_strategy_scores(hf_engine, reference, strategy) < TOLERANCE


def test_labels_are_scored_as_the_tokens_that_follow_the_prompt(hf_engine, family: tuple[str, Path]) -> None:
    """The bug this guards against: " A" encoded alone is ["▁", "▁A"] with a dummy prefix, after "Answer:" it is ["▁A"]."""
    name, _ = family
    prompt = make_strategy("direct").prompt(questions()[0])  # type: ignore[attr-defined]
    score = hf_engine.score([prompt], [[" A", " B", " C"]])[0]
    alone = [hf_engine.tokenizer(" A", add_special_tokens=False)["input_ids"]]
    pieces = hf_engine.tokenizer.convert_ids_to_tokens(list(score.tokens[0]))
    if name == "llama2-sp":
        assert pieces == ["▁A"] and len(alone[0]) == 2  # one token in place, two alone
    elif name == "multi-token":
        assert len(pieces) == 2  # labels of two tokens: scored token by token
    else:
        assert len(pieces) == 1


def test_verdict_is_scored_on_the_generated_tokens_where_decoding_does_not_round_trip(tmp_path_factory: pytest.TempPathFactory) -> None:
    """On the Llama-2 layout a random model's tokens decode to text that encodes to other tokens; the verdict is scored
    after the generated ids themselves (difference from the forward pass: zero), which re-encoding the text would not give."""
    from voc.engines.hf import HFEngine

    folder = build_family_model(tmp_path_factory.mktemp("llama2-roundtrip"), "llama2-sp")
    engine, reference = HFEngine(str(folder), dtype="float32"), ForwardPass(folder)
    strategy = make_strategy("voc", params=SamplingParams(max_tokens=12))
    q = questions()[1]
    prompts = [strategy.verify_prompt(q, label) for label in q.labels]  # type: ignore[attr-defined]
    generations = engine.generate(prompts, SamplingParams(max_tokens=12))
    reencoded = [engine.encode(engine.render(p) + g.text) for p, g in zip(prompts, generations, strict=True)]
    assert any(list(g.prompt_ids + g.token_ids) != ids for g, ids in zip(generations, reencoded, strict=True)), "round-trips"
    verdict = "\nVerdict: option A is"
    verdicts = [Continuation(p, g, verdict) for p, g in zip(prompts, generations, strict=True)]
    old_way = [ChatPrompt(p.messages, p.response_prefix + g.text.rstrip() + verdict) for p, g in zip(prompts, generations, strict=True)]
    new, old = engine.score(verdicts, [[" correct"]] * len(prompts)), engine.score(old_way, [[" correct"]] * len(prompts))
    for s in new:
        assert s.logprobs[0] == pytest.approx(reference.logprob(s.context_ids, s.tokens[0]), abs=TOLERANCE)
    assert max(abs(a.logprobs[0] - b.logprobs[0]) for a, b in zip(new, old, strict=True)) > 10 * TOLERANCE


# --- chat templates ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILIES)
def test_the_reply_prefix_continues_the_assistant_turn_as_the_template_writes_it(name: str) -> None:
    tokenizer = build_tokenizer(name)
    text = render_chat(tokenizer, ChatPrompt(MESSAGES, "Answer:"))
    bare = render_chat(tokenizer, ChatPrompt(MESSAGES))
    assert text.endswith("Answer:") and "You are a doctor." in text and "Question: Is it?" in text
    if name == "llama2-sp":
        assert text.endswith("[/INST] Answer:")  # the template's space after [/INST], which appending the prefix would miss
        assert bare.endswith("[/INST]")
    elif name == "gemma-sp":  # the template refuses system messages: the system text opens the user turn
        assert text.endswith("<start_of_turn>model\nAnswer:") and "<start_of_turn>user\nYou are a doctor.\n\nQuestion" in text
    elif name == "multi-token":
        assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\nAnswer:")
    else:
        assert text.endswith("<|im_start|>assistant\nAnswer:")
    assert text.startswith(bare[: len(bare) - 12])


def test_a_template_that_opens_the_assistant_turn_with_a_reasoning_block_keeps_it() -> None:
    """Qwen3-style: an assistant message is written after an empty <think></think> block, which the bare generation
    prompt lacks; the reply prefix goes where the template puts the assistant's text."""
    tokenizer = build_tokenizer("bpe-chatml")
    tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'assistant' %}{{ '<|im_start|>assistant\n<think>\n\n</think>\n\n' + m['content'] }}"
        "{% else %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    assert render_chat(tokenizer, ChatPrompt(MESSAGES, "Answer:")).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\nAnswer:")


# --- fine-tuning targets -------------------------------------------------------------------------------------------


class TrainedEngine(Engine):
    """A perfectly trained model: it generates exactly the tokens of the training record that follow the prompt (cut at
    the stop string by the real engine, as generation is) and scores with the real engine."""

    def __init__(self, inner, records: dict[str, list[int]]) -> None:
        super().__init__()
        self.inner, self.records = inner, records
        self.max_model_len = inner.max_model_len
        self.scored: list = []

    def generate(self, prompts, params):
        results = []
        for prompt in prompts:
            ids = self.inner.encode(self.inner.render(prompt))
            record = self.records[self.inner.render(prompt)]
            assert record[: len(ids)] == ids, "the training prompt tokens are the inference prompt tokens"
            results.append(self.inner.make_generation(record[len(ids) :], ids, params.stop))
        return results

    def score(self, prompts, candidates):
        scores = self.inner.score(prompts, candidates)
        self.scored += list(zip(prompts, candidates, scores, strict=True))
        return scores

    def render(self, prompt) -> str:
        return self.inner.render(prompt)

    def encode(self, text: str) -> list[int]:
        return self.inner.encode(text)


def test_stage3_training_tokens_are_the_tokens_inference_scores(hf_engine) -> None:
    """Every stage-3 record (prompt + target + EOS) is, token for token, the sequence the strategy scores the gold
    candidate on when the model writes the target: verdicts and cot answers after the generated tokens included."""
    from finetune.data import IGNORE, encode_example, task_examples
    from finetune.leakage import LeakageIndex
    from voc.prompts import Templates
    from voc.strategies import ChainOfThought, Direct, VerificationOfChoice

    templates, tokenizer = Templates(), hf_engine.tokenizer
    question = questions()[1].model_copy(update={"gold": "B"})
    examples = task_examples(question, templates, ["voc_verify", "voc_choose", "direct", "cot"], index=LeakageIndex(None))
    records = {hf_engine.render(e.prompt): encode_example(tokenizer, e) for e in examples}
    for record in records.values():  # the loss covers the target and EOS, not the prompt
        n_prompt = record["labels"].count(IGNORE)
        assert record["labels"][n_prompt:] == record["input_ids"][n_prompt:] and record["labels"][-1] == tokenizer.eos_token_id
    engine = TrainedEngine(hf_engine, {text: r["input_ids"] for text, r in records.items()})
    params = SamplingParams(max_tokens=200)
    for strategy in (VerificationOfChoice(templates, params), ChainOfThought(templates, params), Direct(templates, params)):
        strategy.run([question], engine)  # type: ignore[arg-type]
    by_prompt = {hf_engine.render(e.prompt): e for e in examples}
    checked = set()
    for prompt, candidates, score in engine.scored:
        base = prompt.prompt if isinstance(prompt, Continuation) else prompt
        example = by_prompt[hf_engine.render(base)]
        gold = candidates.index(next(c for c in candidates if example.target.endswith(c)))
        assert [*score.context_ids, *score.tokens[gold]] == records[hf_engine.render(base)]["input_ids"][:-1], example.kind
        checked.add(example.kind)
    assert checked == {"voc_verify", "voc_choose", "direct", "cot"}
