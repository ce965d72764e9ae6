"""An independent scalar oracle of the mask contract (docs/contract.md), in plain Python.

Nothing here calls dropkit: Philox4x32-10 on Python ints, one element at a time, the keep threshold
from an exact fraction, and the rounding rule spelled out per element. The hostile-input suites compare
every face of dropkit with it, element for element. NumPy appears only to round a Python float to
float32 or float16 (one IEEE cast), which the contract's rounding rule names.

>>> [f"{w:08x}" for w in philox((0, 0, 0, 0), (0, 0))]
['6627e8d5', 'e169c58d', 'bc57ac4c', '9b00dbd8']
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
from hypothesis import HealthCheck, settings

M0, M1 = 0xD2511F53, 0xCD9E8D57
W0, W1 = 0x9E3779B9, 0xBB67AE85
LOW = 0xFFFFFFFF
SELU_ALPHA_PRIME = 1.7580993408473766  # lambda * alpha of SELU, as torch writes it

# Random123's kat_vectors for philox4x32 with 10 rounds: counter, key -> output.
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((LOW, LOW, LOW, LOW), (LOW, LOW), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]

# Hypothesis, derandomized and bounded: the same examples on every run, no database, no deadline
# (a 2-core machine shared by several jobs times nothing reliably).
FAST = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
U64 = 2**64


def philox(counter: tuple[int, ...], key: tuple[int, ...], rounds: int = 10) -> tuple[int, int, int, int]:
    """Philox4x32 on four 32-bit counter words and two key words, as Salmon et al. define it."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for _ in range(rounds):
        product0, product1 = M0 * c0, M1 * c2
        c0, c1, c2, c3 = (
            (product1 >> 32) ^ c1 ^ k0,
            product1 & LOW,
            (product0 >> 32) ^ c3 ^ k1,
            product0 & LOW,
        )
        k0, k1 = (k0 + W0) & LOW, (k1 + W1) & LOW
    return c0, c1, c2, c3


def bits(seed: int, stream: int, index: int) -> int:
    """The contract's 32-bit word of element ``index``."""
    block = index >> 2
    counter = (block & LOW, block >> 32, stream & LOW, stream >> 32)
    return philox(counter, (seed & LOW, seed >> 32))[index & 3]


def threshold(p: float) -> int:
    """``round_half_even(p * 2**32)`` computed exactly (``Fraction`` rounds half to even)."""
    return round(Fraction(p) * 2**32)


def keep(seed: int, stream: int, index: int, p: float) -> bool:
    return bits(seed, stream, index) >= threshold(p)


def flat_index(position: tuple[int, ...], shape: tuple[int, ...]) -> int:
    """Row-major flat index of ``position`` in ``shape``."""
    index = 0
    for i, n in zip(position, shape, strict=True):
        index = index * n + i
    return index


def keep_list(shape: tuple[int, ...], p: float, seed: int, stream: int) -> list[bool]:
    """``keep`` of every element of ``shape`` in row-major order."""
    return [keep(seed, stream, i, p) for i in range(math.prod(shape))]


def keep_array(shape: tuple[int, ...], p: float, seed: int, stream: int) -> np.ndarray:
    return np.array(keep_list(shape, p, seed, stream), dtype=bool).reshape(shape)


def product(x: float, scale: float, dtype: np.dtype) -> float:
    """``x * scale`` by the contract's rounding rule: formed in float32 (float64 for float64 data)
    with ``scale`` rounded once to that type, then rounded once to the data type.

    Two float32 values multiply exactly in float64 (24 + 24 bits), so one cast rounds the product.
    """
    if dtype == np.float64:
        return x * scale
    wide = float(np.float32(x)) * float(np.float32(scale))
    return float(np.dtype(dtype).type(np.float32(wide)))


def inverted_scale(p: float) -> float:
    return 1.0 if p == 1.0 else 1.0 / (1.0 - p)


def masked(
    x: np.ndarray, p: float, seed: int, stream: int, scale: float, mask_shape: tuple[int, ...] | None = None
) -> np.ndarray:
    """``x * keep * scale`` element by element, the mask drawn over ``mask_shape`` and broadcast.

    Element ``position`` of ``x`` reads the mask at ``position`` with every broadcast dim (size 1 in
    ``mask_shape``) set to 0.
    """
    mask_shape = x.shape if mask_shape is None else mask_shape
    out = np.empty(x.shape, x.dtype)
    for position in itertools.product(*(range(n) for n in x.shape)):
        at = tuple(0 if m == 1 else i for i, m in zip(position, mask_shape, strict=True))
        kept = p != 1.0 and keep(seed, stream, flat_index(at, mask_shape), p)
        out[position] = product(float(x[position]), scale, x.dtype) if kept else 0.0
    return out


def box_muller_noise(n: int, p: float, seed: int, stream: int) -> list[float]:
    """Gaussian dropout's noise ``1 + sqrt(p/(1-p)) z`` of elements ``0 .. n-1`` (float64)."""
    noise = []
    for i in range(n):
        first = i - (i & 1)
        u0 = (bits(seed, stream, first) + 0.5) / 2**32
        u1 = (bits(seed, stream, first + 1) + 0.5) / 2**32
        radius, angle = math.sqrt(-2.0 * math.log(u0)), 2.0 * math.pi * u1
        z = radius * (math.sin(angle) if i & 1 else math.cos(angle))
        noise.append(1.0 + math.sqrt(p / (1.0 - p)) * z)
    return noise
