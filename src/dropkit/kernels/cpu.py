"""Fused dropout on the CPU, compiled by numba: draw the mask and scale in one pass over memory.

Each parallel task owns a block of 64K elements. It draws the Philox4x32-10 words (Salmon et al.,
SC'11) of 4096 consecutive elements into a 16 KiB buffer that stays in L1, then streams those
elements once: ``out[i] = x[i] * scale if word >= t else 0``. No mask ever reaches memory.

The Philox loop is written for LLVM's vectorizer: one call per iteration, the four counter words
held in uint64 lanes so each 32x32->64-bit product is one ``vpmuludq`` (the ``& 0xFFFFFFFF`` before
each multiply is folded into it, so the high halves may carry garbage between rounds), and the
round keys precomputed. Everything is unsigned 64-bit: seeds, streams and element indexes can pass
2**32, and numba would promote signed/unsigned mixes to float64.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["dropout_kernel"]

_U64 = np.uint64
_U32 = np.uint32
_LOW32 = _U64(0xFFFFFFFF)
_SHIFT32 = _U64(32)
_M0, _M1 = _U64(0xD2511F53), _U64(0xCD9E8D57)
_W0, _W1 = _U64(0x9E3779B9), _U64(0xBB67AE85)
_ROUNDS = 10
_BATCH = 4096  # elements whose words are drawn at once: 1024 Philox calls, 16 KiB of words
_TASK = 1 << 16  # elements per parallel task: big enough that thread start-up is noise
_KEEP_NONE = 1 << 32  # keep_threshold(1.0): no 32-bit word reaches it


@njit(cache=True, inline="always")
def _philox_batch(block0, calls, s0, s1, rk0, rk1, words):
    """``words[4j + lane] = Philox4x32_10((block0 + j, stream), seed)[lane]`` for ``j < calls``."""
    for j in range(calls):
        block = block0 + _U64(j)
        c0, c1, c2, c3 = block, block >> _SHIFT32, s0, s1
        for r in range(_ROUNDS):
            p0 = (c0 & _LOW32) * _M0
            p1 = (c2 & _LOW32) * _M1
            c0, c1, c2, c3 = (p1 >> _SHIFT32) ^ c1 ^ rk0[r], p1, (p0 >> _SHIFT32) ^ c3 ^ rk1[r], p0
        words[4 * j] = _U32(c0 & _LOW32)
        words[4 * j + 1] = _U32(c1 & _LOW32)
        words[4 * j + 2] = _U32(c2 & _LOW32)
        words[4 * j + 3] = _U32(c3 & _LOW32)


@njit(cache=True)
def _round_keys(seed):
    """The Philox key of each of the 10 rounds, as two uint64 arrays of 32-bit values."""
    rk0, rk1 = np.empty(_ROUNDS, np.uint64), np.empty(_ROUNDS, np.uint64)
    k0, k1 = seed & _LOW32, seed >> _SHIFT32
    for r in range(_ROUNDS):
        rk0[r], rk1[r] = k0, k1
        k0, k1 = (k0 + _W0) & _LOW32, (k1 + _W1) & _LOW32
    return rk0, rk1


@njit(parallel=True, cache=True, fastmath=False)
def dropout_kernel(x, out, start, threshold, seed, stream, scale):
    """``out[i] = x[i] * scale if bits(start + i) >= threshold else 0`` for every ``i``.

    Args:
        x: 1-D C-contiguous float32 or float64 array.
        out: array like ``x`` to write (may be ``x`` itself).
        start: np.uint64, the global flat index of ``x[0]``; ``start + x.size <= 2**64``.
        threshold: np.uint64, ``keep_threshold(p)`` in ``[0, 2**32]``.
        seed, stream: np.uint64.
        scale: float; rounded once to ``x``'s dtype, and the product formed in that dtype.
    """
    n = x.size
    factor = x.dtype.type(scale)
    zero = x.dtype.type(0)
    if threshold >= _U64(_KEEP_NONE):
        for i in prange(n):
            out[i] = zero
        return
    if threshold == _U64(0):  # every word is >= 0: no need to draw
        for i in prange(n):
            out[i] = x[i] * factor
        return
    t = _U32(threshold)
    s0, s1 = stream & _LOW32, stream >> _SHIFT32
    rk0, rk1 = _round_keys(seed)
    # Local coordinates: element i has global index start + i. Tasks are aligned to global
    # multiples of _TASK and batches to multiples of 4, so a batch's first word is lane 0 of a call.
    head = np.int64(start & _U64(_TASK - 1))
    first = -np.int64(start & _U64(3))  # local index of the 4-aligned global index at or before x[0]
    for task in prange((head + n + _TASK - 1) // _TASK):
        words = np.empty(_BATCH, np.uint32)
        lo = max(task * _TASK - head, first)
        task_end = min(task * _TASK - head + _TASK, n)
        while lo < task_end:
            hi = min(lo + _BATCH, task_end)
            _philox_batch(
                (start >> _U64(2)) + _U64((lo - first) >> 2), (hi - lo + 3) >> 2, s0, s1, rk0, rk1, words
            )
            begin = max(lo, 0)
            # Slices indexed from 0 let LLVM drop numba's negative-index wraparound and vectorize.
            xs, outs, ws = x[begin:hi], out[begin:hi], words[begin - lo : hi - lo]
            for k in range(hi - begin):
                outs[k] = xs[k] * factor if ws[k] >= t else zero
            lo = hi
