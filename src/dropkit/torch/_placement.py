"""Where a local tensor sits in the global one, and so which slice of the global mask it draws.

A mask element is a pure function of ``(seed, stream, global index)`` (docs/contract.md), so a tensor
that knows its place in a global tensor -- a :class:`dropkit.sharding.Shard` -- draws exactly the
masks of one process holding the whole tensor. :func:`locate` finds that place from, in order: a
DTensor's placements, explicit ``global_shape``/``offsets``, and the contexts of
:mod:`dropkit.torch.distributed` in force (their state lives here, set only by those contexts).
:func:`place` then slices a variant's *mask* shape (``(N, C, 1, 1)`` for channel dropout) the same way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from dropkit._validation import check_index, check_shard_arguments, check_uint64
from dropkit.sharding import Shard

__all__ = [
    "RANK_STREAM_BITS",
    "DataParallel",
    "Location",
    "Placed",
    "State",
    "current",
    "dtensor_shard",
    "from_local",
    "is_dtensor",
    "locate",
    "override",
    "place",
    "rank_stream",
    "static_shape",
    "to_local",
    "whole",
]

RANK_STREAM_BITS = 32  # under independent_masks, rank r's stream s is (r << 32) | s

Shape = tuple[int, ...]


def rank_stream(stream: int, rank: int) -> int:
    """The contract's stream that rank ``rank`` uses for stream ``stream`` under ``independent_masks``.

    ``(rank << 32) | stream``: one-to-one on ``stream < 2**32`` and ``rank < 2**32``, so no two
    (rank, stream) pairs share a mask; rank 0 draws exactly the streams of a single process.

    >>> rank_stream(5, 0), rank_stream(5, 3) == 3 * 2**32 + 5
    (5, True)
    """
    stream = check_uint64("stream", stream)
    if stream >> RANK_STREAM_BITS:
        raise ValueError(
            f"stream must be below 2**{RANK_STREAM_BITS} when the rank is folded into it "
            f"(independent_masks), got {stream}"
        )
    return (check_index("rank", rank, 1 << (64 - RANK_STREAM_BITS)) << RANK_STREAM_BITS) | stream


@dataclasses.dataclass(frozen=True)
class DataParallel:
    """Rank ``rank`` of ``world_size`` holds rows of a global batch along ``batch_dim``.

    With ``batch_sizes`` rank ``r`` holds rows ``[sum(batch_sizes[:r]), sum(batch_sizes[:r + 1]))`` of
    ``sum(batch_sizes)``; without, every rank holds ``B`` rows (its input's) and rank ``r`` rows
    ``[r * B, (r + 1) * B)`` of ``world_size * B``.
    """

    rank: int
    world_size: int
    batch_sizes: tuple[int, ...] | None = None
    batch_dim: int = 0

    def place(self, shard: Shard) -> Shard:
        """The global shard of a rank's local data, from its shard of the rank's own replica.

        The replica's tensor (``shard.global_shape``; the input itself unless tensor-parallel) holds
        the rank's rows along ``batch_dim``; the returned shard places them in the global batch.
        """
        dim, replica = self.batch_dim, shard.global_shape
        if len(replica) <= dim:
            raise ValueError(
                f"data_parallel(batch_dim={dim}) needs inputs with more than {dim} dims, "
                f"got one of shape {shard.local_shape}"
            )
        rows = replica[dim]
        if self.batch_sizes is None:
            offset, total = self.rank * rows, self.world_size * rows
        else:
            if rows != self.batch_sizes[self.rank]:
                raise ValueError(
                    f"data_parallel(batch_sizes={list(self.batch_sizes)}) gives rank {self.rank} "
                    f"{self.batch_sizes[self.rank]} rows along dim {dim}, but the input has {rows}"
                )
            offset, total = sum(self.batch_sizes[: self.rank]), sum(self.batch_sizes)
        global_shape = (*replica[:dim], total, *replica[dim + 1 :])
        offsets = (*shard.offsets[:dim], shard.offsets[dim] + offset, *shard.offsets[dim + 1 :])
        return Shard(global_shape, offsets, shard.local_shape)


@dataclasses.dataclass(frozen=True)
class State:
    """The placing contexts in force: ``data_parallel``'s split and ``independent_masks``' rank."""

    data_parallel: DataParallel | None = None
    stream_rank: int | None = None


# Process-wide, like torch.manual_seed: DDP runs one process per rank.
_state = State()


def current() -> State:
    """The placing contexts in force."""
    return _state


@contextlib.contextmanager
def override(**changes: Any) -> Iterator[State]:
    """Replace fields of the :class:`State` until the context exits (nested contexts restore in turn)."""
    global _state
    previous = _state
    _state = dataclasses.replace(previous, **changes)
    try:
        yield _state
    finally:
        _state = previous


def _dtensor_class() -> type | None:
    """DTensor, if ``torch.distributed.tensor`` is loaded (a DTensor cannot exist before it is)."""
    module = sys.modules.get("torch.distributed.tensor")
    return None if module is None else module.DTensor


def is_dtensor(x: Tensor) -> bool:
    if torch.compiler.is_compiling():  # DTensors under torch.compile are not supported
        return False
    dtensor = _dtensor_class()
    return dtensor is not None and isinstance(x, dtensor)


def dtensor_shard(x: Tensor) -> Shard:
    """Where a DTensor's local tensor sits in its global tensor, from its device mesh and placements.

    ``Shard(d)`` (even or uneven, as ``torch.chunk`` splits) and its strided form give offsets along
    ``d``; ``Replicate`` and ``Partial`` give offset 0 (a ``Partial`` shard's values sum to the global
    ones, and dropout is linear, so every rank applies the same mask).
    """
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    local_shape, offsets = compute_local_shape_and_global_offset(x.shape, x.device_mesh, x.placements)
    return Shard(tuple(x.shape), tuple(offsets), tuple(local_shape))


@dataclasses.dataclass(frozen=True)
class Location:
    """Where a dropout input sits: its shard of the global tensor (None: it is the whole tensor), the
    rank folded into its streams (None: none), and whether it is a DTensor to unwrap and rewrap."""

    shard: Shard | None
    stream_rank: int | None = None
    dtensor: bool = False

    def stream(self, stream: int | Tensor) -> int | Tensor:
        """``stream`` with the rank folded in (``(rank << 32) | stream``) under ``independent_masks``."""
        if self.stream_rank is None:
            return stream
        if isinstance(stream, Tensor):
            return stream + (self.stream_rank << RANK_STREAM_BITS)
        return rank_stream(stream, self.stream_rank)


def locate(
    input: Tensor,
    global_shape: Sequence[int] | None = None,
    offsets: Sequence[int] | None = None,
    *,
    batched: bool = True,
) -> Location | None:
    """The :class:`Location` of ``input`` from the arguments, its placements and the contexts in force.

    None when nothing places it (no ``global_shape``, no DTensor, no context): the plain path.
    ``batched=False`` says ``input`` holds no batch (a weight), so ``data_parallel`` leaves it whole.
    Raises ``ValueError`` naming the argument for a shard that does not fit ``input``.
    """
    dtensor = is_dtensor(input)
    if check_shard_arguments(global_shape, offsets) and dtensor:
        raise ValueError(
            "global_shape and offsets come from a DTensor's placements: pass them for plain tensors"
        )
    if dtensor:
        shard = dtensor_shard(input)
    elif global_shape is not None:
        shard = Shard(global_shape, offsets, tuple(input.shape))  # Shard checks and names them
    else:
        shard = None
    state = _state
    if state.data_parallel is not None and batched:
        shape = tuple(input.shape)
        shard = state.data_parallel.place(shard or Shard(shape, (0,) * len(shape), shape))
    if shard is None and state.stream_rank is None and not dtensor:
        return None
    return Location(shard, state.stream_rank, dtensor)


def to_local(input: Tensor, location: Location | None) -> Tensor:
    """The tensor the kernels see: a DTensor's local shard, any other tensor itself."""
    return input.to_local() if location is not None and location.dtensor else input


def from_local(output: Tensor, input: Tensor, location: Location | None) -> Tensor:
    """``output`` (of :func:`to_local`'s shape) as a DTensor with ``input``'s placements, if it was one."""
    if location is None or not location.dtensor:
        return output
    return _dtensor_class().from_local(
        output, input.device_mesh, input.placements, shape=input.shape, stride=input.stride()
    )


def static_shape(x: Tensor) -> Shape:
    """``x``'s shape as Python ints: under ``torch.jit.trace`` the sizes are traced values, and a mask
    shape is fixed per traced graph."""
    return tuple(map(int, x.shape))


@functools.lru_cache(maxsize=256)  # a Shard checks its geometry when made; layers see few shapes
def whole(shape: Shape) -> Shard:
    """The shard that is all of a tensor of ``shape``: an unsharded input's mask."""
    return Shard(shape, (0,) * len(shape), shape)


class Placed(NamedTuple):
    """Where an input sits (a :class:`Location`, or None) and the slice of the global mask it draws."""

    location: Location | None
    mask: Shard


def place(
    input: Tensor,
    mask_shape_of: Callable[[Shape], Shape],
    global_shape: Sequence[int] | None = None,
    offsets: Sequence[int] | None = None,
    *,
    batched: bool = True,
) -> Placed:
    """Locate ``input`` and slice the mask ``mask_shape_of`` gives its global shape (which it checks).

    The mask is drawn over the global input's mask shape; a shard draws its slice of it, with offset 0
    and size 1 along the dims where the mask broadcasts. ``global_shape``/``offsets`` place it
    explicitly, as for :func:`dropkit.torch.dropout`; ``batched=False`` for weights.
    """
    location = locate(input, global_shape, offsets, batched=batched)
    shard = None if location is None else location.shard
    if shard is None:
        return Placed(location, whole(mask_shape_of(static_shape(input))))
    try:
        global_mask = mask_shape_of(shard.global_shape)
    except ValueError as error:
        raise ValueError(f"{error} (x is the global tensor: the input is a shard of it)") from None
    drawn = [m == g for m, g in zip(global_mask, shard.global_shape, strict=True)]  # else broadcast (1)
    shape = tuple(n if d else 1 for n, d in zip(shard.local_shape, drawn, strict=True))
    offsets = tuple(o if d else 0 for o, d in zip(shard.offsets, drawn, strict=True))
    return Placed(location, Shard(global_mask, offsets, shape))
