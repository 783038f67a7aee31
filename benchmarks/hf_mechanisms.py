"""The hf engine's mechanisms, one at a time, against stock transformers batching (issue 15).

On one seeded, label-stratified sample of PubMedQA test questions and one model object (float32 on CPU), the real
workloads of the strategies, rendered by the strategies themselves, are run in one process by:

  engine             the toolkit's hf engine (`HFEngine.score` / `HFEngine.generate`), default settings
  engine-no-prefix   the engine with prefix-group reuse off (`share_prefixes=False`)
  engine-no-pack     the engine without the CPU's length runs (`pack_prefill=False`: all prefixes of a batch as one
                     padded batch, then all suffixes, instead of each group's prefix alone and its suffixes in runs of
                     similar length)
  engine-stock-attn  the engine on transformers' stock SDPA attention (keys/values copied per query head, `repeat_kv`)
                     instead of its grouped-query attention
  stock              a stock batched forward pass / `model.generate`: left padding (`tokenizer.pad`, padding_side
                     "left"), attention mask, stock SDPA, `DynamicCache`, prompts in the order given, batches of at
                     most --batch-size rows and the engine's padded-token budget
  stock-sorted       stock with the prompts sorted by length before batching (length bucketing, the stock way)
  stock-static       stock `model.generate` with `cache_implementation="static"` (generation only)
  stock-gqa-attn     stock on the engine's attention: torch SDPA with `enable_gqa=True` (transformers' SDPA path
                     copies keys/values per query head whenever there is a padding mask)

The engine's KV cache is transformers' `DynamicCache`, as stock's is. (A hand-built cache that wrote new tokens in place
was measured here against concatenation as `engine-concat-kv`, gained 0.99-1.10x and was replaced; benchmarks/README.md.)

Workloads (prompts and candidates exactly as the strategies build them; both sides run the same token ids):
  direct-score       the `direct` round: the option labels scored after each direct prompt (one prompt per question)
  cot-generate       cot's reasoning: greedy, --max-tokens, cot's stop string (one prompt per question)
  verify-generate    VoC's verifications: greedy, --max-tokens, the verify stop string (one prompt per option; the
                     prompts of a question share system, context, question and options)
  verdict-score      VoC's verdicts: " correct" against " incorrect" after each verification (the verifications the
                     `engine` row generated, or an untimed engine run of them, for every system)

Every system is warmed up untimed on two prompts of a workload; then the systems run in turn, --repeats times
(round robin, so load drifts hit all of them), and the fastest repeat is reported with its CPU seconds. The table
gives seconds, prompts/s, the ratio to `stock` (stock seconds over the row's) and agreement with `stock`: for
generation the share of prompts with identical generated token ids and with equal texts, for scoring the share with
the same best candidate and the largest log-probability difference. A second table gives each mechanism's own gain
(seconds without it over seconds with it) and whether it reaches the issue's 1.3x; nothing else is judged.

Examples:
    python benchmarks/hf_mechanisms.py --n 20 --max-tokens 64 --repeats 3 --out benchmarks/results/hf-mechanisms-cpu.json
    python benchmarks/hf_mechanisms.py --n 4 --max-tokens 16 --out /tmp/hf-mechanisms.json     # a smoke run
    python benchmarks/hf_mechanisms.py --workloads verify-generate --systems engine engine-no-prefix stock stock-static
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from voc.datasets import load_dataset, stratified_sample  # noqa: E402
from voc.engines.base import ChatPrompt, Generation, Prompt, SamplingParams, Scores, make_scores  # noqa: E402
from voc.engines.hf import GROUPED_ATTENTION, HFEngine  # noqa: E402
from voc.hardware import describe_hardware  # noqa: E402
from voc.strategies import ChainOfThought, Direct, VerificationOfChoice, make_strategy  # noqa: E402
from voc.strategies import cot as cot_module  # noqa: E402
from voc.strategies import direct as direct_module  # noqa: E402
from voc.strategies.base import Prepared  # noqa: E402
from voc.types import Question  # noqa: E402

KEEP_THRESHOLD = 1.3  # the rule: keep a mechanism only where it pays at least this much
WORKLOADS = ("direct-score", "cot-generate", "verify-generate", "verdict-score")
# the engine's attention is torch SDPA with enable_gqa (`voc.engines.hf.grouped_query_attention`)
ATTENTION = {"grouped": GROUPED_ATTENTION, "sdpa": "sdpa"}


# -- the systems -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class System:
    """One way of running a workload. `mechanism`: what this row switches on or off, `switch`: how; `gain`: (without,
    with) the system names whose seconds ratio is that mechanism's own gain."""

    name: str
    engine: bool
    what: str
    attention: str = "sdpa"
    share_prefixes: bool = True
    pack_prefill: bool | None = None  # None: the engine's default for the device
    sort: bool = False
    static: bool = False
    generate_only: bool = False
    mechanism: str = ""
    switch: str = ""
    gain: tuple[str, str] | None = None


NO_ATTENTION_SWITCH = "none in the engine: model.set_attn_implementation after it is built"
SYSTEMS = {
    s.name: s
    for s in (
        System("engine", True, "the hf engine, default settings", "grouped", mechanism="whole engine", gain=("stock", "engine")),
        System("engine-no-prefix", True, "engine, share_prefixes=False", "grouped", share_prefixes=False,
               mechanism="prefix-group reuse", switch="share_prefixes=False", gain=("engine-no-prefix", "engine")),
        System("engine-no-pack", True, "engine, pack_prefill=False", "grouped", pack_prefill=False,
               mechanism="CPU length runs (bucketing)", switch="pack_prefill=False", gain=("engine-no-pack", "engine")),
        System("engine-stock-attn", True, "engine on stock SDPA (repeat_kv)", "sdpa",
               mechanism="grouped attention vs stock SDPA", switch=NO_ATTENTION_SWITCH, gain=("engine-stock-attn", "engine")),
        System("stock", False, "batched forward / model.generate, left padding, DynamicCache, SDPA"),
        System("stock-sorted", False, "stock, prompts sorted by length", sort=True,
               mechanism="length sorting, stock", switch="none in the engine (it always sorts): stock batches sorted",
               gain=("stock", "stock-sorted")),
        System("stock-static", False, 'stock generate, cache_implementation="static"', static=True, generate_only=True,
               mechanism="StaticCache, stock", switch='cache_implementation="static"', gain=("stock", "stock-static")),
        System("stock-gqa-attn", False, "stock on SDPA enable_gqa", "grouped",
               mechanism="SDPA enable_gqa, stock", switch="attention function", gain=("stock", "stock-gqa-attn")),
    )
}  # fmt: skip


@contextlib.contextmanager
def configured(engine: HFEngine, system: System) -> Iterator[None]:
    """The engine and its model set up as `system` runs them; everything is restored afterwards."""
    saved = (engine.share_prefixes, engine.pack_prefill, engine.model.config._attn_implementation)
    engine.share_prefixes = system.share_prefixes
    if system.pack_prefill is not None:
        engine.pack_prefill = system.pack_prefill
    if engine.grouped_attention:  # else the model is not on SDPA: it keeps its own attention (other choices are skipped)
        engine.model.set_attn_implementation(ATTENTION[system.attention])
    try:
        yield
    finally:
        engine.share_prefixes, engine.pack_prefill = saved[0], saved[1]
        engine.model.set_attn_implementation(saved[2])


# -- stock transformers ------------------------------------------------------------------------------
def batches(lengths: Sequence[int], order: Sequence[int], rows: int, tokens: int, room: int) -> Iterator[list[int]]:
    """Indices in `order`, cut into batches of at most `rows` rows and `tokens` padded tokens (+ `room` per row)."""
    batch: list[int] = []
    width = 0
    for i in order:
        wider = max(width, lengths[i])
        if batch and (len(batch) + 1 > rows or (len(batch) + 1) * (wider + room) > tokens):
            yield batch
            batch, wider = [], lengths[i]
        batch.append(i)
        width = wider
    if batch:
        yield batch


def left_padded(engine: HFEngine, rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows padded on the left by the tokenizer: input ids and attention mask."""
    encoded = engine.tokenizer.pad({"input_ids": [list(r) for r in rows]}, padding=True, padding_side="left", return_tensors="pt")
    return encoded["input_ids"].to(engine.device), encoded["attention_mask"].to(engine.device)


def order_of(lengths: Sequence[int], sort: bool) -> list[int]:
    return sorted(range(len(lengths)), key=lambda i: lengths[i]) if sort else list(range(len(lengths)))


@torch.inference_mode()
def stock_score(engine: HFEngine, prompts: Sequence[Prompt], candidates: Sequence[Sequence[str]], system: System) -> list[Scores]:
    """Candidate log-probabilities from stock batched forward passes over the engine's tokens: a prompt whose candidates are
    all one token is one row (its last position scores them all); otherwise each candidate is a row, prompt + candidate
    but its last token. Rows are left-padded; only the positions that score a candidate get logits (`logits_to_keep`)."""
    contexts, cand_ids = engine.encode_for_scoring(prompts, candidates)
    rows: list[tuple[int, list[int], list[tuple[int, list[int]]]]] = []  # (prompt, tokens, its candidates (index, ids))
    for i, (context, cands) in enumerate(zip(contexts, cand_ids, strict=True)):
        if all(len(c) == 1 for c in cands):
            rows.append((i, context, list(enumerate(cands))))
        else:
            rows.extend((i, context + c[:-1], [(j, c)]) for j, c in enumerate(cands))
    results = [[0.0] * len(c) for c in cand_ids]
    lengths = [len(r[1]) for r in rows]
    for batch in batches(lengths, order_of(lengths, system.sort), engine.batch_size, engine.max_batch_tokens, 0):
        ids, mask = left_padded(engine, [rows[k][1] for k in batch])
        keep = max(len(c) for k in batch for _, c in rows[k][2])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # as `generate` computes them under left padding
        out = engine.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False, logits_to_keep=keep)
        logprobs = torch.log_softmax(out.logits.float(), dim=-1)
        for r, k in enumerate(batch):
            i, _, cands = rows[k]
            for j, c in cands:
                results[i][j] = sum(logprobs[r, keep - len(c) + t, token].item() for t, token in enumerate(c))
    return make_scores(results, contexts, cand_ids)


@torch.inference_mode()
def stock_generate(engine: HFEngine, prompts: Sequence[ChatPrompt], params: SamplingParams, system: System) -> list[Generation]:
    """Greedy `model.generate` on left-padded batches of the engine's tokens (same stop strings and end-of-sequence ids);
    the new tokens are cut and decoded by the engine's own rule, so texts compare one to one."""
    encoded = engine.encode_prompts(prompts, params.max_tokens)
    lengths = [len(e) for e in encoded]
    results: list[Generation | None] = [None] * len(encoded)
    options: dict[str, Any] = {}
    if params.stop:
        options.update(stop_strings=list(params.stop), tokenizer=engine.tokenizer)
    if system.static:
        options["cache_implementation"] = "static"
    order = order_of(lengths, system.sort)
    for batch in batches(lengths, order, engine.batch_size, engine.max_batch_tokens, params.max_tokens):
        ids, mask = left_padded(engine, [encoded[i] for i in batch])
        out = engine.model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=params.max_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=engine.tokenizer.pad_token_id,
            eos_token_id=sorted(engine.eos_ids),
            **options,
        )
        for r, i in enumerate(batch):
            results[i] = engine.make_generation(out[r, ids.shape[1] :].tolist(), encoded[i], params.stop)
    return [g for g in results if g is not None]


# -- workloads ---------------------------------------------------------------------------------------
@dataclass
class Workload:
    """The prompts of one round of a strategy: scored against `candidates`, or completed with `params`."""

    name: str
    prompts: list[Any]
    candidates: list[list[str]] | None = None
    params: SamplingParams | None = None

    @property
    def generates(self) -> bool:
        return self.params is not None

    def part(self, n: int, max_tokens: int) -> Workload:
        """The first n prompts, with at most `max_tokens` new tokens (the warm-up)."""
        params = self.params.model_copy(update={"max_tokens": min(max_tokens, self.params.max_tokens)}) if self.params else None
        return Workload(self.name, self.prompts[:n], self.candidates[:n] if self.candidates else None, params)


def build_workloads(
    engine: HFEngine, questions: Sequence[Question], max_tokens: int
) -> tuple[dict[str, Workload], VerificationOfChoice, list[Prepared]]:
    """direct-score, cot-generate and verify-generate, with the VoC strategy and its prepared questions (contexts fitted as
    the strategies fit them): verdict-score needs the verifications (`verdict_workload`)."""
    params = SamplingParams(max_tokens=max_tokens)
    direct = make_strategy("direct", params=params)
    cot = make_strategy("cot", params=params)
    voc = make_strategy("voc", params=params, final_rule="verdicts")
    assert isinstance(direct, Direct) and isinstance(cot, ChainOfThought) and isinstance(voc, VerificationOfChoice)
    direct_qs, cot_qs, voc_qs = (s.prepare(questions, engine) for s in (direct, cot, voc))
    cot_params = params.model_copy(update={"stop": (cot.templates.block(cot_module.TEMPLATE, "stop"),)})
    workloads = {
        "direct-score": Workload(
            "direct-score", [p.prompts[0] for p in direct_qs], [direct.candidates(direct_module.TEMPLATE, p.question) for p in direct_qs]
        ),
        "cot-generate": Workload("cot-generate", [p.prompts[0] for p in cot_qs], params=cot_params),
        "verify-generate": Workload("verify-generate", [prompt for p in voc_qs for prompt in p.prompts], params=voc.verify_params),
    }
    return workloads, voc, voc_qs


def verdict_workload(voc: VerificationOfChoice, prepared: Sequence[Prepared], generations: Sequence[Generation]) -> Workload:
    """VoC's verdict round after the given verifications (one per verify prompt, in order)."""
    options = [(p, k) for p in prepared for k in range(len(p.prompts))]
    requests = [voc.verdict_request(p, k, g) for (p, k), g in zip(options, generations, strict=True)]
    return Workload("verdict-score", [r[0] for r in requests], [r[1] for r in requests])


# -- measuring ---------------------------------------------------------------------------------------
@dataclass
class Row:
    system: str
    workload: str
    prompts: int
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    all_seconds: list[float] = field(default_factory=list)
    prompt_tokens: int = 0
    generated_tokens: int = 0
    x_stock: float | None = None
    agreement: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def prompts_per_s(self) -> float:
        return self.prompts / self.seconds if self.seconds else 0.0

    def as_json(self) -> dict[str, Any]:
        system = SYSTEMS[self.system]
        described = {"what": system.what, "mechanism": system.mechanism, "switch": system.switch}
        return {**asdict(self), "prompts_per_s": self.prompts_per_s, **described}


def execute(engine: HFEngine, system: System, workload: Workload) -> list[Any]:
    """Run one workload one way; returns its generations or scores."""
    with configured(engine, system):
        if system.engine:
            if workload.params is not None:
                return engine.generate(workload.prompts, workload.params)
            assert workload.candidates is not None
            return engine.score(workload.prompts, workload.candidates)
        if workload.params is not None:
            return stock_generate(engine, workload.prompts, workload.params, system)
        assert workload.candidates is not None
        return stock_score(engine, workload.prompts, workload.candidates, system)


def timed(engine: HFEngine, system: System, workload: Workload) -> tuple[float, float, list[Any], dict[str, int]]:
    """Wall seconds, CPU seconds (all threads of this process), outputs, and the engine's prefix counters of one run."""
    gc.collect()
    before = dict(engine.stats.extra)
    cpu, start = time.process_time(), time.perf_counter()
    outputs = execute(engine, system, workload)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    counters = {k: engine.stats.extra[k] - before.get(k, 0) for k in ("prompt_tokens_run", "prefix_tokens_reused")} if system.engine else {}
    return seconds, cpu, outputs, counters


def agreement(reference: Sequence[Any], outputs: Sequence[Any]) -> dict[str, Any]:
    """Generations: shares with identical generated token ids and with equal texts. Scores: share with the same best
    candidate and the largest log-probability difference."""
    n = len(reference)
    if reference and isinstance(reference[0], Generation):
        return {
            "token_identical": sum(a.token_ids == b.token_ids for a, b in zip(reference, outputs, strict=True)) / n,
            "text_equal": sum(a.text == b.text for a, b in zip(reference, outputs, strict=True)) / n,
        }

    def best(s: Scores) -> int:
        return max(range(len(s.logprobs)), key=lambda j: s.logprobs[j])

    diffs = [abs(x - y) for a, b in zip(reference, outputs, strict=True) for x, y in zip(a.logprobs, b.logprobs, strict=True)]
    return {
        "argmax_equal": sum(best(a) == best(b) for a, b in zip(reference, outputs, strict=True)) / n,
        "max_abs_logprob_diff": max(diffs, default=0.0),
    }


def measure_workload(
    engine: HFEngine, workload: Workload, systems: Sequence[System], repeats: int, warmup: bool, skipped: dict[str, str]
) -> tuple[list[Row], dict[str, list[Any]]]:
    """Every system on one workload: warm-up, then `repeats` round-robin timed runs; the fastest run is kept."""
    runnable = [s for s in systems if workload.generates or not s.generate_only]

    def drop(system: System, error: Exception) -> None:  # e.g. a cache implementation this transformers cannot run here
        key = f"{system.name}/{workload.name}"
        skipped[key] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        print(f"  {system.name} skipped on {workload.name}: {skipped[key]}", flush=True)
        runnable.remove(system)
        rows.pop(system.name, None)

    rows: dict[str, Row] = {}
    if warmup:
        part = workload.part(2, 4)
        for system in list(runnable):
            try:
                execute(engine, system, part)
            except Exception as error:
                drop(system, error)
    rows.update({s.name: Row(s.name, workload.name, len(workload.prompts)) for s in runnable})
    outputs: dict[str, list[Any]] = {}
    for repeat in range(repeats):
        for system in list(runnable):
            try:
                seconds, cpu, result, counters = timed(engine, system, workload)
            except Exception as error:
                if repeat:  # it ran once: a later failure is not a missing feature
                    raise
                drop(system, error)
                continue
            row = rows[system.name]
            row.all_seconds.append(seconds)
            if len(row.all_seconds) == 1 or seconds < row.seconds:
                row.seconds, row.cpu_seconds = seconds, cpu
            if repeat == 0:
                outputs[system.name] = result
                row.extra.update(counters)
                if workload.generates:
                    row.prompt_tokens = sum(g.prompt_tokens for g in result)
                    row.generated_tokens = sum(g.completion_tokens for g in result)
                else:
                    row.prompt_tokens = sum(s.prompt_tokens for s in result)
            print(f"  {system.name:18s} {workload.name:16s} run {repeat + 1}: {seconds:8.2f} s  cpu {cpu:8.2f} s", flush=True)
    reference = "stock" if "stock" in outputs else next(iter(outputs), None)
    stock = rows.get("stock")
    for name, row in rows.items():
        row.agreement = {"reference": reference, **agreement(outputs[reference], outputs[name])} if reference else {}
        row.x_stock = stock.seconds / row.seconds if stock and row.seconds else None
    return list(rows.values()), outputs


def gains(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Each mechanism's own gain per workload: seconds without it over seconds with it."""
    found = {(r.system, r.workload): r for r in rows}
    out = []
    for workload in dict.fromkeys(r.workload for r in rows):
        for system in SYSTEMS.values():
            if system.gain is None or (system.name, workload) not in found:
                continue
            slower, faster = (found.get((name, workload)) for name in system.gain)
            if slower is None or faster is None or not faster.seconds:
                continue
            value = slower.seconds / faster.seconds
            out.append({
                "mechanism": system.mechanism, "switch": system.switch, "workload": workload,
                "without": slower.system, "with": faster.system,
                "gain": value, "cpu_gain": slower.cpu_seconds / faster.cpu_seconds if faster.cpu_seconds else None,
                "pays_1_3x": value >= KEEP_THRESHOLD,
            })  # fmt: skip
    return out


# -- the whole run ----------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    import transformers

    return {
        **describe_hardware(),
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": os.getloadavg(),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    info = machine()
    engine = HFEngine(args.model, device=args.device, dtype=args.dtype, batch_size=args.batch_size, max_batch_tokens=args.max_batch_tokens)
    questions = stratified_sample(load_dataset("pubmedqa", split="test"), args.n, seed=args.seed)
    print(f"{len(questions)} PubMedQA test questions (seed {args.seed}), max_tokens {args.max_tokens}, model {engine.model_path}")
    print(f"machine: {info['cpu']}, {info['cpu_count']} cores, {info.get('gpu', 'no GPU')}, load {info['load_average_at_start']}")
    print(f"engine: {engine.device}, {engine.model.dtype}, batch_size {engine.batch_size}, max_batch_tokens {engine.max_batch_tokens}, "
          f"pack_prefill {engine.pack_prefill}, grouped attention {engine.grouped_attention}")  # fmt: skip
    reasons = {}  # systems that cannot run here (a "system/workload" key: one that failed on that workload)
    if not engine.pack_prefill:
        reasons["engine-no-pack"] = "pack_prefill is already off on this device"
    if not engine.grouped_attention:
        for name in ("engine-stock-attn", "stock-gqa-attn"):
            reasons[name] = "the model is not on SDPA attention, so the engine does not use its grouped attention"
    skipped = {name: reason for name, reason in reasons.items() if name in args.systems}
    systems = [SYSTEMS[name] for name in args.systems if name not in skipped]
    workloads, voc, voc_questions = build_workloads(engine, questions, args.max_tokens)
    rows: list[Row] = []
    verifications: list[Generation] | None = None
    info_workloads: dict[str, Any] = {}
    for name in args.workloads:
        if name == "verdict-score":
            if verifications is None:
                print("  (verifications for the verdicts: an untimed engine run of verify-generate)", flush=True)
                verifications = execute(engine, SYSTEMS["engine"], workloads["verify-generate"])
            workloads[name] = verdict_workload(voc, voc_questions, verifications)
        workload = workloads[name]
        print(f"{name}: {len(workload.prompts)} prompts", flush=True)
        measured, outputs = measure_workload(engine, workload, systems, args.repeats, args.warmup, skipped)
        rows += measured
        if name == "verify-generate" and "engine" in outputs:
            verifications = outputs["engine"]
        info_workloads[name] = {
            "prompts": len(workload.prompts),
            "max_tokens": workload.params.max_tokens if workload.params else None,
            "stop": list(workload.params.stop) if workload.params else None,
            "candidates": workload.candidates[0] if workload.candidates else None,
        }
    engine.close()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": info,
        "args": vars(args),
        "model": engine.model_path,
        "question_ids": [q.id for q in questions],
        "workloads": info_workloads,
        "systems": {s.name: s.what for s in systems},
        "rows": [r.as_json() for r in rows],
        "gains": gains(rows),
        "skipped": skipped,
    }


# -- output -----------------------------------------------------------------------------------------
def fmt_agreement(agreement: dict[str, Any]) -> str:
    if not agreement:
        return "-"
    if "token_identical" in agreement:
        return f"tokens {agreement['token_identical']:.0%}, texts {agreement['text_equal']:.0%}"
    return f"argmax {agreement['argmax_equal']:.0%}, max |dlogp| {agreement['max_abs_logprob_diff']:.1e}"


def table(report: dict[str, Any]) -> str:
    lines = [
        "| system | workload | prompts | seconds | CPU seconds | prompts/s | x stock | agreement with stock |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["rows"]:
        ratio = "-" if r["x_stock"] is None else f"{r['x_stock']:.2f}"
        lines.append(
            f"| {r['system']} | {r['workload']} | {r['prompts']} | {r['seconds']:.2f} | {r['cpu_seconds']:.2f} | "
            f"{r['prompts_per_s']:.2f} | {ratio} | {fmt_agreement(r['agreement'])} |"
        )
    lines += [
        "",
        f"| mechanism | workload | without | with | gain | CPU-time gain | >= {KEEP_THRESHOLD}x |",
        "|---|---|---|---|---:|---:|---|",
    ]
    for g in report["gains"]:
        cpu = "-" if g["cpu_gain"] is None else f"{g['cpu_gain']:.2f}"
        pays = "yes" if g["pays_1_3x"] else "no"
        lines.append(f"| {g['mechanism']} | {g['workload']} | {g['without']} | {g['with']} | {g['gain']:.2f} | {cpu} | {pays} |")
    lines += [f"\nskipped {name}: {reason}" for name, reason in report["skipped"].items()]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="HF folder, .gguf or hub id (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--n", type=int, default=20, help="PubMedQA test questions (seeded, label-stratified sample)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-tokens", type=int, default=64, help="new tokens of cot reasoning and VoC verifications (greedy)")
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS), metavar="SYSTEM",
                        help=f"any of {', '.join(SYSTEMS)} (default: all)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per system and workload (round robin; the fastest is kept)")
    parser.add_argument(
        "--warmup", action=argparse.BooleanOptionalAction, default=True, help="untimed run of each system on 2 prompts first"
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--dtype", default=None, help="model dtype (default: float32 on CPU, bfloat16 on GPU)")
    parser.add_argument("--batch-size", type=int, default=64, help="rows per batch, the engine's and stock's (default: the engine's 64)")
    parser.add_argument(
        "--max-batch-tokens", type=int, default=None, help="padded tokens per batch, engine and stock (default: the engine's)"
    )
    parser.add_argument("--out", type=Path, default=None, help="write the report as JSON here")
    args = parser.parse_args(argv)
    if args.n < 1 or args.max_tokens < 1 or args.repeats < 1:
        parser.error("--n, --max-tokens and --repeats must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    print("\n" + table(report))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
