"""Functional dropout for PyTorch that draws the contract's mask and stores none of it.

Inverted dropout (Srivastava et al., JMLR 2014): in training ``y = x * m / (1 - p)`` with
``m = keep_mask(x.shape, p, seed=seed, stream=stream)`` over the logical row-major index, and
``dL/dx = dL/dy * m / (1 - p)``; at inference ``y = x``. Backward regenerates ``m`` from
``(seed, stream)``, so autograd keeps three numbers where ``torch.nn.functional.dropout`` keeps a
mask (see :mod:`dropkit.torch._ops`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from dropkit._validation import check_probability, check_uint64
from dropkit.layers import inverted_scale as training_scale
from dropkit.torch import _ops, distributed

__all__ = ["dropout"]


def check_input(input: Tensor) -> None:
    """Raise ``TypeError`` unless ``input`` is a float16, bfloat16, float32 or float64 tensor."""
    if not isinstance(input, Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(input).__name__}")
    if input.dtype not in _ops.FLOAT_DTYPES:
        accepted = "float16, bfloat16, float32 or float64"
        raise TypeError(f"input must be a floating-point tensor ({accepted}), got {input.dtype}")


def check_inplace(input: Tensor, inplace: bool) -> None:
    """Raise torch's in-place error now, before a seed is drawn or a stream taken."""
    if not (inplace and input.requires_grad and torch.is_grad_enabled()):
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


def masked(
    input: Tensor,
    p: float,
    inplace: bool,
    seed: int | None,
    stream: int | Tensor,
    location: distributed.Location | None = None,
) -> Tensor:
    """The training branch, inputs already checked: ``input * keep * scale`` (into ``input`` if inplace).

    ``seed=None`` draws a fresh seed; ``stream`` is a 0-d int64 tensor only for a compiled module's
    call counter. Run-time values like those go through the keyed op (see :mod:`dropkit.torch._ops`).
    ``location`` (from :func:`dropkit.torch.distributed.locate`) places ``input`` in a global tensor.
    """
    scale = training_scale(p)
    if location is not None:
        return distributed.masked(input, p, scale, inplace, seed, stream, location)
    if isinstance(stream, Tensor) or (seed is None and torch.compiler.is_compiling()):
        output = _ops.dropout_keyed_op(input, _ops.key_tensor(seed, stream), p, scale, 0)
    else:
        seed = _ops.fresh_seed() if seed is None else seed
        output = _ops.dropout_op(input, p, _ops.to_signed(seed), _ops.to_signed(stream), scale, 0)
    return input.copy_(output) if inplace else output


def dropout(
    input: Tensor,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    seed: int | None = None,
    stream: int | None = None,
    noise_shape: Sequence[int | None] | None = None,
    global_shape: Sequence[int] | None = None,
    offsets: Sequence[int] | None = None,
) -> Tensor:
    """Drop-in for ``torch.nn.functional.dropout`` whose mask is ``keep_mask(input.shape, p, ...)``.

    ``y = input * keep_mask(input.shape, p, seed=seed, stream=stream) / (1 - p)`` in training; not
    training, ``p == 0`` or an empty input returns ``input`` itself; ``p == 1`` gives zeros (and a
    zero gradient). The product is formed in float32 (float64 for float64 input) and rounded once.

    Args:
        input: float16, bfloat16, float32 or float64 tensor on CPU or CUDA, any shape and strides.
        p: probability of *dropping* an element, in [0, 1] (not the keep rate).
        training: apply dropout (True) or return ``input`` (False).
        inplace: write the result into ``input`` (not on a leaf that requires grad, as in torch).
        seed: unsigned 64-bit seed naming the mask; ``None`` draws a fresh 63-bit seed from torch's
            default CPU generator on every call, so ``torch.manual_seed`` reproduces it.
        stream: unsigned 64-bit stream (default 0); needs an explicit ``seed``.
        noise_shape: Keras' mask shape: ``input``'s rank, each entry 1 (the mask is shared along that
            dim), ``None`` or the input's size (the global tensor's, for a shard); the mask is drawn
            over it and broadcast.
        global_shape, offsets: ``input`` is the slice at ``offsets`` of a global tensor of
            ``global_shape``, and draws that slice of the global mask (see docs/distributed.md).

    Shape: output has ``input``'s shape, dtype, device and stride order (dense).

    >>> dropout(torch.ones(2, 4), 0.5, seed=0)
    tensor([[0., 2., 2., 2.],
            [2., 0., 2., 0.]])
    >>> dropout(torch.ones(2, 4), 0.5, seed=0, noise_shape=(None, 1))
    tensor([[0., 0., 0., 0.],
            [2., 2., 2., 2.]])
    """
    if noise_shape is not None:
        return _variants.noise_shape_dropout(
            input, p, training, inplace, noise_shape, seed, stream, global_shape, offsets
        )
    p = check_probability(p)
    check_input(input)
    seed, stream = check_seed_and_stream(seed, stream)
    location = distributed.locate(input, global_shape, offsets)
    if not training or p == 0.0 or input.numel() == 0:
        return input
    check_inplace(input, inplace)
    return masked(input, p, inplace, seed, stream, location)


# The variants build on the helpers above, so they are imported last.
from dropkit.torch import _variants  # noqa: E402
from dropkit.torch._variants import (  # noqa: E402
    alpha_dropout,
    channel_dropout,
    drop_block2d,
    drop_path,
    dropout1d,
    dropout2d,
    dropout3d,
    feature_alpha_dropout,
    gaussian_dropout,
    locked_dropout,
)

__all__ += [
    "alpha_dropout",
    "channel_dropout",
    "drop_block2d",
    "drop_path",
    "dropout1d",
    "dropout2d",
    "dropout3d",
    "feature_alpha_dropout",
    "gaussian_dropout",
    "locked_dropout",
]

# Attention dropout builds on the seed checks above, so it is imported last too.
from dropkit.torch._attention import scaled_dot_product_attention  # noqa: E402

__all__ += ["scaled_dot_product_attention"]
