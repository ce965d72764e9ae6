"""DropConnect for PyTorch (Wan et al. 2013) and AWD-LSTM's weight drop (Merity et al. 2018): dropout of
weights, not activations; the twin of :mod:`dropkit.dropconnect`.

A fresh mask ``M = keep_mask(weight.shape, p, seed, stream)`` per training call, shared by the batch;
backward replays it. The weight's dropout is a :class:`Stochastic` module of its own (``_WeightDropout``),
so a seeded weight numbers its calls like every other dropkit layer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from dropkit._validation import check_probability
from dropkit.torch._base import Apply, Stochastic
from dropkit.torch._layers import plan_dropout

__all__ = ["DropConnectLinear", "WeightDrop"]


@contextlib.contextmanager
def _undone_on_failure(dropouts: Sequence[Stochastic]) -> Iterator[None]:
    """Undo the weights' draws if the wrapped call raises: the module refused its input, so the call
    did not happen and moves no counter and no generator (a seedless draw took torch's)."""
    if torch.compiler.is_compiling():
        yield
        return
    calls = [dropout.calls for dropout in dropouts]
    generator = torch.get_rng_state() if any(dropout.seed is None for dropout in dropouts) else None
    try:
        yield
    except Exception:
        for dropout, count in zip(dropouts, calls, strict=True):
            dropout.calls = count
        if generator is not None:
            torch.set_rng_state(generator)
        raise


class _WeightDropout(Stochastic):
    """Dropout of a weight tensor. Weight ``index`` of ``count`` dropped together takes stream
    ``k * count + index`` on the k-th training call, so one seed gives every weight its own masks."""

    def __init__(self, p: float, *, seed: int | None, index: int = 0, count: int = 1) -> None:
        super().__init__(check_probability(p), seed=seed)
        self.index, self.count = index, count

    def _stream(self) -> int | Tensor:
        return super()._stream() * self.count + self.index

    def _plan(
        self, weight: Tensor, global_shape: Sequence[int] | None, offsets: Sequence[int] | None
    ) -> Apply:
        return plan_dropout(
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
        *,
        p: float = 0.5,
        seed: int | None = None,
        device: Any = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if not isinstance(bias, bool):  # DropConnectLinear(784, 256, 0.2) meant p, not bias
            raise TypeError(
                f"bias must be a bool, got {type(bias).__name__} {bias!r}; p is keyword-only: "
                f"DropConnectLinear({in_features}, {out_features}, p={bias!r})"
            )
        weight_dropout = _WeightDropout(p, seed=seed)  # checks p and seed before any weight is made
        super().__init__(in_features, out_features, bias, device, dtype)
        self.weight_dropout = weight_dropout

    def forward(self, input: Tensor) -> Tensor:
        """``y = x @ (W * M / (1 - p)).T + b`` in training, ``x @ W.T + b`` in eval."""
        if input.dim() == 0 or input.shape[-1] != self.in_features:  # before the counter moves
            raise ValueError(
                f"input must have shape (*, in_features={self.in_features}), got {tuple(input.shape)}"
            )
        with _undone_on_failure([self.weight_dropout]):
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
        *,
        p: float = 0.5,
        seed: int | None = None,
    ) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        if not isinstance(names, str) and not (
            isinstance(names, Sequence) and all(isinstance(name, str) for name in names)
        ):
            raise TypeError(f"names must be a parameter name or a sequence of them, got {names!r}")
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
        with _undone_on_failure(self.dropouts):
            weights = {name: dropout(self.module.get_parameter(name)) for name, dropout in pairs}
            return torch.func.functional_call(self.module, weights, args, kwargs)

    def extra_repr(self) -> str:
        return f"names={list(self.names)}"
