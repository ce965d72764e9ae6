"""Bernoulli dropout for PyTorch -- plain, Keras' ``noise_shape``, locked, drop-path -- as functions
and modules: the twin of :mod:`dropkit.layers`, mask for mask.

Inverted dropout (Srivastava et al., JMLR 2014): in training ``y = x * m / (1 - p)`` with
``m = keep_mask(mask_shape, p, seed=seed, stream=stream)`` over the logical row-major index,
broadcast to ``x``, and ``dL/dx = dL/dy * m / (1 - p)``; at inference ``y = x``. The variants differ
only in the mask shape (:func:`dropkit.layers.channel_mask_shape` and its neighbours). Backward
regenerates ``m`` from ``(seed, stream)``, so autograd keeps a few numbers where
``torch.nn.functional.dropout`` keeps a mask (see :mod:`dropkit.torch._ops`). Channel dropout, the
same with a mask per channel, is :mod:`dropkit.torch._channel`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch  # noqa: F401 (the doctests use it)
from torch import Tensor, nn

from dropkit._validation import check_probability
from dropkit.layers import (
    drop_path_mask_shape,
    inverted_scale,
    locked_mask_shape,
    noise_mask_shape,
)
from dropkit.torch import _ops
from dropkit.torch._base import Apply, Stochastic, copy_if, on_local, run, traceable
from dropkit.torch._checks import check_input, to_signed
from dropkit.torch._function import eager_context
from dropkit.torch._placement import Placed, place

__all__ = [
    "DropPath",
    "Dropout",
    "LockedDropout",
    "bernoulli_plan",
    "drop_path",
    "dropout",
    "locked_dropout",
    "plan_dropout",
]


def _bernoulli(
    input: Tensor,
    p: float,
    placed: Placed,
    scale: float,
    inplace: bool,
    seed: int | None,
    stream: int | Tensor,
) -> Tensor:
    """``input * keep * scale`` with the placed mask, into ``input`` when ``inplace``.

    An unplaced full-shape mask with Python-int randomness takes ``dropkit::dropout``, whose key is
    numbers (eagerly written straight into ``input`` when in place), and a smaller one the broadcast
    kernel, keyed by numbers too; a compiled call's run-time seed or counter, or a placed input, takes
    the keyed ops.
    """
    plain = placed.location is None and placed.mask.local_shape == tuple(input.shape)
    if plain and not isinstance(stream, Tensor) and not (seed is None and not eager_context()):
        drawn = seed is None
        seed = _ops.fresh_seed() if drawn else seed
        output = _ops.dropout_op(
            input, p, to_signed(seed), to_signed(stream), scale, 0, drawn=drawn, inplace=inplace
        )
    elif (key := _ops.numbers_key(input, placed.location is not None, seed, stream)) is not None:
        output = _ops.shaped_dropout(input, p, key[0], key[1], scale, placed.mask, drawn=key[2])
    else:

        def op(x: Tensor, key: Tensor) -> Tensor:
            return _ops.bernoulli(x, key, p, scale, placed.mask)

        output = on_local(op, input, placed, seed, stream)
    return copy_if(inplace, input, output)


def bernoulli_plan(input: Tensor, p: float, placed: Placed, scale: float, inplace: bool) -> Apply:
    """The plan of a Bernoulli variant whose checks are done: ``input * keep * scale`` with ``placed``."""
    return functools.partial(_bernoulli, input, p, placed, scale, inplace)


def plan_dropout(
    input: Tensor,
    p: float,
    inplace: bool,
    noise_shape: Sequence[int | None] | None,
    *,
    global_shape: Sequence[int] | None = None,
    offsets: Sequence[int] | None = None,
    batched: bool = True,
) -> Apply:
    """Bernoulli dropout drawn over Keras' ``noise_shape`` (of the global shape) and broadcast to the input.

    ``batched=False`` for a weight (DropConnect): :func:`~dropkit.torch.distributed.data_parallel` leaves it
    whole.
    """
    check_input(input)
    mask_shape_of = functools.partial(noise_mask_shape, noise_shape=noise_shape)
    placed = place(input, mask_shape_of, global_shape, offsets, batched=batched)
    return bernoulli_plan(input, p, placed, inverted_scale(p), inplace)


def plan_locked(
    input: Tensor,
    p: float,
    batch_first: bool,
    *,
    global_shape: Sequence[int] | None = None,
    offsets: Sequence[int] | None = None,
) -> Apply:
    """Locked dropout: one mask per sequence, shared over the time axis."""
    check_input(input)
    placed = place(input, lambda shape: locked_mask_shape(shape, batch_first), global_shape, offsets)
    return bernoulli_plan(input, p, placed, inverted_scale(p), False)


def plan_drop_path(
    input: Tensor,
    p: float,
    mode: str,
    scale_by_keep: bool,
    *,
    global_shape: Sequence[int] | None = None,
    offsets: Sequence[int] | None = None,
) -> Apply:
    """Drop path: one decision per sample (``"row"``) or per batch; ``1/(1-p)`` if ``scale_by_keep``."""
    check_input(input)
    placed = place(input, lambda shape: drop_path_mask_shape(shape, mode), global_shape, offsets)
    scale = inverted_scale(p) if scale_by_keep else 1.0
    return bernoulli_plan(input, p, placed, scale, False)


@traceable
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
    p = check_probability(p)
    apply = plan_dropout(input, p, inplace, noise_shape, global_shape=global_shape, offsets=offsets)
    return run(input, p, training, inplace, seed, stream, apply)


@traceable
def locked_dropout(
    input: Tensor,
    p: float = 0.5,
    training: bool = True,
    *,
    batch_first: bool = False,
    seed: int | None = None,
    stream: int | None = None,
    global_shape: Sequence[int] | None = None,
    offsets: Sequence[int] | None = None,
) -> Tensor:
    """Locked (variational) dropout: one mask per sequence, shared by every time step (AWD-LSTM).

    ``y[t] = x[t] * m / (1 - p)`` for every ``t``, ``m = keep_mask((1, N, *features), p, seed, stream)``.
    Use it on RNN inputs and outputs (Gal & Ghahramani 2016): a fresh mask per step injects noise the
    recurrence amplifies. With ``global_shape``/``offsets``, ``input`` is that slice of a global tensor
    and draws its slice of the global output (docs/distributed.md), as in :func:`dropkit.torch.dropout`.

    Shape: ``(T, N, *features)`` (or unbatched ``(T, features)``), or ``(N, T, *features)`` with
    ``batch_first``; output the same.

    >>> y = locked_dropout(torch.ones(3, 1, 4), 0.5, seed=0)
    >>> bool((y == y[0]).all())
    True
    """
    p = check_probability(p)
    apply = plan_locked(input, p, batch_first, global_shape=global_shape, offsets=offsets)
    return run(input, p, training, False, seed, stream, apply)


@traceable
def drop_path(
    input: Tensor,
    p: float = 0.0,
    training: bool = True,
    *,
    mode: str = "row",
    scale_by_keep: bool = True,
    seed: int | None = None,
    stream: int | None = None,
    global_shape: Sequence[int] | None = None,
    offsets: Sequence[int] | None = None,
) -> Tensor:
    """Drop path / stochastic depth (Huang et al. 2016): drop a residual branch for whole samples.

    ``y = x * m * s`` with ``m = keep_mask((N, 1, ...), p)`` (``mode="row"``, timm's ``drop_path``) or
    ``keep_mask((1, 1, ...), p)`` (``mode="batch"``, torchvision's ``stochastic_depth``), and
    ``s = 1 / (1 - p)`` unless ``scale_by_keep=False`` (timm). Apply it to a branch before the residual
    addition: ``x + drop_path(f(x), p)``. Inference is the identity. With ``global_shape``/``offsets``,
    ``input`` is that slice of a global tensor and draws its slice of the global output
    (docs/distributed.md), as in :func:`dropkit.torch.dropout`.

    Shape: ``(N, ...)``; output the same.

    >>> drop_path(torch.ones(4, 2), 0.5, seed=0)[:, 0]
    tensor([0., 2., 2., 2.])
    """
    p = check_probability(p)
    apply = plan_drop_path(input, p, mode, scale_by_keep, global_shape=global_shape, offsets=offsets)
    return run(input, p, training, False, seed, stream, apply)


# --- modules ----------------------------------------------------------------------------------


class Dropout(Stochastic, nn.Dropout):
    """Inverted dropout whose mask is the contract's, regenerated in backward instead of stored.

    In training ``y = x * m / (1 - p)`` with ``m = keep_mask(x.shape, p, seed=..., stream=...)``;
    in eval mode ``y = x`` (the input object itself).

    Randomness: with ``seed=None`` each training call draws a fresh seed from torch's default CPU
    generator and uses stream 0, exactly as ``torch.nn.Dropout`` consumes torch's RNG, so
    ``torch.manual_seed`` and ``torch.utils.checkpoint`` reproduce its masks. With an explicit
    ``seed`` the k-th training call (k = 0, 1, 2, ...) uses stream k, like :class:`dropkit.Dropout`,
    whatever the run, device or compiler -- but a checkpoint recompute is a new call (see docs/torch.md).

    Args:
        p: probability of *dropping* an element, in [0, 1] (not the keep rate).
        inplace: write the result into the input.
        seed: unsigned 64-bit seed, or ``None`` to follow torch's default generator.

    Shape: any; output has the input's shape, dtype, device and stride order.

    >>> layer = Dropout(0.5, seed=0)
    >>> layer
    Dropout(p=0.5, inplace=False, seed=0)
    >>> layer(torch.ones(2, 4))
    tensor([[0., 2., 2., 2.],
            [2., 0., 2., 0.]])
    >>> layer.calls
    1
    """

    def __init__(self, p: float = 0.5, inplace: bool = False, *, seed: int | None = None) -> None:
        super().__init__(check_probability(p), seed=seed)
        self.inplace = inplace

    def _plan(
        self, input: Tensor, global_shape: Sequence[int] | None, offsets: Sequence[int] | None
    ) -> Apply:
        return plan_dropout(input, self.p, self.inplace, None, global_shape=global_shape, offsets=offsets)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}{self._seed_repr()}"


class LockedDropout(Stochastic):
    """Locked (variational) dropout (AWD-LSTM): one mask per sequence, the same at every time step;
    see :func:`dropkit.torch.functional.locked_dropout`.

    Args:
        p: probability of dropping a feature of a sequence, in [0, 1].
        batch_first: inputs are ``(N, T, *features)`` instead of ``(T, N, *features)``.
        seed: unsigned 64-bit seed, or ``None`` to follow torch's default generator.

    Shape: ``(T, N, *features)``, or ``(N, T, *features)`` with ``batch_first``; output the same.

    >>> y = LockedDropout(0.5, seed=0)(torch.ones(5, 2, 3))
    >>> bool((y == y[0]).all())
    True
    """

    def __init__(self, p: float = 0.5, batch_first: bool = False, *, seed: int | None = None) -> None:
        super().__init__(check_probability(p), seed=seed)
        self.batch_first = bool(batch_first)

    def _plan(
        self, input: Tensor, global_shape: Sequence[int] | None, offsets: Sequence[int] | None
    ) -> Apply:
        return plan_locked(input, self.p, self.batch_first, global_shape=global_shape, offsets=offsets)

    def extra_repr(self) -> str:
        return f"p={self.p}, batch_first={self.batch_first}{self._seed_repr()}"


class DropPath(Stochastic):
    """Drop path / stochastic depth (timm's ``DropPath``, torchvision's ``StochasticDepth``);
    see :func:`dropkit.torch.functional.drop_path`.

    Args:
        p: probability of dropping a sample's branch (``"row"``) or the whole batch's (``"batch"``).
        mode: ``"row"`` (timm) or ``"batch"`` (torchvision's ``StochasticDepth(mode="batch")``).
        scale_by_keep: scale kept branches by ``1 / (1 - p)`` (timm's default).
        seed: unsigned 64-bit seed, or ``None`` to follow torch's default generator.

    Shape: ``(N, ...)``; output the same.

    >>> DropPath(0.5, seed=0)(torch.ones(4, 2))[:, 0]
    tensor([0., 2., 2., 2.])
    """

    def __init__(
        self, p: float = 0.0, mode: str = "row", scale_by_keep: bool = True, *, seed: int | None = None
    ) -> None:
        drop_path_mask_shape((1,), mode)  # checks mode
        super().__init__(check_probability(p), seed=seed)
        self.mode = mode
        self.scale_by_keep = bool(scale_by_keep)

    def _plan(
        self, input: Tensor, global_shape: Sequence[int] | None, offsets: Sequence[int] | None
    ) -> Apply:
        return plan_drop_path(
            input, self.p, self.mode, self.scale_by_keep, global_shape=global_shape, offsets=offsets
        )

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode!r}, scale_by_keep={self.scale_by_keep}{self._seed_repr()}"
