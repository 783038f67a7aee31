"""OpenAI-compatible client engine: talks to a `vllm serve` endpoint over `/v1/completions` with the `openai` client.

For users who outgrow one GPU or one machine: `vllm serve` scales with tensor/pipeline
parallelism and Ray across nodes, and this engine sends it the same requests the offline vLLM
engine makes, so every strategy gives the same results on both.

- Prompts are rendered HERE with `render_chat` and the model's Hugging Face tokenizer (loaded from
  `tokenizer`, else from the served model's name), and sent as token ids, so the server sees
  exactly the tokens the transformers and offline vLLM engines see; the server's own chat
  template is never used.
- Requests go through the official `openai` client, with its timeout and its retries with
  exponential backoff (`max_retries`: lost connections, timeouts, HTTP 408/409/429/5xx); vLLM's own
  request fields travel in `extra_body`. Its errors become one-line errors that say what to do.
- Generation: one request per prompt, `max_concurrency` in flight at once from a thread pool over
  the client (vLLM batches them continuously); the returned token ids (`return_token_ids`) are
  decoded with the local tokenizer.
- Scoring: vLLM's `logprob_token_ids` extension (vllm/entrypoints/openai/completion/protocol.py
  in 0.32; it needs `logprobs` set) returns the raw log-probabilities of exactly the asked-for
  token ids at the next position; `return_tokens_as_token_ids` keys them as `token_id:N`. The
  requests are those of the offline vLLM engine (`score_next_tokens`). `echo` + `prompt_logprobs`
  was not chosen: it bypasses the prefix cache and OpenAI's top-k `logprobs` (at most 20 in vLLM's
  server default) may miss the option labels altogether.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

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
from voc.models import ModelNotFoundError, resolve_model

T = TypeVar("T")


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
    `timeout`: seconds per request attempt; `max_retries`: attempts after the first, with exponential backoff.
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
        max_retries: int = 2,
    ) -> None:
        super().__init__()
        from transformers import AutoTokenizer

        try:
            from openai import OpenAI
        except ImportError as error:
            raise ImportError(f"the openai engine needs the openai client ({error}); pip install 'voc[openai]'") from error

        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self.base_url = api_root(base_url)
        self.max_concurrency = max_concurrency
        self._client = OpenAI(base_url=self.base_url, api_key=api_key, timeout=timeout, max_retries=max_retries)
        served = {card.id: card.model_dump() for card in self._call(lambda: self._client.models.list().data)}
        if model is None:
            if not served:
                raise ServerError(f"the server at {self.base_url} lists no models; pass model= the served model name")
            model = next(iter(served))
        elif model not in served:
            raise ServerError(f"the server at {self.base_url} does not serve {model!r}; it serves {sorted(served)}")
        self.model_name = model
        source = tokenizer or served[model].get("root") or model
        try:
            path = resolve_model(source)
            self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        except (OSError, ValueError, ModelNotFoundError) as error:
            raise ModelNotFoundError(
                f"could not load the tokenizer of {source!r} ({str(error).splitlines()[0]}); "
                "pass tokenizer= a local folder or hub id of the served model"
            ) from error
        self.eos_ids = end_of_sequence_ids(self.tokenizer, path)
        reported = served[model].get("max_model_len")
        self.max_model_len = int(max_model_len or reported or getattr(self.tokenizer, "model_max_length", 2048) or 2048)
        self.stats.extra.update(prefix_cache_queries=0, prefix_cache_hits=0)

    # -- requests ------------------------------------------------------------------------------
    def _call(self, request: Callable[[], T]) -> T:
        """One client call (with the client's retries); its errors become one-line errors that say what to do."""
        import openai

        try:
            return request()
        except openai.APITimeoutError as error:
            raise TimeoutError(f"the server at {self.base_url} did not answer in time ({error}); raise timeout= or check it") from None
        except openai.APIConnectionError as error:
            cause = " ".join(str(error.__cause__ or error).split())
            raise ConnectionError(
                f"cannot reach the OpenAI-compatible server at {self.base_url} ({cause}); start it with `vllm serve MODEL` or fix base_url"
            ) from None
        except openai.APIStatusError as error:
            message = error.body.get("message", error.message) if isinstance(error.body, dict) else error.message
            summary = " ".join(str(message).split())[:300]
            request_line = f"{error.request.method} {error.request.url}"
            raise ServerError(f"{request_line} failed with HTTP {error.status_code}: {summary}", error.status_code) from None

    def _complete_all(self, requests: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """One completion per dict of `completions.create` arguments (vLLM's own fields in `extra_body`), `max_concurrency`
        in flight at once; the answers in order, as dicts (with vLLM's extra fields)."""
        if not requests:
            return []

        def complete(arguments: dict[str, Any]) -> dict[str, Any]:
            return self._call(lambda: self._client.completions.create(model=self.model_name, **arguments)).model_dump()

        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(requests))) as pool:
            results = list(pool.map(complete, requests))
        for result in results:
            usage = result.get("usage") or {}
            details = usage.get("prompt_tokens_details") or {}
            self.stats.extra["prefix_cache_queries"] += int(usage.get("prompt_tokens") or 0)
            self.stats.extra["prefix_cache_hits"] += int(details.get("cached_tokens") or 0)
        return results

    # -- the two operations ----------------------------------------------------------------------
    def generate(self, prompts: Sequence[ChatPrompt], params: SamplingParams) -> list[Generation]:
        encoded = self.encode_prompts(prompts, params.max_tokens)
        sampled, n = params.temperature > 0, params.n
        requests = []
        for i, ids in enumerate(encoded):
            request: dict[str, Any] = {
                "prompt": ids,
                "max_tokens": params.max_tokens,
                "temperature": params.temperature,
                "top_p": params.top_p,
                "extra_body": {"return_token_ids": True},
            }
            if n > 1:
                request["n"] = n  # one request: the server prefills the prompt once and fans out n samples seeded seed + j
            if params.stop:
                request["stop"] = list(params.stop)
            if params.seed is not None:
                request["seed"] = sample_seed(params.seed, i, n) if sampled else params.seed  # as the offline vLLM engine does
            requests.append(request)
        results = []
        for ids, response in zip(encoded, self._complete_all(requests), strict=True):
            choices = sorted(response["choices"], key=lambda c: c.get("index") or 0)
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

    def score(self, prompts: Sequence[Prompt], candidates: Sequence[Sequence[str]]) -> list[Scores]:
        def run(requests: list[NextTokenRequest]) -> list[dict[int, float]]:
            one_token = {"max_tokens": 1, "temperature": 0.0, "logprobs": 1}  # vLLM needs `logprobs` set for `logprob_token_ids`
            by_id = {"return_tokens_as_token_ids": True}
            asks = [{"prompt": ids, **one_token, "extra_body": {"logprob_token_ids": w, **by_id}} for ids, w in requests]
            results = []
            for (_, wanted), answer in zip(requests, self._complete_all(asks), strict=True):
                top = ((answer["choices"][0].get("logprobs") or {}).get("top_logprobs") or [None])[0] or {}
                got = {int(key.removeprefix("token_id:")): value for key, value in top.items() if key.startswith("token_id:")}
                missing = [t for t in wanted if t not in got]
                if missing:
                    raise ServerError(
                        f"the server at {self.base_url} returned no log-probabilities for token ids {missing[:5]}; "
                        "option scoring needs vLLM >= 0.32 (`logprob_token_ids`)"
                    )
                results.append({token: got[token] for token in wanted})
            return results

        return self.score_next_tokens(prompts, candidates, run)

    def close(self) -> None:
        self._client.close()
