"""Run a benchmark: plan the questions, answer what is missing in chunks, write records as each chunk finishes.

- Every strategy sees the same questions (one seeded, label-stratified sample per dataset), so strategies can be
  compared pairwise.
- One `VoC` (one engine, one loaded model) answers with every strategy of the run, named per call.
- The run fingerprint identifies the model by content (config, tokenizer, chat template and weight files), so a
  model re-trained into the same folder is a changed configuration, and a model moved to another folder is not.
- Resuming: records already in the output folder are kept when their prompt hash equals the current run's hash of
  the same question's prompts; only missing, failed or stale questions are computed.
- A chunk that raises an error that can pass (`is_transient`: a dead engine, a timeout, a lost connection, HTTP 5xx)
  is retried once; then, or at once after a deterministic error (a prompt too long, a template error, a ValueError),
  each of its questions is tried alone, so one bad question does not fail the others. Those that still fail are
  recorded as errors with the message. The run goes on; the report counts the errors.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from tqdm.auto import tqdm

import voc
from voc.api import VoC
from voc.bench.records import (
    BenchError,
    ResultRecord,
    RunFingerprint,
    RunFolder,
    VerificationRecord,
    latest_by_key,
    now_iso,
)
from voc.datasets import dataset_name, load_spec, resolve, stratified_sample
from voc.engines import ENGINES, Engine, SamplingParams, make_engine
from voc.fewshot import FewShotPool, load_pool
from voc.hardware import describe_hardware
from voc.models import model_fingerprint, resolve_model
from voc.prompts import Templates
from voc.strategies import CHOOSE_PROMPTS, FINAL_RULES, STRATEGIES, Strategy
from voc.strategies.base import prompts_hash
from voc.types import Answer, Question, questions_digest

log = logging.getLogger(__name__)

SECRET_OPTIONS = re.compile(r"key|token|secret|password", re.IGNORECASE)  # engine options kept out of the fingerprint


class BenchConfig(BaseModel):
    """The options of `voc bench`."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(default=None, description="HF folder, .gguf or hub id; None = the embedded SmolLM2-135M-Instruct")
    engine: str = "hf"
    engine_options: dict[str, Any] = Field(default_factory=dict, description="extra engine arguments (device, dtype, base_url, ...)")
    datasets: list[str] = Field(
        default_factory=lambda: ["pubmedqa"],
        description="built-in names (a split as name:split, e.g. pubmedqa:dev), spec files, data files or hf:org/name ids",
    )
    fields: dict[str, Any] = Field(default_factory=dict, description="field mapping overrides for datasets given as data files or hub ids")
    strategies: list[str] = Field(default_factory=lambda: list(STRATEGIES))
    limit: int | None = Field(default=None, ge=1, description="per dataset: a seeded label-stratified sample of this size")
    seed: int = 0
    max_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=0.0, ge=0.0)
    batch_size: int = Field(default=16, ge=1)
    chunk_size: int = Field(default=32, ge=1, description="questions per strategy call; records are written after each chunk")
    data_root: str | None = None
    out: str | None = None
    force: bool = False
    final_rule: str = "combined"
    choose_prompt: str = Field(default="full", description="voc: what its choice round shows (full or compact)")
    verification_tokens: int | None = Field(default=None, ge=1, description="voc: the budget of each verification (None: max_tokens)")
    permutations: int = Field(
        default=1, ge=1, description="ask each question under this many option orderings and report the ensemble (1: given order)"
    )
    samples: int = Field(
        default=1, ge=1, description="self-consistency paths per question for cot and voc (needs a temperature; direct ignores it)"
    )
    fewshot: int = Field(default=0, ge=0, description="worked examples per question from the few-shot pool (0: none)")
    fewshot_pool: str | None = Field(
        default=None, description="the few-shot pool: a dataset name or split (pubmedqa:train, medqa_train), a spec or data file"
    )
    templates: str | None = None
    skip_invalid: bool = Field(default=False, description="skip malformed dataset rows (counted in the log) instead of failing")

    @field_validator("datasets", "strategies")
    @classmethod
    def _unique(cls, values: list[str]) -> list[str]:
        if not values:
            raise ValueError("give at least one name")
        return list(dict.fromkeys(values))

    def check(self) -> None:
        """One-line errors for unknown names, datasets that cannot be resolved, and two datasets with one name."""
        names: dict[str, str] = {}
        specs = [resolve(given, self.fields)[0] for given in self.datasets]  # unknown names, missing files, bad specs or fields
        for given in self.datasets:
            name = dataset_name(given)
            if name in names:
                raise BenchError(f"datasets {names[name]!r} and {given!r} both go by {name!r}; give one a spec file with its own name")
            names[name] = given
        if self.fields and not any(spec.infer for spec in specs):
            raise BenchError("--field maps the fields of data files and hub ids; change a built-in dataset or a spec file in its spec")
        for name in self.strategies:
            if name not in STRATEGIES:
                raise BenchError(f"unknown strategy {name!r}; use one or more of {', '.join(STRATEGIES)}")
        if self.engine not in ENGINES:
            raise BenchError(f"unknown engine {self.engine!r}; use one of {', '.join(ENGINES)}")
        if self.final_rule not in FINAL_RULES:
            raise BenchError(f"unknown final rule {self.final_rule!r}; use one of {', '.join(FINAL_RULES)}")
        if self.choose_prompt not in CHOOSE_PROMPTS:
            raise BenchError(f"unknown choose prompt {self.choose_prompt!r}; use one of {', '.join(CHOOSE_PROMPTS)}")
        if self.fewshot and not self.fewshot_pool:
            raise BenchError(f"--fewshot {self.fewshot} needs --fewshot-pool, a labelled training set (pubmedqa:train, medqa_train)")
        if self.fewshot_pool and not self.fewshot:
            raise BenchError("--fewshot-pool needs --fewshot K, the number of worked examples per question")
        if self.samples > 1 and self.temperature == 0:
            raise BenchError(f"--samples {self.samples} needs --temperature above 0 (e.g. 0.7); greedy paths are all the same")

    def out_dir(self) -> Path:
        """--out, else runs/<model>-<engine> (the same command always maps to the same folder, so it resumes)."""
        if self.out:
            return Path(self.out)
        name = Path(self.model.rstrip("/")).name if self.model else "default"
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "model"
        return Path("runs") / f"{slug}-{self.engine}"

    def params(self) -> SamplingParams:
        return SamplingParams(max_tokens=self.max_tokens, temperature=self.temperature, seed=self.seed, n=self.samples)


# --- planning -------------------------------------------------------------------------------------------------


def plan_questions(config: BenchConfig) -> dict[str, list[Question]]:
    """The questions of each dataset, keyed by its name in records and reports (`dataset_name`): all of them, or a
    seeded label-stratified sample of `limit`. Skipped rows and dropped placeholder options are logged."""
    plan: dict[str, list[Question]] = {}
    for given in config.datasets:
        spec, split = resolve(given, config.fields)
        loaded = load_spec(spec, root=config.data_root, split=split, skip_invalid=config.skip_invalid)
        if loaded.report.skipped or loaded.report.dropped_options:
            log.warning("%s: %s", given, loaded.report.summary())
        name = dataset_name(given)
        questions = list(loaded)
        if config.limit is not None:
            questions = stratified_sample(questions, config.limit, config.seed)
        plan[name] = questions
    return plan



def model_identity(config: BenchConfig) -> str:
    """What names the run's model in its fingerprint: a hash of its content (voc.models.model_fingerprint) for local
    models and the embedded default, the hub id for a model that is not local, and the served name for `openai`
    (the server's files are not visible from here; its base_url and tokenizer are in the engine options)."""
    if config.engine == "openai":
        return f"served:{config.model or '(the first model the server lists)'}"
    return model_fingerprint(resolve_model(config.model))


def load_fewshot_pool(config: BenchConfig, plan: dict[str, list[Question]]) -> FewShotPool | None:
    """The few-shot pool of the run (None without --fewshot), checked against every test split under the data root and
    against every planned question: an overlap is a one-line error before any model work."""
    if not config.fewshot:
        return None
    pool = load_pool(config.fewshot_pool or "", root=config.data_root)
    for name, questions in plan.items():
        pool.check_disjoint(questions, name)
    return pool


def make_fingerprint(
    config: BenchConfig, templates: Templates, plan: dict[str, list[Question]], pool: FewShotPool | None = None
) -> RunFingerprint:
    """The fingerprint of a run: model content, engine, questions, sampling, templates, voc version, chunk size, and the
    strategy options (permutations, samples, few-shot examples and the pool's content)."""
    options = {k: v for k, v in sorted(config.engine_options.items()) if v is not None and not SECRET_OPTIONS.search(k)}
    return RunFingerprint(
        model=model_identity(config),
        engine=config.engine,
        engine_options=options,
        datasets=list(plan),
        questions={name: questions_digest(qs) for name, qs in plan.items()},
        limit=config.limit,
        seed=config.seed,
        params=config.params().model_dump(mode="json", exclude={"n"}),  # the number of paths is `samples`
        templates_hash=templates.source_hash(),
        final_rule=config.final_rule,
        choose_prompt=config.choose_prompt,
        verification_tokens=config.verification_tokens,
        voc_version=voc.__version__,
        chunk_size=config.chunk_size,
        permutations=config.permutations,
        samples=config.samples,
        fewshot=config.fewshot,
        fewshot_pool=config.fewshot_pool if pool is not None else None,
        fewshot_pool_hash=pool.identity if pool is not None else None,
    )


# --- records --------------------------------------------------------------------------------------------------


def prompt_hash(strategy: Strategy, question: Question, engine: Engine) -> str:
    """sha256 of the question's rendered first-round prompts (chat template applied), before any context shortening:
    the `Answer.prompt_hash` the strategy would give it."""
    return prompts_hash([engine.render(p) for p in strategy.first_round_prompts(question)])


def safe_prompt_hash(strategy: Strategy, question: Question, engine: Engine) -> str:
    """`prompt_hash`, or '' (logged) when the prompts cannot be built; a record with '' is never reused on resume."""
    try:
        return prompt_hash(strategy, question, engine)
    except Exception as exc:
        log.warning("could not hash the prompt of %s: %s", question.id, error_message(exc))
        return ""


def answer_record(dataset: str, question: Question, answer: Answer, **fields: Any) -> ResultRecord:
    return ResultRecord(
        question_id=question.id,
        dataset=dataset,
        strategy=answer.strategy,
        subject=question.metadata.get("subject"),
        labels=question.labels,
        gold=question.gold,
        label=answer.label,
        correct=answer.correct,
        probabilities=answer.probabilities,
        choice_logprobs=answer.choice_logprobs,
        rounds=answer.rounds,
        orderings=answer.orderings,
        samples=answer.samples,
        majority=answer.majority,
        fewshot=answer.fewshot,
        verifications={
            k: VerificationRecord(text=v.text, verdict_probability=v.verdict_probability) for k, v in answer.verifications.items()
        },
        completions=answer.completions,
        prompt_tokens=answer.prompt_tokens,
        completion_tokens=answer.completion_tokens,
        context_truncated=answer.context_truncated,
        duplicate_options=question.duplicate_options,
        prompt_hash=answer.prompt_hash,
        **fields,
    )


def error_record(dataset: str, strategy: str, question: Question, message: str, **fields: Any) -> ResultRecord:
    return ResultRecord(
        question_id=question.id,
        dataset=dataset,
        strategy=strategy,
        subject=question.metadata.get("subject"),
        labels=question.labels,
        gold=question.gold,
        error=message,
        duplicate_options=question.duplicate_options,
        **fields,
    )


def error_message(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    message = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return message if len(message) <= 500 else message[:497] + "..."


# --- answering with retries -------------------------------------------------------------------------------------

TRANSIENT_ERRNOS = frozenset(
    {
        errno.ECONNRESET,
        errno.ECONNREFUSED,
        errno.ECONNABORTED,
        errno.EPIPE,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.ENETRESET,
        errno.EAGAIN,
    }
)


def is_transient(error: BaseException) -> bool:
    """Whether an error raised while answering can pass when the same questions are tried again.

    Transient, so retried: a lost or refused connection and a timeout (ConnectionError, TimeoutError, OSError from a
    socket, httpx transport errors), a server answering HTTP 5xx, 408 or 429 (voc.engines.openai.ServerError, httpx
    status errors), and a crashed or dead engine (RuntimeError, MemoryError).
    Deterministic, so recorded once with its message: everything else, in particular a prompt that does not fit
    (PromptTooLongError), a template error (TemplateVariableError, any jinja2 TemplateError), any other ValueError,
    KeyError or TypeError, and the engine's refusals such as a model the server does not serve.
    """
    from jinja2 import TemplateError

    if isinstance(error, ConnectionError | TimeoutError | socket.herror | socket.gaierror):
        return True
    status = http_status(error)
    if status is not None:
        return status >= 500 or status in (408, 429)
    if type(error).__name__ == "ServerError":  # voc.engines.openai.ServerError without a status: an unusable answer
        return False
    if _is_httpx_error(error):  # transport errors: connect, read, write, pool, protocol, timeouts
        return True
    if isinstance(error, OSError):  # a socket error is transient; a missing or unreadable file is not
        return error.errno in TRANSIENT_ERRNOS
    if isinstance(error, ValueError | KeyError | TypeError | TemplateError | NotImplementedError | RecursionError):
        return False
    return isinstance(error, RuntimeError | MemoryError)


def http_status(error: BaseException) -> int | None:
    """The HTTP status code an error carries (voc.engines.openai.ServerError, httpx.HTTPStatusError), else None."""
    status = getattr(error, "status_code", None)
    response = getattr(error, "response", None)
    if status is None and response is not None:
        status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _is_httpx_error(error: BaseException) -> bool:
    try:
        import httpx
    except ImportError:
        return False
    return isinstance(error, httpx.HTTPError)


@dataclass
class ChunkOutcome:
    """Per question of a chunk: its Answer or an error message, and how many attempts it took."""

    answers: list[Answer | str]
    attempts: list[int]


def answer_chunk(answer_batch: Callable[[list[Question]], list[Answer]], chunk: list[Question]) -> ChunkOutcome:
    """Answer a chunk. A transient error (`is_transient`) retries the whole chunk once; if it fails again, or at once
    after a deterministic error, each question is tried alone, so that only the questions that fail are recorded as
    errors. A question's attempts count every call it was part of."""

    def attempt(questions: list[Question]) -> list[Answer]:
        answers = answer_batch(questions)
        if len(answers) != len(questions) or any(a.question_id != q.id for a, q in zip(answers, questions, strict=False)):
            raise RuntimeError(f"the strategy returned {len(answers)} answers for {len(questions)} questions, or out of order")
        return answers

    tries = 0
    last: Exception | None = None
    while tries < 2:
        tries += 1
        try:
            return ChunkOutcome(list(attempt(chunk)), [tries] * len(chunk))
        except Exception as exc:
            last = exc
            transient = is_transient(exc)
            retry = "retrying" if transient and tries < 2 else "not retried"
            kind = "transient" if transient else "deterministic"
            log.warning("chunk of %d questions failed (attempt %d, %s error, %s): %s", len(chunk), tries, kind, retry, error_message(exc))
            if not transient:
                break
    if len(chunk) == 1:
        return ChunkOutcome([error_message(last)], [tries])  # type: ignore[arg-type]
    answers: list[Answer | str] = []
    for question in chunk:  # isolate the questions that fail
        try:
            answers.append(attempt([question])[0])
        except Exception as exc:
            log.warning("question %s failed: %s", question.id, error_message(exc))
            answers.append(error_message(exc))
    return ChunkOutcome(answers, [tries + 1] * len(chunk))


# --- the run ----------------------------------------------------------------------------------------------------


@dataclass
class BenchOutcome:
    """What `run_bench` did."""

    out: Path
    planned: int  # (question, strategy) pairs in the plan
    reused: int  # already in the folder
    computed: int  # answered in this call
    errors: int  # recorded as errors in this call
    dropped_torn_line: bool = False
    stale: int = 0  # earlier successes recomputed because their prompt hash differs from this run's
    report_files: list[Path] = field(default_factory=list)


def open_session(folder: RunFolder, config: BenchConfig, command: Sequence[str] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Record a new session (command, hardware, status "running") in the run's run.json; (the run info, the session)."""
    session: dict[str, Any] = {
        "id": os.urandom(6).hex(),
        "started": now_iso(),
        "command": list(command) if command is not None else None,
        "hardware": describe_hardware(),
        "status": "running",
    }
    info = folder.read_run_info()
    info.update(config=config.model_dump(mode="json", exclude={"force"}), strategies=_merge(info.get("strategies", []), config.strategies))
    info.setdefault("sessions", []).append(session)
    folder.write_run_info(info)
    return info, session


def run_bench(
    config: BenchConfig,
    engine: Engine | None = None,
    progress: bool = True,
    command: Sequence[str] | None = None,
    write_report: bool = True,
) -> BenchOutcome:
    """Run (or resume) the benchmark described by `config`; `engine` reuses an already started engine.

    The engine is started even when every question has a record, since checking the records' prompt hashes needs it.
    """
    config.check()
    templates = Templates(config.templates)
    plan = plan_questions(config)
    pool = load_fewshot_pool(config, plan)
    fingerprint = make_fingerprint(config, templates, plan, pool)
    folder = RunFolder(config.out_dir())
    folder.claim(fingerprint, force=config.force)
    earlier = folder.records.load()
    dropped = folder.records.dropped_bytes > 0
    planned = sum(len(qs) for qs in plan.values()) * len(config.strategies)
    outcome = BenchOutcome(folder.path, planned, 0, 0, 0, dropped)

    info, session = open_session(folder, config, command)
    own_engine = engine is None
    try:
        if engine is None:
            sizes = {"batch_size": config.batch_size} if config.engine == "hf" else {}  # vllm and servers batch by themselves
            engine = make_engine(config.engine, config.model, **sizes, **config.engine_options)
        session["model_name"] = engine.model_name
        session["engine"] = type(engine).__name__
        options = config.model_dump(include={"templates", "final_rule", "choose_prompt", "verification_tokens", "permutations", "fewshot"})
        voc = VoC(engine=engine, params=config.params(), fewshot_pool=pool, **options)  # one VoC answers with every strategy
        todo, outcome.stale = plan_work(plan, latest_by_key(earlier), {s: voc.strategy_for(s) for s in config.strategies}, engine)
        n_todo = sum(len(m) for _, _, m in todo)
        outcome.reused = planned - n_todo
        session.update(to_compute=n_todo, stale_prompt_hash=outcome.stale)
        if outcome.stale:
            log.warning("%d earlier record(s) were made from other prompts (prompt hash changed); recomputing them", outcome.stale)
        chunk_number = max((r.chunk for r in earlier), default=-1) + 1
        with tqdm(total=n_todo, desc="bench", unit="question", disable=not progress or not n_todo, position=0) as bar:
            for dataset, strategy, missing in todo:
                n_chunks = -(-len(missing) // config.chunk_size)
                for start in range(0, len(missing), config.chunk_size):
                    chunk = missing[start : start + config.chunk_size]
                    bar.set_postfix_str(f"{dataset} [{start // config.chunk_size + 1}/{n_chunks}] / {strategy}")
                    records = _run_chunk(voc, strategy, dataset, chunk, chunk_number, session["id"], progress)
                    folder.records.append(records)
                    chunk_number += 1
                    outcome.computed += sum(1 for r in records if r.ok)
                    outcome.errors += sum(1 for r in records if not r.ok)
                    bar.update(len(chunk))
        session["status"] = "finished"
    except KeyboardInterrupt:
        session["status"] = "interrupted"
        raise
    except BaseException as exc:
        session["status"] = f"failed: {error_message(exc)}"
        raise
    finally:
        session.update(finished=now_iso(), computed=outcome.computed, errors=outcome.errors)
        try:
            folder.write_run_info(info)
        except (OSError, BenchError) as exc:
            log.warning("could not update %s: %s", folder.path / "run.json", exc)
        if own_engine and engine is not None:
            engine.close()
    if write_report:
        from voc.bench.report import write_report as write

        outcome.report_files = write(folder.path)
    return outcome


def plan_work(
    plan: dict[str, list[Question]],
    latest: dict[tuple[str, str, str], ResultRecord],
    strategies: dict[str, Strategy],
    engine: Engine,
) -> tuple[list[tuple[str, str, list[Question]]], int]:
    """What to compute: (dataset, strategy, questions) in plan order, and how many earlier successes are stale.

    An earlier success is reused only when its stored prompt_hash equals the hash of the prompts this run would send
    for the same question (`prompt_hash`); otherwise (other prompts, or no hash) it is stale and computed again.
    Missing and failed questions are computed.
    """
    todo: list[tuple[str, str, list[Question]]] = []
    stale = 0
    for dataset, questions in plan.items():
        for name, strategy in strategies.items():
            missing = []
            for question in questions:
                record = latest.get((dataset, name, question.id))
                if record is not None and record.ok:
                    if record.prompt_hash and record.prompt_hash == safe_prompt_hash(strategy, question, engine):
                        continue
                    stale += 1
                missing.append(question)
            if missing:
                todo.append((dataset, name, missing))
    return todo, stale


def _merge(first: Sequence[str], second: Sequence[str]) -> list[str]:
    return list(dict.fromkeys([*first, *second]))


def _run_chunk(
    voc: VoC, strategy: str, dataset: str, chunk: list[Question], chunk_number: int, session: str, progress: bool
) -> list[ResultRecord]:
    """Answer one chunk with one strategy (retried as `answer_chunk` says) and make the records, with their timings."""
    runner = voc.strategy_for(strategy)
    rounds_before = dict(runner.round_seconds)
    start = time.perf_counter()
    outcome = answer_chunk(lambda questions: voc.answer_batch(questions, strategy, use_tqdm=progress), chunk)
    share = (time.perf_counter() - start) / len(chunk)
    rounds = {k: (v - rounds_before.get(k, 0.0)) / len(chunk) for k, v in runner.round_seconds.items()}
    rounds = {k: v for k, v in rounds.items() if v > 0}
    records = []
    for question, answer, attempts in zip(chunk, outcome.answers, outcome.attempts, strict=True):
        common = {"seconds": share, "round_seconds": rounds, "attempts": attempts, "chunk": chunk_number, "session": session}
        if isinstance(answer, str):
            phash = safe_prompt_hash(runner, question, voc.engine)
            records.append(error_record(dataset, strategy, question, answer, prompt_hash=phash, **common))
        else:
            records.append(answer_record(dataset, question, answer, **common))
    return records


def utc_date() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
