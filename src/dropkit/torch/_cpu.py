"""CPU implementation of the dropout op: the NumPy kernels on zero-copy views of torch tensors.

float16, float32 and float64 go through :func:`dropkit.kernels.dropout_apply`, the dispatcher that
picks the fastest CPU path. bfloat16 has no NumPy dtype, so its mask comes from
:func:`dropkit.philox.keep_range` and the product is formed in float32 with torch ops, rounded once
to bfloat16 -- the rounding rule of :mod:`dropkit.kernels.reference`.
"""

from __future__ import annotations

import numpy as np
import torch

from dropkit.kernels import dropout_apply as _numpy_dropout_apply
from dropkit.philox import keep_range


def dropout_apply(
    x: torch.Tensor, p: float, *, seed: int, stream: int, scale: float, start: int, out: torch.Tensor
) -> torch.Tensor:
    """``out[i] = keep(start + i) ? x[i] * scale : 0`` over the row-major flat index ``i``.

    Args:
        x: contiguous CPU tensor, float16, bfloat16, float32 or float64.
        out: contiguous CPU tensor of ``x``'s shape and dtype, written in full.
    """
    if x.dtype == torch.bfloat16:
        keep = torch.from_numpy(keep_range(p, seed, stream, start, x.numel())).view(x.shape)
        scaled = x.float().mul_(float(np.float32(scale)))  # x * scale formed in float32 ...
        return out.copy_(torch.where(keep, scaled, 0.0))  # ... and rounded once to bfloat16
    # detach(): .numpy() refuses tensors that require grad, and the kernel is below autograd anyway.
    _numpy_dropout_apply(
        x.detach().numpy(), p, seed=seed, stream=stream, scale=scale, start=start, out=out.detach().numpy()
    )
    return out
