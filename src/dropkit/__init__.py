"""dropkit: dropout done right.

A readable NumPy reference (``Dropout``, ``dropout``), the counter-based mask contract it draws
from (``philox4x32``, ``random_bits``, ``keep_mask``), and, in ``dropkit.torch``, PyTorch layers
that draw the very same masks and store none of them for backward.
"""

from dropkit.layers import Dropout, dropout
from dropkit.philox import keep_mask, philox4x32, random_bits

__all__ = ["Dropout", "dropout", "keep_mask", "philox4x32", "random_bits"]
__version__ = "0.1.0"
