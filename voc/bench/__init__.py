"""Benchmarks: run strategies on medical QA datasets, resumably, and report accuracy with statistics.

`run_bench(BenchConfig(...))` runs or resumes a benchmark into an output folder; `write_report(folder)` writes
report.md, results.json and plots; `compare_runs([...])` puts runs side by side. The `voc bench` and
`voc report` commands wrap them.
"""

from voc.bench.records import BenchError, RecordStore, RecordsWriteError, ResultRecord, RunFingerprint, RunFolder
from voc.bench.runner import BenchConfig, BenchOutcome, run_bench

__all__ = [
    "BenchConfig",
    "BenchError",
    "BenchOutcome",
    "RecordStore",
    "RecordsWriteError",
    "ResultRecord",
    "RunFingerprint",
    "RunFolder",
    "run_bench",
]
