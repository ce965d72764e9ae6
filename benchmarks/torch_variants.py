"""The torch face's variants against their torch twins, forward+backward per call (docs/benchmarks.md)::

python benchmarks/torch_variants.py                         # small inputs, 1 thread, 300 calls each
python benchmarks/torch_variants.py --sizes small large     # and (64, 256, 32, 32)-sized ones
python benchmarks/torch_variants.py --only Dropout2d AlphaDropout --repeats 1000
"""

from __future__ import annotations

import argparse
import sys

from dropkit.bench.variants import add_arguments, main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
