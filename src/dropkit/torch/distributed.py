"""dropkit under ``torch.distributed``: every rank draws its slice of the mask of the global tensor.

A mask element is a pure function of ``(seed, stream, global index)`` (the contract, see
:mod:`dropkit.philox`), so a rank that knows where its local tensor sits in the global one draws
exactly the masks of one process holding the whole tensor. Three ways to say where it sits:

- **explicit**: ``dropout(x_local, p, seed=..., global_shape=..., offsets=...)`` (and the same keyword
  arguments on :class:`dropkit.torch.Dropout`'s forward), a :class:`dropkit.sharding.Shard`;
- **DTensor**: a ``torch.distributed.tensor.DTensor`` input carries its placements: the local shard's
  offsets are derived from them and the output is a DTensor with the same placements;
- **data parallel**: inside :func:`data_parallel`, dim 0 (``batch_dim``) of every input is the rank's
  rows of a global batch: rows ``[r * B, (r + 1) * B)`` of ``W * B``, or any split given as
  ``batch_sizes``. DDP on ``W`` ranks then draws the masks of one process on the global batch.

:func:`independent_masks` instead gives every rank masks of its own, by folding the rank into the
stream: rank ``r``'s stream ``s`` is the contract's stream ``r * 2**32 + s`` (see :func:`rank_stream`).

How a tensor finds its place is :mod:`dropkit.torch._placement`; the contexts here only set it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from dropkit._validation import check_index
from dropkit.torch import _placement
from dropkit.torch._placement import RANK_STREAM_BITS, DataParallel, dtensor_shard, rank_stream

__all__ = [
    "RANK_STREAM_BITS",
    "DataParallel",
    "data_parallel",
    "dtensor_shard",
    "independent_masks",
    "rank_stream",
]


def _process_group_rank(name: str, group: Any) -> tuple[int, int]:
    """``(rank, world_size)`` in ``group`` from torch.distributed, or an error naming ``name``."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError(f"{name} is None and torch.distributed is not initialized: pass {name} explicitly")
    return dist.get_rank(group), dist.get_world_size(group)


@contextlib.contextmanager
def data_parallel(
    rank: int | None = None,
    world_size: int | None = None,
    *,
    batch_sizes: Sequence[int] | None = None,
    batch_dim: int = 0,
    group: Any = None,
) -> Iterator[DataParallel]:
    """Treat every dropkit dropout input as this rank's rows of a global batch.

    Inside the context, ``dropkit.torch.dropout`` and :class:`dropkit.torch.Dropout` on a local batch of
    ``B`` rows draw rows ``[r * B, (r + 1) * B)`` of the mask of a global batch of ``W * B`` rows
    (``r = rank``, ``W = world_size``); with ``batch_sizes`` rank ``r`` draws rows
    ``[sum(batch_sizes[:r]), sum(batch_sizes[:r + 1]))`` of ``sum(batch_sizes)``. So DDP on ``W`` ranks
    draws the masks of one process training on the concatenated batch, as long as every rank uses the
    same seeds and makes the same dropout calls in the same order.

    Args:
        rank: this process's rank; ``None`` asks ``torch.distributed`` (in ``group``).
        world_size: number of ranks; ``None`` takes ``len(batch_sizes)`` or asks ``torch.distributed``.
        batch_sizes: rows held by each rank, for uneven splits; every input's ``batch_dim`` must then
            have ``batch_sizes[rank]`` rows.
        batch_dim: the dim that holds the batch (1 for sequence-first ``(T, B, H)`` inputs).
        group: process group to take ``rank`` and ``world_size`` from (default: the world).

    Yields the :class:`DataParallel` in force. Nested contexts replace the outer one until they exit.

    >>> import torch, dropkit.torch as dt
    >>> global_batch = dt.dropout(torch.ones(4, 3), 0.5, seed=0)
    >>> with data_parallel(rank=1, world_size=2):
    ...     local = dt.dropout(torch.ones(2, 3), 0.5, seed=0)  # rank 1 holds rows 2 and 3
    >>> torch.equal(local, global_batch[2:])
    True
    """
    if batch_sizes is not None:
        if isinstance(batch_sizes, (str, bytes)) or not isinstance(batch_sizes, Sequence) or not batch_sizes:
            raise TypeError(f"batch_sizes must be a non-empty sequence of ints, got {batch_sizes!r}")
        batch_sizes = tuple(check_index("batch_sizes[i]", b) for b in batch_sizes)
        if world_size is None:
            world_size = len(batch_sizes)
    if rank is None or world_size is None:
        group_rank, group_size = _process_group_rank("rank" if rank is None else "world_size", group)
        rank = group_rank if rank is None else rank
        world_size = group_size if world_size is None else world_size
    world_size = check_index("world_size", world_size)
    if world_size == 0:
        raise ValueError("world_size must be a positive int, got 0")
    if batch_sizes is not None and len(batch_sizes) != world_size:
        raise ValueError(
            f"batch_sizes must have one entry per rank (world_size={world_size}), got {list(batch_sizes)}"
        )
    state = DataParallel(
        check_index("rank", rank, world_size), world_size, batch_sizes, check_index("batch_dim", batch_dim)
    )
    with _placement.override(data_parallel=state):
        yield state


@contextlib.contextmanager
def independent_masks(rank: int | None = None, *, group: Any = None) -> Iterator[int]:
    """Give this rank masks of its own: its stream ``s`` becomes ``rank_stream(s, rank)``.

    For data-parallel training that does *not* need to match one process (e.g. per-rank batches of
    any size): the ranks may share seeds and call counters, yet no two ranks (and no two streams) draw
    the same mask. Streams must stay below ``2**32`` inside the context; ``rank_stream`` replays a
    rank's masks on one process.

    Args:
        rank: this process's rank; ``None`` asks ``torch.distributed`` (in ``group``).
        group: process group to take ``rank`` from (default: the world).

    Yields the rank.

    >>> import torch, dropkit.torch as dt
    >>> with independent_masks(rank=3):
    ...     y = dt.dropout(torch.ones(8), 0.5, seed=1, stream=2)
    >>> torch.equal(y, dt.dropout(torch.ones(8), 0.5, seed=1, stream=rank_stream(2, 3)))
    True
    """
    if rank is None:
        rank, _ = _process_group_rank("rank", group)
    rank = check_index("rank", rank, 1 << (64 - RANK_STREAM_BITS))
    with _placement.override(stream_rank=rank):
        yield rank
