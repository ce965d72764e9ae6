"""Monte Carlo dropout for PyTorch models (Gal & Ghahramani, "Dropout as a Bayesian
approximation", ICML 2016): keep dropout on at test time and read uncertainty off the spread of
``K`` stochastic passes.

For class probabilities ``p_k = softmax(f(x; m_k))`` of ``K`` passes with masks ``m_k``::

    mean                = (1/K) sum_k p_k
    variance            = (1/K) sum_k (p_k - mean)**2                       (per class)
    entropy             = H[mean] = -sum_c mean_c log mean_c                 (total uncertainty)
    mutual_information  = H[mean] - (1/K) sum_k H[p_k]                       (BALD: model uncertainty)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import nn

from dropkit._validation import check_count
from dropkit.torch import modules as M

__all__ = ["MCPrediction", "is_stochastic", "mc_dropout", "mc_predict"]


def is_stochastic(module: nn.Module) -> bool:
    """True for the layers MC dropout turns on: torch's ``nn.Dropout*`` (Dropout, Dropout1d/2d/3d,
    AlphaDropout, FeatureAlphaDropout) and every module whose class sets ``stochastic = True``
    (all of dropkit's: dropout variants, DropPath, DropBlock2d, DropConnectLinear, WeightDrop)."""
    return isinstance(module, nn.modules.dropout._DropoutNd) or getattr(module, "stochastic", False) is True


def _one_mask_per_forward(module: nn.Module) -> bool:
    """Layers whose mask is shared by every row of a forward (weights, or the whole batch)."""
    return (
        isinstance(module, (M.DropConnectLinear, M.WeightDrop))
        or (isinstance(module, M.DropPath) and module.mode == "batch")
        or (isinstance(module, M.DropBlock2d) and module.batchwise)
    )


@contextlib.contextmanager
def mc_dropout(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode except its stochastic layers, which train; restore on exit.

    BatchNorm and every other layer stay in inference mode (running statistics untouched);
    every module's ``training`` flag is restored afterwards, whatever it was.

    >>> model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Dropout(0.5))
    >>> with mc_dropout(model):
    ...     [m.training for m in model]
    [False, False, True]
    >>> [m.training for m in model]
    [True, True, True]
    """
    previous = {module: module.training for module in model.modules()}
    model.eval()
    for module in model.modules():
        if is_stochastic(module):
            module.training = True  # not train(): that would reach a wrapped module's BatchNorm too
    try:
        yield model
    finally:
        for module, training in previous.items():
            module.training = training


class MCPrediction(NamedTuple):
    """What :func:`mc_predict` returns; shapes for ``C`` classes and ``N`` inputs."""

    mean: torch.Tensor  # (N, C) predictive mean probabilities
    variance: torch.Tensor  # (N, C) variance of the probabilities over the passes
    entropy: torch.Tensor  # (N,) entropy of the mean, in nats
    mutual_information: torch.Tensor  # (N,) BALD score, in nats, >= 0


def _entropy(probs: torch.Tensor) -> torch.Tensor:
    return -(probs * torch.log(probs.clamp_min(torch.finfo(probs.dtype).tiny))).sum(dim=-1)


@torch.no_grad()
def mc_predict(
    model: nn.Module, x: torch.Tensor, samples: int = 30, *, max_batch: int | None = None
) -> MCPrediction:
    """MC-dropout prediction of a classifier returning ``(N, C)`` logits.

    The ``samples`` passes run as one batched forward over ``samples`` stacked copies of ``x``
    (each copy gets its own slice of the mask, so the passes are independent), split into forwards
    of at most ``max_batch`` rows when memory does not allow all at once. The model must treat batch
    rows independently in eval mode (true of BatchNorm in eval, attention without cross-batch ops…).
    Layers that draw one mask per *forward* rather than per row (``DropConnectLinear``,
    ``WeightDrop``, ``DropPath(mode="batch")``, ``DropBlock2d(batchwise=True)``) would give every
    stacked pass the same mask, so a model with one runs each pass as its own forward.

    Args:
        model: a classifier; its stochastic layers are turned on with :func:`mc_dropout`.
        x: inputs, ``(N, ...)``.
        samples: the number of passes ``K``, a positive integer.
        max_batch: largest number of rows per forward (``None``: ``K * N`` at once).

    >>> _ = torch.manual_seed(0)
    >>> model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 4))
    >>> out = mc_predict(model, torch.randn(5, 3), samples=20)
    >>> out.mean.shape, bool((out.mutual_information >= 0).all())
    (torch.Size([5, 4]), True)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    samples = check_count("samples", samples)
    max_batch = None if max_batch is None else check_count("max_batch", max_batch)
    n = x.shape[0]
    stacked = x.unsqueeze(0).expand(samples, *x.shape).reshape(samples * n, *x.shape[1:])
    rows = samples * n if max_batch is None else max_batch
    if any(_one_mask_per_forward(module) for module in model.modules()):
        rows = min(rows, max(n, 1))
    with mc_dropout(model):
        logits = torch.cat([model(chunk) for chunk in stacked.split(rows)]) if n else model(stacked)
    probs = torch.softmax(logits.double(), dim=-1).reshape(samples, n, -1)  # (K, N, C)
    mean = probs.mean(dim=0)
    entropy = _entropy(mean)
    return MCPrediction(
        mean=mean,
        variance=probs.var(dim=0, unbiased=False),
        entropy=entropy,
        mutual_information=(entropy - _entropy(probs).mean(dim=0)).clamp_min(0.0),
    )
