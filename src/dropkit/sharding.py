"""Shards: where a local array sits in a global one, and the slice of the global mask it draws.

The contract (see :mod:`dropkit.philox`) keys every keep decision by the element's row-major flat
index in the *global* tensor, so a process holding only a slice of that tensor draws exactly the
slice of the global mask once it knows where the slice sits. A :class:`Shard` says so with the global
shape and the offset of the slice along every dimension (the local shape is the local array's)::

    global index of local element (i_0, ..., i_{n-1}) = sum_d (offsets[d] + i_d) * stride_d
    stride_d = global_shape[d + 1] * ... * global_shape[n - 1]

A shard is one contiguous range of global indexes when it splits only the leading dims (a row block of
a batch); the kernels then take it whole, with ``start`` set to its first index. Otherwise, e.g. a
``(B, T, H)`` tensor split along ``T`` or ``H``, it is several *runs*: the local array reshaped to
``(runs, run_length)`` has rows that are contiguous global ranges, each with its own start.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from dropkit import kernels
from dropkit._validation import UINT64_LIMIT, check_dims, check_finite, check_float_array, check_uint64, shown
from dropkit.philox import KEEP_NONE, keep_threshold, random_bits

__all__ = ["Runs", "Shard", "shard_dropout_apply", "shard_keep_mask"]


class Runs(NamedTuple):
    """A shard as ``(len(starts), length)`` rows of consecutive global indexes."""

    starts: np.ndarray  # uint64, (runs,): global flat index of each row's first element
    length: int  # elements per row


@dataclass(frozen=True)
class Shard:
    """A local array of shape ``local_shape`` at ``offsets`` in a global tensor of ``global_shape``.

    Args:
        global_shape: shape of the logical, global tensor (at most ``2**64`` elements, the index range).
        offsets: index of the local array's first element along every dim of the global tensor.
        local_shape: shape of the local array; ``offsets[d] + local_shape[d] <= global_shape[d]``.

    Raises ``ValueError`` naming the argument when the dims disagree or the shard leaves the tensor.

    >>> shard = Shard(global_shape=(2, 3, 4), offsets=(0, 0, 2), local_shape=(2, 3, 2))
    >>> shard.start is None, shard.runs.length, shard.runs.starts.tolist()
    (True, 2, [2, 6, 10, 14, 18, 22])
    >>> Shard((8, 4), (6, 0), (2, 4)).start  # rows 6 and 7: one range, from 6 * 4
    24
    """

    global_shape: tuple[int, ...]
    offsets: tuple[int, ...]
    local_shape: tuple[int, ...]

    def __post_init__(self) -> None:
        global_shape = check_dims("global_shape", self.global_shape)
        offsets = check_dims("offsets", self.offsets)
        local_shape = check_dims("local_shape", self.local_shape)
        ndim = len(global_shape)
        if len(offsets) != ndim:
            raise ValueError(
                f"offsets must have one entry per dim of global_shape {shown(global_shape)}, "
                f"got {shown(offsets)}"
            )
        if len(local_shape) != ndim:
            raise ValueError(
                f"the local shape {shown(local_shape)} must have as many dims as "
                f"global_shape {shown(global_shape)}"
            )
        for d, (size, offset, extent) in enumerate(zip(global_shape, offsets, local_shape, strict=True)):
            if offset > size:
                raise ValueError(
                    f"offsets[{d}] = {shown(offset)} is out of range [0, {shown(size)}] "
                    f"for global_shape[{d}] = {shown(size)}"
                )
            if offset + extent > size:
                raise ValueError(
                    f"the shard runs past global_shape[{d}] = {shown(size)}: "
                    f"offsets[{d}] + local extent = {shown(offset)} + {shown(extent)} > {shown(size)}"
                )
        if math.prod(global_shape) > UINT64_LIMIT:
            raise ValueError(
                f"global_shape {shown(global_shape)} has more than 2**64 elements, "
                "the range of the mask index"
            )
        for name, value in (
            ("global_shape", global_shape),
            ("offsets", offsets),
            ("local_shape", local_shape),
        ):
            object.__setattr__(self, name, value)

    @property
    def size(self) -> int:
        """Number of local elements."""
        return math.prod(self.local_shape)

    def _layout(self) -> tuple[int, int, tuple[int, ...]]:
        """``(run_dim, first, strides)``: outermost dim of a run, first global index, global strides.

        Plain Python ints (no cache, no NumPy), so ``torch.compile`` traces :attr:`start` through.
        """
        strides, step = [], 1
        for size in reversed(self.global_shape):
            strides.append(step)
            step *= size
        strides.reverse()
        # Trailing dims the shard spans in full merge into the run, as does the innermost partial one.
        inner = len(self.global_shape)
        while inner > 0 and self.local_shape[inner - 1] == self.global_shape[inner - 1]:
            inner -= 1
        first = sum(o * s for o, s in zip(self.offsets, strides, strict=True))
        return max(inner - 1, 0), first, tuple(strides)

    @property
    def start(self) -> int | None:
        """Global flat index of the first element when the shard is one contiguous range, else None.

        An empty shard counts as the empty range at 0.
        """
        run_dim, first, _ = self._layout()
        if self.size == 0:
            return 0
        if all(extent == 1 for extent in self.local_shape[:run_dim]):
            return first
        return None

    @functools.cached_property
    def runs(self) -> Runs:
        """The shard as rows of consecutive global indexes: ``local.reshape(len(starts), length)``.

        Rows follow the local row-major order; row ``r`` holds global indexes
        ``starts[r], ..., starts[r] + length - 1``. One row when :attr:`start` is not None.
        """
        run_dim, first, strides = self._layout()
        if self.size == 0:
            return Runs(np.empty(0, np.uint64), 0)
        starts = np.array([first], dtype=np.uint64)
        for extent, stride in zip(self.local_shape[:run_dim], strides[:run_dim], strict=True):
            if extent > 1:
                steps = np.arange(extent, dtype=np.uint64) * np.uint64(stride)
                starts = (starts[:, None] + steps).ravel()
        return Runs(starts, math.prod(self.local_shape[run_dim:]))

    def global_indexes(self) -> np.ndarray:
        """The global flat index of every local element: a uint64 array of the local shape.

        >>> Shard((3, 4), (1, 1), (2, 2)).global_indexes().tolist()
        [[5, 6], [9, 10]]
        """
        starts, length = self.runs
        return (starts[:, None] + np.arange(length, dtype=np.uint64)).reshape(self.local_shape)

    def keep_mask(self, p: float, *, seed: int, stream: int = 0) -> np.ndarray:
        """The shard's slice of ``keep_mask(global_shape, p, seed=seed, stream=stream)``, a bool array.

        >>> import dropkit
        >>> full = dropkit.keep_mask((4, 6), 0.5, seed=3)
        >>> bool((Shard((4, 6), (1, 2), (2, 3)).keep_mask(0.5, seed=3) == full[1:3, 2:5]).all())
        True
        """
        threshold = keep_threshold(p)
        start = self.start
        if start is not None:
            return kernels.keep_range(p, seed, stream, start, self.size).reshape(self.local_shape)
        if threshold == KEEP_NONE:  # p == 1
            check_uint64("seed", seed)
            check_uint64("stream", stream)
            return np.zeros(self.local_shape, dtype=bool)
        return random_bits(seed, stream, self.global_indexes()) >= np.uint32(threshold)

    def dropout_apply(
        self,
        x: np.ndarray,
        p: float,
        *,
        seed: int,
        stream: int,
        scale: float,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """:func:`dropkit.kernels.dropout_apply` for the shard: ``x * keep * scale`` with its global mask.

        One range goes to :func:`dropkit.kernels.dropout_apply` with ``start``; several runs go to
        :func:`dropkit.kernels.dropout_apply_runs` with their starts.

        Args:
            x: floating-point array of shape ``local_shape``.
            out: optional array of ``x``'s shape and dtype to write into (``out=x`` is in place).
        """
        x = check_float_array("x", x)
        if x.shape != self.local_shape:
            raise ValueError(f"x must have the shard's local shape {self.local_shape}, got {shown(x.shape)}")
        threshold = keep_threshold(p)
        scale = check_finite("scale", scale, finite=threshold != KEEP_NONE)  # p == 1 scales nothing
        seed, stream = check_uint64("seed", seed), check_uint64("stream", stream)
        if out is not None:
            kernels.check_out(x, out)
        kwargs = {"seed": seed, "stream": stream, "scale": scale, "out": out}
        if self.start is not None:
            return kernels.dropout_apply(x, p, start=self.start, **kwargs)
        return kernels.dropout_apply_runs(x, p, starts=self.runs.starts, **kwargs)


def shard_keep_mask(
    global_shape: Sequence[int],
    offsets: Sequence[int],
    local_shape: Sequence[int],
    p: float,
    *,
    seed: int,
    stream: int = 0,
) -> np.ndarray:
    """The keep mask of one shard: ``keep_mask(global_shape, ...)[o0:o0 + l0, o1:o1 + l1, ...]``.

    Computed from the shard's global indexes alone; the global mask is never formed.

    >>> import dropkit
    >>> part = shard_keep_mask((4, 6, 8), (0, 2, 0), (4, 3, 8), 0.3, seed=1, stream=2)
    >>> bool((part == dropkit.keep_mask((4, 6, 8), 0.3, seed=1, stream=2)[:, 2:5]).all())
    True
    """
    return Shard(global_shape, offsets, local_shape).keep_mask(p, seed=seed, stream=stream)


def shard_dropout_apply(
    x: np.ndarray,
    p: float,
    *,
    seed: int,
    stream: int,
    scale: float,
    global_shape: Sequence[int],
    offsets: Sequence[int],
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Dropout of the shard ``x`` of a global tensor: ``x * shard_keep_mask(...) * scale``.

    Equals the matching slice of ``kernels.dropout_apply`` on the global tensor, bit for bit.

    >>> x = np.ones((2, 4), np.float32)
    >>> shard_dropout_apply(x, 0.5, seed=0, stream=0, scale=2.0, global_shape=(2, 8), offsets=(0, 4))
    array([[2., 0., 2., 0.],
           [2., 0., 2., 0.]], dtype=float32)
    """
    x = check_float_array("x", x)
    shard = Shard(global_shape, offsets, x.shape)
    return shard.dropout_apply(x, p, seed=seed, stream=stream, scale=scale, out=out)
