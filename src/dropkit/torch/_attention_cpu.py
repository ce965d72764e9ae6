"""Attention with dropout on the CPU, tile by tile: no ``(*batch, H, L, S)`` tensor is ever alive.

A tile is a block of query rows of one head against the keys they can see: ``rows x n`` scores, about
:data:`TILE_ELEMENTS` of them. Whole rows make the softmax exact within the tile (no running rescale),
and a block of whole rows is one contiguous run of the probability tensor's flat index (one run per
row when the keys are a shard or a causal prefix), so dropkit's fused CPU kernel draws the tile's mask
in one call through :class:`dropkit.sharding.Shard`. Matmuls are torch's; the softmax and every
product with the mask are in float32 (float64 for float64 inputs).

Forward keeps the output and the per-row log-sum-exp ``lse``; backward recomputes each tile's
probabilities as ``exp(scores - lse)``, regenerates its mask once as ``M = keep / (1 - p)``, and::

    dV += (P ⊙ M)ᵀ dY     dP = (dY Vᵀ) ⊙ M     dS = P ⊙ (dP − rowsum(dY ⊙ Y))
    dQ  = dS K · scale    dK += dSᵀ Q · scale
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from dropkit.layers import inverted_scale
from dropkit.sharding import Shard
from dropkit.torch._checks import wide_of
from dropkit.torch._cpu import follow_torch_threads

__all__ = ["TILE_ELEMENTS", "backward", "forward"]

# Scores per tile: 1 MiB of float32. Four such tiles are alive at once in backward; at S = 4096 the tile
# holds 64 query rows, enough for torch's matmuls to run near their peak.
TILE_ELEMENTS = 1 << 18


class _Geometry:
    """Where each tile of one call sits: heads, query-row blocks, visible keys, and the mask's shard."""

    def __init__(
        self, q: Tensor, k: Tensor, causal: bool, global_shape: Sequence[int], offsets: Sequence[int]
    ) -> None:
        self.lead, self.L, self.S = tuple(q.shape[:-2]), q.shape[-2], k.shape[-2]
        self.group = self.lead[-1] // k.shape[-3] if self.lead else 1  # query heads per key head
        self.causal = causal
        self.global_shape, self.offsets = tuple(global_shape), tuple(offsets)
        self.i0, self.j0 = self.offsets[-2:]
        self.rows = max(1, min(self.L, TILE_ELEMENTS // max(self.S, 1)))

    def heads(self) -> Iterator[tuple[tuple[int, ...], tuple[int, ...]]]:
        """``(index, kv_index)`` of every query head: its index into the lead dims, and its key head's."""
        for index in np.ndindex(*self.lead):
            yield index, (*index[:-1], index[-1] // self.group) if index else index

    def blocks(self) -> Iterator[tuple[int, int, int]]:
        """``(r0, r1, n)``: query rows ``[r0, r1)`` see keys ``[0, n)`` (causal: up to its last row)."""
        for r0 in range(0, self.L, self.rows):
            r1 = min(r0 + self.rows, self.L)
            n = min(self.S, max(0, self.i0 + r1 - self.j0)) if self.causal else self.S
            yield r0, r1, n

    def shard(self, index: tuple[int, ...], r0: int, rows: int, n: int) -> Shard:
        """The tile's place in the global probability tensor."""
        offsets = (*(o + i for o, i in zip(self.offsets, index, strict=False)), self.i0 + r0, self.j0)
        return Shard(self.global_shape, offsets, (1,) * len(index) + (rows, n))


def _scores(geometry: _Geometry, qs: Tensor, kt: Tensor, bias: Tensor | None, r0: int) -> Tensor:
    """``(Q · scale) Kᵀ + bias`` for one tile, with -inf where the mask or causality hides a key."""
    scores = torch.mm(qs, kt.t())
    rows, n = scores.shape
    if bias is not None:
        tile = bias[r0 : r0 + rows, :n]
        if tile.dtype == torch.bool:
            scores.masked_fill_(tile.logical_not(), -math.inf)
        else:
            scores.add_(tile)
    first_hidden = geometry.i0 + r0 - geometry.j0 + 1  # the first row's first hidden key
    if geometry.causal and first_hidden < n:
        cols = torch.arange(n)[None, :]
        scores.masked_fill_(cols >= torch.arange(first_hidden, first_hidden + rows)[:, None], -math.inf)
    return scores


def _drop(tile: Tensor, out: Tensor, p: float, seed: int, stream: int, shard: Shard) -> Tensor:
    """``out = tile * keep * (1 / (1 - p))``, ``keep`` the contract's mask of the tile's shard."""
    follow_torch_threads()
    array, out_array = (x.numpy().reshape(shard.local_shape) for x in (tile, out))
    shard.dropout_apply(array, p, seed=seed, stream=stream, scale=inverted_scale(p), out=out_array)
    return out


def forward(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    bias: Tensor | None,
    p: float,
    seed: int,
    stream: int,
    scale: float,
    causal: bool,
    global_shape: Sequence[int],
    offsets: Sequence[int],
) -> tuple[Tensor, Tensor]:
    """``(Y, lse)``: ``Y = (P ⊙ D) V`` of shape ``(*lead, L, Ev)`` and the log-sum-exp of each score row.

    Shapes: ``q`` ``(*lead, L, E)``, ``k`` ``(*lead_kv, S, E)``, ``v`` ``(*lead_kv, S, Ev)`` where
    ``lead_kv`` is ``lead`` with fewer heads (grouped); ``bias`` broadcastable to ``(*lead, L, S)``.
    """
    geometry = _Geometry(q, k, causal, global_shape, offsets)
    wide = wide_of(q.dtype)
    out = torch.empty((*q.shape[:-1], v.shape[-1]), dtype=q.dtype)
    lse = torch.empty(q.shape[:-1], dtype=wide)
    bias = None if bias is None else bias.broadcast_to((*geometry.lead, geometry.L, geometry.S))
    for index, kv_index in geometry.heads():
        kh, vh = k[kv_index].to(wide), v[kv_index].to(wide)
        qh, oh, lh = q[index], out[index], lse[index]
        bh = None if bias is None else bias[index]
        for r0, r1, n in geometry.blocks():
            if n == 0:  # no key visible to any row of the tile
                oh[r0:r1].zero_()
                lh[r0:r1].fill_(-math.inf)
                continue
            scores = _scores(geometry, qh[r0:r1].to(wide) * scale, kh[:n], bh, r0)
            top = scores.amax(dim=1, keepdim=True)
            top.masked_fill_(top == -math.inf, 0.0)  # a row with no visible key: P = 0, as torch
            P = scores.sub_(top).exp_()
            total = P.sum(dim=1, keepdim=True)
            lh[r0:r1] = (top + total.log()).squeeze(1)
            P.div_(total.masked_fill_(total == 0, 1.0))
            if p > 0.0:
                _drop(P, P, p, seed, stream, geometry.shard(index, r0, r1 - r0, n))
            oh[r0:r1] = torch.mm(P, vh[:n])
    return out, lse


def backward(
    grad: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    bias: Tensor | None,
    out: Tensor,
    lse: Tensor,
    p: float,
    seed: int,
    stream: int,
    scale: float,
    causal: bool,
    global_shape: Sequence[int],
    offsets: Sequence[int],
    bias_grad: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(dQ, dK, dV, dBias)`` of :func:`forward`; ``dBias`` is empty unless ``bias_grad``."""
    geometry = _Geometry(q, k, causal, global_shape, offsets)
    wide = wide_of(q.dtype)
    dq = torch.empty(q.shape, dtype=q.dtype)
    dk, dv = _KeyGradient(k, wide), _KeyGradient(v, wide)
    full = (*geometry.lead, geometry.L, geometry.S)
    dbias = _BiasGradient(bias, full, wide) if bias_grad else None
    bias = None if bias is None else bias.broadcast_to(full)
    ones = torch.ones(geometry.rows * geometry.S, dtype=wide) if p > 0.0 else None  # the mask's input
    for index, kv_index in geometry.heads():
        kh, vh = k[kv_index].to(wide), v[kv_index].to(wide)
        dkh, dvh = dk.head(kv_index), dv.head(kv_index)
        qh, gh, oh, lh, dqh = q[index], grad[index], out[index], lse[index], dq[index]
        bh = None if bias is None else bias[index]
        for r0, r1, n in geometry.blocks():
            if n == 0:
                dqh[r0:r1].zero_()
                continue
            qs, dy = qh[r0:r1].to(wide) * scale, gh[r0:r1].to(wide)
            delta = (dy * oh[r0:r1].to(wide)).sum(dim=1, keepdim=True)  # rowsum(dY ⊙ Y)
            scores = _scores(geometry, qs, kh[:n], bh, r0)
            rows_lse = lh[r0:r1, None].masked_fill(lh[r0:r1, None] == -math.inf, math.inf)
            P = scores.sub_(rows_lse).exp_()
            dP = torch.mm(dy, vh[:n].t())
            if p > 0.0:
                M = torch.empty_like(P)  # keep / (1 - p), drawn once for both of its uses
                _drop(
                    ones[: M.numel()].view(M.shape), M, p, seed, stream, geometry.shard(index, r0, r1 - r0, n)
                )
                dvh[:n].addmm_((P * M).t(), dy)
                dP.mul_(M)
            else:
                dvh[:n].addmm_(P.t(), dy)
            dS = dP.sub_(delta).mul_(P)
            dqh[r0:r1] = torch.mm(dS, kh[:n]).mul_(scale)
            dkh[:n].addmm_(dS.t(), qs)
            if dbias is not None:
                dbias.add(index, r0, dS)
    empty = torch.empty(0, dtype=q.dtype)
    return dq, dk.result(), dv.result(), empty if dbias is None else dbias.result()


class _KeyGradient:
    """``dK`` (or ``dV``) accumulated in the compute type one key head at a time, so a bfloat16 call holds
    one head's float32 sums, not a float32 copy of the whole gradient. Query heads that share a key head
    (grouped-query attention) come one after another, so each head is finished before the next starts."""

    def __init__(self, x: Tensor, wide: torch.dtype) -> None:
        self.wide = wide
        self.total = torch.zeros(x.shape, dtype=x.dtype)
        self.index: tuple[int, ...] | None = None
        self.sums: Tensor | None = None

    def head(self, index: tuple[int, ...]) -> Tensor:
        """The running sums of key head ``index``; switching heads stores the previous one's."""
        if index != self.index:
            self._store()
            self.index = index
            target = self.total[index]
            self.sums = (
                target if self.total.dtype == self.wide else torch.zeros(target.shape, dtype=self.wide)
            )
        return self.sums

    def _store(self) -> None:
        if self.index is not None and self.total.dtype != self.wide:
            self.total[self.index] = self.sums

    def result(self) -> Tensor:
        self._store()
        return self.total


class _BiasGradient:
    """The gradient of an additive mask, summed over the dims along which it was broadcast."""

    def __init__(self, bias: Tensor, full: tuple[int, ...], wide: torch.dtype) -> None:
        self.shape, self.dtype = tuple(bias.shape), bias.dtype
        self.padded = (1,) * (len(full) - bias.dim()) + self.shape
        self.total = torch.zeros(self.padded, dtype=wide)

    def add(self, index: tuple[int, ...], r0: int, dS: Tensor) -> None:
        """Add one tile's ``dS`` (rows from ``r0``, keys from 0) where the bias it came from sits."""
        head = tuple(i if n != 1 else 0 for i, n in zip(index, self.padded, strict=False))
        target = self.total[head]
        rows, n = dS.shape
        if self.padded[-2] == 1:
            dS = dS.sum(dim=0, keepdim=True)
        else:
            target = target[r0 : r0 + rows]
        if self.padded[-1] == 1:
            target.add_(dS.sum(dim=1, keepdim=True))
        else:
            target[:, :n].add_(dS)

    def result(self) -> Tensor:
        return self.total.reshape(self.shape).to(self.dtype)
