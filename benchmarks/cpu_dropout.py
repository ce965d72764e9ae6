"""CPU dropout benchmark: dropkit's fused kernel against torch, textbook NumPy and a pass over memory.

The same code and options as ``dropkit bench`` (see docs/benchmarks.md)::

    python benchmarks/cpu_dropout.py                       # 2**20, 2**24, 2**26 elements, p in {0.1, 0.5}
    python benchmarks/cpu_dropout.py --quick               # a smoke run
    python benchmarks/cpu_dropout.py --sizes 2**24 --threads 2 --markdown table.md --json table.json
"""

from __future__ import annotations

import argparse
import sys

from dropkit.bench import add_arguments, main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
