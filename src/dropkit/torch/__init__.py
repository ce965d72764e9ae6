"""dropkit for PyTorch: drop-in ``Dropout`` / ``dropout`` that store no mask for backward.

Every mask is the contract's ``keep_mask(shape, p, seed=..., stream=...)`` over the logical
row-major index -- on CPU and CUDA, for any strides, eagerly or under ``torch.compile`` -- and
backward regenerates it from ``(seed, stream)``. The variants (channel, locked, drop-path, Gaussian,
alpha, DropBlock, DropConnect, weight drop; see docs/variants.md) and MC dropout live here too.
Importing this package registers the ``dropkit::`` custom ops; ``import dropkit`` alone does not
import torch.
"""

from __future__ import annotations

from dropkit.torch import functional
from dropkit.torch._attention import ScaledDotProductAttention
from dropkit.torch._variant_modules import (
    AlphaDropout,
    DropBlock2d,
    DropConnectLinear,
    Dropout1d,
    Dropout2d,
    Dropout3d,
    DropPath,
    FeatureAlphaDropout,
    GaussianDropout,
    LockedDropout,
    WeightDrop,
)
from dropkit.torch.functional import dropout
from dropkit.torch.mc import mc_dropout, mc_predict
from dropkit.torch.modules import Dropout

__all__ = [
    "AlphaDropout",
    "DropBlock2d",
    "DropConnectLinear",
    "DropPath",
    "Dropout",
    "Dropout1d",
    "Dropout2d",
    "Dropout3d",
    "FeatureAlphaDropout",
    "GaussianDropout",
    "LockedDropout",
    "ScaledDotProductAttention",
    "WeightDrop",
    "dropout",
    "functional",
    "mc_dropout",
    "mc_predict",
]
