"""Channel dropout for PyTorch as functions and modules: the twin of the channel family of
:mod:`dropkit.layers`, mask for mask.

``y = x * m / (1 - p)`` with ``m = keep_mask((N, C, 1, ...), p, seed, stream)`` broadcast over the
spatial dims: whole feature maps are dropped. Backward regenerates ``m`` from ``(seed, stream)``.

Two faces of it: :func:`channel_dropout` (dropkit's own: ``spatial_dims`` and the rank say the layout,
anything else is a ``ValueError``), and torch's names ``dropout1d/2d/3d`` and ``Dropout1d/2d/3d``, which
follow torch 2.13 exactly -- its errors, its warnings, and its reading of the shape (a 3-D input to
``dropout2d`` is ``(N, C, L)``; ``dropout3d`` of anything but 5-D prepends a batch of one).
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from dropkit._validation import check_probability
from dropkit.layers import Shape, channel_mask_shape, feature_mask_shape, inverted_scale
from dropkit.torch._base import Apply, Stochastic, run, traceable
from dropkit.torch._checks import check_feature_rank, check_input
from dropkit.torch._layers import bernoulli_plan
from dropkit.torch._placement import place

__all__ = [
    "Dropout1d",
    "Dropout2d",
    "Dropout3d",
    "channel_dropout",
    "dropout1d",
    "dropout2d",
    "dropout3d",
]


def plan_channel(
    input: Tensor,
    p: float,
    inplace: bool,
    spatial_dims: int,
    *,
    global_shape: Sequence[int] | None = None,
    offsets: Sequence[int] | None = None,
) -> Apply:
    """Channel dropout: one mask entry per (sample, channel), shared over ``spatial_dims`` trailing axes."""
    check_input(input)
    placed = place(input, lambda shape: channel_mask_shape(shape, spatial_dims), global_shape, offsets)
    return bernoulli_plan(input, p, placed, inverted_scale(p), inplace)


# torch 2.13's own words (torch/nn/functional.py), so code that matches on them keeps working.
_DROPOUT1D_RANK = (
    "dropout1d: Expected 2D or 3D input, but received a {rank}D input. "
    "Note that dropout1d exists to provide channel-wise dropout on inputs with 1 "
    "spatial dimension, a channel dimension, and an optional batch dimension "
    "(i.e. 2D or 3D inputs)."
)
_DEPRECATED_RANK = (
    "dropout{k}d: Received a {rank}-D input to dropout{k}d, which is deprecated "
    "and will result in an error in a future release. To retain the behavior "
    "and silence this warning, please use dropout instead. Note that dropout{k}d "
    "exists to provide channel-wise dropout on inputs with {k} spatial dimensions, "
    "a channel dimension, and an optional batch dimension (i.e. {batched_less}D or {batched}D inputs)."
)
_DROPOUT2D_3D = (
    "dropout2d: Received a 3D input to dropout2d and assuming that channel-wise "
    "1D dropout behavior is desired - input is interpreted as shape (N, C, L), where C "
    "is the channel dim. This behavior will change in a future release to interpret the "
    "input as one without a batch dimension, i.e. shape (C, H, W). To maintain the 1D "
    "channel-wise dropout behavior, please switch to using dropout1d instead."
)
_INSIDE = (os.path.dirname(os.path.dirname(__file__)) + os.sep, os.path.dirname(torch.__file__) + os.sep)


def _warn(message: str) -> None:
    """A ``UserWarning`` attributed to the first frame outside dropkit and torch: the call of the function
    (where torch's ``stacklevel=2`` points) or of the module, also through ``route_dropout``.

    Not while dynamo traces: it cannot trace ``warnings.warn``, and a graph break would fail
    ``fullgraph=True`` (torch's own function is one opaque graph node, so it warns at run time).
    """
    if torch.compiler.is_compiling():
        return
    frame, level = sys._getframe(1), 2
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_INSIDE):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level)


def _torch_layout(spatial_dims: int, rank: int) -> bool:
    """torch's rank rules of ``dropout{spatial_dims}d``: its ``RuntimeError`` (1d) or warnings (2d, 3d),
    even out of training; True where torch prepends a batch of one (``dropout1d`` of 2-D, ``dropout3d``
    of anything but 5-D)."""
    batched = spatial_dims + 2
    if rank not in (batched - 1, batched):
        if spatial_dims == 1:
            raise RuntimeError(_DROPOUT1D_RANK.format(rank=rank))
        _warn(_DEPRECATED_RANK.format(k=spatial_dims, rank=rank, batched_less=batched - 1, batched=batched))
    if spatial_dims == 2 and rank == 3:
        _warn(_DROPOUT2D_3D)
    return spatial_dims != 2 and rank != batched


def _torch_mask_shape(shape: Shape, unsqueezed: bool) -> Shape:
    """torch's noise shape ``(N, C, 1, ...)``, of ``(1, *shape)`` where torch prepends a batch of one."""
    return feature_mask_shape((1, *shape))[1:] if unsqueezed else feature_mask_shape(shape)


def plan_torch_channel(
    input: Tensor,
    p: float,
    training: bool,
    inplace: bool,
    spatial_dims: int,
    *,
    global_shape: Sequence[int] | None = None,
    offsets: Sequence[int] | None = None,
) -> Apply:
    """torch's ``dropout{spatial_dims}d``: its rank rules, then its feature dropout, one mask entry per
    ``(shape[0], shape[1])`` of the input as torch reads it."""
    check_input(input)
    unsqueezed = _torch_layout(spatial_dims, input.dim())
    check_feature_rank(input.dim() + unsqueezed, p, training, input.numel())
    mask_shape_of = functools.partial(_torch_mask_shape, unsqueezed=unsqueezed)
    placed = place(input, mask_shape_of, global_shape, offsets)
    return bernoulli_plan(input, p, placed, inverted_scale(p), inplace)


def _torch_channel(
    input: Tensor,
    p: float,
    training: bool,
    inplace: bool,
    spatial_dims: int,
    seed: int | None,
    stream: int | None,
    global_shape: Sequence[int] | None,
    offsets: Sequence[int] | None,
) -> Tensor:
    p = check_probability(p)
    apply = plan_torch_channel(
        input, p, training, inplace, spatial_dims, global_shape=global_shape, offsets=offsets
    )
    return run(input, p, training, inplace, seed, stream, apply)


@traceable
def channel_dropout(
    input: Tensor,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    spatial_dims: int = 2,
    seed: int | None = None,
    stream: int | None = None,
    global_shape: Sequence[int] | None = None,
    offsets: Sequence[int] | None = None,
) -> Tensor:
    """Channel dropout: zero whole feature maps (Keras' SpatialDropout; torch's ``dropout1d/2d/3d``
    without their guesses).

    ``y = x * m / (1 - p)`` with ``m = keep_mask((N, C, 1, ...), p, seed, stream)`` broadcast over the
    ``spatial_dims`` trailing dims. Use it after convolutions, where neighbouring activations are
    correlated and element-wise dropout barely regularizes (Tompson et al. 2015).

    Args:
        input: float tensor ``(N, C, *spatial)`` or unbatched ``(C, *spatial)`` with ``spatial_dims``
            spatial dims: the rank says which, nothing is guessed (a 3-D input with ``spatial_dims=2``
            is ``(C, H, W)``).
        p: probability of *dropping* a channel, in [0, 1].
        training, inplace, seed, stream: as in :func:`dropkit.torch.dropout`.
        global_shape, offsets: ``input`` is that slice of a global tensor (docs/distributed.md).
        spatial_dims: 1, 2 or 3, the layouts of torch's ``dropout1d``, ``dropout2d``, ``dropout3d``; any
            other rank is a ``ValueError``, where :func:`dropout2d` and :func:`dropout3d` warn and guess.

    Shape: output has ``input``'s shape.

    >>> channel_dropout(torch.ones(1, 3, 2, 2), 0.5, seed=0)[0, :, 0, 0]
    tensor([0., 2., 2.])
    """
    p = check_probability(p)
    apply = plan_channel(input, p, inplace, spatial_dims, global_shape=global_shape, offsets=offsets)
    return run(input, p, training, inplace, seed, stream, apply)


@traceable
def dropout1d(
    input: Tensor,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    seed: int | None = None,
    stream: int | None = None,
    global_shape: Sequence[int] | None = None,
    offsets: Sequence[int] | None = None,
) -> Tensor:
    """torch's ``F.dropout1d``: channel dropout of ``(N, C, L)`` or unbatched ``(C, L)``, mask ``(N, C, 1)``
    or ``(C, 1)``; any other rank is torch's ``RuntimeError``, also out of training.

    Args:
        p: probability of *dropping* a channel, in [0, 1] (torch's ``ValueError`` otherwise).
        training, inplace, seed, stream: as in :func:`dropkit.torch.dropout`.
        global_shape, offsets: ``input`` is that slice of a global tensor (docs/distributed.md).

    >>> dropout1d(torch.ones(3, 2), 0.5, seed=0)
    tensor([[0., 0.],
            [2., 2.],
            [2., 2.]])
    """
    return _torch_channel(input, p, training, inplace, 1, seed, stream, global_shape, offsets)


@traceable
def dropout2d(
    input: Tensor,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    seed: int | None = None,
    stream: int | None = None,
    global_shape: Sequence[int] | None = None,
    offsets: Sequence[int] | None = None,
) -> Tensor:
    """torch's ``F.dropout2d``, as torch 2.13 reads shapes: mask ``(shape[0], shape[1], 1, ...)`` of any
    input, so ``(N, C, H, W)`` drops channels, and a 3-D input is ``(N, C, L)`` (not ``(C, H, W)``).

    As torch, a rank other than 3 or 4 gets its deprecation ``UserWarning`` and a 3-D input its
    "assuming that channel-wise 1D dropout behavior is desired" one (also out of training); below 2-D,
    a call that draws raises ``RuntimeError: Feature dropout requires at least 2 dimensions in the input``.
    :func:`channel_dropout` with ``spatial_dims`` is the same without the guess.

    Args:
        p: probability of *dropping* a channel, in [0, 1] (torch's ``ValueError`` otherwise).
        training, inplace, seed, stream: as in :func:`dropkit.torch.dropout`.
        global_shape, offsets: ``input`` is that slice of a global tensor (docs/distributed.md).

    >>> dropout2d(torch.ones(1, 3, 2, 2), 0.5, seed=0)[0, :, 0, 0]
    tensor([0., 2., 2.])
    """
    return _torch_channel(input, p, training, inplace, 2, seed, stream, global_shape, offsets)


@traceable
def dropout3d(
    input: Tensor,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    seed: int | None = None,
    stream: int | None = None,
    global_shape: Sequence[int] | None = None,
    offsets: Sequence[int] | None = None,
) -> Tensor:
    """torch's ``F.dropout3d``: channel dropout of ``(N, C, D, H, W)``, mask ``(N, C, 1, 1, 1)``; any
    other input is taken as unbatched, so its dim 0 is the channel (``(C, D, H, W)`` -> ``(C, 1, 1, 1)``).

    As torch, a rank other than 4 or 5 gets its deprecation ``UserWarning`` (also out of training), and a
    0-D input that draws raises ``RuntimeError: Feature dropout requires at least 2 dimensions in the input``.

    Args:
        p: probability of *dropping* a channel, in [0, 1] (torch's ``ValueError`` otherwise).
        training, inplace, seed, stream: as in :func:`dropkit.torch.dropout`.
        global_shape, offsets: ``input`` is that slice of a global tensor (docs/distributed.md).

    >>> dropout3d(torch.ones(1, 3, 1, 1, 2), 0.5, seed=0)[0, :, 0, 0, 0]
    tensor([0., 2., 2.])
    """
    return _torch_channel(input, p, training, inplace, 3, seed, stream, global_shape, offsets)


class _ChannelDropout(Stochastic):
    spatial_dims: int

    def __init__(self, p: float = 0.5, inplace: bool = False, *, seed: int | None = None) -> None:
        super().__init__(check_probability(p), seed=seed)
        self.inplace = inplace

    def _plan(
        self, input: Tensor, global_shape: Sequence[int] | None, offsets: Sequence[int] | None
    ) -> Apply:
        return plan_torch_channel(
            input,
            self.p,
            self.training,
            self.inplace,
            self.spatial_dims,
            global_shape=global_shape,
            offsets=offsets,
        )

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}{self._seed_repr()}"


class Dropout1d(_ChannelDropout, nn.Dropout1d):
    """torch's ``nn.Dropout1d``: zero whole channels of ``(N, C, L)`` or ``(C, L)``, with torch's
    rank errors; see :func:`dropkit.torch.functional.dropout1d`.

    Args:
        p: probability of dropping a channel, in [0, 1].
        inplace: write the result into the input.
        seed: unsigned 64-bit seed, or ``None`` to follow torch's default generator.

    Shape: ``(N, C, L)`` or ``(C, L)``; output the same.

    >>> Dropout1d(0.5, seed=0)(torch.ones(1, 3, 2))[0]
    tensor([[0., 0.],
            [2., 2.],
            [2., 2.]])
    """

    spatial_dims = 1


class Dropout2d(_ChannelDropout, nn.Dropout2d):
    """torch's ``nn.Dropout2d``: zero whole channels of ``(N, C, H, W)``, reading shapes and warning as
    torch 2.13 does (a 3-D input is ``(N, C, L)``); see :func:`dropkit.torch.functional.dropout2d`.

    Args:
        p: probability of dropping a channel, in [0, 1].
        inplace: write the result into the input.
        seed: unsigned 64-bit seed, or ``None`` to follow torch's default generator.

    Shape: ``(N, C, H, W)``; output the same.

    >>> Dropout2d(0.5, seed=0)(torch.ones(1, 3, 2, 2))[0, :, 0, 0]
    tensor([0., 2., 2.])
    """

    spatial_dims = 2


class Dropout3d(_ChannelDropout, nn.Dropout3d):
    """torch's ``nn.Dropout3d``: zero whole channels of ``(N, C, D, H, W)`` or ``(C, D, H, W)``, reading
    shapes and warning as torch 2.13 does; see :func:`dropkit.torch.functional.dropout3d`.

    Args:
        p: probability of dropping a channel, in [0, 1].
        inplace: write the result into the input.
        seed: unsigned 64-bit seed, or ``None`` to follow torch's default generator.

    Shape: ``(N, C, D, H, W)`` or ``(C, D, H, W)``; output the same.

    >>> Dropout3d(0.5, seed=0)(torch.ones(1, 3, 1, 1, 2))[0, :, 0, 0, 0]
    tensor([0., 2., 2.])
    """

    spatial_dims = 3
