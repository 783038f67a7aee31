"""`python -m voc`: the same as the `voc` command."""

from voc.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
