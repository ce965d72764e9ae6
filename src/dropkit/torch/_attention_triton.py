"""Attention dropout on CUDA in Triton: flash attention whose keep bits are drawn in registers.

Flash attention (Dao et al. 2022; FlashAttention-2's loop order, Dao 2023): the forward streams key
blocks past a block of query rows with a running softmax and keeps only the output and the row
log-sum-exp; backward runs one kernel over key blocks (``dK``, ``dV``) and one over query blocks
(``dQ``), each recomputing ``P = exp(scores - lse)``. Every one of the three regenerates the keep bit of
probability ``(b, h, i, j)`` from the contract (:mod:`dropkit.philox`): its flat index in the logical
probability tensor, ``index = base(b, h) + i * S_global + j``, gives the Philox counter
``(lo32(index >> 2), hi32(index >> 2), lo32(stream), hi32(stream))`` and lane ``index & 3``. So the
forward's and the backward's tilings, the transposed ``dK``/``dV`` pass included, agree bit for bit,
and nothing of size ``L x S`` is ever written.

When every row starts on a multiple of 4 (``S_global`` and the key offset divisible by 4), one Philox
call serves four consecutive keys of a row, as in :mod:`dropkit.torch._triton`; otherwise each key
takes its own call and picks its lane (4x the generator work, the same bits).

With ``TRITON_INTERPRET=1`` set before triton is imported, the kernels run on CPU tensors: that is how
the tests prove them against the reference without a GPU.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import numpy as np
import torch
import triton
import triton.language as tl
from torch import Tensor

from dropkit.layers import inverted_scale
from dropkit.philox import keep_threshold
from dropkit.torch._triton import int32_halves, uint64

__all__ = ["backward", "forward"]

# Query rows x keys per tile. 64 x 64 suits head sizes up to 128 on current GPUs; the tests shrink them
# to 16 so that small shapes cross many tiles under the interpreter.
BLOCK_M = 64
BLOCK_N = 64
_NUM_WARPS = 4
# Every scalar that is data, not shape: specializing on its value (== 1, divisible by 16) would compile
# new kernels for some seeds, streams, offsets and probabilities.
_DATA_ARGS = ["row_stride", "i0", "j0", "seed_lo", "seed_hi", "stream_lo", "stream_hi", "threshold"]


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr):
    """``a @ b`` accumulated in float32. PRECISION "upcast" (bfloat16 under the interpreter, whose
    ``tl.dot`` mishandles it) multiplies in float32, exact for bfloat16 operands."""
    if PRECISION == "upcast":
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _keep(row_index, col0, seed, stream_lo, stream_hi, threshold, BM: tl.constexpr, BN: tl.constexpr,
          ALIGNED: tl.constexpr):  # fmt: skip
    """Keep bits of the ``(BM, BN)`` tile whose row ``r`` holds flat indexes ``row_index[r] + col0 + j``."""
    start = row_index + tl.cast(col0, tl.uint64)  # (BM,) uint64
    if ALIGNED:  # every row's first index is a multiple of 4: one Philox call per four keys
        block = (start >> 2)[:, None] + tl.arange(0, BN // 4).to(tl.uint64)[None, :]
        c0 = block.to(tl.uint32)
        zero = c0 * 0
        w0, w1, w2, w3 = tl.philox(seed, c0, (block >> 32).to(tl.uint32), zero + stream_lo, zero + stream_hi)
        # (w0, w1, w2, w3)[:, j] are the words of lanes 0..3 of block j: interleave them in that order.
        bits = tl.interleave(tl.interleave(w0, w2), tl.interleave(w1, w3))
    else:
        index = start[:, None] + tl.arange(0, BN).to(tl.uint64)[None, :]
        block = index >> 2
        c0 = block.to(tl.uint32)
        zero = c0 * 0
        w0, w1, w2, w3 = tl.philox(seed, c0, (block >> 32).to(tl.uint32), zero + stream_lo, zero + stream_hi)
        lane = (index & 3).to(tl.uint32)
        bits = tl.where(lane == 0, w0, tl.where(lane == 1, w1, tl.where(lane == 2, w2, w3)))
    return bits >= threshold


@triton.jit
def _load_rows(ptr, rows, n, FEATURES: tl.constexpr, offs):
    """Rows ``rows`` (those below ``n``) of a ``(positions, FEATURES)`` slab; zeros elsewhere."""
    return tl.load(ptr, mask=(rows[:, None] < n) & (offs[None, :] < FEATURES), other=0.0)


@triton.jit
def _scores(q, k, bias_ptrs, rows, cols, L, S, i0, j0, scale, HAS_BIAS: tl.constexpr,
            CAUSAL: tl.constexpr, PRECISION: tl.constexpr):  # fmt: skip
    """``Q Kᵀ · scale + bias`` of one tile in float32, -inf where no key is visible."""
    s = _dot(q, tl.trans(k), PRECISION) * scale
    if HAS_BIAS:
        inside = (rows[:, None] < L) & (cols[None, :] < S)
        s += tl.load(bias_ptrs, mask=inside, other=0.0).to(tl.float32)
    visible = cols[None, :] < S
    if CAUSAL:
        visible = visible & ((cols + j0)[None, :] <= (rows + i0)[:, None])
    return tl.where(visible, s, float("-inf"))


@triton.jit(do_not_specialize=_DATA_ARGS)
def _forward_kernel(
    Q, K, V, Bias, Out, Lse, Bases,  # tensors; Bases: int64 (B*H,), flat index of each head's (i0, j0)
    sqb, sqh, sqm, skb, skh, skn, svb, svh, svn, sbb, sbh, sbm, sbn, sob, soh, som,  # strides
    H, L, S, group, row_stride, i0, j0,  # heads, sizes, query heads per key head, S_global, offsets
    seed_lo, seed_hi, stream_lo, stream_hi, threshold, scale, drop_scale,
    E: tl.constexpr, EV: tl.constexpr, BE: tl.constexpr, BEV: tl.constexpr, BM: tl.constexpr,
    BN: tl.constexpr, HAS_BIAS: tl.constexpr, CAUSAL: tl.constexpr, DROPOUT: tl.constexpr,
    DROP_ALL: tl.constexpr, ALIGNED: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    pid_m, bh = tl.program_id(0), tl.program_id(1)
    b, h = bh // H, bh % H
    hk = h // group
    rows = pid_m * BM + tl.arange(0, BM)
    offs_n, offs_e, offs_ev = tl.arange(0, BN), tl.arange(0, BE), tl.arange(0, BEV)
    q = _load_rows(Q + b * sqb + h * sqh + rows[:, None] * sqm + offs_e[None, :], rows, L, E, offs_e)
    seed = uint64(seed_lo, seed_hi)
    t = threshold.to(tl.uint32, bitcast=True)
    row_index = tl.load(Bases + bh).to(tl.uint64, bitcast=True) + rows.to(tl.uint64) * row_stride.to(
        tl.uint64
    )
    m_i = tl.full([BM], float("-inf"), tl.float32)
    l_i = tl.zeros([BM], tl.float32)
    acc = tl.zeros([BM, BEV], tl.float32)
    n_end = S
    if CAUSAL:
        n_end = tl.minimum(S, tl.maximum(i0 + (pid_m + 1) * BM - j0, 0))
    for start_n in range(0, n_end, BN):
        cols = start_n + offs_n
        k = _load_rows(K + b * skb + hk * skh + cols[:, None] * skn + offs_e[None, :], cols, S, E, offs_e)
        s = _scores(q, k, Bias + b * sbb + h * sbh + rows[:, None] * sbm + cols[None, :] * sbn,
                    rows, cols, L, S, i0, j0, scale, HAS_BIAS, CAUSAL, PRECISION)  # fmt: skip
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with no visible key yet
        alpha = tl.exp(m_i - m_safe)
        p = tl.exp(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        if DROPOUT:
            if DROP_ALL:
                p = p * 0.0
            else:
                keep = _keep(row_index, start_n, seed, stream_lo, stream_hi, t, BM, BN, ALIGNED)
                p = tl.where(keep, p * drop_scale, 0.0)
        v = _load_rows(V + b * svb + hk * svh + cols[:, None] * svn + offs_ev[None, :], cols, S, EV, offs_ev)
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, PRECISION)
        m_i = m_new
    out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
    lse = tl.where(l_i == 0.0, float("-inf"), tl.where(m_i == float("-inf"), 0.0, m_i) + tl.log(l_i))
    tl.store(Out + b * sob + h * soh + rows[:, None] * som + offs_ev[None, :], out.to(Out.dtype.element_ty),
             mask=(rows[:, None] < L) & (offs_ev[None, :] < EV))  # fmt: skip
    tl.store(Lse + bh * L + rows, lse, mask=rows < L)


@triton.jit
def _probabilities(s, lse):
    """``exp(scores - lse)``; 0 for a row that sees no key (``lse = -inf``) and for hidden keys."""
    return tl.exp(s - tl.where(lse == float("-inf"), float("inf"), lse)[:, None])


@triton.jit(do_not_specialize=_DATA_ARGS)
def _backward_kv_kernel(
    Q, K, V, Bias, dO, Lse, Delta, dK, dV, Bases,  # dK, dV: float32 (B, H, S, ·), one slab per query head
    sqb, sqh, sqm, skb, skh, skn, svb, svh, svn, sbb, sbh, sbm, sbn, sob, soh, som,
    H, L, S, group, row_stride, i0, j0,
    seed_lo, seed_hi, stream_lo, stream_hi, threshold, scale, drop_scale,
    E: tl.constexpr, EV: tl.constexpr, BE: tl.constexpr, BEV: tl.constexpr, BM: tl.constexpr,
    BN: tl.constexpr, HAS_BIAS: tl.constexpr, CAUSAL: tl.constexpr, DROPOUT: tl.constexpr,
    DROP_ALL: tl.constexpr, ALIGNED: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    pid_n, bh = tl.program_id(0), tl.program_id(1)
    b, h = bh // H, bh % H
    hk = h // group
    cols = pid_n * BN + tl.arange(0, BN)
    offs_m, offs_e, offs_ev = tl.arange(0, BM), tl.arange(0, BE), tl.arange(0, BEV)
    k = _load_rows(K + b * skb + hk * skh + cols[:, None] * skn + offs_e[None, :], cols, S, E, offs_e)
    v = _load_rows(V + b * svb + hk * svh + cols[:, None] * svn + offs_ev[None, :], cols, S, EV, offs_ev)
    seed = uint64(seed_lo, seed_hi)
    t = threshold.to(tl.uint32, bitcast=True)
    base = tl.load(Bases + bh).to(tl.uint64, bitcast=True)
    dk = tl.zeros([BN, BE], tl.float32)
    dv = tl.zeros([BN, BEV], tl.float32)
    m_start = 0
    if CAUSAL:  # rows before the first one that sees these keys contribute nothing
        m_start = (tl.maximum(j0 + pid_n * BN - i0, 0) // BM) * BM
    for start_m in range(m_start, L, BM):
        rows = start_m + offs_m
        q = _load_rows(Q + b * sqb + h * sqh + rows[:, None] * sqm + offs_e[None, :], rows, L, E, offs_e)
        s = _scores(q, k, Bias + b * sbb + h * sbh + rows[:, None] * sbm + cols[None, :] * sbn,
                    rows, cols, L, S, i0, j0, scale, HAS_BIAS, CAUSAL, PRECISION)  # fmt: skip
        p = _probabilities(s, tl.load(Lse + bh * L + rows, mask=rows < L, other=float("inf")))
        do = _load_rows(dO + b * sob + h * soh + rows[:, None] * som + offs_ev[None, :], rows, L, EV, offs_ev)
        delta = tl.load(Delta + bh * L + rows, mask=rows < L, other=0.0)
        dp = _dot(do, tl.trans(v), PRECISION)
        pd = p
        if DROPOUT:
            if DROP_ALL:
                pd = p * 0.0
                dp = dp * 0.0
            else:
                row_index = base + rows.to(tl.uint64) * row_stride.to(tl.uint64)
                keep = _keep(row_index, pid_n * BN, seed, stream_lo, stream_hi, t, BM, BN, ALIGNED)
                pd = tl.where(keep, p * drop_scale, 0.0)
                dp = tl.where(keep, dp * drop_scale, 0.0)
        dv += _dot(tl.trans(pd).to(do.dtype), do, PRECISION)
        ds = p * (dp - delta[:, None])
        dk += _dot(tl.trans(ds).to(q.dtype), q, PRECISION)
    inside = cols[:, None] < S
    slab = (b * H + h) * S
    tl.store(dK + (slab + cols[:, None]) * E + offs_e[None, :], dk * scale,
             mask=inside & (offs_e[None, :] < E))  # fmt: skip
    tl.store(dV + (slab + cols[:, None]) * EV + offs_ev[None, :], dv,
             mask=inside & (offs_ev[None, :] < EV))  # fmt: skip


@triton.jit(do_not_specialize=_DATA_ARGS)
def _backward_q_kernel(
    Q, K, V, Bias, dO, Lse, Delta, dQ, dBias, Bases,  # dQ: float32 (B, H, L, E); dBias: (B, H, L, S)
    sqb, sqh, sqm, skb, skh, skn, svb, svh, svn, sbb, sbh, sbm, sbn, sob, soh, som,
    H, L, S, group, row_stride, i0, j0,
    seed_lo, seed_hi, stream_lo, stream_hi, threshold, scale, drop_scale,
    E: tl.constexpr, EV: tl.constexpr, BE: tl.constexpr, BEV: tl.constexpr, BM: tl.constexpr,
    BN: tl.constexpr, HAS_BIAS: tl.constexpr, CAUSAL: tl.constexpr, DROPOUT: tl.constexpr,
    DROP_ALL: tl.constexpr, ALIGNED: tl.constexpr, PRECISION: tl.constexpr, BIAS_GRAD: tl.constexpr,
):  # fmt: skip
    pid_m, bh = tl.program_id(0), tl.program_id(1)
    b, h = bh // H, bh % H
    hk = h // group
    rows = pid_m * BM + tl.arange(0, BM)
    offs_n, offs_e, offs_ev = tl.arange(0, BN), tl.arange(0, BE), tl.arange(0, BEV)
    q = _load_rows(Q + b * sqb + h * sqh + rows[:, None] * sqm + offs_e[None, :], rows, L, E, offs_e)
    do = _load_rows(dO + b * sob + h * soh + rows[:, None] * som + offs_ev[None, :], rows, L, EV, offs_ev)
    lse = tl.load(Lse + bh * L + rows, mask=rows < L, other=float("inf"))
    delta = tl.load(Delta + bh * L + rows, mask=rows < L, other=0.0)
    seed = uint64(seed_lo, seed_hi)
    t = threshold.to(tl.uint32, bitcast=True)
    row_index = tl.load(Bases + bh).to(tl.uint64, bitcast=True) + rows.to(tl.uint64) * row_stride.to(
        tl.uint64
    )
    dq = tl.zeros([BM, BE], tl.float32)
    n_end = S
    if CAUSAL:
        n_end = tl.minimum(S, tl.maximum(i0 + (pid_m + 1) * BM - j0, 0))
    for start_n in range(0, n_end, BN):
        cols = start_n + offs_n
        k = _load_rows(K + b * skb + hk * skh + cols[:, None] * skn + offs_e[None, :], cols, S, E, offs_e)
        s = _scores(q, k, Bias + b * sbb + h * sbh + rows[:, None] * sbm + cols[None, :] * sbn,
                    rows, cols, L, S, i0, j0, scale, HAS_BIAS, CAUSAL, PRECISION)  # fmt: skip
        p = _probabilities(s, lse)
        v = _load_rows(V + b * svb + hk * svh + cols[:, None] * svn + offs_ev[None, :], cols, S, EV, offs_ev)
        dp = _dot(do, tl.trans(v), PRECISION)
        if DROPOUT:
            if DROP_ALL:
                dp = dp * 0.0
            else:
                keep = _keep(row_index, start_n, seed, stream_lo, stream_hi, t, BM, BN, ALIGNED)
                dp = tl.where(keep, dp * drop_scale, 0.0)
        ds = p * (dp - delta[:, None])
        dq += _dot(ds.to(k.dtype), k, PRECISION)
        if BIAS_GRAD:
            tl.store(dBias + (bh * L + rows[:, None]) * S + cols[None, :], ds,
                     mask=(rows[:, None] < L) & (cols[None, :] < S))  # fmt: skip
    tl.store(dQ + (bh * L + rows[:, None]) * E + offs_e[None, :], dq * scale,
             mask=(rows[:, None] < L) & (offs_e[None, :] < E))  # fmt: skip


# Under TRITON_INTERPRET=1 (read when the kernel is decorated) triton.jit returns an interpreted function.
_INTERPRETED = not isinstance(_forward_kernel, triton.runtime.JITFunction)


class _Call:
    """One call's tensors in the kernels' layout ``(B, H, L, ·)`` and its scalar arguments."""

    def __init__(self, q, k, v, bias, p, seed, stream, scale, causal, global_shape, offsets) -> None:
        if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
            raise TypeError(f"attention on CUDA takes float16, bfloat16 or float32 tensors, got {q.dtype}")
        if not (q.is_cuda or _INTERPRETED):
            raise ValueError(f"the Triton attention kernels take CUDA tensors, got device {q.device}")
        self.lead, L, S = tuple(q.shape[:-2]), q.shape[-2], k.shape[-2]
        H = self.lead[-1] if self.lead else 1
        B = math.prod(self.lead[:-1])
        heads = k.shape[-3] if self.lead else 1
        self.q = q.reshape(B, H, L, q.shape[-1]).contiguous()
        self.k = k.reshape(B, heads, S, k.shape[-1]).contiguous()
        self.v = v.reshape(B, heads, S, v.shape[-1]).contiguous()
        self.bias = None
        if bias is not None:
            additive = torch.where(bias, 0.0, -math.inf) if bias.dtype == torch.bool else bias
            self.bias = additive.broadcast_to((*self.lead, L, S)).reshape(B, H, L, S)
        self.B, self.H, self.L, self.S, self.group = B, H, L, S, H // heads
        self.bases, aligned = _head_bases(self.lead, global_shape, offsets, q.device)
        threshold = keep_threshold(p)
        self.scalars = (
            H, L, S, self.group, global_shape[-1], offsets[-2], offsets[-1],
            *int32_halves(seed), *int32_halves(stream), int32_halves(min(threshold, 2**32 - 1))[0],
            float(scale), float(inverted_scale(p)),
        )  # fmt: skip
        self.flags = {
            "E": q.shape[-1], "EV": v.shape[-1], "BE": _padded(q.shape[-1]), "BEV": _padded(v.shape[-1]),
            "BM": BLOCK_M, "BN": BLOCK_N, "HAS_BIAS": self.bias is not None, "CAUSAL": bool(causal),
            "DROPOUT": p > 0.0, "DROP_ALL": threshold > 0xFFFFFFFF, "ALIGNED": aligned,
            "PRECISION": _precision(q.dtype),
        }  # fmt: skip

    def strides(self, out: Tensor) -> tuple[int, ...]:
        bias = self.bias if self.bias is not None else torch.empty((0, 0, 0, 0))
        return (
            *self.q.stride()[:3], *self.k.stride()[:3], *self.v.stride()[:3], *bias.stride(),
            *out.stride()[:3],
        )  # fmt: skip

    def device(self):
        return torch.cuda.device(self.q.device) if self.q.is_cuda else contextlib.nullcontext()

    @property
    def bias_arg(self) -> Tensor:
        return self.q if self.bias is None else self.bias  # an unused pointer when there is no bias


def _precision(dtype: torch.dtype) -> str:
    """float32 multiplies in full precision (no TF32), as torch's CPU and default CUDA matmuls do."""
    if dtype == torch.float32:
        return "ieee"
    return "upcast" if _INTERPRETED and dtype == torch.bfloat16 else "tf32"


def _padded(features: int) -> int:
    """Head sizes padded to a power of two, at least 16 (``tl.dot``'s smallest operand)."""
    return max(16, triton.next_power_of_2(features))


def _head_bases(
    lead: tuple[int, ...], global_shape: Sequence[int], offsets: Sequence[int], device: torch.device
) -> tuple[Tensor, bool]:
    """The flat index of each head's probability ``(0, 0)`` in the global tensor, as int64 bits; and
    whether every row starts on a multiple of 4."""
    strides = [math.prod(global_shape[d + 1 :]) for d in range(len(global_shape))]
    base = offsets[-2] * strides[-2] + offsets[-1]
    index = np.full(math.prod(lead), base, dtype=np.uint64)
    grids = np.indices(lead).reshape(len(lead), -1) if lead else ()
    for d, grid in enumerate(grids):
        index += (grid.astype(np.uint64) + np.uint64(offsets[d])) * np.uint64(strides[d])
    aligned = global_shape[-1] % 4 == 0 and bool((index % np.uint64(4) == 0).all())
    return torch.from_numpy(index.view(np.int64)).to(device), aligned


def forward(q, k, v, bias, p, seed, stream, scale, causal, global_shape, offsets) -> tuple[Tensor, Tensor]:
    """``(Y, lse)`` as :func:`dropkit.torch._attention_cpu.forward` computes them, on the GPU."""
    call = _Call(q, k, v, bias, p, seed, stream, scale, causal, global_shape, offsets)
    out = torch.empty((call.B, call.H, call.L, v.shape[-1]), dtype=q.dtype, device=q.device)
    lse = torch.empty((call.B, call.H, call.L), dtype=torch.float32, device=q.device)
    grid = (triton.cdiv(call.L, BLOCK_M), call.B * call.H)
    with call.device():
        _forward_kernel[grid](
            call.q, call.k, call.v, call.bias_arg, out, lse, call.bases, *call.strides(out), *call.scalars,
            **call.flags, num_warps=_NUM_WARPS,
        )  # fmt: skip
    return out.reshape(*q.shape[:-1], v.shape[-1]), lse.reshape(q.shape[:-1])


def backward(grad, q, k, v, bias, out, lse, p, seed, stream, scale, causal, global_shape, offsets, bias_grad):
    """``(dQ, dK, dV, dBias)`` as :func:`dropkit.torch._attention_cpu.backward` computes them, on the GPU."""
    call = _Call(q, k, v, bias, p, seed, stream, scale, causal, global_shape, offsets)
    B, H, L, S = call.B, call.H, call.L, call.S
    do = grad.reshape(B, H, L, v.shape[-1]).contiguous()
    lse = lse.reshape(B, H, L).contiguous()
    delta = (do.float() * out.reshape(B, H, L, -1).float()).sum(-1)  # rowsum(dY ⊙ Y)
    dk = torch.empty((B, H, S, k.shape[-1]), dtype=torch.float32, device=q.device)
    dv = torch.empty((B, H, S, v.shape[-1]), dtype=torch.float32, device=q.device)
    dq = torch.empty((B, H, L, q.shape[-1]), dtype=torch.float32, device=q.device)
    dbias = torch.empty((B, H, L, S) if bias_grad else (0,), dtype=torch.float32, device=q.device)
    arguments = (call.q, call.k, call.v, call.bias_arg, do, lse, delta)
    with call.device():
        _backward_kv_kernel[(triton.cdiv(S, BLOCK_N), B * H)](
            *arguments, dk, dv, call.bases, *call.strides(do), *call.scalars, **call.flags,
            num_warps=_NUM_WARPS,
        )  # fmt: skip
        _backward_q_kernel[(triton.cdiv(L, BLOCK_M), B * H)](
            *arguments, dq, dbias, call.bases, *call.strides(do), *call.scalars, **call.flags,
            BIAS_GRAD=bool(bias_grad), num_warps=_NUM_WARPS,
        )  # fmt: skip
    heads = H // call.group
    dk = dk.view(B, heads, call.group, S, -1).sum(2).reshape(k.shape).to(k.dtype)
    dv = dv.view(B, heads, call.group, S, -1).sum(2).reshape(v.shape).to(v.dtype)
    if bias_grad:
        dbias = _sum_to(dbias.reshape(*call.lead, L, S), tuple(bias.shape)).to(bias.dtype)
    else:
        dbias = torch.empty(0, dtype=q.dtype, device=q.device)
    return dq.reshape(q.shape).to(q.dtype), dk, dv, dbias


def _sum_to(grad: Tensor, shape: tuple[int, ...]) -> Tensor:
    """``grad`` summed over the dims along which a tensor of ``shape`` was broadcast to it."""
    padded = (1,) * (grad.dim() - len(shape)) + shape
    dims = [d for d, n in enumerate(padded) if n == 1 and grad.shape[d] != 1]
    return (grad.sum(dim=dims, keepdim=True) if dims else grad).reshape(shape)
