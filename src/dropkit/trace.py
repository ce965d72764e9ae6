"""The worked trace printed by ``dropkit trace`` (and ``python -m dropkit``): dropout by hand."""

from __future__ import annotations

import numpy as np

from dropkit.layers import Dropout
from dropkit.philox import random_bits


def _show(array: np.ndarray) -> str:
    return np.array2string(np.asarray(array), separator=", ", max_line_width=200)


def worked_trace(seed: int = 0) -> str:
    """Forward and backward of inverted and classic dropout, step by step, as text."""
    lines = ["Inverted dropout, p = 0.5: kept elements are scaled by 1/(1 - p) = 2", ""]
    layer = Dropout(0.5, seed=seed)
    x, mask = np.array([[1.0, 2.0, 3.0, 4.0]]), np.array([[1, 0, 1, 1]])
    y = layer.forward(x, mask=mask)
    lines += [
        f"  x                  = {_show(x)}",
        f"  mask (given)       = {_show(mask)}",
        f"  y = x * mask * 2   = {_show(y)}",
        f"  dL/dy              = {_show(np.ones_like(x))}",
        f"  dL/dx = dL/dy*m*2  = {_show(layer.backward(np.ones_like(x)))}",
        "",
    ]
    x, mask, grad = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1, 0, 1, 0]), np.array([0.1, 0.2, 0.3, 0.4])
    y = layer.forward(x, mask=mask)
    lines += [
        f"  x                  = {_show(x)}",
        f"  mask (given)       = {_show(mask)}",
        f"  y                  = {_show(y)}",
        f"  dL/dy              = {_show(grad)}",
        f"  dL/dx              = {_show(layer.backward(grad))}",
        f"  inference: y = x   = {_show(layer.forward(x, training=False))}",
        "",
        f"Drawing the mask from the contract: Dropout(0.5, seed={seed}), first training call (stream 0)",
        "",
    ]
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    bits = random_bits(seed, 0, np.arange(x.size))
    y = layer.forward(x)
    lines += [
        f"  Philox words       = [{', '.join(f'{int(w):08x}' for w in bits)}]",
        f"  keep if >= 80000000 = {_show((bits >= 2**31).astype(int))}   (t = round(0.5 * 2**32))",
        f"  y                  = {_show(y)}",
        f"  dL/dx for dL/dy=1  = {_show(layer.backward(np.ones_like(x)))}  (replayed from seed, stream)",
        "",
        "Classic dropout, p = 0.5: no scale in training, multiply by 1 - p at inference",
        "",
    ]
    classic = Dropout(0.5, mode="classic", seed=seed)
    x, mask = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1, 0, 1, 0])
    lines += [
        f"  x                  = {_show(x)}",
        f"  training, mask     = {_show(mask)} -> y = {_show(classic.forward(x, mask=mask))}",
        f"  inference          = y = x * 0.5 = {_show(classic.forward(x, training=False))}",
    ]
    return "\n".join(lines)
