"""Apply a dropout mask to an array: the one place every NumPy entry point goes through.

``dropout_apply`` picks the fastest available path for the array; every path draws the
contract's mask (see :mod:`dropkit.philox`) and rounds as :func:`scale_kept` does.
"""

from __future__ import annotations

from dropkit.kernels.reference import dropout_apply, scale_kept

__all__ = ["dropout_apply", "scale_kept"]
