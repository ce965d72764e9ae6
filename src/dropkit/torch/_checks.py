"""The torch face's argument checks: input tensors, in-place writes, seeds and streams.

A leaf: it imports nothing of ``dropkit.torch``, so every room of the torch face can use it. Every
check runs before a seed is drawn or a stream taken, so a rejected call moves no state.

Seeds and streams are unsigned 64-bit in the contract while custom-op integers are signed 64-bit,
so they cross the op boundary reinterpreted two's-complement (:func:`to_signed`, :func:`to_unsigned`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from dropkit._validation import check_uint64

__all__ = [
    "FLOAT_DTYPES",
    "check_feature_rank",
    "check_inplace",
    "check_input",
    "check_seed_and_stream",
    "to_signed",
    "to_unsigned",
    "wide_of",
]

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)  # what every kernel takes


def wide_of(dtype: torch.dtype) -> torch.dtype:
    """The type products are formed in: float64 for float64 data, float32 otherwise (the contract)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


_UINT64 = 2**64


def to_signed(value: int) -> int:
    """An unsigned 64-bit integer as the int64 with the same bits."""
    return value - _UINT64 if value >= 2**63 else value


def to_unsigned(value: int) -> int:
    """An int64 as the unsigned 64-bit integer with the same bits."""
    return value % _UINT64


def check_input(input: Tensor) -> None:
    """Raise ``TypeError`` unless ``input`` is a float16, bfloat16, float32 or float64 tensor."""
    if not isinstance(input, Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(input).__name__}")
    if input.dtype not in FLOAT_DTYPES:
        accepted = "float16, bfloat16, float32 or float64"
        raise TypeError(f"input must be a floating-point tensor ({accepted}), got {input.dtype}")


def check_feature_rank(rank: int, p: float, training: bool, numel: int) -> None:
    """torch's feature-dropout rank check, where ATen makes it: only when noise is drawn (training,
    ``0 < p < 1``, a non-empty input); ``rank`` is the rank torch draws the noise for."""
    if rank < 2 and training and 0.0 < p < 1.0 and numel > 0:
        raise RuntimeError("Feature dropout requires at least 2 dimensions in the input")


def check_inplace(input: Tensor, inplace: bool) -> None:
    """Raise torch's in-place error now, before a seed is drawn or a stream taken (torch's own dropout
    raises some of them after writing)."""
    if not inplace:
        return
    if input.is_inference() and not torch.is_inference_mode_enabled():
        raise RuntimeError(
            "Inplace update to inference tensor outside InferenceMode is not allowed.You can make a "
            "clone to get a normal tensor before doing inplace update.See "
            "https://github.com/pytorch/rfcs/pull/17 for more details."
        )  # torch's own message, word for word
    if any(stride == 0 and size > 1 for stride, size in zip(input.stride(), input.shape, strict=True)):
        raise RuntimeError(
            "unsupported operation: more than one element of the written-to tensor refers to a single "
            "memory location. Please clone() the tensor before performing the operation."
        )  # torch's own message (an expanded input), word for word
    if not (input.requires_grad and torch.is_grad_enabled()):
        return
    base = input._base
    if input.is_leaf and base is not None and base.requires_grad and not base.is_leaf:  # a no_grad view
        raise RuntimeError(
            "a view was created in no_grad mode and is being modified in-place with grad mode enabled."
        )
    if input.is_leaf:
        raise RuntimeError("a leaf Variable that requires grad is being used in an in-place operation.")
    if base is not None and base.is_leaf:
        raise RuntimeError(
            "a view of a leaf Variable that requires grad is being used in an in-place operation."
        )


def check_seed_and_stream(seed: int | None, stream: int | None) -> tuple[int | None, int]:
    """Checked ``(seed, stream)``: unsigned 64-bit; a stream needs an explicit seed; stream defaults to 0."""
    if seed is None:
        if stream is not None:
            raise ValueError(f"stream needs an explicit seed: got seed=None, stream={stream}")
        return None, 0
    return check_uint64("seed", seed), 0 if stream is None else check_uint64("stream", stream)
