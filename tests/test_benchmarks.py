"""The throughput benchmark runs end to end (a smoke run on the tiny model; no timing is asserted)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

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
    assert any(t["target"].startswith("voc: hf q/s over naive") for t in report["targets"])
