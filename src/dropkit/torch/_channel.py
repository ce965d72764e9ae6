"""Channel dropout for PyTorch (torch's ``dropout1d/2d/3d``, Keras' SpatialDropout) as functions and
modules: the twin of the channel family of :mod:`dropkit.layers`, mask for mask.

``y = x * m / (1 - p)`` with ``m = keep_mask((N, C, 1, ...), p, seed, stream)`` broadcast over the
spatial dims: whole feature maps are dropped. Backward regenerates ``m`` from ``(seed, stream)``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from dropkit._validation import check_probability
from dropkit.layers import channel_mask_shape, inverted_scale
from dropkit.torch._base import Apply, Stochastic, run, traceable
from dropkit.torch._checks import check_input
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
    """Channel dropout: zero whole feature maps (torch's ``dropout1d/2d/3d``, Keras' SpatialDropout).

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
        spatial_dims: 1, 2 or 3 for torch's ``dropout1d``, ``dropout2d``, ``dropout3d``.

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
    """torch's ``F.dropout1d``: :func:`channel_dropout` of ``(N, C, L)`` or ``(C, L)``."""
    return channel_dropout(
        input,
        p,
        training,
        inplace,
        spatial_dims=1,
        seed=seed,
        stream=stream,
        global_shape=global_shape,
        offsets=offsets,
    )


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
    """torch's ``F.dropout2d``: :func:`channel_dropout` of ``(N, C, H, W)`` or ``(C, H, W)``.

    Unlike torch, a 3-D input is always the unbatched ``(C, H, W)``, with no warning; use
    :func:`dropout1d` for ``(N, C, L)``.
    """
    return channel_dropout(
        input,
        p,
        training,
        inplace,
        spatial_dims=2,
        seed=seed,
        stream=stream,
        global_shape=global_shape,
        offsets=offsets,
    )


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
    """torch's ``F.dropout3d``: :func:`channel_dropout` of ``(N, C, D, H, W)`` or ``(C, D, H, W)``."""
    return channel_dropout(
        input,
        p,
        training,
        inplace,
        spatial_dims=3,
        seed=seed,
        stream=stream,
        global_shape=global_shape,
        offsets=offsets,
    )


class _ChannelDropout(Stochastic):
    spatial_dims: int

    def __init__(self, p: float = 0.5, inplace: bool = False, *, seed: int | None = None) -> None:
        super().__init__(check_probability(p), seed=seed)
        self.inplace = inplace

    def _plan(
        self, input: Tensor, global_shape: Sequence[int] | None, offsets: Sequence[int] | None
    ) -> Apply:
        return plan_channel(
            input, self.p, self.inplace, self.spatial_dims, global_shape=global_shape, offsets=offsets
        )

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}{self._seed_repr()}"


class Dropout1d(_ChannelDropout, nn.Dropout1d):
    """torch's ``nn.Dropout1d``: zero whole channels of ``(N, C, L)`` or ``(C, L)``;
    see :func:`dropkit.torch.functional.channel_dropout`.

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
    """torch's ``nn.Dropout2d``: zero whole channels of ``(N, C, H, W)`` or ``(C, H, W)``.

    A 3-D input is the unbatched ``(C, H, W)`` (torch guesses and warns; use :class:`Dropout1d`
    for ``(N, C, L)``). See :func:`dropkit.torch.functional.channel_dropout`.

    Args:
        p: probability of dropping a channel, in [0, 1].
        inplace: write the result into the input.
        seed: unsigned 64-bit seed, or ``None`` to follow torch's default generator.

    Shape: ``(N, C, H, W)`` or ``(C, H, W)``; output the same.

    >>> Dropout2d(0.5, seed=0)(torch.ones(3, 2, 2))[:, 0, 0]
    tensor([0., 2., 2.])
    """

    spatial_dims = 2


class Dropout3d(_ChannelDropout, nn.Dropout3d):
    """torch's ``nn.Dropout3d``: zero whole channels of ``(N, C, D, H, W)`` or ``(C, D, H, W)``.

    Args:
        p: probability of dropping a channel, in [0, 1].
        inplace: write the result into the input.
        seed: unsigned 64-bit seed, or ``None`` to follow torch's default generator.

    Shape: ``(N, C, D, H, W)`` or ``(C, D, H, W)``; output the same.

    >>> Dropout3d(0.5, seed=0)(torch.ones(1, 3, 1, 1, 2))[0, :, 0, 0, 0]
    tensor([0., 2., 2.])
    """

    spatial_dims = 3
