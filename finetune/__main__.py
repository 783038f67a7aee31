"""`python -m finetune CONFIG.yaml [--stage N] [--resume]`."""

from finetune.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
