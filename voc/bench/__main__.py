"""`python -m voc.bench ...` is `voc bench ...`."""

import sys

from voc.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
