"""CPU attention-dropout benchmark: dropkit against torch SDPA's math path (dropout) and flash (no dropout).

Time and peak memory, each configuration in a fresh process (see docs/attention.md)::

    python benchmarks/attention.py                                  # L in 512..4096, float32 and bfloat16
    python benchmarks/attention.py --lengths 512 1024 --dtypes float32 --repeats 1   # a smoke run
    python benchmarks/attention.py --markdown table.md --json table.json
"""

from __future__ import annotations

import argparse
import sys

from dropkit.bench.attention import add_arguments, main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
