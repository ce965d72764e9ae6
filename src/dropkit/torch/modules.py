"""Dropout modules for PyTorch: drop-ins for ``torch.nn.Dropout`` and friends, and the variants.

Randomness: with ``seed=None`` every training call draws a fresh seed from torch's default CPU
generator (stream 0); with an explicit ``seed`` the k-th training call uses stream k. Every module is
a :class:`~dropkit.torch._base.Stochastic` (``stochastic = True``, so :func:`dropkit.torch.mc_dropout`
turns it on), except the weight wrappers, which hold one per weight.
"""

from __future__ import annotations

from dropkit.torch._channel import Dropout1d, Dropout2d, Dropout3d
from dropkit.torch._dropblock import DropBlock2d
from dropkit.torch._dropconnect import DropConnectLinear, WeightDrop
from dropkit.torch._layers import Dropout, DropPath, LockedDropout
from dropkit.torch._noise import AlphaDropout, FeatureAlphaDropout, GaussianDropout

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
    "WeightDrop",
]
