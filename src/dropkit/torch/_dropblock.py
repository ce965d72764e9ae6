"""DropBlock for PyTorch (Ghiasi et al. 2018), function and module: the twin of :mod:`dropkit.dropblock`.

``y = x * keep * numel / kept`` with ``keep = dropkit.dropblock.drop_block_keep(x.shape, p, ...)``: whole
``block_size`` squares of a feature map are dropped. Backward replays ``keep`` from the ``(seed, stream)``
key. The rescale is over the whole tensor, so DropBlock takes no shard.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from dropkit._validation import check_positive_int, check_probability
from dropkit.dropblock import check_block, dropped_blocks, fitted_blocks, normal_words
from dropkit.torch import _function, _launch, _masks, _ops
from dropkit.torch._base import Apply, Stochastic, copy_if, on_local, run
from dropkit.torch._checks import check_input
from dropkit.torch._function import MaskCall, eager
from dropkit.torch._placement import Location, Placed, locate, static_shape, whole

__all__ = ["DropBlock2d", "block_layout", "check_peer_block", "drop_block2d", "peer_drop_block"]


def _drop_block(
    input: Tensor,
    p: float,
    block_size: int,
    gamma_scale: float,
    batchwise: bool,
    location: Location | None,
    seed: int | None,
    stream: int | Tensor,
) -> Tensor:
    def op(x: Tensor, key: Tensor) -> Tensor:
        return _ops.drop_block2d_op(x, key, p, block_size, float(gamma_scale), batchwise)

    return on_local(op, input, Placed(location, whole(static_shape(input))), seed, stream)


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
    check_block(tuple(input.shape), block_size, gamma_scale, batchwise)
    location = locate(input, global_shape, offsets)
    if draws and location is not None and (location.shard is not None or location.dtensor):
        raise ValueError(
            "drop_block2d does not take shards (global_shape/offsets, data_parallel, a DTensor): it "
            "rescales by the kept fraction of the whole tensor, which one shard cannot know; "
            "independent_masks works"
        )
    return functools.partial(_drop_block, input, p, block_size, gamma_scale, bool(batchwise), location)


def drop_block2d(
    input: Tensor,
    p: float = 0.1,
    block_size: int = 7,
    gamma_scale: float = 1.0,
    *,
    training: bool = True,
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
    check_input(input)
    draws = training and p > 0.0 and input.numel() > 0
    apply = plan_drop_block(
        input, p, block_size, gamma_scale, batchwise, draws=draws, global_shape=global_shape, offsets=offsets
    )
    return run(input, p, training, False, seed, stream, apply)


class DropBlock2d(Stochastic):
    """DropBlock (timm's ``DropBlock2d`` without its ignored arguments); see
    :func:`dropkit.torch.functional.drop_block2d`.

    Args:
        p: the target fraction of dropped activations, in [0, 1].
        block_size: side of the dropped squares, a positive int (clipped to the feature map).
        gamma_scale: positive factor on the seed rate.
        batchwise: one mask for the whole batch.
        seed: unsigned 64-bit seed, or ``None`` to follow torch's default generator.

    Shape: ``(N, C, H, W)``; output the same.

    >>> y = DropBlock2d(0.3, 3, seed=1)(torch.ones(1, 1, 5, 5))
    >>> int((y == 0).sum())
    9
    """

    def __init__(
        self,
        p: float = 0.1,
        block_size: int = 7,
        gamma_scale: float = 1.0,
        batchwise: bool = False,
        *,
        seed: int | None = None,
    ) -> None:
        check_block((1, 1, 1, 1), block_size, gamma_scale, batchwise)
        super().__init__(check_probability(p), seed=seed)
        self.block_size, self.gamma_scale, self.batchwise = block_size, gamma_scale, bool(batchwise)

    def _plan(
        self, input: Tensor, global_shape: Sequence[int] | None, offsets: Sequence[int] | None
    ) -> Apply:
        draws = self.training and self.p > 0.0 and input.numel() > 0
        return plan_drop_block(
            input,
            self.p,
            self.block_size,
            self.gamma_scale,
            self.batchwise,
            draws=draws,
            global_shape=global_shape,
            offsets=offsets,
        )

    def extra_repr(self) -> str:
        return (
            f"p={self.p}, block_size={self.block_size}, gamma_scale={self.gamma_scale}, "
            f"batchwise={self.batchwise}{self._seed_repr()}"
        )


# --- the peers' layouts: timm >= 1.0.23 and torchvision ----------------------------------------

Factor = Callable[[], tuple[Tensor, Tensor | None]]  # () -> (multiplier, additive noise or None)


def block_layout(
    x: Tensor,
    p: float,
    block_size: int,
    *,
    layout: str,
    gamma_scale: float = 1.0,
    couple_channels: bool = False,
    scale_by_keep: bool = True,
    with_noise: bool = False,
    eps: float = 1e-6,
    seed: int,
    stream: int,
) -> Factor:
    """The factor (and noise) of the peers' DropBlock at key ``(seed, stream)``, as the peer forms them.

    ``layout="timm"``: :func:`dropkit.dropblock.dropped_blocks` over ``(N, 1 or C, H, W)``, kept
    elements scaled by ``numel / (kept + 1e-7)`` in float32 (``scale_by_keep``), or, ``with_noise``,
    dropped ones replaced by :func:`dropkit.dropblock.normal_words`. ``layout="torchvision"``:
    :func:`dropkit.dropblock.fitted_blocks`, scaled by ``numel / (eps + kept)`` in ``x``'s dtype.
    """
    shape, dtype, device = tuple(x.shape), x.dtype, x.device

    def factor_of() -> tuple[Tensor, Tensor | None]:
        _masks.follow_threads(math.prod(shape))
        if layout == "timm":
            mask_shape = (shape[0], 1 if couple_channels else shape[1], *shape[2:])
            dropped = dropped_blocks(mask_shape, p, block_size, gamma_scale, seed=seed, stream=stream)
        else:
            dropped = fitted_blocks(shape, p, block_size, seed=seed, stream=stream)
        drop = torch.from_numpy(dropped).to(device=device, dtype=dtype)
        keep = 1.0 - drop
        if with_noise:
            noise = torch.from_numpy(normal_words(drop.shape, seed=seed, stream=stream))
            return keep, noise.to(device=device, dtype=dtype) * drop
        if layout == "timm":
            if scale_by_keep:
                keep = keep * (keep.numel() / keep.to(torch.float32).sum().add(1e-7)).to(dtype)
            return keep, None
        return keep * (keep.numel() / (eps + keep.sum())), None

    return factor_of


def _peer_impl(x: Tensor, seed: int, stream: int, p: float, block_size: int, layout: str, options) -> Tensor:
    """The peers' DropBlock, ``x * factor + noise`` (:func:`block_layout`), at ``(seed, stream)``."""
    factor, noise = block_layout(x, p, block_size, layout=layout, seed=seed, stream=stream, **options)()
    y = x * factor
    return y if noise is None else y + noise


def _peer_derivative(
    t: Tensor, seed: int, stream: int, p: float, block_size: int, layout: str, options
) -> Tensor:
    """Its derivative applied to ``t``: ``t * factor``, drawn again from the key (differentiable)."""
    return t * block_layout(t, p, block_size, layout=layout, seed=seed, stream=stream, **options)()[0]


@torch.library.custom_op("dropkit::peer_drop_block", mutates_args=())
def _peer_drop_block_custom(
    x: Tensor,
    key: Tensor,
    p: float,
    block_size: int,
    layout: str,
    gamma_scale: float,
    couple_channels: bool,
    scale_by_keep: bool,
    with_noise: bool,
    eps: float,
    derivative: bool,
) -> Tensor:
    """The peers' DropBlock, ``x * factor + noise``, at the int64 key ``(seed, stream)``; with
    ``derivative``, ``x * factor`` (its own backward: the factor is the derivative)."""
    seed, stream = _ops.unpack_key(key)
    options = {"gamma_scale": gamma_scale, "couple_channels": couple_channels, "eps": eps}
    options |= {"scale_by_keep": scale_by_keep, "with_noise": with_noise}
    rest = (p, block_size, layout, options)
    return (_peer_derivative if derivative else _peer_impl)(x, seed, stream, *rest)


@_peer_drop_block_custom.register_fake
def _peer_drop_block_fake(x: Tensor, key: Tensor, *args) -> Tensor:
    return _launch.empty_dense_like(x)


def _peer_setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(inputs[1])  # the 16-byte key, never the factor
    ctx.args = inputs[2:-1]


def _peer_backward(ctx, grad: Tensor):
    (key,) = ctx.saved_tensors
    return _peer_drop_block_custom(grad, key, *ctx.args, True), *(None for _ in range(10))


_peer_drop_block_custom.register_autograd(_peer_backward, setup_context=_peer_setup_context)


def peer_drop_block(
    x: Tensor,
    p: float,
    block_size: int,
    inplace: bool,
    seed: int | None,
    stream: int | Tensor,
    *,
    layout: str,
    gamma_scale: float = 1.0,
    couple_channels: bool = False,
    scale_by_keep: bool = True,
    with_noise: bool = False,
    eps: float = 1e-6,
) -> Tensor:
    """The peers' DropBlock (:func:`block_layout`) at ``(seed, stream)``, ``seed=None`` drawing one.

    Eagerly the mask Function of :mod:`._function` (backward, forward AD and torch.func replay the
    factor); under a tracer or compiler (or with a run-time counter) ``dropkit::peer_drop_block``,
    which they record. In place, the result is copied into ``x``.
    """
    options = {"gamma_scale": gamma_scale, "couple_channels": couple_channels, "eps": eps}
    options |= {"scale_by_keep": scale_by_keep, "with_noise": with_noise}
    if eager(x) and not isinstance(stream, Tensor):
        drawn = seed is None
        seed = _ops.fresh_seed() if drawn else seed
        call = MaskCall(_peer_impl, _peer_derivative, seed, stream, (p, block_size, layout, options), drawn)
        return copy_if(inplace, x, _function.apply(call, x))
    key = _ops.key_tensor(seed, stream)
    y = _peer_drop_block_custom(
        x, key, p, block_size, layout, gamma_scale, couple_channels, scale_by_keep, with_noise, eps, False
    )
    return copy_if(inplace, x, y)


def check_peer_block(x: Tensor, block_size: object, spatial: int, name: str) -> None:
    """A peer DropBlock's input checks: a tensor of ``2 + spatial`` dims, a positive int block."""
    check_input(x)
    check_positive_int("block_size", block_size)
    if x.dim() != 2 + spatial:
        letters = "HW" if spatial == 2 else "DHW"
        raise ValueError(
            f"{name} expects input of shape (N, C, {', '.join(letters)}), got a {x.dim()}D input"
        )
