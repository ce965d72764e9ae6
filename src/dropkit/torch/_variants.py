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
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from dropkit._validation import check_probability
from dropkit.dropblock import _check_block, drop_block_keep
from dropkit.layers import channel_mask_shape, drop_path_mask_shape, locked_mask_shape, noise_mask_shape
from dropkit.noise import _alpha_constants, _alpha_mask_shape, _check_gaussian_p, gaussian_noise
from dropkit.philox import keep_mask
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


# --- the ops ---------------------------------------------------------------------------------


def _unpack(key: Tensor) -> tuple[int, int]:
    """The unsigned ``(seed, stream)`` of an int64 key tensor of shape ``(2,)``."""
    seed, stream = key.tolist()
    return _ops.to_unsigned(seed), _ops.to_unsigned(stream)


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
    out = _ops.empty_dense_like(x)
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


@torch.library.custom_op("dropkit::shaped_dropout", mutates_args=())
def shaped_dropout_op(x: Tensor, key: Tensor, p: float, scale: float, mask_shape: list[int]) -> Tensor:
    """``x * keep * scale`` with ``keep = keep_mask(mask_shape, p, seed, stream)`` broadcast to ``x``."""
    seed, stream = _unpack(key)
    return _scale_kept(x, keep_mask(tuple(mask_shape), p, seed=seed, stream=stream), scale)


@shaped_dropout_op.register_fake
def _shaped_dropout_fake(x: Tensor, key: Tensor, p: float, scale: float, mask_shape: list[int]) -> Tensor:
    return _ops.empty_dense_like(x)


_self_adjoint(shaped_dropout_op)


def _masked(x: Tensor, key: Tensor, p: float, scale: float, mask_shape: Shape) -> Tensor:
    """``x * keep * scale``: the core's fused kernel for a full-shape mask, else the broadcast mask."""
    if mask_shape == tuple(x.shape):
        return _ops.dropout_keyed_op(x, key, p, scale, 0)
    return shaped_dropout_op(x, key, p, scale, list(mask_shape))


@torch.library.custom_op("dropkit::gaussian_dropout", mutates_args=())
def gaussian_dropout_op(x: Tensor, key: Tensor, p: float) -> Tensor:
    """``x * eps`` with ``eps = gaussian_noise(x.shape, p, seed, stream)``, formed in float32/float64."""
    seed, stream = _unpack(key)
    wide = _wide(x.dtype)
    noise = torch.from_numpy(gaussian_noise(tuple(x.shape), p, seed=seed, stream=stream))
    return torch.mul(x.to(wide), noise.to(wide).to(x.device), out=_ops.empty_dense_like(x))


@gaussian_dropout_op.register_fake
def _gaussian_dropout_fake(x: Tensor, key: Tensor, p: float) -> Tensor:
    return _ops.empty_dense_like(x)


_self_adjoint(gaussian_dropout_op)


@torch.library.custom_op("dropkit::drop_block2d", mutates_args=())
def drop_block2d_op(
    x: Tensor, key: Tensor, p: float, block_size: int, gamma_scale: float, batchwise: bool
) -> Tensor:
    """``x * keep * numel / kept`` with ``keep = drop_block_keep(x.shape, ...)``; zeros if nothing is kept."""
    seed, stream = _unpack(key)
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
def alpha_dropout_op(x: Tensor, key: Tensor, p: float, mask_shape: list[int]) -> Tensor:
    """``keep ? a x + a alpha' p : -a alpha' (1 - p)``, ``keep = keep_mask(mask_shape, ...)``, ``p < 1``."""
    seed, stream = _unpack(key)
    keep = keep_mask(tuple(mask_shape), p, seed=seed, stream=stream)
    wide = _wide(x.dtype)
    a, kept_offset, dropped_value = (_constant(c, wide) for c in _alpha_constants(p))
    out = _ops.empty_dense_like(x)
    torch.add(x.to(wide) * a, kept_offset, out=out)  # two roundings in the compute type, as the reference
    return _fill_dropped(out, keep, dropped_value)


@alpha_dropout_op.register_fake
def _alpha_dropout_fake(x: Tensor, key: Tensor, p: float, mask_shape: list[int]) -> Tensor:
    return _ops.empty_dense_like(x)


def _alpha_setup_context(ctx, inputs, output) -> None:
    _, key, ctx.p, ctx.mask_shape = inputs
    ctx.save_for_backward(key)


def _alpha_backward(ctx, grad: Tensor):
    # dy/dx = keep * a: a Bernoulli mask with scale a, the same keep decisions.
    (key,) = ctx.saved_tensors
    a = float(_alpha_constants(ctx.p)[0])
    return _masked(grad, key, ctx.p, a, tuple(ctx.mask_shape)), None, None, None


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
    refuse_sharding(input)
    if not training or p == 0.0 or input.numel() == 0:
        return input
    check_inplace(input, inplace)
    return apply(seed, stream)


def refuse_sharding(input: Tensor) -> None:
    """The variants draw whole-tensor masks: a shard must be an error, never a silently wrong mask."""
    if distributed.locate(input) is not None:
        raise ValueError(
            "dropkit's dropout variants do not take shards yet (a DTensor, data_parallel or "
            "independent_masks): only dropkit.torch.Dropout / dropout do"
        )


# --- plans: every check of a variant, then how it applies (used by functions and modules) ----


def _bernoulli(
    input: Tensor, p: float, mask_shape: Shape, scale: float, inplace: bool, seed: int | None, stream
) -> Tensor:
    output = _masked(input, _ops.key_tensor(seed, stream), p, scale, mask_shape)
    return input.copy_(output) if inplace else output


def plan_dropout(input: Tensor, p: float, inplace: bool, noise_shape: Sequence[int | None] | None) -> Apply:
    """Bernoulli dropout drawn over Keras' ``noise_shape`` and broadcast to the input."""
    check_input(input)
    mask_shape = noise_mask_shape(tuple(input.shape), noise_shape)
    return functools.partial(_bernoulli, input, p, mask_shape, training_scale(p), inplace)


def plan_channel(input: Tensor, p: float, inplace: bool, spatial_dims: int) -> Apply:
    """Channel dropout: one mask entry per (sample, channel), shared over ``spatial_dims`` trailing axes."""
    check_input(input)
    mask_shape = channel_mask_shape(tuple(input.shape), spatial_dims)
    return functools.partial(_bernoulli, input, p, mask_shape, training_scale(p), inplace)


def plan_locked(input: Tensor, p: float, batch_first: bool) -> Apply:
    """Locked dropout: one mask per sequence, shared over the time axis."""
    check_input(input)
    mask_shape = locked_mask_shape(tuple(input.shape), batch_first)
    return functools.partial(_bernoulli, input, p, mask_shape, training_scale(p), False)


def plan_drop_path(input: Tensor, p: float, mode: str, scale_by_keep: bool) -> Apply:
    """Drop path: one decision per sample (``"row"``) or per batch; ``1/(1-p)`` if ``scale_by_keep``."""
    check_input(input)
    mask_shape = drop_path_mask_shape(tuple(input.shape), mode)
    scale = training_scale(p) if scale_by_keep else 1.0
    return functools.partial(_bernoulli, input, p, mask_shape, scale, False)


def _gaussian(input: Tensor, p: float, seed: int | None, stream) -> Tensor:
    return gaussian_dropout_op(input, _ops.key_tensor(seed, stream), p)


def plan_gaussian(input: Tensor, p: float) -> Apply:
    """Gaussian dropout: ``y = x * eps``, ``eps ~ N(1, p/(1-p))`` per element."""
    check_input(input)
    return functools.partial(_gaussian, input, p)


def _alpha(input: Tensor, p: float, mask_shape: Shape, inplace: bool, seed: int | None, stream) -> Tensor:
    key = _ops.key_tensor(seed, stream)
    # p == 1 gives zeros, as torch does; a = 1/sqrt(...(1 - p)) is infinite there.
    output = (
        _masked(input, key, p, 1.0, mask_shape)
        if p == 1.0
        else alpha_dropout_op(input, key, p, list(mask_shape))
    )
    return input.copy_(output) if inplace else output


def plan_alpha(input: Tensor, p: float, inplace: bool, feature: bool) -> Apply:
    """Alpha dropout (per element, or per channel when ``feature``), keeping SELU's mean and variance."""
    check_input(input)
    mask_shape = _alpha_mask_shape(tuple(input.shape), feature)
    return functools.partial(_alpha, input, p, mask_shape, inplace)


def _drop_block(
    input: Tensor, p: float, block_size: int, gamma_scale: float, batchwise: bool, seed: int | None, stream
) -> Tensor:
    return drop_block2d_op(input, _ops.key_tensor(seed, stream), p, block_size, float(gamma_scale), batchwise)


def plan_drop_block(input: Tensor, p: float, block_size: int, gamma_scale: float, batchwise: bool) -> Apply:
    """DropBlock over ``(N, C, H, W)``: zero ``block_size`` squares; ``batchwise``: one mask for all."""
    check_input(input)
    _check_block(tuple(input.shape), block_size, gamma_scale, batchwise)
    return functools.partial(_drop_block, input, p, block_size, gamma_scale, bool(batchwise))


# --- functional forms ------------------------------------------------------------------------


def noise_shape_dropout(
    input: Tensor,
    p: float,
    training: bool,
    inplace: bool,
    noise_shape: Sequence[int | None],
    seed: int | None,
    stream: int | None,
) -> Tensor:
    """:func:`dropkit.torch.dropout` with ``noise_shape`` given (it documents the argument)."""
    p = check_probability(p)
    return run(input, p, training, inplace, seed, stream, plan_dropout(input, p, inplace, noise_shape))


def channel_dropout(
    input: Tensor,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    spatial_dims: int = 2,
    seed: int | None = None,
    stream: int | None = None,
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
        spatial_dims: 1, 2 or 3 for torch's ``dropout1d``, ``dropout2d``, ``dropout3d``.

    Shape: output has ``input``'s shape.

    >>> channel_dropout(torch.ones(1, 3, 2, 2), 0.5, seed=0)[0, :, 0, 0]
    tensor([0., 2., 2.])
    """
    p = check_probability(p)
    apply = plan_channel(input, p, inplace, spatial_dims)
    return run(input, p, training, inplace, seed, stream, apply)


def dropout1d(
    input: Tensor,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    seed: int | None = None,
    stream: int | None = None,
) -> Tensor:
    """torch's ``F.dropout1d``: :func:`channel_dropout` of ``(N, C, L)`` or ``(C, L)``."""
    return channel_dropout(input, p, training, inplace, spatial_dims=1, seed=seed, stream=stream)


def dropout2d(
    input: Tensor,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    seed: int | None = None,
    stream: int | None = None,
) -> Tensor:
    """torch's ``F.dropout2d``: :func:`channel_dropout` of ``(N, C, H, W)`` or ``(C, H, W)``.

    Unlike torch, a 3-D input is always the unbatched ``(C, H, W)``, with no warning; use
    :func:`dropout1d` for ``(N, C, L)``.
    """
    return channel_dropout(input, p, training, inplace, spatial_dims=2, seed=seed, stream=stream)


def dropout3d(
    input: Tensor,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    seed: int | None = None,
    stream: int | None = None,
) -> Tensor:
    """torch's ``F.dropout3d``: :func:`channel_dropout` of ``(N, C, D, H, W)`` or ``(C, D, H, W)``."""
    return channel_dropout(input, p, training, inplace, spatial_dims=3, seed=seed, stream=stream)


def locked_dropout(
    input: Tensor,
    p: float = 0.5,
    training: bool = True,
    *,
    batch_first: bool = False,
    seed: int | None = None,
    stream: int | None = None,
) -> Tensor:
    """Locked (variational) dropout: one mask per sequence, shared by every time step (AWD-LSTM).

    ``y[t] = x[t] * m / (1 - p)`` for every ``t``, ``m = keep_mask((1, N, *features), p, seed, stream)``.
    Use it on RNN inputs and outputs (Gal & Ghahramani 2016): a fresh mask per step injects noise the
    recurrence amplifies.

    Shape: ``(T, N, *features)`` (or unbatched ``(T, features)``), or ``(N, T, *features)`` with
    ``batch_first``; output the same.

    >>> y = locked_dropout(torch.ones(3, 1, 4), 0.5, seed=0)
    >>> bool((y == y[0]).all())
    True
    """
    p = check_probability(p)
    return run(input, p, training, False, seed, stream, plan_locked(input, p, batch_first))


def drop_path(
    input: Tensor,
    p: float = 0.0,
    training: bool = True,
    *,
    mode: str = "row",
    scale_by_keep: bool = True,
    seed: int | None = None,
    stream: int | None = None,
) -> Tensor:
    """Drop path / stochastic depth (Huang et al. 2016): drop a residual branch for whole samples.

    ``y = x * m * s`` with ``m = keep_mask((N, 1, ...), p)`` (``mode="row"``, timm's ``drop_path``) or
    ``keep_mask((1, 1, ...), p)`` (``mode="batch"``, torchvision's ``stochastic_depth``), and
    ``s = 1 / (1 - p)`` unless ``scale_by_keep=False`` (timm). Apply it to a branch before the residual
    addition: ``x + drop_path(f(x), p)``. Inference is the identity.

    Shape: ``(N, ...)``; output the same.

    >>> drop_path(torch.ones(4, 2), 0.5, seed=0)[:, 0]
    tensor([0., 2., 2., 2.])
    """
    p = check_probability(p)
    return run(input, p, training, False, seed, stream, plan_drop_path(input, p, mode, scale_by_keep))


def gaussian_dropout(
    input: Tensor,
    p: float = 0.5,
    training: bool = True,
    *,
    seed: int | None = None,
    stream: int | None = None,
) -> Tensor:
    """Gaussian dropout (Srivastava et al. 2014, section 10; Keras' GaussianDropout): ``y = x * eps``.

    ``eps = 1 + sqrt(p / (1 - p)) z`` with ``z ~ N(0, 1)`` from :func:`dropkit.noise.gaussian_noise`
    (Box-Muller of the contract's words), so ``eps`` has inverted dropout's mean 1 and variance
    ``p / (1 - p)`` without its zeros. The noise is computed on the CPU in float64 (then rounded to the
    compute type), also for CUDA tensors.

    Args:
        p: the dropout rate it imitates, in [0, 1).

    >>> gaussian_dropout(torch.ones(3), 0.0, seed=0)
    tensor([1., 1., 1.])
    """
    p = _check_gaussian_p(p)
    return run(input, p, training, False, seed, stream, plan_gaussian(input, p))


def alpha_dropout(
    input: Tensor,
    p: float = 0.5,
    training: bool = False,
    inplace: bool = False,
    *,
    seed: int | None = None,
    stream: int | None = None,
) -> Tensor:
    """Alpha dropout for SELU networks (Klambauer et al. 2017), torch's ``F.alpha_dropout``.

    ``y = a x + a alpha' p`` where kept, ``-a alpha' (1 - p)`` where dropped, with
    ``alpha' = 1.7580993408473766`` and ``a = ((1 - p)(1 + p alpha'^2))^(-1/2)``: zero-mean unit-variance
    inputs stay so. ``p == 1`` gives zeros (and a zero gradient), as torch does. ``training`` defaults
    to False, as in torch.

    >>> x = torch.randn(10_000, generator=torch.Generator().manual_seed(0))
    >>> y = alpha_dropout(x, 0.2, True, seed=0)
    >>> abs(float(y.mean())) < 0.05, abs(float(y.std()) - 1) < 0.05
    (True, True)
    """
    p = check_probability(p)
    return run(input, p, training, inplace, seed, stream, plan_alpha(input, p, inplace, False))


def feature_alpha_dropout(
    input: Tensor,
    p: float = 0.5,
    training: bool = False,
    inplace: bool = False,
    *,
    seed: int | None = None,
    stream: int | None = None,
) -> Tensor:
    """:func:`alpha_dropout` of whole channels (torch's ``F.feature_alpha_dropout``): the mask is
    drawn over ``(N, C, 1, ...)`` of an ``(N, C, ...)`` input."""
    p = check_probability(p)
    return run(input, p, training, inplace, seed, stream, plan_alpha(input, p, inplace, True))


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

    Shape: ``(N, C, H, W)``; output the same.

    >>> y = drop_block2d(torch.ones(1, 1, 5, 5), 0.3, 3, seed=1)
    >>> float(y.max()) == 25 / 16
    True
    """
    p = check_probability(p)
    apply = plan_drop_block(input, p, block_size, gamma_scale, batchwise)
    return run(input, p, training, False, seed, stream, apply)
