"""The dropout variants for PyTorch, modules: thin layers over :mod:`dropkit.torch._variants`.

Randomness is :class:`dropkit.torch.Dropout`'s: with ``seed=None`` every training call draws a fresh seed
from torch's default CPU generator (stream 0); with an explicit ``seed`` the k-th training call uses
stream k. Every module sets ``stochastic = True``, so :func:`dropkit.torch.mc_dropout` turns it on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from dropkit._validation import check_probability
from dropkit.dropblock import _check_block
from dropkit.layers import drop_path_mask_shape
from dropkit.noise import _check_gaussian_p
from dropkit.torch import _variants as V
from dropkit.torch.functional import check_inplace
from dropkit.torch.modules import SeededModule

__all__ = [
    "AlphaDropout",
    "DropBlock2d",
    "DropConnectLinear",
    "DropPath",
    "Dropout1d",
    "Dropout2d",
    "Dropout3d",
    "FeatureAlphaDropout",
    "GaussianDropout",
    "LockedDropout",
    "WeightDrop",
]


class _Stochastic(SeededModule):
    """Shared machinery: the seed and call counter (from :class:`SeededModule`), train/eval. A
    subclass says how it checks and applies itself to an input (``_plan``, from
    :mod:`dropkit.torch._variants`)."""

    inplace = False

    def __init__(self, p: float, *, seed: int | None) -> None:
        super().__init__(seed=seed)
        self.p = p  # checked by the subclass, whose range it knows

    def _plan(
        self, input: Tensor, global_shape: Sequence[int] | None, offsets: Sequence[int] | None
    ) -> V.Apply:
        raise NotImplementedError

    def _check_p(self) -> None:
        check_probability(self.p)  # p may have been reassigned since construction (a schedule)

    def forward(
        self,
        input: Tensor,
        *,
        global_shape: Sequence[int] | None = None,
        offsets: Sequence[int] | None = None,
    ) -> Tensor:
        """The variant applied in training (a fresh mask per call); ``input`` in eval or at ``p == 0``.

        ``global_shape``, ``offsets``: ``input`` is that slice of a global tensor (docs/distributed.md).
        """
        self._check_p()
        # Every check first: a rejected input moves no counter.
        apply = self._plan(input, global_shape, offsets)
        if not self.training:
            return input
        seeded = self.seed is not None  # else every call draws a seed; the counter is not used
        if self.p == 0.0 or input.numel() == 0:  # still a training call: it takes its stream
            return self._counted(input) if seeded else input
        check_inplace(input, self.inplace)
        output = apply(self.seed, self._stream() if seeded else 0)
        return self._counted(output) if seeded else output


class _ChannelDropout(_Stochastic):
    spatial_dims: int

    def __init__(self, p: float = 0.5, inplace: bool = False, *, seed: int | None = None) -> None:
        super().__init__(check_probability(p), seed=seed)
        self.inplace = inplace

    def _plan(
        self, input: Tensor, global_shape: Sequence[int] | None, offsets: Sequence[int] | None
    ) -> V.Apply:
        return V.plan_channel(
            input, self.p, self.inplace, self.spatial_dims, global_shape=global_shape, offsets=offsets
        )

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}{self._seed_repr()}"


class Dropout1d(_ChannelDropout):
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


class Dropout2d(_ChannelDropout):
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


class Dropout3d(_ChannelDropout):
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


class LockedDropout(_Stochastic):
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
    ) -> V.Apply:
        return V.plan_locked(input, self.p, self.batch_first, global_shape=global_shape, offsets=offsets)

    def extra_repr(self) -> str:
        return f"p={self.p}, batch_first={self.batch_first}{self._seed_repr()}"


class DropPath(_Stochastic):
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
    ) -> V.Apply:
        return V.plan_drop_path(
            input, self.p, self.mode, self.scale_by_keep, global_shape=global_shape, offsets=offsets
        )

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode!r}, scale_by_keep={self.scale_by_keep}{self._seed_repr()}"


class GaussianDropout(_Stochastic):
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
        super().__init__(_check_gaussian_p(p), seed=seed)

    def _check_p(self) -> None:
        _check_gaussian_p(self.p)

    def _plan(
        self, input: Tensor, global_shape: Sequence[int] | None, offsets: Sequence[int] | None
    ) -> V.Apply:
        return V.plan_gaussian(input, self.p, global_shape=global_shape, offsets=offsets)

    def extra_repr(self) -> str:
        return f"p={self.p}{self._seed_repr()}"


class AlphaDropout(_Stochastic):
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
    ) -> V.Apply:
        return V.plan_alpha(
            input, self.p, self.inplace, self.feature, global_shape=global_shape, offsets=offsets
        )

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}{self._seed_repr()}"


class FeatureAlphaDropout(AlphaDropout):
    """torch's ``nn.FeatureAlphaDropout``: alpha dropout of whole channels of ``(N, C, ...)``.

    >>> y = FeatureAlphaDropout(0.5, seed=0)(torch.zeros(1, 4, 3))
    >>> bool((y == y[:, :, :1]).all())
    True
    """

    feature = True


class DropBlock2d(_Stochastic):
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
        _check_block((1, 1, 1, 1), block_size, gamma_scale, batchwise)
        super().__init__(check_probability(p), seed=seed)
        self.block_size, self.gamma_scale, self.batchwise = block_size, gamma_scale, bool(batchwise)

    def _plan(
        self, input: Tensor, global_shape: Sequence[int] | None, offsets: Sequence[int] | None
    ) -> V.Apply:
        draws = self.training and self.p > 0.0 and input.numel() > 0
        return V.plan_drop_block(
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


class _WeightDropout(_Stochastic):
    """Dropout of a weight tensor. Weight ``index`` of ``count`` dropped together takes stream
    ``k * count + index`` on the k-th training call, so one seed gives every weight its own masks."""

    def __init__(self, p: float, *, seed: int | None, index: int = 0, count: int = 1) -> None:
        super().__init__(check_probability(p), seed=seed)
        self.index, self.count = index, count

    def _stream(self) -> int | Tensor:
        return super()._stream() * self.count + self.index

    def _plan(
        self, weight: Tensor, global_shape: Sequence[int] | None, offsets: Sequence[int] | None
    ) -> V.Apply:
        return V.plan_dropout(
            weight, self.p, False, None, global_shape=global_shape, offsets=offsets, batched=False
        )

    def extra_repr(self) -> str:
        return f"p={self.p}{self._seed_repr()}"


class DropConnectLinear(nn.Linear):
    """DropConnect (Wan et al. 2013): ``y = x (W * M / (1 - p))^T + b`` in training, ``nn.Linear`` in eval.

    A fresh mask ``M = keep_mask((out_features, in_features), p, seed, stream)`` over the weight per
    training call (the batch shares it); the bias is not dropped. It equals
    :class:`dropkit.dropconnect.DropConnectLinear` for the same seed and stream. Backward replays ``M``.

    Args:
        in_features, out_features, bias, device, dtype: as for ``nn.Linear``.
        p: probability of dropping a weight, in [0, 1].
        seed: unsigned 64-bit seed, or ``None`` to follow torch's default generator.

    Shape: ``(*, in_features) -> (*, out_features)``.

    >>> layer = DropConnectLinear(4, 3, p=0.5, seed=0)
    >>> layer(torch.ones(2, 4)).shape
    torch.Size([2, 3])
    """

    stochastic = True

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        p: float = 0.5,
        *,
        seed: int | None = None,
        device: Any = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        weight_dropout = _WeightDropout(p, seed=seed)  # checks p and seed before any weight is made
        super().__init__(in_features, out_features, bias, device, dtype)
        self.weight_dropout = weight_dropout

    def forward(self, input: Tensor) -> Tensor:
        """``y = x @ (W * M / (1 - p)).T + b`` in training, ``x @ W.T + b`` in eval."""
        if input.dim() == 0 or input.shape[-1] != self.in_features:  # before the counter moves
            raise ValueError(
                f"input must have shape (*, in_features={self.in_features}), got {tuple(input.shape)}"
            )
        return nn.functional.linear(input, self.weight_dropout(self.weight), self.bias)


class WeightDrop(nn.Module):
    """AWD-LSTM's weight drop (Merity et al. 2018): DropConnect on named parameters of any module.

    Each training forward drops the named parameters (one mask per parameter, the whole call sharing
    it) and runs ``module`` with them through ``torch.func.functional_call``; in eval it runs ``module``
    with its own parameters. The parameters stay where they are, so ``state_dict`` keys, ``.to()`` and
    optimizers see the plain module, and nothing is drawn outside a forward. With an explicit seed the
    k-th training call drops parameter ``j`` of ``n`` with stream ``k * n + j``.

    Args:
        module: the module whose parameters are dropped, e.g. an ``nn.LSTM``.
        names: one parameter name or several (dotted names reach submodules), e.g. ``"weight_hh_l0"``.
        p: probability of dropping a weight, in [0, 1].
        seed: unsigned 64-bit seed, or ``None`` to follow torch's default generator.

    >>> lstm = WeightDrop(nn.LSTM(4, 5), "weight_hh_l0", p=0.5, seed=0)
    >>> output, (h, c) = lstm(torch.ones(3, 2, 4))
    >>> output.shape
    torch.Size([3, 2, 5])
    """

    stochastic = True

    def __init__(
        self,
        module: nn.Module,
        names: str | Sequence[str] = "weight",
        p: float = 0.5,
        *,
        seed: int | None = None,
    ) -> None:
        names = (names,) if isinstance(names, str) else tuple(names)
        parameters = dict(module.named_parameters())
        missing = [name for name in names if name not in parameters]
        if not names or missing:
            raise ValueError(
                f"names must name parameters of the module, got {list(names)}; "
                f"its parameters are {list(parameters)}"
            )
        dropouts = [_WeightDropout(p, seed=seed, index=j, count=len(names)) for j in range(len(names))]
        super().__init__()
        self.module = module
        self.names = names
        self.dropouts = nn.ModuleList(dropouts)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """``module(*args, **kwargs)`` with the named parameters dropped (in training) for this call."""
        pairs = zip(self.names, self.dropouts, strict=True)
        counted = None if torch.compiler.is_compiling() else [dropout.calls for dropout in self.dropouts]
        weights = {name: dropout(self.module.get_parameter(name)) for name, dropout in pairs}
        try:
            return torch.func.functional_call(self.module, weights, args, kwargs)
        except Exception:
            if counted is not None:  # the module refused its input: the call did not happen
                for dropout, calls in zip(self.dropouts, counted, strict=True):
                    dropout.calls = calls
            raise

    def extra_repr(self) -> str:
        return f"names={list(self.names)}"
