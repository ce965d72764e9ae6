"""The variants' kernels, compiled by numba: a mask applied to the array it broadcasts to, and raw words.

The structured variants draw one keep decision per channel, sequence or sample (docs/contract.md)
and broadcast it. Here the array is seen as ``rows`` rows of ``length`` consecutive elements, each
row with the flat mask index ``bases[r]`` of its first element: where the innermost dims share one
decision (channel dropout, drop path) a row is one decision, written as a run of ``x * a`` or of
``c``; where they are drawn (locked dropout, a full mask) a row reads ``length`` decisions from
``bases[r]`` on. One pass over memory; dropped elements are written, never read, and are exactly
``c`` (+0 for the Bernoulli variants) whatever ``x`` holds there, inf and NaN included.

``affine`` adds ``b`` to kept elements after the product (alpha dropout): two roundings in the data
type, as the reference forms them. Without it no ``+ b`` is formed, so a kept ``-0`` stays ``-0``.
An ``x`` of one element stands for that value broadcast to ``out``'s size (an expanded scalar, such
as the gradient of a ``sum``), read once instead of copied out.

:func:`broadcast_dropout_kernel` also draws the mask: the keep decisions are
:func:`dropkit.kernels.cpu.dropout_kernel_serial`'s dropout of ones, so the one fused kernel decides
every mask. A mask as large as the array (one row) is drawn segment by segment inside the threads.

:func:`words_kernel` writes the contract's raw 32-bit words of a range of Philox blocks (Gaussian
dropout's Box-Muller pairs), with the fused kernel's own generator loop; :func:`box_muller_inputs`
and :func:`box_muller_normals` do Box-Muller's arithmetic around the logarithm, cosine and sine,
which stay NumPy's (its float64 ``log`` is its own SIMD code, not libm's, so only NumPy gives the
reference's values).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from dropkit.kernels.cpu import dropout_kernel_serial, philox_batch, pointer_to, round_keys

__all__ = [
    "box_muller_inputs",
    "box_muller_inputs_serial",
    "box_muller_normals",
    "box_muller_normals_serial",
    "broadcast_dropout_at",
    "broadcast_dropout_kernel",
    "broadcast_dropout_kernel_serial",
    "broadcast_kernel",
    "broadcast_kernel_serial",
    "keep_kernel",
    "words_kernel",
    "words_kernel_serial",
]

_SEGMENT = 1 << 14  # elements of a row one parallel task takes: rows of a (64, 256, 32, 32) map are 1024
_U64 = np.uint64
_LOW32, _SHIFT32 = _U64(0xFFFFFFFF), _U64(32)
_CALLS = 32  # Philox calls per batch: batches start at multiples of 32 blocks, so they share a high word
_WORDS_TASK = 1 << 14  # blocks per parallel task, a multiple of _CALLS


@njit(cache=True, inline="always")
def _segment(x, out, keep, base, first, lo, hi, a, b, c, inner_drawn, affine):
    """Elements ``[lo, hi)`` of the row at ``first``, whose decisions start at ``keep[base]``."""
    # Slices indexed from 0 let LLVM drop numba's negative-index wraparound and vectorize.
    outs = out[first + lo : first + hi]
    if x.size != out.size:  # one value broadcast (the gradient of a sum): every kept element is its image
        kept = x[0] * a + b if affine else x[0] * a
        if inner_drawn:
            ks = keep[base + lo : base + hi]
            for k in range(hi - lo):
                outs[k] = kept if ks[k] else c
        else:
            value = kept if keep[base] else c
            for k in range(hi - lo):
                outs[k] = value
        return
    xs = x[first + lo : first + hi]
    if inner_drawn:
        ks = keep[base + lo : base + hi]
        if affine:
            for k in range(hi - lo):
                outs[k] = xs[k] * a + b if ks[k] else c
        else:
            for k in range(hi - lo):
                outs[k] = xs[k] * a if ks[k] else c
    elif not keep[base]:
        for k in range(hi - lo):
            outs[k] = c
    elif affine:
        for k in range(hi - lo):
            outs[k] = xs[k] * a + b
    else:
        for k in range(hi - lo):
            outs[k] = xs[k] * a


@njit(cache=True, inline="always")
def _task(x, out, keep, bases, length, segments, task, a, b, c, inner_drawn, affine):
    """Segment ``task % segments`` of row ``task // segments``."""
    row = task // segments
    lo = (task - row * segments) * _SEGMENT
    hi = min(lo + _SEGMENT, length)
    _segment(x, out, keep, bases[row], row * length, lo, hi, a, b, c, inner_drawn, affine)


@njit(parallel=True, cache=True, fastmath=False)
def broadcast_kernel(
    x: np.ndarray,
    out: np.ndarray,
    keep: np.ndarray,
    bases: np.ndarray,
    length: int,
    a: float,
    b: float,
    c: float,
    inner_drawn: bool,
    affine: bool,
) -> None:
    """``out = keep ? x * a (+ b) : c`` with ``keep`` broadcast as ``bases`` and ``length`` say.

    Args:
        x: 1-D C-contiguous float32 or float64 array of ``bases.size * length`` elements, or of one
            (broadcast).
        out: array like ``x`` to write (may be ``x`` itself).
        keep: 1-D bool array, the flat mask.
        bases: int64 array, the mask index of each row's first element.
        length: elements per row.
        a, b, c: rounded once to ``x``'s dtype; products and sums formed in that dtype.
        inner_drawn: a row reads ``length`` decisions (else one).
        affine: add ``b`` to kept elements.
    """
    segments = (length + _SEGMENT - 1) // _SEGMENT
    fa, fb, fc = x.dtype.type(a), x.dtype.type(b), x.dtype.type(c)
    for task in prange(bases.size * segments):
        _task(x, out, keep, bases, length, segments, task, fa, fb, fc, inner_drawn, affine)


@njit(cache=True, fastmath=False)
def broadcast_kernel_serial(
    x: np.ndarray,
    out: np.ndarray,
    keep: np.ndarray,
    bases: np.ndarray,
    length: int,
    a: float,
    b: float,
    c: float,
    inner_drawn: bool,
    affine: bool,
) -> None:
    """:func:`broadcast_kernel` on the calling thread, for arrays too small to be worth waking threads."""
    segments = (length + _SEGMENT - 1) // _SEGMENT
    fa, fb, fc = x.dtype.type(a), x.dtype.type(b), x.dtype.type(c)
    for task in range(bases.size * segments):
        _task(x, out, keep, bases, length, segments, task, fa, fb, fc, inner_drawn, affine)


@njit(cache=True, inline="always")
def _draw(start, count, threshold, seed, stream):
    """The keep decisions of mask indexes ``[start, start + count)``: the fused kernel's dropout of ones."""
    keep = np.empty(count, np.uint8)
    dropout_kernel_serial(np.ones(count, np.uint8), keep, start, threshold, seed, stream, 1.0)
    return keep


@njit(cache=True)
def keep_kernel(
    start: np.uint64, count: int, threshold: np.uint64, seed: np.uint64, stream: np.uint64
) -> np.ndarray:
    """The keep decisions (uint8, 1 = kept) of mask indexes ``[start, start + count)``, on the calling
    thread: the fused kernel's dropout of ones."""
    return _draw(start, count, threshold, seed, stream)


@njit(parallel=True, cache=True, fastmath=False)
def broadcast_dropout_kernel(
    x: np.ndarray,
    out: np.ndarray,
    bases: np.ndarray,
    length: int,
    count: int,
    start: np.uint64,
    threshold: np.uint64,
    seed: np.uint64,
    stream: np.uint64,
    a: float,
    b: float,
    c: float,
    inner_drawn: bool,
    affine: bool,
) -> None:
    """:func:`broadcast_kernel` with ``keep`` the contract's decisions of mask indexes
    ``[start, start + count)`` for ``threshold`` and ``(seed, stream)``, drawn here.

    ``count`` is the mask's size; a mask of one row (as large as ``x``) is drawn segment by segment.
    """
    segments = (length + _SEGMENT - 1) // _SEGMENT
    fa, fb, fc = x.dtype.type(a), x.dtype.type(b), x.dtype.type(c)
    if bases.size == 1 and inner_drawn:
        for segment in prange(segments):
            lo = segment * _SEGMENT
            hi = min(lo + _SEGMENT, length)
            keep = _draw(start + _U64(lo), hi - lo, threshold, seed, stream)
            _segment(x, out, keep, -lo, 0, lo, hi, fa, fb, fc, inner_drawn, affine)
        return
    keep = _draw(start, count, threshold, seed, stream)
    for task in prange(bases.size * segments):
        _task(x, out, keep, bases, length, segments, task, fa, fb, fc, inner_drawn, affine)


@njit(cache=True, fastmath=False)
def broadcast_dropout_kernel_serial(
    x: np.ndarray,
    out: np.ndarray,
    bases: np.ndarray,
    length: int,
    count: int,
    start: np.uint64,
    threshold: np.uint64,
    seed: np.uint64,
    stream: np.uint64,
    a: float,
    b: float,
    c: float,
    inner_drawn: bool,
    affine: bool,
) -> None:
    """:func:`broadcast_dropout_kernel` on the calling thread."""
    segments = (length + _SEGMENT - 1) // _SEGMENT
    fa, fb, fc = x.dtype.type(a), x.dtype.type(b), x.dtype.type(c)
    keep = _draw(start, count, threshold, seed, stream)
    for task in range(bases.size * segments):
        _task(x, out, keep, bases, length, segments, task, fa, fb, fc, inner_drawn, affine)


@njit(cache=True, fastmath=False)
def broadcast_dropout_at(
    x_address: int,
    x_size: int,
    out_address: int,
    n: int,
    bases_address: int,
    rows: int,
    length: int,
    count: int,
    start: int,
    threshold: int,
    seed: int,
    stream: int,
    a: float,
    b: float,
    c: float,
    inner_drawn: bool,
    affine: bool,
) -> None:
    """:func:`broadcast_dropout_kernel_serial` on raw addresses: ``x_size`` (``n``, or 1 for a broadcast
    value) elements at ``x_address``, ``n`` at ``out_address``, the ``rows`` int64 bases at
    ``bases_address``.

    The torch face's small-call entry: every argument is a number whose type numba reads at once
    (``start``, ``threshold``, ``seed`` and ``stream`` as the int64 with the unsigned value's bits), no
    NumPy view is made. ``a``, a NumPy float32 or float64, says the data's dtype.
    """
    x = numba.carray(pointer_to(x_address, a), x_size)
    out = numba.carray(pointer_to(out_address, a), n)
    bases = numba.carray(pointer_to(bases_address, np.int64(0)), rows)
    integers = _U64(start), _U64(threshold), _U64(seed), _U64(stream)
    broadcast_dropout_kernel_serial(x, out, bases, length, count, *integers, a, b, c, inner_drawn, affine)


@njit(cache=True, inline="always")
def _words_task(first_block, s0, s1, rk0, rk1, out, head, blocks, task):
    """The words of the blocks of task ``task``: tasks and batches are cut at global multiples of
    ``_CALLS`` blocks, so a batch never crosses a multiple of 2**32 blocks (its calls share a high word)."""
    lo = max(task * _WORDS_TASK - head, 0)
    end = min((task + 1) * _WORDS_TASK - head, blocks)
    while lo < end:
        block = first_block + _U64(lo)
        calls = min(_CALLS - np.int64(block & _U64(_CALLS - 1)), end - lo)
        philox_batch(block, calls, s0, s1, rk0, rk1, out[4 * lo : 4 * (lo + calls)])
        lo += calls


@njit(parallel=True, cache=True)
def words_kernel(first_block: np.uint64, seed: np.uint64, stream: np.uint64, out: np.ndarray) -> None:
    """``out[4j + lane] = Philox4x32_10((first_block + j, stream), seed)[lane]``: the contract's words of
    ``out.size // 4`` consecutive blocks (``out``: a 1-D uint32 array, a multiple of 4 long)."""
    s0, s1 = stream & _LOW32, stream >> _SHIFT32
    rk0, rk1 = round_keys(seed)
    blocks = out.size // 4
    head = np.int64(first_block & _U64(_CALLS - 1))
    for task in prange((head + blocks + _WORDS_TASK - 1) // _WORDS_TASK):
        _words_task(first_block, s0, s1, rk0, rk1, out, head, blocks, task)


@njit(cache=True)
def words_kernel_serial(first_block: np.uint64, seed: np.uint64, stream: np.uint64, out: np.ndarray) -> None:
    """:func:`words_kernel` on the calling thread."""
    s0, s1 = stream & _LOW32, stream >> _SHIFT32
    rk0, rk1 = round_keys(seed)
    blocks = out.size // 4
    head = np.int64(first_block & _U64(_CALLS - 1))
    for task in range((head + blocks + _WORDS_TASK - 1) // _WORDS_TASK):
        _words_task(first_block, s0, s1, rk0, rk1, out, head, blocks, task)


_TWO_TO_MINUS_32 = 2.0**-32
_TWO_PI = 2.0 * np.pi


@njit(cache=True, inline="always")
def _uniforms(words, u0, angle, k):
    u0[k] = (np.float64(words[2 * k]) + 0.5) * _TWO_TO_MINUS_32
    angle[k] = _TWO_PI * ((np.float64(words[2 * k + 1]) + 0.5) * _TWO_TO_MINUS_32)


@njit(parallel=True, cache=True, fastmath=False)
def box_muller_inputs(words: np.ndarray, u0: np.ndarray, angle: np.ndarray) -> None:
    """Box–Muller's ``u0 = (w0 + 0.5) 2**-32`` and angle ``2 pi u1`` of each pair of ``words`` (float64)."""
    for k in prange(u0.size):
        _uniforms(words, u0, angle, k)


@njit(cache=True, fastmath=False)
def box_muller_inputs_serial(words: np.ndarray, u0: np.ndarray, angle: np.ndarray) -> None:
    """:func:`box_muller_inputs` on the calling thread."""
    for k in range(u0.size):
        _uniforms(words, u0, angle, k)


@njit(cache=True, inline="always")
def _normals(log_u0, cos, sin, scale, affine, out, k):
    radius = np.sqrt(-2.0 * log_u0[k])
    z0, z1 = radius * cos[k], radius * sin[k]
    if affine:
        z0, z1 = 1.0 + scale * z0, 1.0 + scale * z1
    out[2 * k] = z0
    if 2 * k + 1 < out.size:
        out[2 * k + 1] = z1


@njit(parallel=True, cache=True, fastmath=False)
def box_muller_normals(
    log_u0: np.ndarray, cos: np.ndarray, sin: np.ndarray, scale: float, affine: bool, out: np.ndarray
) -> None:
    """``out[2k], out[2k + 1] = r cos, r sin`` with ``r = sqrt(-2 log_u0)`` (``1 + scale *`` each when
    ``affine``): Box–Muller's standard normals from the logarithm, cosine and sine NumPy computed (so
    they are the reference's), each product and sum rounded once as NumPy rounds them."""
    for k in prange(log_u0.size):
        _normals(log_u0, cos, sin, scale, affine, out, k)


@njit(cache=True, fastmath=False)
def box_muller_normals_serial(
    log_u0: np.ndarray, cos: np.ndarray, sin: np.ndarray, scale: float, affine: bool, out: np.ndarray
) -> None:
    """:func:`box_muller_normals` on the calling thread."""
    for k in range(log_u0.size):
        _normals(log_u0, cos, sin, scale, affine, out, k)
