"""The dropout variants for PyTorch, functional forms: each draws the NumPy reference's mask and saves none.

Every variant is the NumPy reference's (:mod:`dropkit.layers`, :mod:`dropkit.noise`,
:mod:`dropkit.dropblock`) on tensors, element for element:

* Bernoulli variants with a *mask shape* -- ``noise_shape`` (Keras), channel (torch's Dropout1d/2d/3d),
  locked (AWD-LSTM), drop-path (timm, torchvision) -- draw ``keep_mask(mask_shape, p, seed, stream)``
  and broadcast it: ``y = where(keep, x * scale, 0)``. A full-shape mask goes through the core's fused
  kernel (:mod:`dropkit.torch._ops`); a smaller one is drawn on the CPU (it has one entry per channel,
  sequence or sample) and moved to ``x``'s device.
* Gaussian dropout multiplies by :func:`dropkit.noise.gaussian_noise` (Box-Muller of the contract's words).
* Alpha dropout (Klambauer et al. 2017) is ``a x + a alpha' p`` where kept and ``-a alpha' (1 - p)``
  where dropped, with torch's constants.
* DropBlock (Ghiasi et al. 2018) zeroes the squares of :func:`dropkit.dropblock.drop_block_keep`.

Each is a custom op whose backward is an op of the same family on the gradient, replaying the mask from
the ``(seed, stream)`` key: ``d(x * keep * s)/dx = keep * s``, ``d(x * eps)/dx = eps``, and for alpha
``dy/dx = keep * a``. Autograd keeps the 16-byte int64 key tensor and no mask. The key is a tensor (as in
the core's ``dropkit::dropout_keyed``) so that a seed drawn per call or a module's call counter stays a
run-time value under ``torch.compile``.

Randomness is the core's: ``seed=None`` draws a fresh 63-bit seed from torch's default CPU generator per
call and uses stream 0; an explicit ``seed`` takes ``stream`` (default 0).

Sharded (``global_shape``/``offsets``, a DTensor, or :func:`~dropkit.torch.distributed.data_parallel`), a
variant draws over the *global* input's mask shape and takes the slice its local tensor
covers (:class:`MaskSlice`), so the ranks' outputs are one process's; ``independent_masks`` folds the rank
into the stream. DropBlock, which rescales by the kept fraction of the whole tensor, takes no shard.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from dropkit._validation import check_probability
from dropkit.dropblock import _check_block, drop_block_keep
from dropkit.layers import channel_mask_shape, drop_path_mask_shape, locked_mask_shape, noise_mask_shape
from dropkit.noise import _alpha_constants, _alpha_mask_shape, _check_gaussian_p, gaussian_noise
from dropkit.philox import keep_mask
from dropkit.sharding import Shard
from dropkit.torch import _ops, distributed
from dropkit.torch.functional import check_inplace, check_input, check_seed_and_stream, training_scale

__all__ = [
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

Shape = tuple[int, ...]
Apply = Callable[[int | None, int | Tensor], Tensor]  # (seed, stream) -> output, every check done


class MaskSlice(NamedTuple):
    """A variant's mask on a (possibly sharded) input: local ``shape`` at ``offsets`` of ``global_shape``.

    The mask is drawn over the global input's mask shape (``(N, C, 1, 1)`` for channel dropout of
    ``(N, C, H, W)``); a shard draws its slice of it, offset 0 and size 1 along broadcast dims.
    Unsharded, ``global_shape == shape`` and the offsets are 0.
    """

    shape: Shape
    global_shape: Shape
    offsets: Shape

    @classmethod
    def whole(cls, shape: Shape) -> MaskSlice:
        """The mask of an unsharded input: all of it."""
        return cls(shape, shape, (0,) * len(shape))

    def keep(self, p: float, seed: int, stream: int) -> np.ndarray:
        """The contract's keep decisions of this slice of the global mask."""
        if self.global_shape == self.shape:
            return keep_mask(self.shape, p, seed=seed, stream=stream)
        return Shard(self.global_shape, self.offsets, self.shape).keep_mask(p, seed=seed, stream=stream)


class Placed(NamedTuple):
    """Where an input sits (a :class:`dropkit.torch.distributed.Location`, or None) and its mask slice."""

    location: distributed.Location | None
    mask: MaskSlice


def place(
    input: Tensor,
    mask_shape_of: Callable[[Shape], Shape],
    global_shape: Sequence[int] | None = None,
    offsets: Sequence[int] | None = None,
    *,
    batched: bool = True,
) -> Placed:
    """Locate ``input`` and slice the mask ``mask_shape_of`` gives its global shape (which it checks).

    ``global_shape``/``offsets`` place it explicitly, as for :func:`dropkit.torch.dropout`; ``batched=False``
    for weights: :func:`dropkit.torch.distributed.data_parallel` leaves them whole.
    """
    location = distributed.locate(input, global_shape, offsets, batched=batched)
    shard = None if location is None else location.shard
    if shard is None:
        return Placed(location, MaskSlice.whole(mask_shape_of(tuple(input.shape))))
    try:
        global_mask = mask_shape_of(shard.global_shape)
    except ValueError as error:
        raise ValueError(f"{error} (x is the global tensor: the input is a shard of it)") from None
    drawn = [m == g for m, g in zip(global_mask, shard.global_shape, strict=True)]  # else broadcast (1)
    shape = tuple(n if d else 1 for n, d in zip(shard.local_shape, drawn, strict=True))
    offsets = tuple(o if d else 0 for o, d in zip(shard.offsets, drawn, strict=True))
    return Placed(location, MaskSlice(shape, global_mask, offsets))


# --- the ops ---------------------------------------------------------------------------------


def _wide(dtype: torch.dtype) -> torch.dtype:
    """The type products are formed in: float64 for float64 data, float32 otherwise (the contract)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _constant(value: float, wide: torch.dtype) -> float:
    """``value`` rounded once to the compute type, as the reference rounds its constants."""
    return float(np.float32(value)) if wide == torch.float32 else float(value)


def _fill_dropped(out: Tensor, keep: np.ndarray, value: float) -> Tensor:
    """Set ``out`` to ``value`` where the mask ``keep`` (same rank, 1 where it broadcasts) is False.

    Only the dropped elements are written, through an index: ``masked_fill_`` visits every element
    and ran at about a tenth of a multiply's speed on CPU. A smaller mask indexes ``out`` viewed with
    its drawn dims first, one index entry per dropped channel, sequence or sample.
    """
    if keep.all():
        return out
    if not keep.any():
        return out.fill_(value)
    if keep.shape == tuple(out.shape) and out.is_contiguous():
        out.view(-1)[torch.from_numpy(np.flatnonzero(~keep)).to(out.device)] = value
        return out
    drawn = [d for d in range(out.dim()) if keep.shape[d] == out.shape[d]]
    shared = [d for d in range(out.dim()) if keep.shape[d] != out.shape[d]]
    dropped = np.nonzero(~keep.reshape([keep.shape[d] for d in drawn]))
    out.permute(drawn + shared)[tuple(torch.from_numpy(i).to(out.device) for i in dropped)] = value
    return out


def _scale_kept(x: Tensor, keep: np.ndarray, scale: float) -> Tensor:
    """``keep ? x * scale : 0`` with ``keep`` a NumPy bool mask broadcastable to ``x`` (same rank).

    The product is formed in float32 (float64 for float64 data) and rounded once to ``x``'s dtype;
    dropped elements are set to +0, never multiplied by 0, so inf and NaN inputs give 0 there, as in
    the reference.
    """
    wide = _wide(x.dtype)
    out = _ops.new_output(x)
    torch.mul(x.to(wide), _constant(scale, wide), out=out)
    return _fill_dropped(out, keep, 0.0)


def _self_adjoint(op) -> None:
    """Register autograd for ``op(x, key, *args)`` whose derivative in ``x`` is ``op`` itself."""

    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[1])  # the 16-byte (seed, stream) key
        ctx.args = inputs[2:]

    def backward(ctx, grad: Tensor):
        (key,) = ctx.saved_tensors
        return op(grad, key, *ctx.args), None, *(None for _ in ctx.args)

    op.register_autograd(backward, setup_context=setup_context)


def _mask_slice(mask_shape: list[int], mask_global_shape: list[int], mask_offsets: list[int]) -> MaskSlice:
    """The :class:`MaskSlice` an op's list arguments spell out (custom ops take lists, not tuples)."""
    return MaskSlice(tuple(mask_shape), tuple(mask_global_shape), tuple(mask_offsets))


@torch.library.custom_op("dropkit::shaped_dropout", mutates_args=())
def shaped_dropout_op(
    x: Tensor,
    key: Tensor,
    p: float,
    scale: float,
    mask_shape: list[int],
    mask_global_shape: list[int],
    mask_offsets: list[int],
) -> Tensor:
    """``x * keep * scale`` with ``keep`` the :class:`MaskSlice`'s keep decisions broadcast to ``x``."""
    seed, stream = _ops.unpack_key(key)
    keep = _mask_slice(mask_shape, mask_global_shape, mask_offsets).keep(p, seed, stream)
    return _scale_kept(x, keep, scale)


@shaped_dropout_op.register_fake
def _shaped_dropout_fake(
    x: Tensor,
    key: Tensor,
    p: float,
    scale: float,
    mask_shape: list[int],
    mask_global_shape: list[int],
    mask_offsets: list[int],
) -> Tensor:
    return _ops.empty_dense_like(x)


_self_adjoint(shaped_dropout_op)


def _masked(x: Tensor, key: Tensor, p: float, scale: float, mask: MaskSlice) -> Tensor:
    """``x * keep * scale``: the core's fused kernels for a full-shape mask, else the broadcast mask."""
    if mask.shape == tuple(x.shape) == mask.global_shape:
        return _ops.dropout_keyed_op(x, key, p, scale, 0)
    if mask.shape == tuple(x.shape):
        shard = Shard(mask.global_shape, mask.offsets, mask.shape)
        if shard.start is not None:
            return _ops.dropout_keyed_op(x, key, p, scale, shard.start)
        return distributed.dropout_sharded_op(x, key, p, scale, list(mask.global_shape), list(mask.offsets))
    return shaped_dropout_op(x, key, p, scale, *(list(dims) for dims in mask))


@torch.library.custom_op("dropkit::gaussian_dropout", mutates_args=())
def gaussian_dropout_op(
    x: Tensor, key: Tensor, p: float, global_shape: list[int], offsets: list[int]
) -> Tensor:
    """``x * eps``, ``eps`` the slice at ``offsets`` of ``gaussian_noise(global_shape, p, seed, stream)``,
    formed in float32/float64."""
    seed, stream = _ops.unpack_key(key)
    wide = _wide(x.dtype)
    shape = tuple(x.shape)
    sharded = {} if tuple(global_shape) == shape else {"global_shape": global_shape, "offsets": offsets}
    noise = torch.from_numpy(gaussian_noise(shape, p, seed=seed, stream=stream, **sharded))
    return torch.mul(x.to(wide), noise.to(wide).to(x.device), out=_ops.new_output(x))


@gaussian_dropout_op.register_fake
def _gaussian_dropout_fake(
    x: Tensor, key: Tensor, p: float, global_shape: list[int], offsets: list[int]
) -> Tensor:
    return _ops.empty_dense_like(x)


_self_adjoint(gaussian_dropout_op)


@torch.library.custom_op("dropkit::drop_block2d", mutates_args=())
def drop_block2d_op(
    x: Tensor, key: Tensor, p: float, block_size: int, gamma_scale: float, batchwise: bool
) -> Tensor:
    """``x * keep * numel / kept`` with ``keep = drop_block_keep(x.shape, ...)``; zeros if nothing is kept."""
    seed, stream = _ops.unpack_key(key)
    keep = drop_block_keep(
        tuple(x.shape),
        p,
        block_size=block_size,
        gamma_scale=gamma_scale,
        batchwise=batchwise,
        seed=seed,
        stream=stream,
    )
    kept = int(keep.sum())
    return _scale_kept(x, keep, keep.size / kept if kept else 1.0)


@drop_block2d_op.register_fake
def _drop_block2d_fake(
    x: Tensor, key: Tensor, p: float, block_size: int, gamma_scale: float, batchwise: bool
) -> Tensor:
    return _ops.empty_dense_like(x)


_self_adjoint(drop_block2d_op)


@torch.library.custom_op("dropkit::alpha_dropout", mutates_args=())
def alpha_dropout_op(
    x: Tensor,
    key: Tensor,
    p: float,
    mask_shape: list[int],
    mask_global_shape: list[int],
    mask_offsets: list[int],
) -> Tensor:
    """``keep ? a x + a alpha' p : -a alpha' (1 - p)``, ``keep`` the :class:`MaskSlice`'s, ``p < 1``."""
    seed, stream = _ops.unpack_key(key)
    keep = _mask_slice(mask_shape, mask_global_shape, mask_offsets).keep(p, seed, stream)
    wide = _wide(x.dtype)
    a, kept_offset, dropped_value = (_constant(c, wide) for c in _alpha_constants(p))
    out = _ops.new_output(x)
    torch.add(x.to(wide) * a, kept_offset, out=out)  # two roundings in the compute type, as the reference
    return _fill_dropped(out, keep, dropped_value)


@alpha_dropout_op.register_fake
def _alpha_dropout_fake(
    x: Tensor,
    key: Tensor,
    p: float,
    mask_shape: list[int],
    mask_global_shape: list[int],
    mask_offsets: list[int],
) -> Tensor:
    return _ops.empty_dense_like(x)


def _alpha_setup_context(ctx, inputs, output) -> None:
    _, key, ctx.p, *mask = inputs
    ctx.mask = _mask_slice(*mask)
    ctx.save_for_backward(key)


def _alpha_backward(ctx, grad: Tensor):
    # dy/dx = keep * a: a Bernoulli mask with scale a, the same keep decisions.
    (key,) = ctx.saved_tensors
    a = float(_alpha_constants(ctx.p)[0])
    return _masked(grad, key, ctx.p, a, ctx.mask), None, None, None, None, None


alpha_dropout_op.register_autograd(_alpha_backward, setup_context=_alpha_setup_context)


# --- randomness: the core's semantics --------------------------------------------------------


def run(
    input: Tensor,
    p: float,
    training: bool,
    inplace: bool,
    seed: int | None,
    stream: int | None,
    apply: Apply,
) -> Tensor:
    """The functional forms' common tail: key checks, the identity cases, then ``apply(seed, stream)``."""
    seed, stream = check_seed_and_stream(seed, stream)
    if not training or p == 0.0 or input.numel() == 0:
        return input
    check_inplace(input, inplace)
    return apply(seed, stream)


def _on_local(
    op: Callable[[Tensor, Tensor], Tensor],
    input: Tensor,
    placed: Placed,
    seed: int | None,
    stream: int | Tensor,
) -> Tensor:
    """``op(local input, key)`` on the input's local tensor (a DTensor's shard), rewrapped like ``input``."""
    key = distributed.located_key(seed, stream, placed.location)
    local = distributed.to_local(input, placed.location)
    return distributed.from_local(op(local, key), input, placed.location)


def _copy_if(inplace: bool, input: Tensor, output: Tensor) -> Tensor:
    """``output`` written into ``input`` when in place, else ``output`` itself."""
    return input.copy_(output) if inplace else output


# --- plans: every check of a variant, then how it applies (used by functions and modules) ----


def _bernoulli(
    input: Tensor,
    p: float,
    placed: Placed,
    scale: float,
    inplace: bool,
    seed: int | None,
    stream: int | Tensor,
) -> Tensor:
    def op(x: Tensor, key: Tensor) -> Tensor:
        return _masked(x, key, p, scale, placed.mask)

    return _copy_if(inplace, input, _on_local(op, input, placed, seed, stream))


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
    return functools.partial(_bernoulli, input, p, placed, training_scale(p), inplace)


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
    return functools.partial(_bernoulli, input, p, placed, training_scale(p), inplace)


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
    return functools.partial(_bernoulli, input, p, placed, training_scale(p), False)


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
    scale = training_scale(p) if scale_by_keep else 1.0
    return functools.partial(_bernoulli, input, p, placed, scale, False)


def _gaussian(input: Tensor, p: float, placed: Placed, seed: int | None, stream: int | Tensor) -> Tensor:
    _, global_shape, offsets = placed.mask

    def op(x: Tensor, key: Tensor) -> Tensor:
        return gaussian_dropout_op(x, key, p, list(global_shape), list(offsets))

    return _on_local(op, input, placed, seed, stream)


def plan_gaussian(
    input: Tensor,
    p: float,
    *,
    global_shape: Sequence[int] | None = None,
    offsets: Sequence[int] | None = None,
) -> Apply:
    """Gaussian dropout: ``y = x * eps``, ``eps ~ N(1, p/(1-p))`` per element."""
    check_input(input)
    return functools.partial(_gaussian, input, p, place(input, lambda shape: shape, global_shape, offsets))


def _alpha(
    input: Tensor, p: float, placed: Placed, inplace: bool, seed: int | None, stream: int | Tensor
) -> Tensor:
    def op(x: Tensor, key: Tensor) -> Tensor:
        # p == 1 gives zeros, as torch does; a = 1/sqrt(...(1 - p)) is infinite there.
        if p == 1.0:
            return _masked(x, key, p, 1.0, placed.mask)
        return alpha_dropout_op(x, key, p, *(list(dims) for dims in placed.mask))

    return _copy_if(inplace, input, _on_local(op, input, placed, seed, stream))


def plan_alpha(
    input: Tensor,
    p: float,
    inplace: bool,
    feature: bool,
    *,
    global_shape: Sequence[int] | None = None,
    offsets: Sequence[int] | None = None,
) -> Apply:
    """Alpha dropout (per element, or per channel when ``feature``), keeping SELU's mean and variance."""
    check_input(input)
    placed = place(input, lambda shape: _alpha_mask_shape(shape, feature), global_shape, offsets)
    dtensor = placed.location is not None and placed.location.dtensor
    if dtensor and any(placement.is_partial() for placement in input.placements):
        raise ValueError(
            "alpha dropout is affine (a x + b), so on a Partial DTensor every rank would add b: "
            "redistribute the input to Replicate or Shard placements first"
        )
    return functools.partial(_alpha, input, p, placed, inplace)


def _drop_block(
    input: Tensor,
    p: float,
    block_size: int,
    gamma_scale: float,
    batchwise: bool,
    location: distributed.Location | None,
    seed: int | None,
    stream: int | Tensor,
) -> Tensor:
    key = distributed.located_key(seed, stream, location)
    return drop_block2d_op(input, key, p, block_size, float(gamma_scale), batchwise)


def plan_drop_block(
    input: Tensor,
    p: float,
    block_size: int,
    gamma_scale: float,
    batchwise: bool,
    *,
    draws: bool,
    global_shape: Sequence[int] | None = None,
    offsets: Sequence[int] | None = None,
) -> Apply:
    """DropBlock over ``(N, C, H, W)``: zero ``block_size`` squares; ``batchwise``: one mask for all.

    ``draws``: whether this call draws a mask (training, ``p > 0``, a non-empty input); only then is a
    shard an error, so a model in eval mode runs under ``data_parallel``.
    """
    check_input(input)
    _check_block(tuple(input.shape), block_size, gamma_scale, batchwise)
    location = distributed.locate(input, global_shape, offsets)
    if draws and location is not None and (location.shard is not None or location.dtensor):
        raise ValueError(
            "drop_block2d does not take shards (global_shape/offsets, data_parallel, a DTensor): it "
            "rescales by the kept fraction of the whole tensor, which one shard cannot know; "
            "independent_masks works"
        )
    return functools.partial(_drop_block, input, p, block_size, gamma_scale, bool(batchwise), location)


# --- functional forms ------------------------------------------------------------------------


def noise_shape_dropout(
    input: Tensor,
    p: float,
    training: bool,
    inplace: bool,
    noise_shape: Sequence[int | None],
    seed: int | None,
    stream: int | None,
    global_shape: Sequence[int] | None = None,
    offsets: Sequence[int] | None = None,
) -> Tensor:
    """:func:`dropkit.torch.dropout` with ``noise_shape`` given (it documents the arguments)."""
    p = check_probability(p)
    apply = plan_dropout(input, p, inplace, noise_shape, global_shape=global_shape, offsets=offsets)
    return run(input, p, training, inplace, seed, stream, apply)


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


def gaussian_dropout(
    input: Tensor,
    p: float = 0.5,
    training: bool = True,
    *,
    seed: int | None = None,
    stream: int | None = None,
    global_shape: Sequence[int] | None = None,
    offsets: Sequence[int] | None = None,
) -> Tensor:
    """Gaussian dropout (Srivastava et al. 2014, section 10; Keras' GaussianDropout): ``y = x * eps``.

    ``eps = 1 + sqrt(p / (1 - p)) z`` with ``z ~ N(0, 1)`` from :func:`dropkit.noise.gaussian_noise`
    (Box-Muller of the contract's words), so ``eps`` has inverted dropout's mean 1 and variance
    ``p / (1 - p)`` without its zeros. The noise is computed on the CPU in float64 (then rounded to the
    compute type), also for CUDA tensors.

    Args:
        p: the dropout rate it imitates, in [0, 1).
        global_shape, offsets: ``input`` is that slice of a global tensor (docs/distributed.md).

    >>> gaussian_dropout(torch.ones(3), 0.0, seed=0)
    tensor([1., 1., 1.])
    """
    p = _check_gaussian_p(p)
    apply = plan_gaussian(input, p, global_shape=global_shape, offsets=offsets)
    return run(input, p, training, False, seed, stream, apply)


def alpha_dropout(
    input: Tensor,
    p: float = 0.5,
    training: bool = False,
    inplace: bool = False,
    *,
    seed: int | None = None,
    stream: int | None = None,
    global_shape: Sequence[int] | None = None,
    offsets: Sequence[int] | None = None,
) -> Tensor:
    """Alpha dropout for SELU networks (Klambauer et al. 2017), torch's ``F.alpha_dropout``.

    ``y = a x + a alpha' p`` where kept, ``-a alpha' (1 - p)`` where dropped, with
    ``alpha' = 1.7580993408473766`` and ``a = ((1 - p)(1 + p alpha'^2))^(-1/2)``: zero-mean unit-variance
    inputs stay so. ``p == 1`` gives zeros (and a zero gradient), as torch does. ``training`` defaults
    to False, as in torch. With ``global_shape``/``offsets``, ``input`` is that slice of a global tensor
    and draws its slice of the global output (docs/distributed.md); a ``Partial`` DTensor is refused,
    since the map is affine.

    >>> x = torch.randn(10_000, generator=torch.Generator().manual_seed(0))
    >>> y = alpha_dropout(x, 0.2, True, seed=0)
    >>> abs(float(y.mean())) < 0.05, abs(float(y.std()) - 1) < 0.05
    (True, True)
    """
    p = check_probability(p)
    apply = plan_alpha(input, p, inplace, False, global_shape=global_shape, offsets=offsets)
    return run(input, p, training, inplace, seed, stream, apply)


def feature_alpha_dropout(
    input: Tensor,
    p: float = 0.5,
    training: bool = False,
    inplace: bool = False,
    *,
    seed: int | None = None,
    stream: int | None = None,
    global_shape: Sequence[int] | None = None,
    offsets: Sequence[int] | None = None,
) -> Tensor:
    """:func:`alpha_dropout` of whole channels (torch's ``F.feature_alpha_dropout``): the mask is
    drawn over ``(N, C, 1, ...)`` of an ``(N, C, ...)`` input."""
    p = check_probability(p)
    apply = plan_alpha(input, p, inplace, True, global_shape=global_shape, offsets=offsets)
    return run(input, p, training, inplace, seed, stream, apply)


def drop_block2d(
    input: Tensor,
    p: float = 0.1,
    block_size: int = 7,
    training: bool = True,
    *,
    gamma_scale: float = 1.0,
    batchwise: bool = False,
    seed: int | None = None,
    stream: int | None = None,
    global_shape: Sequence[int] | None = None,
    offsets: Sequence[int] | None = None,
) -> Tensor:
    """DropBlock (Ghiasi et al. 2018) with timm's block size and seed rate: zero ``block_size`` squares.

    ``y = x * keep * numel / kept`` with ``keep = dropkit.dropblock.drop_block_keep(x.shape, p, ...)``;
    block centres are drawn at rate ``gamma = gamma_scale * p * H W / k^2 / ((H - k + 1)(W - k + 1))``,
    ``k = min(block_size, H, W)``. Use it on convolutional feature maps.

    Args:
        p: the target fraction of dropped activations, in [0, 1].
        block_size: side of the dropped squares, a positive int (clipped to the feature map).
        gamma_scale: positive factor on the seed rate.
        batchwise: one mask for the whole batch (drawn over ``(1, C, H, W)``).
        global_shape, offsets: a ``ValueError`` when the call draws: the ``numel / kept`` rescale is
            over the whole tensor, which one shard cannot know (so are DTensors and ``data_parallel``).

    Shape: ``(N, C, H, W)``; output the same.

    >>> y = drop_block2d(torch.ones(1, 1, 5, 5), 0.3, 3, seed=1)
    >>> float(y.max()) == 25 / 16
    True
    """
    p = check_probability(p)
    draws = training and p > 0.0 and input.numel() > 0
    apply = plan_drop_block(
        input, p, block_size, gamma_scale, batchwise, draws=draws, global_shape=global_shape, offsets=offsets
    )
    return run(input, p, training, False, seed, stream, apply)
