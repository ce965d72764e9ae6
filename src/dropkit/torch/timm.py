"""timm's ``DropPath``/``drop_path`` and ``DropBlock2d``/``drop_block_2d`` (timm >= 1.0.23), by their names.

Swap ``from timm.layers import DropBlock2d, DropPath, drop_block_2d, drop_path`` for
``from dropkit.torch.timm import ...``: same signatures, defaults and keywords (``couple_channels``,
``scale_by_keep``, ``with_noise``, ``inplace``; ``batchwise`` and ``fast``, removed in timm 1.0.23, still
accepted silently by the module, any other keyword a ``UserWarning`` as timm gives), plus dropkit's
keyword-only ``seed`` (and ``stream`` for the functions). What differs: the random draw is the contract's
(:func:`dropkit.dropblock.dropped_blocks`, :func:`dropkit.keep_mask`), not torch's RNG stream, and
backward replays the mask from ``(seed, stream)`` instead of keeping it.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

from torch import Tensor

from dropkit._validation import check_probability
from dropkit.torch._base import Apply, Stochastic, run
from dropkit.torch._dropblock import check_peer_block, peer_drop_block
from dropkit.torch._layers import DropPath as _DropPath
from dropkit.torch._layers import drop_path as _drop_path

__all__ = ["DropBlock2d", "DropPath", "drop_block_2d", "drop_path"]

_REMOVED = frozenset({"batchwise", "fast"})  # timm 1.0.23 dropped them and consumes them silently


def _block(x: Tensor, options: dict[str, Any], seed: int | None, stream: int | Tensor) -> Tensor:
    layout = {k: v for k, v in options.items() if k not in ("inplace", "p", "block_size")}
    p, block_size, inplace = options["p"], options["block_size"], options["inplace"]
    return peer_drop_block(x, p, block_size, inplace, seed, stream, layout="timm", **layout)


def _plan_block(x: Tensor, **options: Any) -> Apply:
    check_peer_block(x, options["block_size"], 2, "drop_block_2d")
    return functools.partial(_block, x, options)


def drop_block_2d(
    x: Tensor,
    drop_prob: float = 0.1,
    block_size: int = 7,
    gamma_scale: float = 1.0,
    with_noise: bool = False,
    inplace: bool = False,
    couple_channels: bool = True,
    scale_by_keep: bool = True,
    *,
    seed: int | None = None,
    stream: int | None = None,
) -> Tensor:
    """timm's DropBlock (Ghiasi et al. 2018): zero ``k x k`` blocks centred anywhere, rescale the rest.

    ``y = x * keep * numel / (kept + 1e-7)`` with ``keep = ~dropped_blocks((N, 1 or C, H, W), ...)``;
    with ``with_noise`` dropped elements become standard normals instead (no rescale). Like timm's, it
    applies whenever called (no ``training`` argument); ``drop_prob == 0`` returns ``x``.

    Args:
        drop_prob: the target dropped fraction, in [0, 1].
        block_size: block side, clipped to ``H`` and ``W``.
        gamma_scale: factor on the block-centre rate.
        with_noise: fill dropped blocks with ``N(0, 1)`` noise.
        inplace: write into ``x``.
        couple_channels: one spatial mask for all channels of a sample (the paper's), else one per channel.
        scale_by_keep: rescale kept elements by ``numel / kept``.

    Shape: ``(N, C, H, W)``; output the same.

    >>> y = drop_block_2d(torch.ones(1, 2, 4, 4), 0.3, 3, seed=1)
    >>> bool((y[:, 0] == y[:, 1]).all()), round(float(y.max()), 4)
    (True, 2.0)
    """
    drop_prob = check_probability(drop_prob)
    apply = _plan_block(
        x,
        p=drop_prob,
        block_size=block_size,
        gamma_scale=gamma_scale,
        with_noise=bool(with_noise),
        inplace=bool(inplace),
        couple_channels=bool(couple_channels),
        scale_by_keep=bool(scale_by_keep),
    )
    return run(x, drop_prob, True, inplace, seed, stream, apply)


class DropBlock2d(Stochastic):
    """timm's ``DropBlock2d``; see :func:`drop_block_2d`. The identity in eval mode or at ``drop_prob == 0``.

    >>> DropBlock2d(0.1, 3, batchwise=True, seed=0).couple_channels
    True
    """

    def __init__(
        self,
        drop_prob: float = 0.1,
        block_size: int = 7,
        gamma_scale: float = 1.0,
        with_noise: bool = False,
        inplace: bool = False,
        couple_channels: bool = True,
        scale_by_keep: bool = True,
        *,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(check_probability(drop_prob), seed=seed)
        self.block_size, self.gamma_scale, self.with_noise = block_size, gamma_scale, with_noise
        self.inplace, self.couple_channels, self.scale_by_keep = inplace, couple_channels, scale_by_keep
        for key in kwargs:
            if key not in _REMOVED:
                warnings.warn(f"DropBlock2d() got unexpected keyword argument '{key}'", stacklevel=2)

    @property
    def drop_prob(self) -> float:
        """timm's name for ``p``."""
        return self.p

    @drop_prob.setter
    def drop_prob(self, value: float) -> None:
        self.p = value

    def _plan(self, input: Tensor, global_shape: Any, offsets: Any) -> Apply:
        if global_shape is not None or offsets is not None:
            raise ValueError("DropBlock2d does not take shards: it rescales by the whole tensor's kept count")
        return _plan_block(
            input,
            p=self.p,
            block_size=self.block_size,
            gamma_scale=self.gamma_scale,
            with_noise=bool(self.with_noise),
            inplace=bool(self.inplace),
            couple_channels=bool(self.couple_channels),
            scale_by_keep=bool(self.scale_by_keep),
        )

    def extra_repr(self) -> str:
        return (
            f"drop_prob={self.p}, block_size={self.block_size}, gamma_scale={self.gamma_scale}, "
            f"with_noise={self.with_noise}, inplace={self.inplace}, couple_channels={self.couple_channels}, "
            f"scale_by_keep={self.scale_by_keep}{self._seed_repr()}"
        )


def drop_path(
    x: Tensor,
    drop_prob: float = 0.0,
    training: bool = False,
    scale_by_keep: bool = True,
    *,
    seed: int | None = None,
    stream: int | None = None,
) -> Tensor:
    """timm's ``drop_path``: :func:`dropkit.torch.functional.drop_path` with ``mode="row"``; note timm's
    ``training=False`` default.

    >>> drop_path(torch.ones(4, 2), 0.5, True, seed=0)[:, 0]
    tensor([0., 2., 2., 2.])
    """
    return _drop_path(x, drop_prob, training, scale_by_keep=scale_by_keep, seed=seed, stream=stream)


class DropPath(_DropPath):
    """timm's ``DropPath(drop_prob, scale_by_keep)``: a :class:`dropkit.torch.DropPath` with ``mode="row"``.

    >>> DropPath(0.123)
    DropPath(drop_prob=0.123)
    """

    def __init__(
        self, drop_prob: float = 0.0, scale_by_keep: bool = True, *, seed: int | None = None
    ) -> None:
        super().__init__(drop_prob, "row", scale_by_keep, seed=seed)

    @property
    def drop_prob(self) -> float:
        """timm's name for ``p``."""
        return self.p

    @drop_prob.setter
    def drop_prob(self, value: float) -> None:
        self.p = value

    def extra_repr(self) -> str:
        return f"drop_prob={round(self.p, 3):0.3f}{self._seed_repr()}"
