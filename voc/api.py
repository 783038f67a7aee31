"""The entry object: `VoC(model).answer(question, options)`.

Like vLLM's `LLM`, one object holds the engine (one loaded model); `answer_batch(questions, strategy, params)`, like
`LLM.generate(prompts, sampling_params)`, is list in, list out, and sends each strategy round to the engine as one batch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from voc.engines import Engine, SamplingParams, make_engine
from voc.fewshot import FewShot, FewShotPool, check_fewshot, load_pool
from voc.permutations import answer_permuted, check_permutations
from voc.prompts import Templates
from voc.selfconsistency import check_samples
from voc.strategies import ChoosePrompt, FinalRule, Strategy, make_strategy
from voc.types import Answer, Question


class VoC:
    """Answer medical multiple-choice questions with a language model.

    >>> voc = VoC()                       # the embedded SmolLM2-135M-Instruct, no download
    >>> voc.answer("Is aspirin an anticoagulant?", ["yes", "no", "maybe"]).choice

    `model`: None (embedded default), a local HF folder, a `.gguf` file or a hub id.
    `engine`: "hf", "vllm", "openai", or an already started `Engine`.
    `strategy`: "voc" (Verification-of-Choice), "cot" or "direct"; `params`: how to generate (max_tokens, temperature,
    seed, ...), greedy by default. Both are defaults: `answer` and `answer_batch` take others per call.
    `final_rule`: for voc, how to combine the choice round and the verdicts ("combined", "choice", "verdicts", or
    "calibrated_verdicts": the verdicts with the model's lean towards each option position divided out, measured over
    the questions of one `answer_batch` call of at least 8 questions; plain verdicts for fewer); only the rounds the
    rule needs are run.
    `choose_prompt`: for voc, what the choice round shows: "full" verifications or "compact" (each verdict and the
    start of its verification: a much shorter prompt).
    `verification_tokens`: for voc, the budget of each verification (default: `params.max_tokens`).
    `templates`: a folder whose .jinja files override the built-in prompts.
    `permutations`: ask each question under this many orderings of its options (the identity, then cyclic shifts, then
    shuffles seeded by `params.seed`; at most all n! of them) and answer with the mean of their probabilities mapped back
    to the original options; `Answer.orderings` holds each ordering's answer. 1 (default) asks the given order only.
    `samples`: self-consistency paths per question (cot: sampled reasonings; voc: sampled verifications of every option),
    drawn in one engine call with `params.n`; needs `params.temperature` above 0. The answer is the mean of the paths'
    probabilities; `Answer.majority` is their majority vote and `Answer.samples` holds each path. `direct` generates
    nothing, so it ignores it (its one answer is what N identical paths would give). Default: `params.n` (1).
    `fewshot`, `fewshot_pool`: show each question with the `fewshot` most similar questions of a labelled training pool
    (TF-IDF over the question text) as worked examples, rendered by each strategy's `example` template block. The pool:
    a dataset name or split (`pubmedqa:train`, `medqa_train`), a data or spec file, a list of `Question`s, or a
    `voc.fewshot.FewShotPool`. It is checked against every test split under `data_root` (default: the data root), and
    every question answered against the pool; an overlap is a one-line `FewShotPoolError`. `Answer.fewshot` lists the
    examples' ids.
    Other keyword arguments go to the engine (device, dtype, batch_size, trust_remote_code, ...).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        strategy: str = "voc",
        engine: str | Engine = "hf",
        params: SamplingParams | None = None,
        final_rule: FinalRule = "combined",
        choose_prompt: ChoosePrompt = "full",
        verification_tokens: int | None = None,
        templates: str | os.PathLike[str] | None = None,
        permutations: int = 1,
        samples: int | None = None,
        fewshot: int = 0,
        fewshot_pool: str | os.PathLike[str] | Sequence[Question] | FewShotPool | None = None,
        data_root: str | os.PathLike[str] | None = None,
        **engine_options: Any,
    ) -> None:
        self.permutations = check_permutations(permutations)
        params = with_samples(params or SamplingParams(), samples)
        self.samples = params.n
        self.templates = Templates(templates)
        self.fewshot = make_fewshot(fewshot, fewshot_pool, data_root)
        self._voc_options = (final_rule, choose_prompt, verification_tokens)
        self._strategies: dict[tuple[str, SamplingParams], Strategy] = {}
        self.strategy: Strategy = self.strategy_for(strategy, params)  # the default of every call
        if isinstance(engine, Engine):
            self.engine = engine
        else:
            self.engine = make_engine(engine, None if model is None else os.fspath(model), **engine_options)

    def answer(
        self,
        question: str | Question,
        options: Sequence[str] | Mapping[str, str] | None = None,
        context: str | None = None,
        gold: str | None = None,
        *,
        strategy: str | None = None,
        params: SamplingParams | None = None,
        use_tqdm: bool = True,
    ) -> Answer:
        """Answer one question. `options`: a list of texts (labelled A, B, ...) or a dict label -> text; see `answer_batch`."""
        if isinstance(question, Question):
            if options is not None or context is not None:
                raise ValueError("pass either a Question or question text with options, not both")
        elif options is None:
            raise ValueError("options are missing; pass a list of option texts or a dict label -> text")
        else:
            question = Question(question=question, options=options, context=context, gold=gold)
        return self.answer_batch([question], strategy, params, use_tqdm=use_tqdm)[0]

    def answer_batch(
        self, questions: Sequence[Question], strategy: str | None = None, params: SamplingParams | None = None, *, use_tqdm: bool = True
    ) -> list[Answer]:
        """Answer many questions; each strategy round is one batched engine call for all of them (and all their orderings).

        `strategy` and `params` (its `n` the self-consistency paths) override the object's for this call, so one model
        serves every strategy; `use_tqdm`: show a progress bar per round, as vLLM's `LLM.generate(use_tqdm=...)`."""
        questions = list(questions)
        bad = [type(q).__name__ for q in questions if not isinstance(q, Question)]
        if bad:
            raise TypeError(f"answer_batch takes Question objects, got {bad[0]}; build them with voc.Question(...)")
        if not questions:
            return []
        if self.fewshot is not None:
            self.fewshot.pool.check_disjoint(questions, "the questions asked")
        chosen = self.strategy_for(strategy, params)
        run = partial(chosen.run, engine=self.engine, use_tqdm=use_tqdm)
        return run(questions) if self.permutations == 1 else answer_permuted(run, questions, self.permutations, chosen.params.seed or 0)

    def strategy_for(self, strategy: str | None = None, params: SamplingParams | None = None) -> Strategy:
        """The strategy `strategy` with `params` (default: the object's), made once, so its `round_seconds` add up over calls."""
        key = (strategy or self.strategy.name, params or self.strategy.params)
        if key not in self._strategies:
            self._strategies[key] = make_strategy(key[0], self.templates, key[1], *self._voc_options, self.fewshot)
        return self._strategies[key]

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> VoC:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def with_samples(params: SamplingParams, samples: int | None) -> SamplingParams:
    """`params` drawing `samples` paths per prompt (`params.n`); one-line errors for a bad number, a disagreement with
    `params.n`, or several paths without a temperature."""
    if samples is None:
        return params
    check_samples(samples)
    if params.n not in (1, samples):
        raise ValueError(f"samples={samples} and params.n={params.n} disagree; give the number of paths once")
    if samples > 1 and params.temperature == 0:
        raise ValueError(
            f"samples={samples} needs a temperature above 0, e.g. params=SamplingParams(temperature=0.7); greedy paths are all the same"
        )
    return SamplingParams(**{**params.model_dump(), "n": samples})


def make_fewshot(
    k: int, pool: str | os.PathLike[str] | Sequence[Question] | FewShotPool | None, data_root: str | os.PathLike[str] | None = None
) -> FewShot | None:
    """The few-shot setting of `k` examples from `pool` (loaded and checked against the test splits), or None for k = 0;
    one-line errors for a bad k or a missing pool."""
    check_fewshot(k)
    if k == 0:
        if pool is not None:
            raise ValueError("a few-shot pool was given without fewshot=K; give the number of examples per question")
        return None
    if pool is None:
        raise ValueError(f"fewshot={k} needs a pool of labelled questions: fewshot_pool='pubmedqa:train', 'medqa_train' or a file")
    return FewShot(pool if isinstance(pool, FewShotPool) else load_pool(pool, data_root), k)
