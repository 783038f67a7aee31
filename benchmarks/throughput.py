"""Throughput benchmark: VoC and the other strategies against what users would otherwise run.

On one seeded, label-stratified sample of PubMedQA test questions and one model, in one process:
  1. naive      a per-question loop of plain `model.generate` and per-option forward passes (transformers)
  2. hf         this toolkit's transformers engine, each strategy (all questions in one batched call per round)
  3. vllm       this toolkit's vLLM engine, each strategy (skipped with a reason when vLLM is unavailable)
  4. raw-vllm   `vllm.LLM.generate` replaying exactly the vLLM calls the VoC run made (toolkit overhead)
  5. lm-eval    lm-evaluation-harness log-likelihood scoring of the same `direct` prompts (a local task)
It prints a table (questions/s, tokens/s, peak memory, accuracy) and the measured ratios between systems, and writes
both as JSON; it judges none of them (the targets they are read against are in benchmarks/README.md).
`--memory` adds the memory check: peak RSS of a 1000-question vs a 100-question `voc bench` run (direct strategy).

Examples:
    python benchmarks/throughput.py --n 20 --max-tokens 32                  # CPU, embedded SmolLM2-135M
    python benchmarks/throughput.py --quick --model HuggingFaceTB/SmolLM2-135M-Instruct   # GPU, about 5 minutes
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
import torch  # noqa: E402

from voc.datasets import load_dataset, stratified_sample  # noqa: E402
from voc.engines.base import ChatPrompt, Engine, Generation, SamplingParams, Scores  # noqa: E402
from voc.engines.hf import HFEngine, use_grouped_attention, use_stock_attention  # noqa: E402
from voc.hardware import describe_hardware  # noqa: E402
from voc.models import resolve_model  # noqa: E402
from voc.strategies import make_strategy  # noqa: E402
from voc.types import Answer, Question  # noqa: E402

SYSTEMS = ("naive", "hf", "lm-eval", "vllm", "raw-vllm")
STRATEGY_NAMES = ("direct", "cot", "voc")


# -- measuring ---------------------------------------------------------------------------------
class PeakMemory:
    """Peak resident memory of this process and its children (vLLM's engine core), sampled every 20 ms."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    @staticmethod
    def current() -> int:
        me = psutil.Process()
        total = me.memory_info().rss
        for child in me.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += child.memory_info().rss
        return total

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            self._stop.wait(0.02)

    def __enter__(self) -> PeakMemory:
        self.peak = self.current()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.current())


@dataclass
class Row:
    """One measured run: a system (naive, hf, ...) doing one strategy on `questions` questions."""

    system: str
    strategy: str
    questions: int
    seconds: float
    prompt_tokens: int
    completion_tokens: int
    accuracy: float | None
    peak_rss_mib: float
    cuda_peak_mib: float | None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def questions_per_s(self) -> float:
        return self.questions / self.seconds if self.seconds else 0.0

    @property
    def tokens_per_s(self) -> float:
        return (self.prompt_tokens + self.completion_tokens) / self.seconds if self.seconds else 0.0

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "questions_per_s": self.questions_per_s, "tokens_per_s": self.tokens_per_s}


@dataclass
class Outcome:
    """What a measured function reports back."""

    accuracy: float | None
    prompt_tokens: int
    completion_tokens: int
    extra: dict[str, Any] = field(default_factory=dict)


def cpu_seconds() -> float:
    """CPU time (user + system) used so far by this process and its live children (vLLM's engine core)."""
    total = 0.0
    me = psutil.Process()
    for process in [me, *me.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def measure(system: str, strategy: str, n: int, run: Callable[[], Outcome]) -> Row:
    gc.collect()
    cpu_start = cpu_seconds()
    start = time.perf_counter()
    with PeakMemory() as memory:
        outcome = run()
    seconds = time.perf_counter() - start
    outcome.extra["cpu_seconds"] = cpu_seconds() - cpu_start
    cuda = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    row = Row(
        system,
        strategy,
        n,
        seconds,
        outcome.prompt_tokens,
        outcome.completion_tokens,
        outcome.accuracy,
        memory.peak / 2**20,
        cuda,
        outcome.extra,
    )
    print(
        f"  {system:9s} {strategy:7s} {n:4d} q  {seconds:8.1f} s  {row.questions_per_s:7.3f} q/s  acc {fmt_acc(row.accuracy)}  "
        f"cpu {outcome.extra['cpu_seconds']:.1f} s",
        flush=True,
    )
    return row


def accuracy(answers: Sequence[Answer], questions: Sequence[Question]) -> float:
    return sum(a.label == q.gold for a, q in zip(answers, questions, strict=True)) / len(questions)


def run_strategy(engine: Engine, name: str, params: SamplingParams, questions: Sequence[Question], per_question: bool) -> Outcome:
    """Run a strategy on all questions in one call, or (the naive way) one question at a time."""
    strategy = make_strategy(name, params=params)
    before = (engine.stats.prompt_tokens, engine.stats.completion_tokens)
    extra_before = dict(engine.stats.extra)
    answers = [strategy.run([q], engine)[0] for q in questions] if per_question else strategy.run(questions, engine)
    extra: dict[str, Any] = {"round_seconds": dict(strategy.round_seconds)}
    for key in ("prompt_tokens_run", "prefix_tokens_reused"):  # the hf engine: prompt tokens actually computed / reused
        if key in engine.stats.extra:
            extra[key] = engine.stats.extra[key] - extra_before.get(key, 0)
    return Outcome(
        accuracy(answers, questions),
        engine.stats.prompt_tokens - before[0],
        engine.stats.completion_tokens - before[1],
        extra,
    )


# -- 1. the naive baseline -----------------------------------------------------------------------
class NaiveTransformers(Engine):
    """What users write by hand: one `model.generate` per prompt and one forward pass per (prompt, option).

    It shares the model, tokenizer and prompt rendering of an HFEngine, so only the way of running differs.
    """

    name = "naive"

    def __init__(self, hf: HFEngine) -> None:
        super().__init__()
        self.hf, self.model, self.tokenizer = hf, hf.model, hf.tokenizer
        self.max_model_len = hf.max_model_len

    def render(self, prompt: ChatPrompt) -> str:
        return self.hf.render(prompt)

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text)

    @torch.inference_mode()
    def generate(self, prompts: Sequence[ChatPrompt], params: SamplingParams) -> list[Generation]:
        results = []
        for prompt in prompts:
            context = self.hf.encode(self.render(prompt))
            ids = torch.tensor([context], device=self.hf.device)
            kwargs: dict[str, Any] = {}
            if params.stop:
                kwargs.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
            out = self.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=params.max_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=self.tokenizer.pad_token_id,
                **kwargs,
            )
            results.append(self.hf.make_generation(out[0, len(context) :].tolist(), context, params.stop))
            self.stats.prompt_tokens += len(context)
            self.stats.completion_tokens += results[-1].completion_tokens
        return results

    @torch.inference_mode()
    def score(self, prompts: Sequence[ChatPrompt], candidates: Sequence[Sequence[str]]) -> list[Scores]:
        results = []
        contexts, all_cand_ids = self.hf.encode_for_scoring(prompts, candidates)  # the same tokens as the engine scores
        for context, cands in zip(contexts, all_cand_ids, strict=True):
            logprobs = []
            for cand_ids in cands:
                ids = torch.tensor([context + cand_ids], device=self.hf.device)
                lp = torch.log_softmax(self.model(input_ids=ids).logits[0].float(), dim=-1)
                logprobs.append(sum(lp[len(context) + k - 1, t].item() for k, t in enumerate(cand_ids)))
                self.stats.prompt_tokens += len(context) + len(cand_ids)
            results.append(Scores(logprobs, len(context), tuple(context), [tuple(c) for c in cands]))
        return results


# -- 5. lm-evaluation-harness ------------------------------------------------------------------------
def lm_eval_direct(hf: HFEngine, questions: Sequence[Question], batch_size: int, workdir: Path) -> Callable[[], Outcome]:
    """Build a local lm-eval task from the `direct` prompts of our questions; returns the timed part."""
    from lm_eval.evaluator import evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager, get_task_dict
    from transformers import AutoTokenizer

    strategy = make_strategy("direct")
    data = workdir / "questions.jsonl"
    prompt_tokens = 0
    with data.open("w") as f:
        for q in questions:
            text = hf.render(strategy.prompt(q))  # exactly the text our direct strategy scores after
            prompt_tokens += hf.count_tokens(text)  # counted like the hf direct run counts them
            f.write(json.dumps({"prompt": text, "choices": list(q.labels), "gold": q.labels.index(q.gold)}) + "\n")
    candidate = strategy.templates.block("direct.jinja", "candidate", label="A")
    if candidate != " A":
        raise RuntimeError(f"the lm-eval task assumes the candidate ' <label>', but direct.jinja gives {candidate!r}")
    task = workdir / "voc_pubmedqa_direct.yaml"
    task.write_text(
        "task: voc_pubmedqa_direct\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        "doc_to_text: prompt\n"
        "doc_to_choice: choices\n"
        "doc_to_target: gold\n"
        'target_delimiter: " "\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
    )
    tokenizer = AutoTokenizer.from_pretrained(hf.model_path)  # lm-eval may change tokenizer settings: give it its own
    lm = HFLM(pretrained=hf.model, tokenizer=tokenizer, batch_size=batch_size, device=str(hf.device))
    tasks = get_task_dict(["voc_pubmedqa_direct"], TaskManager(include_path=str(workdir)))  # dataset loading is not timed

    def run() -> Outcome:
        # lm-eval's core evaluation (simple_evaluate adds environment probing; no stderr bootstrap either)
        result = evaluate(lm=lm, task_dict=tasks, bootstrap_iters=0, log_samples=False, verbosity="ERROR")
        acc = result["results"]["voc_pubmedqa_direct"]["acc,none"]
        return Outcome(float(acc), prompt_tokens, 0)

    return run


# -- the vLLM systems ------------------------------------------------------------------------------
def start_vllm(model: str, args: argparse.Namespace) -> tuple[Engine | None, str]:
    try:
        from voc.engines.vllm import VLLMEngine
    except ImportError as error:
        return None, f"voc.engines.vllm is not importable ({error})"
    options: dict[str, Any] = {"gpu_memory_utilization": args.vllm_gpu_memory}
    if args.max_model_len:
        options["max_model_len"] = args.max_model_len
    if args.vllm_block_size:
        options["block_size"] = args.vllm_block_size
    try:
        return VLLMEngine(model, **options), ""
    except Exception as error:
        return None, f"vLLM failed to start: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


def recorded_calls(engine: Any) -> tuple[list[tuple[Any, Any]], Callable[[], None]]:
    """Record every `llm.generate` call the engine makes; returns the list and a function that stops recording."""
    calls: list[tuple[Any, Any]] = []
    original = engine.llm.generate

    def recording(prompts: Any, sampling_params: Any = None, **kwargs: Any) -> Any:
        calls.append((prompts, sampling_params))
        return original(prompts, sampling_params, **kwargs)

    engine.llm.generate = recording
    return calls, lambda: setattr(engine.llm, "generate", original)


def prefix_counts(engine: Engine) -> tuple[int, int]:
    return engine.stats.extra.get("prefix_cache_hits", 0), engine.stats.extra.get("prefix_cache_queries", 0)


def reset_prefix_cache(engine: Any) -> None:
    try:
        engine.llm.reset_prefix_cache()
    except Exception as error:
        print(f"  (could not reset vLLM's prefix cache: {error})")


# -- the whole run -------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    info: dict[str, Any] = {**describe_hardware(), "torch_threads": torch.get_num_threads(), "load_average_at_start": os.getloadavg()}
    for package in ("transformers", "vllm", "lm_eval"):
        try:
            info[package] = __import__(package).__version__
        except Exception:
            info[package] = None
    return info


def warm_up(engine: Engine, args: argparse.Namespace, params: SamplingParams, questions: list[Question]) -> None:
    """Untimed runs first. On GPU (`--warmup full`) every strategy once on all questions, so that lazily loaded
    kernels and first-seen shapes (several seconds on an H100) are not billed to whichever system runs first;
    on CPU (`light`) a short direct and voc run."""
    if args.warmup == "full":
        for name in args.strategies:
            run_strategy(engine, name, params, questions, per_question=False)
    else:
        run_strategy(engine, "direct", params, questions[:2], per_question=False)
        run_strategy(engine, "voc", params.model_copy(update={"max_tokens": 4}), questions[:1], per_question=False)


@contextlib.contextmanager
def baseline_attention(hf: HFEngine, args: argparse.Namespace) -> Iterator[None]:
    """Baselines run on transformers' stock attention (what users get), unless --baseline-attention engine."""
    stock = hf.grouped_attention and args.baseline_attention == "stock"
    if stock:
        use_stock_attention(hf.model)
    try:
        yield
    finally:
        if stock:
            use_grouped_attention(hf.model)


def run_transformers(
    args: argparse.Namespace, model: str, questions: list[Question], params: SamplingParams, rows: list[Row], skipped: dict[str, str]
) -> None:
    """lm-eval, the hf engine and the naive loop, all on one model object (freed on return, before vLLM starts)."""
    systems = set(args.engines)
    naive_questions = questions[: args.naive_n] if args.naive_n else questions
    hf = HFEngine(
        model,
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        max_batch_tokens=args.max_batch_tokens,
        max_model_len=args.max_model_len,
    )
    warm_up(hf, args, params, questions)
    if "lm-eval" in systems:
        try:
            with tempfile.TemporaryDirectory() as tmp:
                timed = lm_eval_direct(hf, questions, args.lm_eval_batch_size, Path(tmp))
                with baseline_attention(hf, args):
                    rows.append(measure("lm-eval", "direct", len(questions), timed))
        except Exception as error:
            skipped["lm-eval"] = f"{type(error).__name__}: {error}"
            print(f"  lm-eval skipped: {skipped['lm-eval']}")
    for name in args.strategies:
        if "hf" in systems:
            rows.append(measure("hf", name, len(questions), lambda n=name: run_strategy(hf, n, params, questions, False)))
        if "naive" in systems and name in args.naive_strategies:
            naive = NaiveTransformers(hf)
            with baseline_attention(hf, args):
                rows.append(
                    measure("naive", name, len(naive_questions), lambda n=name, e=naive: run_strategy(e, n, params, naive_questions, True))
                )

    hf.close()


def run_vllm(
    args: argparse.Namespace, model: str, questions: list[Question], params: SamplingParams, rows: list[Row], skipped: dict[str, str]
) -> None:
    """The toolkit's vLLM engine on each strategy, each followed by a raw replay of its `LLM.generate` calls."""
    systems = set(args.engines)
    engine, reason = start_vllm(model, args)
    if engine is None:
        skipped["vllm"] = skipped["raw-vllm"] = reason
        print(f"  vllm skipped: {reason}")
    else:
        try:
            warm_up(engine, args, params, questions)
            for name in args.strategies:
                reset_prefix_cache(engine)  # every strategy starts from a cold cache
                hits0, queries0 = prefix_counts(engine)
                calls, stop_recording = recorded_calls(engine)
                row = measure("vllm", name, len(questions), lambda n=name: run_strategy(engine, n, params, questions, False))
                stop_recording()
                hits, queries = prefix_counts(engine)
                row.extra["prefix_cache_hit_share"] = (hits - hits0) / (queries - queries0) if queries > queries0 else None
                row.extra["vllm_calls"] = len(calls)
                if "vllm" in systems:
                    rows.append(row)
                if "raw-vllm" in systems:
                    reset_prefix_cache(engine)

                    def replay(recorded: list[tuple[Any, Any]] = calls, like: Row = row, llm: Any = engine.llm) -> Outcome:
                        for prompts, sampling in recorded:
                            llm.generate(prompts, sampling, use_tqdm=False)
                        return Outcome(like.accuracy, like.prompt_tokens, like.completion_tokens, {"vllm_calls": len(recorded)})

                    rows.append(measure("raw-vllm", name, len(questions), replay))
        finally:
            engine.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    systems = set(args.engines)
    model = resolve_model(args.model)
    questions = stratified_sample(load_dataset("pubmedqa", split="test"), args.n, seed=args.seed)
    params = SamplingParams(max_tokens=args.max_tokens)
    rows: list[Row] = []
    skipped: dict[str, str] = {}
    info = machine()
    print(f"{len(questions)} PubMedQA test questions (seed {args.seed}), max_tokens {args.max_tokens}, model {model}")
    print(f"machine: {info['cpu']} {info['cpu_count']} cores, {info.get('gpu', 'no GPU')}, load {info['load_average_at_start']}")

    if systems & {"hf", "naive", "lm-eval"}:
        run_transformers(args, model, questions, params, rows, skipped)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if systems & {"vllm", "raw-vllm"}:
        run_vllm(args, model, questions, params, rows, skipped)

    report = {
        "machine": info,
        "args": vars(args),
        "model": model,
        "question_ids": [q.id for q in questions],
        "rows": [r.as_json() for r in rows],
        "skipped": skipped,
    }
    report["ratios"] = ratios(rows)
    if args.memory:
        report["memory"] = memory_check(args, model)
        report["ratios"].append(report["memory"]["ratio"])
    return report


# -- ratios ------------------------------------------------------------------------------------------
def find(rows: Sequence[Row], system: str, strategy: str) -> Row | None:
    return next((r for r in rows if r.system == system and r.strategy == strategy), None)


def ratio(name: str, value: float, detail: str) -> dict[str, Any]:
    return {"name": name, "value": value, "detail": detail}


def cpu_ratio(slow: Row, fast: Row) -> str:
    """CPU seconds per question of `slow` over `fast` (steadier than wall time on a busy machine)."""
    a, b = slow.extra.get("cpu_seconds"), fast.extra.get("cpu_seconds")
    if not a or not b:
        return ""
    return f"; CPU-time ratio {(a / slow.questions) / (b / fast.questions):.2f}"


def ratios(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """The measured comparisons between systems; the targets they are read against are in benchmarks/README.md."""
    out = []
    hf_direct, lm = find(rows, "hf", "direct"), find(rows, "lm-eval", "direct")
    if hf_direct and lm:
        speedup = hf_direct.questions_per_s / lm.questions_per_s
        detail = f"{hf_direct.questions_per_s:.3f} vs {lm.questions_per_s:.3f} q/s" + cpu_ratio(lm, hf_direct)
        out.append(ratio("direct: hf q/s over lm-eval q/s", speedup, detail))
        gap = abs((hf_direct.accuracy or 0) - (lm.accuracy or 0)) * 100
        out.append(ratio("direct: |hf - lm-eval| accuracy (points)", gap, f"{fmt_acc(hf_direct.accuracy)} vs {fmt_acc(lm.accuracy)}"))
    hf_voc, naive_voc = find(rows, "hf", "voc"), find(rows, "naive", "voc")
    if hf_voc and naive_voc:
        speedup = hf_voc.questions_per_s / naive_voc.questions_per_s
        detail = f"{hf_voc.questions_per_s:.3f} vs {naive_voc.questions_per_s:.3f} q/s" + cpu_ratio(naive_voc, hf_voc)
        out.append(ratio("voc: hf q/s over naive loop q/s", speedup, detail))
    v_voc, v_cot = find(rows, "vllm", "voc"), find(rows, "vllm", "cot")
    if v_voc and v_cot:
        detail = f"{v_voc.seconds:.1f} vs {v_cot.seconds:.1f} s" + cpu_ratio(v_voc, v_cot)
        out.append(ratio("vllm: voc wall time over cot wall time", v_voc.seconds / v_cot.seconds, detail))
    if v_voc and v_voc.extra.get("prefix_cache_hit_share") is not None:
        share = v_voc.extra["prefix_cache_hit_share"]
        out.append(ratio("vllm: voc prompt tokens served from the prefix cache", share, f"{share:.1%}"))
    raw_voc = find(rows, "raw-vllm", "voc")
    if v_voc and raw_voc:
        detail = f"{v_voc.seconds:.2f} vs {raw_voc.seconds:.2f} s" + cpu_ratio(v_voc, raw_voc)
        out.append(ratio("vllm: toolkit overhead over raw LLM.generate (voc)", v_voc.seconds / raw_voc.seconds - 1, detail))
    return out


# -- memory --------------------------------------------------------------------------------------------
def peak_rss_of(command: list[str]) -> tuple[float, float]:
    """Run a command; returns (peak RSS in MiB of it and its children, seconds)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    watched = psutil.Process(process.pid)
    peak = 0
    while process.poll() is None:
        try:
            total = watched.memory_info().rss + sum(c.memory_info().rss for c in watched.children(recursive=True))
            peak = max(peak, total)
        except psutil.Error:
            pass
        time.sleep(0.05)
    if process.returncode:
        raise RuntimeError(f"{' '.join(command)} failed: {process.stderr.read()[-2000:] if process.stderr else ''}")
    return peak / 2**20, time.perf_counter() - start


def memory_check(args: argparse.Namespace, model: str) -> dict[str, Any]:
    """Peak RSS of a 1000-question vs a 100-question `voc bench` run (direct strategy, results streamed to disk)."""
    memory_model = resolve_model(args.memory_model) if args.memory_model else model
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (100, 1000):
            command = [
                sys.executable,
                "-m",
                "voc.bench",
                "--dataset",
                args.memory_dataset,
                "--strategy",
                "direct",
                "--limit",
                str(n),
                "--out",
                str(Path(tmp) / f"run{n}"),
                "--no-progress",
                "--model",
                memory_model,
            ]
            if args.device:
                command += ["--device", args.device]
            peak, seconds = peak_rss_of(command)
            results[n] = {"peak_rss_mib": peak, "seconds": seconds}
            print(f"  memory: {n:4d} questions of {args.memory_dataset}: peak RSS {peak:.0f} MiB ({seconds:.0f} s)", flush=True)
    growth = results[1000]["peak_rss_mib"] / results[100]["peak_rss_mib"]
    detail = f"{results[1000]['peak_rss_mib']:.0f} vs {results[100]['peak_rss_mib']:.0f} MiB"
    return {
        "dataset": args.memory_dataset,
        "model": memory_model,
        "runs": results,
        "ratio": ratio("memory: peak RSS 1000 vs 100 questions", growth, detail),
    }


# -- output ---------------------------------------------------------------------------------------------
def fmt_acc(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def table(report: dict[str, Any]) -> str:
    lines = [
        "| system | strategy | questions | seconds | CPU seconds | questions/s | tokens/s | peak RSS (MiB) | CUDA peak (MiB) | accuracy |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        cuda = "-" if r["cuda_peak_mib"] is None else f"{r['cuda_peak_mib']:.0f}"
        lines.append(
            f"| {r['system']} | {r['strategy']} | {r['questions']} | {r['seconds']:.1f} | {r['extra'].get('cpu_seconds', 0):.1f} | "
            f"{r['questions_per_s']:.3f} | "
            f"{r['tokens_per_s']:.0f} | {r['peak_rss_mib']:.0f} | {cuda} | {fmt_acc(r['accuracy'])} |"
        )
    lines += ["", "| ratio | measured | detail |", "|---|---:|---|"]
    lines += [f"| {r['name']} | {r['value']:.3g} | {r['detail']} |" for r in report["ratios"]]
    for system, reason in report["skipped"].items():
        lines.append(f"\nskipped {system}: {reason}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="HF folder, .gguf or hub id (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--n", type=int, default=20, help="PubMedQA test questions (seeded, label-stratified sample)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-tokens", type=int, default=32, help="max new tokens of cot reasoning and voc verifications")
    parser.add_argument(
        "--engines",
        nargs="+",
        default=list(SYSTEMS),
        choices=SYSTEMS,
        metavar="SYSTEM",
        help=f"which systems to run: {', '.join(SYSTEMS)} (default: all)",
    )
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGY_NAMES), choices=STRATEGY_NAMES)
    parser.add_argument(
        "--naive-strategies",
        nargs="+",
        default=["direct", "voc"],
        choices=STRATEGY_NAMES,
        help="strategies the naive loop runs (default: direct voc)",
    )
    parser.add_argument("--naive-n", type=int, default=None, help="run the slow naive loop on only the first N questions of the sample")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument(
        "--dtype", default=None, help="dtype of the model hf, naive and lm-eval share (default: float32 on CPU, bf16 on GPU)"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="rows per batch of the hf engine (--quick: 128)")
    parser.add_argument("--max-batch-tokens", type=int, default=None, help="padded tokens per batch of the hf engine")
    parser.add_argument(
        "--lm-eval-batch-size",
        type=int,
        default=None,
        help="lm-eval batch size (default: 1 on CPU, lm-eval's own default and its fastest there; 16 on GPU)",
    )
    parser.add_argument(
        "--baseline-attention",
        choices=["stock", "engine"],
        default="stock",
        help="attention of the naive loop and lm-eval: transformers' stock SDPA (default, what users get) or the engine's",
    )
    parser.add_argument("--max-model-len", type=int, default=None, help="context window for hf and vLLM (default: the model's)")
    parser.add_argument("--vllm-gpu-memory", type=float, default=0.85, help="vLLM gpu_memory_utilization")
    parser.add_argument("--vllm-block-size", type=int, default=None, help="vLLM KV block size (default: the engine's)")
    parser.add_argument("--memory", action="store_true", help="also compare peak RSS of 1000- vs 100-question `voc bench` runs")
    parser.add_argument("--memory-dataset", default="medqa", help="dataset of the memory check (needs >= 1000 questions; default medqa)")
    parser.add_argument("--memory-model", default=None, help="model of the memory check (default: --model)")
    parser.add_argument("--quick", action="store_true", help="GPU preset, about 5 min: n=200, max-tokens 128, naive n=10, batch 128")
    parser.add_argument(
        "--warmup", choices=["full", "light"], default=None, help="untimed warm-up: full (default on GPU) or light (default on CPU)"
    )
    parser.add_argument("--out", default="benchmarks/throughput.json", help="where to write the JSON report")
    args = parser.parse_args(argv)
    if args.quick:
        given = set(argv if argv is not None else sys.argv[1:])
        if "--n" not in given:
            args.n = 200
        if "--max-tokens" not in given:
            args.max_tokens = 128
        if "--naive-n" not in given:
            args.naive_n = 10
        if "--batch-size" not in given:
            args.batch_size = 128
    if args.n < 1:
        parser.error("--n must be at least 1")
    on_gpu = torch.cuda.is_available() and (args.device or "cuda").startswith("cuda")
    if args.warmup is None:
        args.warmup = "full" if on_gpu else "light"
    if args.lm_eval_batch_size is None:
        args.lm_eval_batch_size = 16 if on_gpu else 1
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    text = table(report)
    print("\n" + text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
