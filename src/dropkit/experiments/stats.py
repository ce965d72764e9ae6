"""Numbers across seeds: mean ± sd, and the paired difference of two runs with a t confidence interval.

Each seed trains both runs from the same initial weights and batch order, so the per-seed difference
``d_s = a_s - b_s`` removes what the seed does to both; its mean has the interval
``mean(d) ± t_{0.975, n-1} · sd(d) / sqrt(n)`` (Student's t, ``n`` seeds, ``sd`` with ``n - 1``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["PairedDifference", "Spread", "paired_difference", "spread", "t_quantile_975"]

# Student's t 0.975 quantiles for 1..30 degrees of freedom (4 decimals, as printed in every table).
_T975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)  # fmt: skip
_Z975 = 1.959963984540054


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (two-sided 95 %).

    A table up to 30, then the Cornish–Fisher expansion in ``1/df`` (error below 1e-5 there).

    >>> t_quantile_975(4), round(t_quantile_975(100), 4)
    (2.7764, 1.984)
    """
    if df < 1:
        raise ValueError(f"df must be a positive integer, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    return z + g1 / df + g2 / df**2 + g3 / df**3


@dataclass(frozen=True)
class Spread:
    """Mean and sample standard deviation (``n - 1``; NaN for one value) of ``n`` values.

    >>> str(spread([0.5, 0.7]))
    '0.6000 ± 0.1414'
    """

    mean: float
    sd: float
    n: int

    def __str__(self) -> str:
        return self.format()

    def format(self, scale: float = 1.0, digits: int = 4) -> str:
        """``mean ± sd`` with both multiplied by ``scale`` (100 for points); ``mean`` alone for n = 1."""
        if self.n < 2:
            return f"{self.mean * scale:.{digits}f}"
        return f"{self.mean * scale:.{digits}f} ± {self.sd * scale:.{digits}f}"

    def as_dict(self) -> dict[str, float]:
        """The fields as a plain dict."""
        return asdict(self)


def spread(values: Sequence[float]) -> Spread:
    """Mean and sample standard deviation of ``values`` (at least one)."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"values must be a non-empty 1-d sequence, got shape {array.shape}")
    sd = float(array.std(ddof=1)) if array.size > 1 else math.nan
    return Spread(float(array.mean()), sd, int(array.size))


@dataclass(frozen=True)
class PairedDifference:
    """``d_s = a_s - b_s`` over seeds: mean, sd, the 95 % t interval of the mean and the signs.

    ``low``/``high`` are NaN for a single seed: one difference says nothing about the noise.
    """

    mean: float
    sd: float
    n: int
    low: float
    high: float
    positive: int  # seeds with d > 0
    negative: int  # seeds with d < 0

    @property
    def beyond_noise(self) -> bool:
        """Whether the 95 % interval excludes 0 (needs two seeds or more)."""
        return self.n > 1 and (self.low > 0 or self.high < 0)

    def format(self, scale: float = 1.0, digits: int = 4) -> str:
        """``+mean ± sd [low, high]`` times ``scale``; ``+mean`` alone for one seed."""
        if self.n < 2:
            return f"{self.mean * scale:+.{digits}f}"
        return (
            f"{self.mean * scale:+.{digits}f} ± {self.sd * scale:.{digits}f} "
            f"[{self.low * scale:+.{digits}f}, {self.high * scale:+.{digits}f}]"
        )

    def as_dict(self) -> dict[str, float | int | bool]:
        """The fields and ``beyond_noise`` as a plain dict."""
        return {**asdict(self), "beyond_noise": self.beyond_noise}


def paired_difference(a: Sequence[float], b: Sequence[float]) -> PairedDifference:
    """The paired difference ``a - b`` (one pair per seed) with its 95 % t interval.

    >>> d = paired_difference([0.810, 0.832, 0.821], [0.80, 0.82, 0.81])  # d = 0.010, 0.012, 0.011
    >>> round(d.mean, 4), round(d.low, 4), round(d.high, 4), d.beyond_noise, (d.positive, d.negative)
    (0.011, 0.0085, 0.0135, True, (3, 0))
    """
    a_array, b_array = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a_array.shape != b_array.shape:
        raise ValueError(f"a and b must pair up, got {a_array.shape} and {b_array.shape}")
    d = a_array - b_array
    s = spread(d)
    if s.n > 1:
        half = t_quantile_975(s.n - 1) * s.sd / math.sqrt(s.n)
        low, high = s.mean - half, s.mean + half
    else:
        low = high = math.nan
    return PairedDifference(s.mean, s.sd, s.n, low, high, int(np.sum(d > 0)), int(np.sum(d < 0)))
