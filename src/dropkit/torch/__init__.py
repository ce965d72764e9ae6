"""dropkit for PyTorch: drop-in ``Dropout`` / ``dropout`` that store no mask for backward.

Every mask is the contract's ``keep_mask(shape, p, seed=..., stream=...)`` over the logical
row-major index -- on CPU and CUDA, for any strides, eagerly or under ``torch.compile`` -- and
backward regenerates it from ``(seed, stream)``. The variants (channel, locked, drop-path, Gaussian,
alpha, DropBlock, DropConnect, weight drop; see docs/variants.md) and MC dropout live here too.
Importing this package registers the ``dropkit::`` custom ops; ``import dropkit`` alone does not
import torch.
"""

from __future__ import annotations

try:
    import torch as _torch  # noqa: F401
except ModuleNotFoundError as error:  # torch itself missing (not a broken dependency of it): say what to do
    if error.name != "torch":
        raise
    raise ImportError("dropkit.torch needs PyTorch: pip install 'dropkit[torch]'") from None

from dropkit.torch import functional, timm, torchvision
from dropkit.torch._attention import ScaledDotProductAttention
from dropkit.torch._revert import revert
from dropkit.torch.convert import convert
from dropkit.torch.functional import dropout
from dropkit.torch.mc import mc_dropout, mc_predict
from dropkit.torch.modules import (
    AlphaDropout,
    DropBlock2d,
    DropConnectLinear,
    Dropout,
    Dropout1d,
    Dropout2d,
    Dropout3d,
    DropPath,
    FeatureAlphaDropout,
    GaussianDropout,
    LockedDropout,
    WeightDrop,
)
from dropkit.torch.routing import route_dropout

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
    "convert",
    "dropout",
    "functional",
    "mc_dropout",
    "mc_predict",
    "revert",
    "route_dropout",
    "timm",
    "torchvision",
]
