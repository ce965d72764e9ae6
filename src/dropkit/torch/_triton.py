"""Dropout on CUDA tensors in Triton: one pass over memory, the contract's mask regenerated in registers.

Forward reads ``x`` and writes the output; backward is the same kernel on the gradient; in place is
the same kernel with ``out=x``. No mask is ever written or read: each program recomputes the keep
decisions of its elements from ``(seed, stream, index)`` with Philox4x32-10 (Salmon et al., SC'11),
one generator call per four consecutive elements, laid out exactly as :mod:`dropkit.philox` says::

    block   = index >> 2
    counter = (lo32(block), hi32(block), lo32(stream), hi32(stream))
    key     = (lo32(seed), hi32(seed))
    bits    = Philox4x32_10(counter, key)[index & 3]

``tl.philox(seed, c0, c1, c2, c3)`` is that generator: for 32-bit counters it splits the 64-bit
``seed`` into the key ``(lo32, hi32)`` and runs the rounds of docs/contract.md on ``(c0, c1, c2, c3)``
(``triton/language/random.py``), so the kernel calls it rather than restating the rounds.

With ``TRITON_INTERPRET=1`` set before triton is imported, the same kernel runs on CPU tensors;
that is how the tests prove the masks without a GPU.
"""

from __future__ import annotations

import contextlib
import numbers
import struct

import torch
import triton
import triton.language as tl

from dropkit._validation import check_uint64
from dropkit.philox import keep_threshold
from dropkit.torch._checks import FLOAT_DTYPES

__all__ = ["dropout_apply"]

_BLOCK = 2048  # elements per program: 512 Philox calls; a multiple of 4 so programs own whole Philox blocks
_NUM_WARPS = 4
# The contract rounds x * scale once, so no multiply may ever be contracted into an fma.
_OPTIONS = {"num_warps": _NUM_WARPS, "enable_fp_fusion": False}


@triton.jit
def uint64(lo, hi):
    """The uint64 whose halves are the int32 bit patterns ``lo`` and ``hi``."""
    return (hi.to(tl.uint32, bitcast=True).to(tl.uint64) << 32) | lo.to(tl.uint32, bitcast=True).to(tl.uint64)


@triton.jit
def _scaled(x, keep, scale, COMPUTE: tl.constexpr, OUT: tl.constexpr):
    """``keep ? x * scale : 0``, the product formed in ``COMPUTE`` and rounded once to ``OUT``."""
    return tl.where(keep, x.to(COMPUTE) * scale, 0.0).to(OUT)


# Every scalar but n is data, not shape: specializing on its value (== 1, divisible by 16) would compile
# new kernels for some seeds, streams, starts and probabilities.
_DATA_ARGS = [
    "seed_lo",
    "seed_hi",
    "stream_lo",
    "stream_hi",
    "block_lo",
    "block_hi",
    "threshold",
    "scale_lo",
    "scale_hi",
]


@triton.jit(do_not_specialize=_DATA_ARGS)
def _dropout_kernel(
    x_ptr,  # *T, n contiguous elements: the input (forward) or the upstream gradient (backward)
    out_ptr,  # *T, n contiguous elements; may be x_ptr (in place)
    n,  # number of elements
    seed_lo,  # int32 bit patterns of the halves of the uint64 seed ...
    seed_hi,
    stream_lo,  # ... of the uint64 stream ...
    stream_hi,
    block_lo,  # ... and of the Philox block of element 0, (start >> 2)
    block_hi,
    threshold,  # int32 bit pattern of t(p) < 2**32: keep when bits >= t
    scale_lo,  # int32 bit patterns of the halves of the float64 scale
    scale_hi,
    PHASE: tl.constexpr,  # start & 3: lane of element 0 inside its Philox block
    COMPUTE: tl.constexpr,  # tl.float64 for float64 data, tl.float32 otherwise
    BLOCK: tl.constexpr,
):
    # Program `pid` owns Philox blocks [pid * BLOCK/4, (pid + 1) * BLOCK/4) counted from element 0's
    # block, so every Philox call is made once, by one program, and serves its four lanes.
    pid = tl.program_id(0).to(tl.int64)
    calls = pid * (BLOCK // 4) + tl.arange(0, BLOCK // 4).to(tl.int64)
    block = uint64(block_lo, block_hi) + calls.to(tl.uint64)
    seed = uint64(seed_lo, seed_hi)
    zero = tl.zeros_like(block).to(tl.uint32)
    c0 = block.to(tl.uint32)  # truncation keeps the low 32 bits
    c1 = (block >> 32).to(tl.uint32)
    c2 = zero + stream_lo.to(tl.uint32, bitcast=True)
    c3 = zero + stream_hi.to(tl.uint32, bitcast=True)
    w0, w1, w2, w3 = tl.philox(seed, c0, c1, c2, c3)
    # (w0[j], w1[j], w2[j], w3[j]) are the words of lanes 0..3 of block j: interleave them in that order.
    bits = tl.interleave(tl.interleave(w0, w2), tl.interleave(w1, w3))

    keep = bits >= threshold.to(tl.uint32, bitcast=True)
    scale = uint64(scale_lo, scale_hi).to(tl.float64, bitcast=True).to(COMPUTE)

    # Element i sits at lane (start + i) & 3, so lane position k of this program is element k - PHASE.
    offsets = pid * BLOCK + tl.arange(0, BLOCK).to(tl.int64) - PHASE
    # Programs wholly inside the tensor skip the bounds mask: a mask that depends on n would stop
    # Triton from vectorizing the loads and stores of every program whenever n % 16 != 0.
    if (pid * BLOCK >= PHASE) & ((pid + 1) * BLOCK - PHASE <= n):
        x = tl.load(x_ptr + offsets)
        tl.store(out_ptr + offsets, _scaled(x, keep, scale, COMPUTE, out_ptr.dtype.element_ty))
    else:
        in_range = (offsets >= 0) & (offsets < n)
        x = tl.load(x_ptr + offsets, mask=in_range)
        tl.store(out_ptr + offsets, _scaled(x, keep, scale, COMPUTE, out_ptr.dtype.element_ty), mask=in_range)


# Under TRITON_INTERPRET=1 (read when the kernel is decorated) triton.jit returns an interpreted function.
_INTERPRETED = not isinstance(_dropout_kernel, triton.runtime.JITFunction)


def int32_halves(value: int) -> tuple[int, int]:
    """The low and high 32 bits of a uint64 as int32 bit patterns: one argument type for every value."""
    return tuple(h - (1 << 32) if h >= 1 << 31 else h for h in (value & 0xFFFFFFFF, value >> 32))


def _check_tensors(x: torch.Tensor, out: torch.Tensor | None) -> None:
    if not isinstance(x, torch.Tensor) or x.dtype not in FLOAT_DTYPES:
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"x must be a float16, bfloat16, float32 or float64 tensor, got {got}")
    if not x.is_contiguous():
        raise ValueError("x must be contiguous (call x.contiguous() first)")
    if not x.is_cuda and not _INTERPRETED:
        raise ValueError(
            f"x must be a CUDA tensor, got device {x.device} "
            "(CPU tensors run only under TRITON_INTERPRET=1, set before triton is imported)"
        )
    if out is None:
        return
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"out must be a tensor or None, got {type(out).__name__}")
    if out.shape != x.shape or out.dtype != x.dtype or out.device != x.device or not out.is_contiguous():
        raise ValueError(
            f"out must be a contiguous tensor of x's shape {tuple(x.shape)}, dtype {x.dtype} and device "
            f"{x.device}, got shape {tuple(out.shape)}, dtype {out.dtype}, device {out.device}"
        )


def dropout_apply(
    x: torch.Tensor,
    p: float,
    *,
    seed: int,
    stream: int,
    scale: float,
    start: int = 0,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Dropout of a contiguous tensor with the contract's mask for flat indexes ``start, start + 1, ...``.

    ``out[i] = keep(start + i) ? x[i] * scale : 0``, with ``x[i] * scale`` formed in float32 (float64
    for float64 data) and rounded once to ``x``'s dtype. The backward pass is this same call on the
    upstream gradient. Launched on the current CUDA stream.

    Args:
        x: contiguous float16, bfloat16, float32 or float64 CUDA tensor (any tensor under the interpreter).
        p: drop probability in [0, 1]; ``p == 1`` (``t(p) == 2**32``) gives zeros and ignores ``scale``.
        seed, stream: unsigned 64-bit integers naming the mask.
        scale: factor applied to kept elements (``1 / (1 - p)`` for inverted dropout).
        start: flat index of ``x``'s first element in the logical mask tensor (uint64).
        out: contiguous tensor of ``x``'s shape, dtype and device to write into; ``out=x`` is in place.

    Shape:
        ``x``: any; returns a tensor of the same shape.

    Returns:
        ``out`` if given, else a new tensor.

    Example (needs a CUDA GPU; the mask is ``dropkit.keep_mask(8, 0.5, seed=0)``)::

        >>> dropout_apply(torch.ones(8, device="cuda"), 0.5, seed=0, stream=0, scale=2.0)  # doctest: +SKIP
        tensor([0., 2., 2., 2., 2., 0., 2., 0.], device='cuda:0')
    """
    _check_tensors(x, out)
    threshold = keep_threshold(p)
    seed_lo, seed_hi = int32_halves(check_uint64("seed", seed))
    stream_lo, stream_hi = int32_halves(check_uint64("stream", stream))
    start = check_uint64("start", start)
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a real number, got {type(scale).__name__}")
    if out is None:
        out = torch.empty_like(x)
    n = x.numel()
    if n == 0:
        return out
    if threshold > 0xFFFFFFFF:  # p == 1 (or within 2**-33 of it): no 32-bit word reaches t, all dropped
        return out.zero_()
    scale_lo, scale_hi = int32_halves(struct.unpack("<Q", struct.pack("<d", float(scale)))[0])
    block_lo, block_hi = int32_halves(start >> 2)
    threshold_bits = int32_halves(threshold)[0]
    phase = start & 3
    grid = (triton.cdiv(n + phase, _BLOCK),)
    compute = tl.float64 if x.dtype == torch.float64 else tl.float32
    with torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext():
        _dropout_kernel[grid](
            x, out, n, seed_lo, seed_hi, stream_lo, stream_hi, block_lo, block_hi, threshold_bits, scale_lo,
            scale_hi, PHASE=phase, COMPUTE=compute, BLOCK=_BLOCK, **_OPTIONS,
        )  # fmt: skip
    return out
