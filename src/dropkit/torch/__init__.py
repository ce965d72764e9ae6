"""dropkit for PyTorch: drop-in ``Dropout`` / ``dropout`` that store no mask for backward.

Every mask is the contract's ``keep_mask(shape, p, seed=..., stream=...)`` over the logical
row-major index -- on CPU and CUDA, for any strides, eagerly or under ``torch.compile`` -- and
backward regenerates it from ``(seed, stream)``. Importing this package registers the
``dropkit::dropout`` custom op; ``import dropkit`` alone does not import torch.
"""

from __future__ import annotations

from dropkit.torch import functional
from dropkit.torch.functional import dropout
from dropkit.torch.modules import Dropout

__all__ = ["Dropout", "dropout", "functional"]
