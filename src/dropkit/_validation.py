"""Input checks shared by every entry point: one helper per kind of argument, one message each.

Every check runs before any state changes, so a rejected call leaves layers and arrays as they were.
"""

from __future__ import annotations

import math
import numbers
import re
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

UINT64_LIMIT = 2**64
FLOAT_MAX = sys.float_info.max  # a bound for real numbers that must become floats (an int can exceed it)
MODES = ("inverted", "classic")
_SHOWN_DIGITS = 40  # longer integers are shown by their size (and Python refuses str() past 4300 digits)
_SHOWN_CHARS = 80


def shown(value: Any) -> str:
    """``value`` for an error message: one line, at most ~80 characters, never raising.

    Numbers print as ``str`` does (``1.5``, ``nan``), an integer too long to read by its bit length,
    a sequence element by element, anything else by a shortened ``repr``.

    >>> print(shown(10**5000), shown((2, -1, 2**5000)), shown(np.zeros((2, 2))), sep="; ")
    an integer of 16610 bits; (2, -1, an integer of 5001 bits); array([[0., 0.], [0., 0.]])
    """
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
        number = int(value)
        if abs(number) >= 10**_SHOWN_DIGITS:
            return f"{'a negative' if number < 0 else 'an'} integer of {number.bit_length()} bits"
        return str(number)
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
        text = str(value)
    elif isinstance(value, (tuple, list)):
        inner = ", ".join([shown(item) for item in value[:8]] + ["..."] * (len(value) > 8))
        text = f"({inner}{',' if len(value) == 1 else ''})" if isinstance(value, tuple) else f"[{inner}]"
    else:
        try:
            text = repr(value)
        except Exception:  # a repr that fails (huge ints inside, a broken __repr__) still names the type
            text = f"<{type(value).__name__}>"
    text = re.sub(r"\s*\n\s*", " ", text)  # an array's repr spans lines; a message must not
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def one_line(text: str) -> str:
    r"""``text`` on one line, for a message: a newline inside (a path, an argument) shows as ``\n``.

    >>> print(one_line("cannot write a\nb"))
    cannot write a\nb
    """
    return text.replace("\r", "\\r").replace("\n", "\\n")


def check_probability(p: Any, name: str = "p") -> float:
    """Return ``p`` as a float in [0, 1]; raise ``TypeError``/``ValueError`` otherwise.

    The message is PyTorch's, so code that matches torch's error keeps working.
    """
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"{name} must be a real number in [0, 1], got {type(p).__name__}")
    # A comparison, not math.isnan: NaN fails it too, and under torch.compile a p that changes between
    # calls is a symbolic float, which comparisons guard on and math.isnan cannot trace.
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {shown(p)}")
    return float(p)


def check_dims(name: str, value: Any) -> tuple[int, ...]:
    """``value`` as a tuple of non-negative Python ints (a shape or a list of offsets)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a sequence of non-negative ints, got {type(value).__name__}")
    dims = tuple(value)
    if any(isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 0 for d in dims):
        raise ValueError(f"{name} must be a sequence of non-negative ints, got {shown(dims)}")
    return tuple(int(d) for d in dims)


def check_uint64(name: str, value: Any) -> int:
    """Return ``value`` as a Python int in [0, 2**64) (seeds, streams, offsets)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer in [0, 2**64), got {type(value).__name__}")
    value = int(value)
    if not 0 <= value < UINT64_LIMIT:
        raise ValueError(f"{name} must be an integer in [0, 2**64), got {shown(value)}")
    return value


def check_key(seed: Any, stream: Any) -> tuple[int, int]:
    """``(seed, stream)`` checked as unsigned 64-bit integers, whatever ``p`` and the mode make of them.

    Every functional form calls it first, so a bad seed is an error even where nothing is drawn
    (``p == 0``, ``p == 1``, inference), as in the torch face.
    """
    return check_uint64("seed", seed), check_uint64("stream", stream)


def check_finite(name: str, value: Any, *, finite: bool = True) -> float:
    """Return ``value`` as a float: a real number, finite unless ``finite=False`` (a kernel's ``scale``,
    which no element meets at ``p == 1``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a finite real number, got {type(value).__name__}")
    in_range = -FLOAT_MAX <= value <= FLOAT_MAX  # a comparison: NaN fails it, and huge ints need no float()
    if finite and not in_range:
        raise ValueError(f"{name} must be a finite real number, got {shown(value)}")
    return float(value) if in_range or isinstance(value, float) else (math.inf if value > 0 else -math.inf)


def check_positive_int(name: str, value: Any, *, limit: int | None = None) -> int:
    """Return ``value`` as a Python int in ``[1, limit)`` (any integer type: ``np.int64`` too)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {shown(value)}")
    if limit is not None and value >= limit:
        raise ValueError(f"{name} must be a positive int below {limit}, got {shown(value)}")
    return int(value)


def check_noise_shape(noise_shape: Any) -> tuple[int | None, ...] | None:
    """``noise_shape`` as a tuple of ``None`` and non-negative ints (or ``None``), before x is seen."""
    if noise_shape is None:
        return None
    if isinstance(noise_shape, (str, bytes)) or not isinstance(noise_shape, Sequence):
        raise TypeError(
            f"noise_shape must be a sequence of ints and None (or None), got {type(noise_shape).__name__}"
        )
    noise = tuple(noise_shape)
    if any(
        n is not None and (isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0) for n in noise
    ):
        raise ValueError(f"noise_shape entries must be 1, None or x's size, got {shown(noise)}")
    return tuple(None if n is None else int(n) for n in noise)


def check_mode(mode: Any) -> str:
    """Return ``mode`` if it is ``"inverted"`` or ``"classic"``."""
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"mode must be 'inverted' or 'classic', got {shown(mode)}")
    return mode


def check_float_array(name: str, x: Any) -> np.ndarray:
    """Return ``x`` as a floating-point ndarray (float16, float32 or float64), without copying."""
    try:
        array = x if isinstance(x, np.ndarray) else np.asarray(x)
    except (TypeError, ValueError, RuntimeError):  # ragged lists, a tensor that requires grad, ...
        raise TypeError(
            f"{name} must be a floating-point array (float16, float32 or float64), got {type(x).__name__}"
        ) from None
    if array.dtype not in (np.float16, np.float32, np.float64):
        raise TypeError(
            f"{name} must be a floating-point array (float16, float32 or float64), got dtype {array.dtype}"
        )
    return array


def check_keep_mask(mask: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Return a caller-supplied 0/1 keep mask as a bool array of the mask shape ``shape``.

    Size-1 dimensions of the mask shape may be left out: ``(N, C)`` for channel dropout's
    ``(N, C, 1, 1)``.
    """
    array = np.asarray(mask)
    squeezed = tuple(d for d in shape if d != 1)
    if array.shape != tuple(shape) and tuple(d for d in array.shape if d != 1) != squeezed:
        raise ValueError(
            f"mask must have the mask shape {tuple(shape)} (the shape of x for plain dropout), "
            f"got {shown(array.shape)}"
        )
    array = array.reshape(shape)
    if array.dtype != np.bool_:
        if array.dtype.kind not in "iuf" or not np.isin(array, (0, 1)).all():
            raise ValueError("mask must contain only 0 and 1 (or be a bool array)")
        array = array.astype(bool)
    return array


def check_count(name: str, value: Any, *, minimum: int = 1) -> int:
    """Return ``value`` as a Python int >= ``minimum`` (layer sizes, epochs, batch sizes, sample counts)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {kind}, got {shown(value)}")
    return int(value)


def check_positive_finite(name: str, value: Any) -> float:
    """Return ``value`` as a float that is finite and > 0 (learning rates)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value <= FLOAT_MAX:
        raise ValueError(f"{name} must be a positive finite number, got {shown(value)}")
    return float(value)


def check_shard_arguments(global_shape: Any, offsets: Any) -> bool:
    """Whether ``global_shape`` and ``offsets`` describe a shard: both given, or neither (False)."""
    if (global_shape is None) != (offsets is None):
        raise ValueError(
            f"global_shape and offsets go together: got global_shape={shown(global_shape)}, "
            f"offsets={shown(offsets)}"
        )
    return global_shape is not None


def check_index(name: str, value: Any, limit: int | None = None) -> int:
    """``value`` as an int in ``[0, limit)`` (``[0, inf)`` without a limit): ranks, sizes, dims."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0 or (limit is not None and value >= limit):
        bound = "" if limit is None else f", below {limit}"
        raise ValueError(f"{name} must be a non-negative int{bound}, got {value}")
    return int(value)
