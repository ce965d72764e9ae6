"""Gaussian and alpha dropout for PyTorch as functions and modules: the twin of :mod:`dropkit.noise`.

* Gaussian dropout multiplies by :func:`dropkit.noise.gaussian_noise` (Box-Muller of the contract's words).
* Alpha dropout (Klambauer et al. 2017) is ``a x + a alpha' p`` where kept and ``-a alpha' (1 - p)``
  where dropped, with torch's constants; ``feature`` draws one decision per channel.

Backward replays the noise from the ``(seed, stream)`` key: ``d(x * eps)/dx = eps``, and for alpha
``dy/dx = keep * a`` (see :mod:`dropkit.torch._ops`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from torch import Tensor, nn

from dropkit._validation import check_probability
from dropkit.layers import feature_mask_shape
from dropkit.noise import check_gaussian_p
from dropkit.torch import _ops
from dropkit.torch._base import Apply, Stochastic, copy_if, on_local, run, traceable
from dropkit.torch._checks import check_feature_rank, check_input
from dropkit.torch._placement import Placed, place

__all__ = [
    "AlphaDropout",
    "FeatureAlphaDropout",
    "GaussianDropout",
    "alpha_dropout",
    "feature_alpha_dropout",
    "gaussian_dropout",
]


def _gaussian(input: Tensor, p: float, placed: Placed, seed: int | None, stream: int | Tensor) -> Tensor:
    mask = placed.mask

    def op(x: Tensor, key: Tensor) -> Tensor:
        return _ops.gaussian_dropout_op(x, key, p, list(mask.global_shape), list(mask.offsets))

    return on_local(op, input, placed, seed, stream)


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


@traceable
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
    p = check_gaussian_p(p)
    apply = plan_gaussian(input, p, global_shape=global_shape, offsets=offsets)
    return run(input, p, training, False, seed, stream, apply)


def _alpha(
    input: Tensor, p: float, placed: Placed, inplace: bool, seed: int | None, stream: int | Tensor
) -> Tensor:
    key = None if p == 1.0 else _ops.numbers_key(input, placed.location is not None, seed, stream)
    if key is not None:  # an eager call on an unplaced input: no key tensor
        output = _ops.alpha_dropout(input, p, key[0], key[1], placed.mask, drawn=key[2])
        return copy_if(inplace, input, output)

    def op(x: Tensor, key: Tensor) -> Tensor:
        # p == 1 gives zeros, as torch does; a = 1/sqrt(...(1 - p)) is infinite there.
        if p == 1.0:
            return _ops.bernoulli(x, key, p, 1.0, placed.mask)
        return _ops.alpha_dropout_op(x, key, p, *_ops.mask_args(placed.mask))

    return copy_if(inplace, input, on_local(op, input, placed, seed, stream))


def plan_alpha(
    input: Tensor,
    p: float,
    training: bool,
    inplace: bool,
    feature: bool,
    *,
    global_shape: Sequence[int] | None = None,
    offsets: Sequence[int] | None = None,
) -> Apply:
    """Alpha dropout (per element, or per channel of ``(N, C, ...)`` when ``feature``, with torch's rank
    check), keeping SELU's mean and variance."""
    check_input(input)
    if feature:
        check_feature_rank(input.dim(), p, training, input.numel())
    placed = place(input, feature_mask_shape if feature else lambda shape: shape, global_shape, offsets)
    dtensor = placed.location is not None and placed.location.dtensor
    if dtensor and any(placement.is_partial() for placement in input.placements):
        raise ValueError(
            "alpha dropout is affine (a x + b), so on a Partial DTensor every rank would add b: "
            "redistribute the input to Replicate or Shard placements first"
        )
    return functools.partial(_alpha, input, p, placed, inplace)


@traceable
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
    apply = plan_alpha(input, p, training, inplace, False, global_shape=global_shape, offsets=offsets)
    return run(input, p, training, inplace, seed, stream, apply)


@traceable
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
    drawn over ``(N, C, 1, ...)`` of an ``(N, C, ...)`` input. Below 2-D a call that draws raises
    torch's ``RuntimeError: Feature dropout requires at least 2 dimensions in the input``; out of
    training, at ``p == 0`` or ``p == 1`` any rank passes, as in torch.

    >>> y = feature_alpha_dropout(torch.zeros(2, 3, 4), 0.5, True, seed=0)
    >>> bool((y == y[:, :, :1]).all())
    True
    """
    p = check_probability(p)
    apply = plan_alpha(input, p, training, inplace, True, global_shape=global_shape, offsets=offsets)
    return run(input, p, training, inplace, seed, stream, apply)


# --- modules ----------------------------------------------------------------------------------


class GaussianDropout(Stochastic):
    """Gaussian dropout (Keras' ``GaussianDropout``): ``y = x * eps``, ``eps ~ N(1, p / (1 - p))``;
    see :func:`dropkit.torch.functional.gaussian_dropout`.

    Args:
        p: the dropout rate it imitates, in [0, 1).
        seed: unsigned 64-bit seed, or ``None`` to follow torch's default generator.

    Shape: any; output the same.

    >>> GaussianDropout(0.5, seed=0).eval()(torch.ones(2))
    tensor([1., 1.])
    """

    def __init__(self, p: float = 0.5, *, seed: int | None = None) -> None:
        super().__init__(check_gaussian_p(p), seed=seed)

    def _check_p(self) -> None:
        check_gaussian_p(self.p)

    def _plan(
        self, input: Tensor, global_shape: Sequence[int] | None, offsets: Sequence[int] | None
    ) -> Apply:
        return plan_gaussian(input, self.p, global_shape=global_shape, offsets=offsets)

    def extra_repr(self) -> str:
        return f"p={self.p}{self._seed_repr()}"


class AlphaDropout(Stochastic, nn.AlphaDropout):
    """torch's ``nn.AlphaDropout`` for SELU networks; see :func:`dropkit.torch.functional.alpha_dropout`.

    Unlike torch's module, ``inplace=True`` is honoured.

    Args:
        p: probability of dropping an element (a channel for :class:`FeatureAlphaDropout`), in [0, 1].
        inplace: write the result into the input.
        seed: unsigned 64-bit seed, or ``None`` to follow torch's default generator.

    Shape: any (``(N, C, ...)`` for :class:`FeatureAlphaDropout`); output the same.

    >>> AlphaDropout(0.5, seed=0).eval()(torch.ones(2))
    tensor([1., 1.])
    """

    feature = False

    def __init__(self, p: float = 0.5, inplace: bool = False, *, seed: int | None = None) -> None:
        super().__init__(check_probability(p), seed=seed)
        self.inplace = inplace

    def _plan(
        self, input: Tensor, global_shape: Sequence[int] | None, offsets: Sequence[int] | None
    ) -> Apply:
        return plan_alpha(
            input,
            self.p,
            self.training,
            self.inplace,
            self.feature,
            global_shape=global_shape,
            offsets=offsets,
        )

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}{self._seed_repr()}"


class FeatureAlphaDropout(AlphaDropout, nn.FeatureAlphaDropout):
    """torch's ``nn.FeatureAlphaDropout``: alpha dropout of whole channels of ``(N, C, ...)``.

    >>> y = FeatureAlphaDropout(0.5, seed=0)(torch.zeros(1, 4, 3))
    >>> bool((y == y[:, :, :1]).all())
    True
    """

    feature = True
