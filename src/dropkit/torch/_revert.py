"""``revert(model)``: dropkit's dropout modules back to torch's own, for deployment.

A model trained with dropkit's layers is an ordinary ``nn.Module`` tree. ``torch.jit.script``
compiles dropkit's dropout modules only as their eval-mode identity: their training forward calls
NumPy and numba kernels. :func:`revert` swaps each module that has a torch twin for that twin (same
``p``, ``inplace`` and training mode), so the scripted model can train too, and each eval-mode
identity without a twin (locked, drop-path, Gaussian, DropBlock) for ``nn.Identity``, which is what it
computes at inference.
"""

from __future__ import annotations

from torch import nn

from dropkit.torch._base import Stochastic
from dropkit.torch._channel import Dropout1d, Dropout2d, Dropout3d
from dropkit.torch._layers import Dropout
from dropkit.torch._noise import AlphaDropout, FeatureAlphaDropout

__all__ = ["revert"]

# Most derived first: FeatureAlphaDropout is an AlphaDropout.
_TWINS: tuple[tuple[type[nn.Module], type[nn.Module]], ...] = (
    (FeatureAlphaDropout, nn.FeatureAlphaDropout),
    (AlphaDropout, nn.AlphaDropout),
    (Dropout1d, nn.Dropout1d),
    (Dropout2d, nn.Dropout2d),
    (Dropout3d, nn.Dropout3d),
    (Dropout, nn.Dropout),
)


def _reverted(module: nn.Module) -> nn.Module | None:
    for ours, theirs in _TWINS:
        if isinstance(module, ours):
            twin = theirs(module.p, module.inplace)
            return twin.train(module.training)
    if isinstance(module, Stochastic) and not module.training:
        return nn.Identity()  # an eval-mode layer without a torch twin is the identity
    return None


def revert(model: nn.Module) -> nn.Module:
    """Replace, in place, every dropkit dropout module of ``model`` by torch's equivalent; returns ``model``.

    ``Dropout``, ``Dropout1d/2d/3d``, ``AlphaDropout`` and ``FeatureAlphaDropout`` become torch's class
    of the same name (``p``, ``inplace`` and training mode kept; masks then come from torch's RNG). The
    other dropkit layers in eval mode become ``nn.Identity``; in training mode they have no torch twin
    and stay. DropConnect and weight drop (layers with weights) stay as they are.

    >>> import torch
    >>> from dropkit.torch import Dropout
    >>> model = revert(torch.nn.Sequential(torch.nn.Linear(2, 2), Dropout(0.1, seed=3)).eval())
    >>> model[1]
    Dropout(p=0.1, inplace=False)
    >>> type(torch.jit.script(model)).__name__
    'RecursiveScriptModule'
    """
    if (root := _reverted(model)) is not None:
        return root
    for name, child in model.named_children():
        if (twin := _reverted(child)) is not None:
            setattr(model, name, twin)
        else:
            revert(child)
    return model
