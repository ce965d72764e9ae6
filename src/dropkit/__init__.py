"""dropkit: dropout done right.

A readable NumPy reference (``Dropout``, ``dropout``), the counter-based mask contract it draws
from (``philox4x32``, ``random_bits``, ``keep_mask``), and, in ``dropkit.torch``, PyTorch layers
that draw the very same masks and store none of them for backward.
"""

from dropkit.attention import attention, attention_backward
from dropkit.dropblock import DropBlock2d, drop_block2d
from dropkit.dropconnect import DropConnectLinear
from dropkit.layers import (
    ChannelDropout,
    Dropout,
    DropPath,
    LockedDropout,
    channel_dropout,
    drop_path,
    dropout,
    locked_dropout,
)
from dropkit.noise import AlphaDropout, GaussianDropout, alpha_dropout, gaussian_dropout
from dropkit.philox import keep_mask, philox4x32, random_bits

__all__ = [
    "AlphaDropout",
    "ChannelDropout",
    "DropBlock2d",
    "DropConnectLinear",
    "DropPath",
    "Dropout",
    "GaussianDropout",
    "LockedDropout",
    "alpha_dropout",
    "attention",
    "attention_backward",
    "channel_dropout",
    "drop_block2d",
    "drop_path",
    "dropout",
    "gaussian_dropout",
    "keep_mask",
    "locked_dropout",
    "philox4x32",
    "random_bits",
]
__version__ = "0.1.0"
