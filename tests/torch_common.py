"""What the torch tests share: keys past 2**63, the float dtypes, and inputs whose zeros are the mask's.

Imported by test files after ``pytest.importorskip("torch")``.
"""

import torch

# (seed, stream) pairs; past 2**63 they cross the op boundary as negative int64s.
KEYS = [(0, 0), (1, 5), (2**63, 2**63 + 1), (2**64 - 1, 2**64 - 1)]
DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


def data(shape, dtype=torch.float32, generator_seed=0):
    """Values in ±[0.5, 1.5), bounded away from 0, so ``y == 0`` exactly where a mask drops."""
    g = torch.Generator().manual_seed(generator_seed)
    magnitude = torch.rand(shape, generator=g, dtype=torch.float64) + 0.5
    sign = torch.randint(0, 2, shape, generator=g) * 2 - 1
    return (magnitude * sign).to(dtype)
