"""The throughput benchmark runs end to end (a smoke run on the tiny model; no timing is asserted)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_throughput() -> ModuleType:
    spec = importlib.util.spec_from_file_location("throughput", ROOT / "benchmarks" / "throughput.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_throughput_benchmark_compares_engine_and_naive_loop_on_the_same_answers(
    tiny_model_dir: Path, data_root: Path, tmp_path: Path
) -> None:
    throughput = load_throughput()
    out = tmp_path / "throughput.json"
    argv = ["--model", str(tiny_model_dir), "--n", "3", "--naive-n", "3", "--max-tokens", "4", "--engines", "hf", "naive"]
    assert throughput.main([*argv, "--strategies", "direct", "voc", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = {(r["system"], r["strategy"]): r for r in report["rows"]}
    assert set(rows) == {("hf", "direct"), ("naive", "direct"), ("hf", "voc"), ("naive", "voc")}
    assert len(report["question_ids"]) == 3
    for strategy in ("direct", "voc"):  # same questions, same model, same answer rules: same accuracy
        assert rows[("hf", strategy)]["accuracy"] == rows[("naive", strategy)]["accuracy"]
    (speedup,) = [r for r in report["ratios"] if r["name"].startswith("voc: hf q/s over naive")]
    assert speedup["value"] > 0 and "targets" not in report  # measured, not judged: the targets are in benchmarks/README.md


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_stage_ablation_trains_chooses_on_dev_and_tables_the_test_sets(tiny_model_dir: Path, data_root: Path, tmp_path: Path) -> None:
    """benchmarks/stages.py on a one-stage config of the tiny model: train, dev runs, dev choice, test runs, table."""
    import yaml

    from voc.strategies.voc import FINAL_RULES

    stages = load_script("stages")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "base_model": str(tiny_model_dir), "output_dir": str(tmp_path / "model"), "data_root": str(data_root),
        "stages": [{"kind": "task", "method": "lora", "lora": {"r": 4, "alpha": 8, "dropout": 0.0}, "max_steps": 2, "batch_size": 2,
                    "max_length": 512, "data": [{"type": "pubmedqa_task", "path": "pubmedqa", "limit": 2, "formats": ["direct"]}]}],
    }))  # fmt: skip
    out, results = tmp_path / "runs", tmp_path / "results"
    argv = [str(config), "--engine", "hf", "--dev-limit", "5", "--pubmedqa-limit", "3", "--medqa-limit", "3", "--max-tokens", "3"]
    assert stages.main([*argv, "--out", str(out), "--results", str(results), "--no-progress"]) == 0

    table = json.loads((results / "results.json").read_text())
    assert {(r["model"], r["dataset"], r["strategy"]) for r in table["rows"]} == {
        (m, d, s) for m in ("0-base", "1-task") for d in ("pubmedqa", "medqa") for s in ("direct", "cot", "voc")
    }
    assert all(r["n"] == 3 for r in table["rows"])
    for model in ("0-base", "1-task"):
        choice = table["dev"][model]
        # the rule is the best mean dev accuracy of the rules, computed from the dev run's records only
        assert choice["voc_rule"] == max(FINAL_RULES, key=lambda r: choice["mean"][f"voc:{r}"])
        dev_datasets = {r.dataset for r in stages.records(out / model / "dev")}
        assert dev_datasets == {"pubmedqa:dev", "medqa_dev"}
        test_rule = {r["voc_rule"] for r in table["rows"] if r["model"] == model and r["strategy"] == "voc"}
        assert test_rule == {choice["voc_rule"]}
    assert (results / "report.md").read_text().startswith("# Stage-by-strategy ablation")
    assert (results / "1-task" / "pubmedqa-results.json").is_file()
    assert len(table["voc_vs"]) == 2 * 2 * 2 and len(table["tuned_best_vs_base_direct"]) == 2


def test_strategy_variants_take_permutations_and_samples() -> None:
    """benchmarks/vllm_strategies.py: `voc:verdicts+perm3+samples5` is VoC under verdicts, 3 orderings, 5 sampled paths."""
    from voc.engines.base import SamplingParams

    strategies = load_script("vllm_strategies")
    variant = strategies.parse_variant("voc:verdicts+perm3+samples5", SamplingParams(max_tokens=8), temperature=0.5)
    assert (variant.permutations, variant.strategy.final_rule) == (3, "verdicts")
    assert (variant.strategy.params.n, variant.strategy.params.temperature, variant.strategy.params.max_tokens) == (5, 0.5, 8)
    assert strategies.parse_variant("cot", SamplingParams()).permutations == 1
    with pytest.raises(ValueError, match=r"bad modifier \+shuffle3"):
        strategies.parse_variant("cot+shuffle3", SamplingParams())


def test_hf_mechanisms_benchmark_times_every_system_on_every_workload_and_checks_agreement(
    tiny_model_dir: Path, data_root: Path, tmp_path: Path
) -> None:
    """benchmarks/hf_mechanisms.py on the tiny model: a row per system and workload, each with its agreement with stock."""
    mechanisms = load_script("hf_mechanisms")
    out = tmp_path / "mechanisms.json"
    assert mechanisms.main(["--model", str(tiny_model_dir), "--n", "2", "--max-tokens", "3", "--no-warmup", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = {(r["system"], r["workload"]): r for r in report["rows"]}
    generation = {"cot-generate", "verify-generate"}
    expected = {(s, w) for s in mechanisms.SYSTEMS for w in mechanisms.WORKLOADS if w in generation or s != "stock-static"}
    skipped = {tuple(k.split("/")) for k in report["skipped"]}  # a system that cannot run here, or not on one workload
    assert set(rows) == {(s, w) for s, w in expected if (s,) not in skipped and (s, w) not in skipped}
    assert {"engine", "stock"} <= {s for s, _ in rows}
    assert len(report["question_ids"]) == 2 and report["workloads"]["verify-generate"]["prompts"] == 6  # 3 options each
    for (system, workload), row in rows.items():
        assert row["seconds"] > 0 and row["agreement"]["reference"] == "stock"
        keys = {"token_identical", "text_equal"} if workload in generation else {"argmax_equal", "max_abs_logprob_diff"}
        assert keys <= set(row["agreement"])
        if system == "stock":
            assert row["x_stock"] == 1.0
    assert {g["with"] for g in report["gains"]} >= {"engine", "stock-sorted"}
    assert report["machine"]["cpu_count"] and report["date"]
