"""Functional dropout for PyTorch: drop-ins for ``torch.nn.functional.dropout*`` and the variants.

Every function draws the contract's mask (docs/contract.md) and stores none of it: backward
regenerates it from ``(seed, stream)``. The implementations live by family, twins of the NumPy
reference's files: :mod:`~dropkit.torch._layers` (dropout, locked, drop path),
:mod:`~dropkit.torch._channel` (channel dropout), :mod:`~dropkit.torch._noise` (Gaussian, alpha),
:mod:`~dropkit.torch._dropblock` (DropBlock).
"""

from __future__ import annotations

from dropkit.torch._attention import scaled_dot_product_attention
from dropkit.torch._channel import channel_dropout, dropout1d, dropout2d, dropout3d
from dropkit.torch._dropblock import drop_block2d
from dropkit.torch._layers import drop_path, dropout, locked_dropout
from dropkit.torch._noise import alpha_dropout, feature_alpha_dropout, gaussian_dropout

__all__ = [
    "alpha_dropout",
    "channel_dropout",
    "drop_block2d",
    "drop_path",
    "dropout",
    "dropout1d",
    "dropout2d",
    "dropout3d",
    "feature_alpha_dropout",
    "gaussian_dropout",
    "locked_dropout",
    "scaled_dot_product_attention",
]
