"""The entry object: `VoC(model).answer(question, options)`.

Like vLLM's `LLM`, one object holds the engine; `answer_batch` is list in, list out, and every
strategy round of the whole list goes to the engine as one batch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
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
    `engine`: "hf", "vllm", "openai", or an already started `Engine` (to share one between strategies).
    `strategy`: "voc" (Verification-of-Choice), "cot" or "direct".
    `params`: how to generate (max_tokens, temperature, seed, ...); greedy by default.
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
        self.strategy: Strategy = make_strategy(
            strategy, self.templates, params, final_rule, choose_prompt, verification_tokens, self.fewshot
        )
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
    ) -> Answer:
        """Answer one question. `options`: a list of texts (labelled A, B, ...) or a dict label -> text."""
        if isinstance(question, Question):
            if options is not None or context is not None:
                raise ValueError("pass either a Question or question text with options, not both")
            return self.answer_batch([question])[0]
        if options is None:
            raise ValueError("options are missing; pass a list of option texts or a dict label -> text")
        return self.answer_batch([Question(question=question, options=options, context=context, gold=gold)])[0]

    def answer_batch(self, questions: Sequence[Question]) -> list[Answer]:
        """Answer many questions; each strategy round is one batched engine call for all of them (and all their orderings)."""
        questions = list(questions)
        bad = [type(q).__name__ for q in questions if not isinstance(q, Question)]
        if bad:
            raise TypeError(f"answer_batch takes Question objects, got {bad[0]}; build them with voc.Question(...)")
        if not questions:
            return []
        if self.fewshot is not None:
            self.fewshot.pool.check_disjoint(questions, "the questions asked")
        if self.permutations == 1:
            return self.strategy.run(questions, self.engine)
        seed = self.strategy.params.seed or 0
        return answer_permuted(lambda asked: self.strategy.run(asked, self.engine), questions, self.permutations, seed)

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
