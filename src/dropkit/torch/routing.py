"""Route the dropout *calls* of unmodified model code to dropkit: a ``TorchFunctionMode``.

Inside ``with route_dropout():`` every call of ``torch.nn.functional.dropout``, ``dropout1d/2d/3d``,
``alpha_dropout``, ``feature_alpha_dropout`` (and so every ``torch.nn.Dropout*`` module, which calls them)
runs dropkit's function with the same arguments instead, so a third-party model trains with the contract's
masks and saves none of them. ``F.scaled_dot_product_attention`` with ``dropout_p > 0`` goes to
:func:`dropkit.torch.functional.scaled_dot_product_attention` (no ``L x S`` mask kept); without dropout
torch's own kernel runs. A route whose ``fn`` is None falls back to torch's function with a one-time
warning. A mode sees every torch call of the block, so it costs a Python call per op;
:func:`dropkit.torch.convert` swaps the modules once instead.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from dropkit._validation import check_uint64
from dropkit.torch import functional

__all__ = ["ROUTES", "Route", "route_dropout"]


@dataclass(frozen=True)
class Route:
    """Where a torch function goes: ``fn(*same arguments, seed=..., stream=...)``, when ``draws(arguments)``.

    ``names``/``defaults``: the torch function's parameters, to read its arguments by name.
    """

    fn: Callable[..., Any] | None
    names: Sequence[str]
    defaults: dict[str, Any]
    draws: Callable[[dict[str, Any]], bool]


def _dropout_route(fn: Callable[..., Any], torch_fn: Callable[..., Any]) -> Route:
    parameters = inspect.signature(torch_fn).parameters
    defaults = {n: p.default for n, p in parameters.items() if p.default is not inspect.Parameter.empty}
    return Route(fn, tuple(parameters), defaults, lambda a: bool(a["training"]) and a["p"] > 0)


ROUTES: dict[Callable[..., Any], Route] = {
    F.dropout: _dropout_route(functional.dropout, F.dropout),
    F.dropout1d: _dropout_route(functional.dropout1d, F.dropout1d),
    F.dropout2d: _dropout_route(functional.dropout2d, F.dropout2d),
    F.dropout3d: _dropout_route(functional.dropout3d, F.dropout3d),
    F.alpha_dropout: _dropout_route(functional.alpha_dropout, F.alpha_dropout),
    F.feature_alpha_dropout: _dropout_route(functional.feature_alpha_dropout, F.feature_alpha_dropout),
    F.scaled_dot_product_attention: Route(
        functional.scaled_dot_product_attention,
        ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa"),
        {"attn_mask": None, "dropout_p": 0.0, "is_causal": False, "scale": None, "enable_gqa": False},
        lambda a: a["dropout_p"] > 0,
    ),
}


class route_dropout(TorchFunctionMode):
    """Run torch's functional dropouts inside the block with dropkit's masks (see the module docstring).

    Args:
        seed: ``None``: each routed call draws a fresh seed from torch's default generator (as torch's
            dropout consumes it, so ``torch.manual_seed`` reproduces a run). An unsigned 64-bit seed: the
            k-th call that draws (counted over the whole block, k = 0, 1, ...) uses stream k.

    Attributes:
        calls: routed calls that drew a mask so far.
        fallbacks: calls that drew with torch's RNG because their route has no dropkit function.

    >>> layer = torch.nn.Dropout(0.5)
    >>> with route_dropout(seed=0) as mode:
    ...     y = layer(torch.ones(2, 4))
    >>> y
    tensor([[0., 2., 2., 2.],
            [2., 0., 2., 0.]])
    >>> mode.calls
    1
    """

    def __init__(self, seed: int | None = None) -> None:
        super().__init__()
        self.seed = None if seed is None else check_uint64("seed", seed)
        self.calls = 0
        self.fallbacks = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        route = ROUTES.get(func)
        if route is None:
            return func(*args, **kwargs)
        arguments = {**route.defaults, **dict(zip(route.names, args, strict=False)), **kwargs}
        if not route.draws(arguments):
            return func(*args, **kwargs)
        if route.fn is None:
            self.fallbacks += 1
            if self.fallbacks == 1:
                warnings.warn(
                    f"{func.__name__} with dropout ran torch's own dropout: dropkit has no route for it yet",
                    stacklevel=2,
                )
            return func(*args, **kwargs)
        seed, stream = self.seed, None if self.seed is None else self.calls
        output = route.fn(*args, **kwargs, seed=seed, stream=stream)
        self.calls += 1
        return output
