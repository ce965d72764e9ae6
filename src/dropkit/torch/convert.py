"""Whole-model conversion: swap every torch/timm/torchvision dropout-family module of a model for dropkit's.

``convert(model)`` replaces, in place, each ``torch.nn.Dropout``, ``Dropout1d/2d/3d``, ``AlphaDropout``,
``FeatureAlphaDropout``, timm's ``DropPath``/``DropBlock2d`` and torchvision's ``StochasticDepth``/
``DropBlock2d``/``DropBlock3d`` by the dropkit module with the same arguments (``p``, ``inplace``, block
size, ...) and training mode. timm and torchvision are recognized by module path and class name, so
neither needs to be installed. Dropout a model calls as a *function* (``F.dropout``, the ``dropout_p`` of
``F.scaled_dot_product_attention``: transformers' attention does both) is no module:
:func:`dropkit.torch.route_dropout` routes those.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from dropkit._validation import check_uint64
from dropkit.torch import modules, timm, torchvision

__all__ = ["convert"]

_Build = Callable[[nn.Module, int | None], nn.Module]


def _torch(cls: type[nn.Module]) -> _Build:
    return lambda m, seed: cls(m.p, m.inplace, seed=seed)


def _timm_block(m: nn.Module, seed: int | None) -> nn.Module:
    # timm < 1.0.23 had no couple_channels: its default ("fast") path drew one mask per channel
    return timm.DropBlock2d(
        m.drop_prob,
        m.block_size,
        m.gamma_scale,
        m.with_noise,
        m.inplace,
        getattr(m, "couple_channels", False),
        getattr(m, "scale_by_keep", True),
        seed=seed,
    )


def _timm_path(m: nn.Module, seed: int | None) -> nn.Module:
    return timm.DropPath(m.drop_prob, m.scale_by_keep, seed=seed)


def _torchvision_block(cls: type[nn.Module]) -> _Build:
    return lambda m, seed: cls(m.p, m.block_size, m.inplace, m.eps, seed=seed)


_BY_CLASS: dict[type[nn.Module], _Build] = {
    nn.Dropout: _torch(modules.Dropout),
    nn.Dropout1d: _torch(modules.Dropout1d),
    nn.Dropout2d: _torch(modules.Dropout2d),
    nn.Dropout3d: _torch(modules.Dropout3d),
    nn.AlphaDropout: _torch(modules.AlphaDropout),
    nn.FeatureAlphaDropout: _torch(modules.FeatureAlphaDropout),
}

_TIMM = ("timm.layers.drop", "timm.models.layers.drop")
_BY_NAME: dict[tuple[str, str], _Build] = {
    **{(path, "DropPath"): _timm_path for path in _TIMM},
    **{(path, "DropBlock2d"): _timm_block for path in _TIMM},
    ("torchvision.ops.stochastic_depth", "StochasticDepth"): (
        lambda m, seed: torchvision.StochasticDepth(m.p, m.mode, seed=seed)
    ),
    ("torchvision.ops.drop_block", "DropBlock2d"): _torchvision_block(torchvision.DropBlock2d),
    ("torchvision.ops.drop_block", "DropBlock3d"): _torchvision_block(torchvision.DropBlock3d),
}


def _builder(module: nn.Module) -> _Build | None:
    cls = type(module)  # the exact class: a subclass may have changed what forward does
    return _BY_CLASS.get(cls) or _BY_NAME.get((cls.__module__, cls.__name__))


def convert(model: nn.Module, *, seed: int | None = None) -> nn.Module:
    """Swap every dropout-family submodule of ``model`` for dropkit's, in place; return ``model``.

    Each new module keeps the old one's arguments and ``training`` flag. ``seed=None``: every module draws
    a fresh seed per call from torch's default generator, as torch's do (``torch.manual_seed`` governs it).
    An explicit ``seed``: the ``i``-th converted module (in ``model.modules()`` order) gets seed
    ``seed + i`` (mod 2**64), so no two layers share a mask. A module shared by several parents stays shared.
    Forward hooks on a replaced module are not carried over.

    >>> net = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.2, inplace=True))
    >>> convert(net, seed=0)[1]
    Dropout(p=0.2, inplace=True, seed=0)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if _builder(model) is not None:
        raise ValueError("convert swaps a model's submodules in place: wrap a lone layer in nn.Sequential")
    base = None if seed is None else check_uint64("seed", seed)
    new: dict[int, nn.Module] = {}
    for module in model.modules():
        build = _builder(module)
        if build is not None:  # modules() yields a shared module once
            module_seed = None if base is None else (base + len(new)) % 2**64
            new[id(module)] = build(module, module_seed).train(module.training)
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if id(child) in new:
                setattr(parent, name, new[id(child)])
    return model
