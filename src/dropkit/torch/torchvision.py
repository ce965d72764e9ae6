"""torchvision's ``StochasticDepth``/``stochastic_depth`` and ``DropBlock2d``/``DropBlock3d``/
``drop_block2d``/``drop_block3d``, by their names.

Swap ``from torchvision.ops import ...`` for ``from dropkit.torch.torchvision import ...``: same
signatures, defaults, error types and messages, plus dropkit's keyword-only ``seed`` (and ``stream`` for the
functions). What differs: the random draw is the contract's (:func:`dropkit.dropblock.fitted_blocks`,
:func:`dropkit.keep_mask`), not torch's RNG stream; backward replays it instead of keeping the mask.
"""

from __future__ import annotations

import functools
from typing import Any

from torch import Tensor

from dropkit._validation import check_probability
from dropkit.torch._base import Apply, Stochastic, run
from dropkit.torch._dropblock import check_peer_block, peer_drop_block
from dropkit.torch._layers import DropPath as _DropPath
from dropkit.torch._layers import drop_path

__all__ = [
    "DropBlock2d",
    "DropBlock3d",
    "StochasticDepth",
    "drop_block2d",
    "drop_block3d",
    "stochastic_depth",
]


def _check_p(p: float) -> float:
    if not isinstance(p, bool) and isinstance(p, int | float) and (p < 0.0 or p > 1.0):
        raise ValueError(f"drop probability has to be between 0 and 1, but got {p}")
    return check_probability(p)


def _check_mode(mode: str) -> str:
    if mode not in ["batch", "row"]:
        raise ValueError(f"mode has to be either 'batch' or 'row', but got {mode}")
    return mode


def stochastic_depth(
    input: Tensor,
    p: float,
    mode: str,
    training: bool = True,
    *,
    seed: int | None = None,
    stream: int | None = None,
) -> Tensor:
    """torchvision's stochastic depth (Huang et al. 2016): zero whole rows (``"row"``) or the whole
    batch (``"batch"``) with probability ``p``, scale survivors by ``1 / (1 - p)``; see
    :func:`dropkit.torch.functional.drop_path`.

    >>> stochastic_depth(torch.ones(4, 2), 0.5, "row", seed=0)[:, 0]
    tensor([0., 2., 2., 2.])
    """
    return drop_path(input, _check_p(p), training, mode=_check_mode(mode), seed=seed, stream=stream)


class StochasticDepth(_DropPath):
    """torchvision's ``StochasticDepth(p, mode)``: a :class:`dropkit.torch.DropPath`.

    >>> StochasticDepth(0.2, "batch")
    StochasticDepth(p=0.2, mode=batch)
    """

    def __init__(self, p: float, mode: str, *, seed: int | None = None) -> None:
        super().__init__(_check_p(p), _check_mode(mode), True, seed=seed)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(p={self.p}, mode={self.mode}{self._seed_repr()})"


def _block(
    x: Tensor, p: float, block_size: int, inplace: bool, eps: float, seed: int | None, stream: int | Tensor
) -> Tensor:
    return peer_drop_block(x, p, block_size, inplace, seed, stream, layout="torchvision", eps=eps)


def _plan_block(x: Tensor, p: float, block_size: int, inplace: bool, eps: float, spatial: int) -> Apply:
    check_peer_block(x, block_size, spatial, f"drop_block{spatial}d")
    if block_size > min(x.shape[2:]):
        raise ValueError(
            f"block_size must be at most the smallest spatial size {min(x.shape[2:])}, got {block_size}"
        )
    return functools.partial(_block, x, p, int(block_size), bool(inplace), float(eps))


def drop_block2d(
    input: Tensor,
    p: float,
    block_size: int,
    inplace: bool = False,
    eps: float = 1e-06,
    training: bool = True,
    *,
    seed: int | None = None,
    stream: int | None = None,
) -> Tensor:
    """torchvision's DropBlock (Ghiasi et al. 2018): zero ``k x k`` blocks that fit in the map, rescale.

    ``y = x * keep * numel / (eps + kept)`` with ``keep = ~fitted_blocks(x.shape, p, k, ...)``: centres at
    rate ``gamma = p H W / (k^2 (H - k + 1)(W - k + 1))``.

    Shape: ``(N, C, H, W)``; output the same.

    >>> y = drop_block2d(torch.ones(1, 1, 4, 4), 0.5, 3, seed=3)
    >>> int((y == 0).sum())
    9
    """
    p = _check_p(p)
    apply = _plan_block(input, p, block_size, inplace, eps, 2)
    return run(input, p, training, inplace, seed, stream, apply)


def drop_block3d(
    input: Tensor,
    p: float,
    block_size: int,
    inplace: bool = False,
    eps: float = 1e-06,
    training: bool = True,
    *,
    seed: int | None = None,
    stream: int | None = None,
) -> Tensor:
    """torchvision's 3-D DropBlock: :func:`drop_block2d` with ``k x k x k`` blocks over ``(N, C, D, H, W)``.

    >>> y = drop_block3d(torch.ones(1, 1, 3, 3, 3), 1.0, 3, seed=0)
    >>> bool((y == 0).all())
    True
    """
    p = _check_p(p)
    apply = _plan_block(input, p, block_size, inplace, eps, 3)
    return run(input, p, training, inplace, seed, stream, apply)


class DropBlock2d(Stochastic):
    """torchvision's ``DropBlock2d(p, block_size, inplace, eps)``; see :func:`drop_block2d`.

    >>> DropBlock2d(0.1, 3)
    DropBlock2d(p=0.1, block_size=3, inplace=False)
    """

    spatial = 2

    def __init__(
        self, p: float, block_size: int, inplace: bool = False, eps: float = 1e-06, *, seed: int | None = None
    ) -> None:
        super().__init__(_check_p(p), seed=seed)
        self.block_size, self.inplace, self.eps = block_size, inplace, eps

    def _plan(self, input: Tensor, global_shape: Any, offsets: Any) -> Apply:
        if global_shape is not None or offsets is not None:
            raise ValueError(
                f"{type(self).__name__} does not take shards: it rescales by the whole tensor's kept count"
            )
        return _plan_block(input, self.p, self.block_size, self.inplace, self.eps, self.spatial)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(p={self.p}, block_size={self.block_size}, "
            f"inplace={self.inplace}{self._seed_repr()})"
        )


class DropBlock3d(DropBlock2d):
    """torchvision's ``DropBlock3d``; see :func:`drop_block3d`."""

    spatial = 3
