"""Fused dropout on the CPU, compiled by numba: draw the mask and scale in one pass over memory.

Each parallel task owns a block of 64K elements. It draws the Philox4x32-10 words (Salmon et al.,
SC'11) of 128 consecutive elements into a 512-byte buffer that stays in L1, then streams those
elements once: ``out[i] = x[i] * scale if word >= t else 0``. No mask ever reaches memory.

The Philox loop is written for LLVM's vectorizer: one call per iteration, the four counter words
held in uint64 lanes so each 32x32->64-bit product is one ``vpmuludq`` (the ``& 0xFFFFFFFF`` before
each multiply is folded into it, so the high halves may carry garbage between rounds), and the
round keys precomputed. Everything is unsigned 64-bit: seeds, streams and element indexes can pass
2**32, and numba would promote signed/unsigned mixes to float64.
"""

from __future__ import annotations

import os

import numba
import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic

from dropkit.philox import KEEP_NONE

__all__ = [
    "SERIAL_MAX",
    "dropout_kernel",
    "dropout_kernel_at",
    "dropout_kernel_serial",
    "dropout_runs_kernel",
    "philox_batch",
    "pointer_to",
    "round_keys",
]

_U64 = np.uint64
_U32 = np.uint32
_LOW32 = _U64(0xFFFFFFFF)
_SHIFT32 = _U64(32)
_M0, _M1 = _U64(0xD2511F53), _U64(0xCD9E8D57)
_W0, _W1 = _U64(0x9E3779B9), _U64(0xBB67AE85)
_ROUNDS = 10
# Elements whose words are drawn at once: 32 Philox calls, under one DRAM latency of arithmetic, so
# the hardware prefetcher's lookahead keeps memory busy while they run. Measured at 2**24 float32:
# 64-256 are 18-20% faster than 512-4096 (docs/benchmarks.md, "What limits the ratio").
_BATCH = 128
_TASK = 1 << 16  # elements per parallel task, a power of two: thread start-up is noise next to it
SERIAL_MAX = _TASK  # arrays up to one task's size run on the calling thread


@njit(cache=True, inline="always")
def philox_batch(block0, calls, s0, s1, rk0, rk1, words):
    """``words[4j + lane] = Philox4x32_10((block0 + j, stream), seed)[lane]`` for ``j < calls``.

    The blocks must share their high 32 bits (tasks guarantee it, see ``_run_task``). Holding
    that word constant lets LLVM fold the first round's ``s0 * M1`` and the second round's
    ``c0 * M0`` into constants: 2 of the 20 multiplies per call are free.
    """
    low, high = block0 & _LOW32, block0 >> _SHIFT32
    for j in range(calls):
        c0, c1, c2, c3 = low + _U64(j), high, s0, s1
        for r in range(_ROUNDS):
            p0 = (c0 & _LOW32) * _M0
            p1 = (c2 & _LOW32) * _M1
            c0, c1, c2, c3 = (p1 >> _SHIFT32) ^ c1 ^ rk0[r], p1, (p0 >> _SHIFT32) ^ c3 ^ rk1[r], p0
        words[4 * j] = _U32(c0 & _LOW32)
        words[4 * j + 1] = _U32(c1 & _LOW32)
        words[4 * j + 2] = _U32(c2 & _LOW32)
        words[4 * j + 3] = _U32(c3 & _LOW32)


@njit(cache=True)
def round_keys(seed):
    """The Philox key of each of the 10 rounds, as two uint64 arrays of 32-bit values."""
    rk0, rk1 = np.empty(_ROUNDS, np.uint64), np.empty(_ROUNDS, np.uint64)
    k0, k1 = seed & _LOW32, seed >> _SHIFT32
    for r in range(_ROUNDS):
        rk0[r], rk1[r] = k0, k1
        k0, k1 = (k0 + _W0) & _LOW32, (k1 + _W1) & _LOW32
    return rk0, rk1


@njit(cache=True, inline="always")
def _n_tasks(start, n):
    """Tasks are aligned to global multiples of _TASK, so a range of n elements spans this many."""
    return (np.int64(start & _U64(_TASK - 1)) + n + _TASK - 1) // _TASK


@njit(cache=True, inline="always")
def _run_task(x, out, task, start, threshold, s0, s1, rk0, rk1, factor):
    """Dropout of the elements of ``x`` whose global index falls in ``[task, task + 1) * _TASK``."""
    n = x.size
    head = np.int64(start & _U64(_TASK - 1))  # local index i has global index start + i
    task_begin, task_end = max(task * _TASK - head, 0), min((task + 1) * _TASK - head, n)
    zero = x.dtype.type(0)
    if threshold >= _U64(KEEP_NONE) or threshold == _U64(0):  # keep none, or all: nothing to draw
        keep_all = threshold == _U64(0)
        xs, outs = x[task_begin:task_end], out[task_begin:task_end]
        for k in range(task_end - task_begin):
            outs[k] = xs[k] * factor if keep_all else zero
        return
    t = _U32(threshold)
    words = np.empty(_BATCH, np.uint32)
    # Batches start at global multiples of 4, so a batch's first word is lane 0 of a Philox call,
    # and stay inside the task: _TASK divides 2**34 elements (2**32 blocks), so the high word of
    # the block counter is the same for every call of a batch.
    first = -np.int64(start & _U64(3))  # local index of the 4-aligned global index at or before x[0]
    lo = max(task * _TASK - head, first)
    while lo < task_end:
        hi = min(lo + _BATCH, task_end)
        block = (start >> _U64(2)) + _U64((lo - first) >> 2)
        philox_batch(block, (hi - lo + 3) >> 2, s0, s1, rk0, rk1, words)
        begin = max(lo, 0)
        # Slices indexed from 0 let LLVM drop numba's negative-index wraparound and vectorize.
        xs, outs, ws = x[begin:hi], out[begin:hi], words[begin - lo : hi - lo]
        for k in range(hi - begin):
            outs[k] = xs[k] * factor if ws[k] >= t else zero
        lo = hi


@njit(parallel=True, cache=True, fastmath=False)
def dropout_kernel(
    x: np.ndarray,
    out: np.ndarray,
    start: np.uint64,
    threshold: np.uint64,
    seed: np.uint64,
    stream: np.uint64,
    scale: float,
) -> None:
    """``out[i] = x[i] * scale if bits(start + i) >= threshold else 0`` for every ``i``.

    Args:
        x: 1-D C-contiguous float32 or float64 array.
        out: array like ``x`` to write (may be ``x`` itself).
        start: np.uint64, the global flat index of ``x[0]``; ``start + x.size <= 2**64``.
        threshold: np.uint64, ``keep_threshold(p)`` in ``[0, 2**32]``.
        seed, stream: np.uint64.
        scale: float; rounded once to ``x``'s dtype, and the product formed in that dtype.
    """
    s0, s1 = stream & _LOW32, stream >> _SHIFT32
    rk0, rk1 = round_keys(seed)
    factor = x.dtype.type(scale)
    for task in prange(_n_tasks(start, x.size)):
        _run_task(x, out, task, start, threshold, s0, s1, rk0, rk1, factor)


@njit(cache=True, fastmath=False)
def dropout_kernel_serial(
    x: np.ndarray,
    out: np.ndarray,
    start: np.uint64,
    threshold: np.uint64,
    seed: np.uint64,
    stream: np.uint64,
    scale: float,
) -> None:
    """:func:`dropout_kernel` on the calling thread, for arrays too small to be worth waking threads."""
    s0, s1 = stream & _LOW32, stream >> _SHIFT32
    rk0, rk1 = round_keys(seed)
    factor = x.dtype.type(scale)
    for task in range(_n_tasks(start, x.size)):
        _run_task(x, out, task, start, threshold, s0, s1, rk0, rk1, factor)


@njit(parallel=True, cache=True, fastmath=False)
def dropout_runs_kernel(
    rows: np.ndarray,
    out_rows: np.ndarray,
    starts: np.ndarray,
    threshold: np.uint64,
    seed: np.uint64,
    stream: np.uint64,
    scale: float,
) -> None:
    """Row ``r`` of the 2-D ``rows`` is the global range from ``starts[r]``: threads take whole rows,
    each one :func:`dropout_kernel_serial` call (a shard split along an inner dim)."""
    for r in prange(starts.size):
        dropout_kernel_serial(rows[r], out_rows[r], starts[r], threshold, seed, stream, scale)


@intrinsic
def pointer_to(typingctx, address, like):
    """The int64 ``address`` as a pointer to values of ``like``'s type (float32, float64, int64)."""

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

    return types.CPointer(like)(address, like), codegen


@njit(cache=True, fastmath=False)
def dropout_kernel_at(
    x_address: int,
    out_address: int,
    n: int,
    start: int,
    threshold: int,
    seed: int,
    stream: int,
    scale: float,
) -> None:
    """:func:`dropout_kernel_serial` on the ``n`` elements at two raw addresses (``out`` may be ``x``).

    The torch face's small-call entry: it takes no NumPy views, and every argument is a number whose
    type numba reads at once (``start``, ``threshold``, ``seed`` and ``stream`` as the int64 with the
    unsigned value's bits), which halves a 64x64 call. ``scale``, a NumPy float32 or float64, says
    the data's dtype; the addresses must hold ``n`` contiguous elements of it.
    """
    x = numba.carray(pointer_to(x_address, scale), n)
    out = numba.carray(pointer_to(out_address, scale), n)
    dropout_kernel_serial(x, out, _U64(start), _U64(threshold), _U64(seed), _U64(stream), scale)


def _start_threads_with_passive_waits() -> None:
    """Start numba's thread pool with OpenMP's passive wait policy, unless the user chose a policy.

    GNU OpenMP's default lets idle workers spin. Next to torch's own OpenMP pool, or on a busy
    machine, the spinning workers of one pool starve the other: measured on 2 cores, alternating a
    512x512 torch matmul with a 2**12-element dropout took 25 ms + 10 ms per step, against
    3 ms + 0.15 ms with passive waits. OpenMP reads the variable once, when numba loads it, so
    it is set only around that moment and the rest of the process (torch included) is left alone.
    """
    if "OMP_WAIT_POLICY" in os.environ:
        return
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        numba.get_num_threads()  # loads the threading layer (and OpenMP with it)
    finally:
        del os.environ["OMP_WAIT_POLICY"]


_start_threads_with_passive_waits()
