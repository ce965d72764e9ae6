"""DropBlock for PyTorch (Ghiasi et al. 2018), function and module: the twin of :mod:`dropkit.dropblock`.

``y = x * keep * numel / kept`` with ``keep = dropkit.dropblock.drop_block_keep(x.shape, p, ...)``: whole
``block_size`` squares of a feature map are dropped. Backward replays ``keep`` from the ``(seed, stream)``
key. The rescale is over the whole tensor, so DropBlock takes no shard.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from torch import Tensor

from dropkit._validation import check_probability
from dropkit.dropblock import check_block
from dropkit.torch import _ops
from dropkit.torch._base import Apply, Stochastic, on_local, run
from dropkit.torch._checks import check_input
from dropkit.torch._placement import Location, Placed, locate, whole

__all__ = ["DropBlock2d", "drop_block2d"]


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

    return on_local(op, input, Placed(location, whole(tuple(input.shape))), seed, stream)


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
