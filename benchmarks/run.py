"""Run a benchmark: the same options as `voc bench` (see `python benchmarks/run.py --help`).

Example: python benchmarks/run.py --dataset pubmedqa --strategy direct cot voc --limit 50 --out runs/smollm2-pubmedqa
"""

import sys

from voc.cli import main

if __name__ == "__main__":  # vLLM spawns worker processes that re-import this file
    sys.exit(main(["bench", *sys.argv[1:]]))
