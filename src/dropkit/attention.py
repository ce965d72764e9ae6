"""Attention dropout, the NumPy reference: forward and backward as the math reads.

Scaled dot-product attention (Vaswani et al. 2017) with dropout on the probabilities, the dropout
Transformers use since the paper (Srivastava et al. 2014 for dropout)::

    P  = softmax(Q Kᵀ · scale + bias)                 (*batch, H, L, S), row-wise over S
    D  = keep_mask((*batch, H, L, S), p, seed, stream) / (1 - p)
    Y  = (P ⊙ D) V

and its gradients, with ``dY`` the upstream gradient and ``Δ = rowsum(dY ⊙ Y)``::

    dV = (P ⊙ D)ᵀ dY        dP = (dY Vᵀ) ⊙ D        dS = P ⊙ (dP − Δ)
    dQ = dS K · scale       dK = dSᵀ Q · scale

(``Δ = rowsum(dP ⊙ P)``, since ``Y = (P ⊙ D) V``.) The mask is drawn over the logical probability
tensor ``(*batch, H, L, S)`` -- query positions ``L``, key positions ``S``, after broadcasting the batch
dims and before grouped-query sharing -- so every kernel that tiles, transposes or recomputes the
probabilities, and every sequence shard, regenerates the same keep bit for ``(b, h, i, j)``.

``bias`` is the attention mask: boolean (True takes part, torch's convention) or additive float. A row
that takes no key gets ``P = 0`` (output 0), as torch does. ``causal`` lets query ``i`` see key
``j <= i`` (torch's top-left alignment); for a shard, positions are global: ``j0 + j <= i0 + i``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from dropkit._validation import check_dims, check_float_array, check_probability, check_shard_arguments
from dropkit.kernels.reference import compute_dtype
from dropkit.layers import inverted_scale
from dropkit.philox import keep_mask
from dropkit.sharding import Shard

__all__ = ["attention", "attention_backward", "attention_probabilities"]

Shape = tuple[int, ...]


def _check_inputs(q: Any, k: Any, v: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Checked ``q, k, v`` and the number of query heads per key head (grouped-query attention)."""
    q, k, v = (check_float_array(name, x) for name, x in (("q", q), ("k", k), ("v", v)))
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.ndim < 2:
            raise ValueError(f"{name} must have shape (..., positions, features), got {x.shape}")
    if k.shape[-1] != q.shape[-1]:
        raise ValueError(f"k must have q's feature size {q.shape[-1]}, got k of shape {k.shape}")
    if v.shape[:-1] != k.shape[:-1]:
        raise ValueError(f"v must have k's shape up to its last dim {k.shape[:-1]}, got {v.shape}")
    group = 1
    if q.ndim >= 3 and k.ndim >= 3 and k.shape[-3] not in (1, q.shape[-3]) and q.shape[-3] != 1:
        if q.shape[-3] % k.shape[-3]:
            raise ValueError(
                f"q's {q.shape[-3]} heads must be a multiple of k's {k.shape[-3]} (grouped-query attention)"
            )
        group = q.shape[-3] // k.shape[-3]
    return q, k, v, group


def _grouped(x: np.ndarray, group: int) -> np.ndarray:
    """Key/value heads shared by ``group`` query heads each: head ``h`` uses key head ``h // group``."""
    return x if group == 1 else np.repeat(x, group, axis=-3)


def _probability_shape(q: np.ndarray, k: np.ndarray) -> Shape:
    """``(*batch, H, L, S)``: the broadcast batch dims, then query and key positions."""
    try:
        batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    except ValueError:
        raise ValueError(f"q's and k's batch dims do not broadcast: {q.shape} and {k.shape}") from None
    return (*batch, q.shape[-2], k.shape[-2])


def _bias(mask: Any, shape: Shape, wide: type) -> np.ndarray | None:
    """The attention mask as an additive bias broadcastable to ``shape``: 0 / -inf for a bool mask."""
    if mask is None:
        return None
    mask = np.asarray(mask)
    try:
        fits = np.broadcast_shapes(mask.shape, shape) == shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"mask must broadcast to the probabilities' shape {shape}, got {mask.shape}")
    if mask.dtype == np.bool_:
        return np.where(mask, wide(0), wide(-np.inf))
    if mask.dtype.kind != "f":
        raise TypeError(f"mask must be a bool or floating-point array, got dtype {mask.dtype}")
    return mask.astype(wide)


def _placement(shape: Shape, global_shape: Any, offsets: Any) -> Shard | None:
    """The shard of the probability tensor this call computes, or None for the whole tensor."""
    if not check_shard_arguments(global_shape, offsets):
        return None
    return Shard(check_dims("global_shape", global_shape), check_dims("offsets", offsets), shape)


def _scale(scale: Any, features: int) -> float:
    if scale is None:
        return 1.0 / math.sqrt(features)
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a real number or None, got {type(scale).__name__}")
    return float(scale)


def _softmax_rows(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax; a row of -inf (no key to attend to) gives zeros, as torch does."""
    top = scores.max(axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0)
    e = np.exp(scores - top)
    total = e.sum(axis=-1, keepdims=True)
    return e / np.where(total == 0, 1, total)


def _plan(q, k, v, mask, causal, scale, global_shape, offsets):
    """Every check, then ``(q, k, v, group, P, shard)``: the inputs and the probabilities."""
    q, k, v, group = _check_inputs(q, k, v)
    wide = compute_dtype(q.dtype)
    shape = _probability_shape(q, _grouped(k, group))
    shard = _placement(shape, global_shape, offsets)
    scores = np.matmul(q.astype(wide), np.swapaxes(_grouped(k, group), -1, -2).astype(wide))
    scores = scores * wide(_scale(scale, q.shape[-1]))
    bias = _bias(mask, shape, wide)
    if bias is not None:
        scores = scores + bias
    if causal:
        i0, j0 = (0, 0) if shard is None else shard.offsets[-2:]
        rows = np.arange(i0, i0 + shape[-2])[:, None]
        cols = np.arange(j0, j0 + shape[-1])[None, :]
        scores = np.where(cols <= rows, scores, -np.inf)
    return q, k, v, group, _softmax_rows(np.broadcast_to(scores, shape)), shard


def _dropout_matrix(shape: Shape, p: float, seed: int, stream: int, shard: Shard | None, wide) -> np.ndarray:
    """``D = keep / (1 - p)``: the contract's mask over the probabilities (its slice, for a shard)."""
    if shard is None:
        keep = keep_mask(shape, p, seed=seed, stream=stream)
    else:
        keep = shard.keep_mask(p, seed=seed, stream=stream)
    return keep * wide(inverted_scale(p))


def _reduce_to(grad: np.ndarray, shape: Shape, group: int) -> np.ndarray:
    """Sum a gradient over grouped heads and broadcast batch dims, back to an input's ``shape``."""
    if group > 1:
        grad = grad.reshape(*grad.shape[:-3], grad.shape[-3] // group, group, *grad.shape[-2:]).sum(-3)
    grad = grad.sum(axis=tuple(range(grad.ndim - len(shape))))
    dims = tuple(d for d, n in enumerate(shape) if n == 1 and grad.shape[d] != 1)
    return grad.sum(axis=dims, keepdims=True) if dims else grad


def attention_probabilities(
    q: Any,
    k: Any,
    *,
    mask: Any = None,
    causal: bool = False,
    scale: float | None = None,
    global_shape: Any = None,
    offsets: Any = None,
) -> np.ndarray:
    """``P = softmax(Q Kᵀ · scale + bias)``, the probabilities attention dropout drops.

    Shape: ``q`` ``(*batch, H, L, E)``, ``k`` ``(*batch, H_kv, S, E)``; returns ``(*batch, H, L, S)``.

    >>> attention_probabilities(np.zeros((2, 1)), np.zeros((3, 1))).round(3).tolist()
    [[0.333, 0.333, 0.333], [0.333, 0.333, 0.333]]
    """
    return _plan(q, k, k, mask, causal, scale, global_shape, offsets)[4]


def attention(
    q: Any,
    k: Any,
    v: Any,
    *,
    p: float,
    seed: int,
    stream: int = 0,
    mask: Any = None,
    causal: bool = False,
    scale: float | None = None,
    global_shape: Any = None,
    offsets: Any = None,
) -> np.ndarray:
    """Scaled dot-product attention with dropout on the probabilities: ``Y = (P ⊙ D) V``.

    ``P = softmax(Q Kᵀ · scale + bias)``, ``D = keep_mask((*batch, H, L, S), p, seed, stream) / (1 - p)``.

    Args:
        q: queries ``(*batch, H, L, E)`` (any rank >= 2: ``(L, E)`` is one head).
        k: keys ``(*batch, H_kv, S, E)``; ``H_kv`` divides ``H`` (grouped-query attention: query head
            ``h`` uses key head ``h // (H / H_kv)``); batch dims broadcast against ``q``'s.
        v: values ``(*batch, H_kv, S, Ev)``.
        p: probability of *dropping* an attention probability, in [0, 1].
        seed, stream: unsigned 64-bit integers naming the mask.
        mask: attention mask broadcastable to ``(*batch, H, L, S)``: bool (True takes part) or an
            additive float bias.
        causal: query ``i`` attends to keys ``j <= i`` only (global positions for a shard).
        scale: factor on ``Q Kᵀ``; ``None`` is ``1 / sqrt(E)``.
        global_shape, offsets: these probabilities are the slice at ``offsets`` of a probability tensor
            of ``global_shape`` (sequence parallelism: a query shard has ``offsets = (0, ..., 0, i0, 0)``)
            and draw that slice of its mask. Softmax normalizes over the keys given.

    Shape: returns ``(*batch, H, L, Ev)`` in ``q``'s dtype, computed in float32 (float64 for float64).

    >>> q = k = np.zeros((2, 1)); v = np.array([[1.0], [3.0]])
    >>> attention(q, k, v, p=0.0, seed=0).tolist()
    [[2.0], [2.0]]
    >>> attention(q, k, v, p=0.5, seed=0).tolist()  # keep_mask((2, 2), 0.5, seed=0) is [[0, 1], [1, 1]]
    [[3.0], [4.0]]
    """
    p = check_probability(p)
    q, k, v, group, P, shard = _plan(q, k, v, mask, causal, scale, global_shape, offsets)
    wide = P.dtype.type
    D = _dropout_matrix(P.shape, p, seed, stream, shard, wide)
    return np.matmul(P * D, _grouped(v, group).astype(wide)).astype(q.dtype)


def attention_backward(
    grad: Any,
    q: Any,
    k: Any,
    v: Any,
    *,
    p: float,
    seed: int,
    stream: int = 0,
    mask: Any = None,
    causal: bool = False,
    scale: float | None = None,
    global_shape: Any = None,
    offsets: Any = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(dQ, dK, dV)`` of :func:`attention` for the upstream gradient ``grad = dY``.

    ``dV = (P ⊙ D)ᵀ dY``, ``dP = (dY Vᵀ) ⊙ D``, ``dS = P ⊙ (dP − rowsum(dP ⊙ P))``,
    ``dQ = dS K · scale``, ``dK = dSᵀ Q · scale``. ``P`` is recomputed and ``D`` regenerated from
    ``(seed, stream)``: the same mask the forward drew. Same keywords as :func:`attention`.

    Shape: ``grad`` has the output's shape; returns arrays of ``q``'s, ``k``'s and ``v``'s shapes.

    >>> q = k = np.zeros((2, 1)); v = np.array([[1.0], [3.0]])
    >>> [g.tolist() for g in attention_backward(np.ones((2, 1)), q, k, v, p=0.5, seed=0)]
    [[[0.0], [0.0]], [[0.0], [0.0]], [[1.0], [2.0]]]
    """
    p = check_probability(p)
    q, k, v, group, P, shard = _plan(q, k, v, mask, causal, scale, global_shape, offsets)
    wide = P.dtype.type
    out_shape = (*P.shape[:-1], v.shape[-1])
    grad = check_float_array("grad", grad)
    if grad.shape != out_shape:
        raise ValueError(f"grad must have the output's shape {out_shape}, got {grad.shape}")
    dY = grad.astype(wide)
    D = _dropout_matrix(P.shape, p, seed, stream, shard, wide)
    scale = wide(_scale(scale, q.shape[-1]))
    V, K = _grouped(v, group).astype(wide), _grouped(k, group).astype(wide)
    dV = np.matmul(np.swapaxes(P * D, -1, -2), dY)
    dP = np.matmul(dY, np.swapaxes(V, -1, -2)) * D
    dS = P * (dP - (dP * P).sum(axis=-1, keepdims=True))
    dQ = np.matmul(dS, K) * scale
    dK = np.matmul(np.swapaxes(dS, -1, -2), np.broadcast_to(q.astype(wide), (*P.shape[:-1], q.shape[-1])))
    return (
        _reduce_to(dQ, q.shape, 1).astype(q.dtype),
        _reduce_to(dK * scale, k.shape, group).astype(k.dtype),
        _reduce_to(dV, v.shape, group).astype(v.dtype),
    )
