"""OpenAI-compatible client engine: talks to a `vllm serve` endpoint over `/v1/completions`.

For users who outgrow one GPU or one machine: `vllm serve` scales with tensor/pipeline
parallelism and Ray across nodes, and this engine sends it the same requests the offline vLLM
engine makes, so every strategy gives the same results on both.

- Prompts are rendered HERE with `render_chat` and the model's Hugging Face tokenizer (loaded from
  `tokenizer`, else from the served model's name), and sent as token ids, so the server sees
  exactly the tokens the transformers and offline vLLM engines see; the server's own chat
  template is never used.
- Generation: one request per prompt, `max_concurrency` in flight at once (vLLM batches them
  continuously); the returned token ids (`return_token_ids`) are decoded with the local tokenizer.
- Scoring: vLLM's `logprob_token_ids` extension (vllm/entrypoints/openai/completion/protocol.py
  in 0.32; it needs `logprobs` set) returns the raw log-probabilities of exactly the asked-for
  token ids at the next position; `return_tokens_as_token_ids` keys them as `token_id:N`. A
  `max_tokens=1` request per (prompt, candidate prefix) gives the exact log P(candidate | prompt),
  token by token for longer candidates, as in `voc.engines.vllm`. `echo` + `prompt_logprobs` was
  not chosen: it bypasses the prefix cache and OpenAI's top-k `logprobs` (at most 20 in vLLM's
  server default) may miss the option labels altogether.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from voc.engines.base import (
    ChatPrompt,
    Generation,
    Prompt,
    SamplingParams,
    Scores,
    TokenizerEngine,
    next_token_requests,
    sample_seed,
    sum_token_logprobs,
)
from voc.models import ModelNotFoundError, resolve_model

log = logging.getLogger(__name__)

MAX_IDS_PER_REQUEST = 128  # vLLM's MAX_LOGPROB_TOKEN_IDS


class ServerError(RuntimeError):
    """The server answered with an error or with something this engine cannot use; `status_code` is the HTTP status
    of an error answer (None when the answer itself was unusable)."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


def api_root(base_url: str) -> str:
    """`http://host:port`, `.../v1` or `.../v1/` -> `http://host:port/v1`."""
    url = base_url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"base_url {base_url!r} must start with http:// or https://, e.g. http://127.0.0.1:8000/v1")
    return url if url.endswith("/v1") else url + "/v1"


class OpenAIEngine(TokenizerEngine):
    """Generation and exact label scoring against an OpenAI-compatible `vllm serve` server.

    `model`: the served model name (None = the first model the server lists).
    `base_url`: the server, e.g. http://127.0.0.1:8000/v1. `api_key`: sent as a bearer token.
    `tokenizer`: a local folder, .gguf file or hub id of the served model's tokenizer (default: `model`).
    `max_model_len`: the context window (default: what the server reports in /v1/models).
    """

    name = "openai"

    def __init__(
        self,
        model: str | None = None,
        *,
        base_url: str = "http://127.0.0.1:8000/v1",
        api_key: str = "EMPTY",
        tokenizer: str | None = None,
        timeout: float = 600.0,
        max_concurrency: int = 32,
        max_model_len: int | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__()
        import httpx
        from transformers import AutoTokenizer

        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self.base_url = api_root(base_url)
        self.max_concurrency = max_concurrency
        self._client = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
            limits=httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency),
        )
        cards = self._request("GET", "/models").get("data") or []
        served = {card.get("id"): card for card in cards}
        if model is None:
            if not served:
                raise ServerError(f"the server at {self.base_url} lists no models; pass model= the served model name")
            model = next(iter(served))
        elif model not in served:
            raise ServerError(f"the server at {self.base_url} does not serve {model!r}; it serves {sorted(served)}")
        self.model_name = model
        source = tokenizer or served[model].get("root") or model
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(resolve_model(source), trust_remote_code=trust_remote_code)
        except (OSError, ValueError, ModelNotFoundError) as error:
            raise ModelNotFoundError(
                f"could not load the tokenizer of {source!r} ({str(error).splitlines()[0]}); "
                "pass tokenizer= a local folder or hub id of the served model"
            ) from error
        eos = self.tokenizer.eos_token_id
        self.eos_ids = frozenset({eos} if eos is not None else set())
        reported = served[model].get("max_model_len")
        self.max_model_len = int(max_model_len or reported or getattr(self.tokenizer, "model_max_length", 2048) or 2048)
        self.stats.extra.update(prefix_cache_queries=0, prefix_cache_hits=0)

    # -- HTTP ----------------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        import httpx

        try:
            response = self._client.request(method, path, json=body)
        except httpx.TimeoutException as error:
            raise TimeoutError(f"the server at {self.base_url} did not answer in time ({error}); raise timeout= or check it") from None
        except httpx.HTTPError as error:
            raise ConnectionError(
                f"cannot reach the OpenAI-compatible server at {self.base_url} ({error}); start it with `vllm serve MODEL` or fix base_url"
            ) from None
        if response.status_code != 200:
            try:
                detail = response.json().get("error", {})
                message = detail.get("message", response.text) if isinstance(detail, dict) else str(detail)
            except ValueError:
                message = response.text
            summary = " ".join(str(message).split())[:300]
            raise ServerError(f"{method} {self.base_url}{path} failed with HTTP {response.status_code}: {summary}", response.status_code)
        return response.json()

    def _complete_all(self, bodies: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """POST every body to /completions, `max_concurrency` at once; results in order."""
        if not bodies:
            return []
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(bodies))) as pool:
            results = list(pool.map(lambda body: self._request("POST", "/completions", {"model": self.model_name, **body}), bodies))
        for result in results:
            usage = result.get("usage") or {}
            details = usage.get("prompt_tokens_details") or {}
            self.stats.extra["prefix_cache_queries"] += int(usage.get("prompt_tokens") or 0)
            self.stats.extra["prefix_cache_hits"] += int(details.get("cached_tokens") or 0)
        return results

    # -- the two operations ----------------------------------------------------------------------
    def generate(self, prompts: Sequence[ChatPrompt], params: SamplingParams, desc: str | None = None) -> list[Generation]:
        encoded = self.encode_prompts(prompts, params.max_tokens)
        sampled, n = params.temperature > 0, params.n
        bodies = []
        for i, ids in enumerate(encoded):
            body: dict[str, Any] = {
                "prompt": ids,
                "max_tokens": params.max_tokens,
                "temperature": params.temperature,
                "top_p": params.top_p,
                "return_token_ids": True,
            }
            if n > 1:
                body["n"] = n  # one request: the server prefills the prompt once and fans out n samples seeded seed + j
            if params.stop:
                body["stop"] = list(params.stop)
            if params.seed is not None:
                body["seed"] = sample_seed(params.seed, i, n) if sampled else params.seed  # as the offline vLLM engine does
            bodies.append(body)
        results = []
        for ids, response in zip(encoded, self._complete_all(bodies), strict=True):
            choices = sorted(response["choices"], key=lambda c: c.get("index", 0))
            if len(choices) != n:
                raise ServerError(f"the server at {self.base_url} returned {len(choices)} completions for a request with n={n}")
            for choice in choices:
                token_ids = choice.get("token_ids")
                if token_ids is None:
                    raise ServerError(
                        f"the server at {self.base_url} returned no generated token ids; voc needs vLLM's `return_token_ids` "
                        "(vLLM >= 0.10.2) so that later rounds continue from the generated tokens"
                    )
                results.append(self.make_generation(token_ids, ids, params.stop))  # decoded locally: equal tokens, equal text
        self.count_generate(encoded, results)
        return results

    def score(self, prompts: Sequence[Prompt], candidates: Sequence[Sequence[str]], desc: str | None = None) -> list[Scores]:
        contexts, cand_ids = self.encode_for_scoring(prompts, candidates)
        keys, bodies = [], []
        for (i, prefix), ordered in next_token_requests(cand_ids).items():
            for start in range(0, len(ordered), MAX_IDS_PER_REQUEST):
                keys.append((i, prefix, ordered[start : start + MAX_IDS_PER_REQUEST]))
                bodies.append({
                    "prompt": contexts[i] + list(prefix),
                    "max_tokens": 1,
                    "temperature": 0.0,
                    "logprobs": 1,
                    "logprob_token_ids": ordered[start : start + MAX_IDS_PER_REQUEST],
                    "return_tokens_as_token_ids": True,
                })
        logprob: dict[tuple[int, tuple[int, ...], int], float] = {}
        for (i, prefix, wanted), response in zip(keys, self._complete_all(bodies), strict=True):
            top = ((response["choices"][0].get("logprobs") or {}).get("top_logprobs") or [None])[0] or {}
            got = {int(key.removeprefix("token_id:")): value for key, value in top.items() if key.startswith("token_id:")}
            missing = [t for t in wanted if t not in got]
            if missing:
                raise ServerError(
                    f"the server at {self.base_url} returned no log-probabilities for token ids {missing[:5]}; "
                    "option scoring needs vLLM >= 0.32 (`logprob_token_ids`)"
                )
            for token in wanted:
                logprob[(i, prefix, token)] = got[token]
        self.count_score(contexts)
        return sum_token_logprobs(cand_ids, contexts, logprob)

    def close(self) -> None:
        self._client.close()
