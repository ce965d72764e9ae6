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

Shards that are one range of global indexes go to the ``dropkit::dropout_keyed`` op with its
``start``; other shards (a split along a middle dim) to ``dropkit::dropout_sharded``, registered here,
which takes the global shape and offsets and whose backward is itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import numbers
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from dropkit._validation import check_shard_arguments, check_uint64
from dropkit.sharding import Shard
from dropkit.torch import _cpu, _ops

__all__ = [
    "RANK_STREAM_BITS",
    "DataParallel",
    "Location",
    "data_parallel",
    "dropout_sharded_op",
    "dtensor_shard",
    "independent_masks",
    "locate",
    "rank_stream",
]

RANK_STREAM_BITS = 32  # under independent_masks, rank r's stream s is (r << 32) | s


def _check_index(name: str, value: Any, limit: int | None = None) -> int:
    """``value`` as an int in ``[0, limit)`` (``[0, inf)`` without a limit)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0 or (limit is not None and value >= limit):
        bound = "" if limit is None else f", below {limit}"
        raise ValueError(f"{name} must be a non-negative int{bound}, got {value}")
    return int(value)


def rank_stream(stream: int, rank: int) -> int:
    """The contract's stream that rank ``rank`` uses for stream ``stream`` under :func:`independent_masks`.

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
    return (_check_index("rank", rank, 1 << (64 - RANK_STREAM_BITS)) << RANK_STREAM_BITS) | stream


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


# Process-wide, like torch.manual_seed: DDP runs one process per rank. Set only by the context managers.
_data_parallel: DataParallel | None = None
_stream_rank: int | None = None


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
    global _data_parallel
    if batch_sizes is not None:
        if isinstance(batch_sizes, (str, bytes)) or not isinstance(batch_sizes, Sequence) or not batch_sizes:
            raise TypeError(f"batch_sizes must be a non-empty sequence of ints, got {batch_sizes!r}")
        batch_sizes = tuple(_check_index("batch_sizes[i]", b) for b in batch_sizes)
        if world_size is None:
            world_size = len(batch_sizes)
    if rank is None or world_size is None:
        group_rank, group_size = _process_group_rank("rank" if rank is None else "world_size", group)
        rank = group_rank if rank is None else rank
        world_size = group_size if world_size is None else world_size
    world_size = _check_index("world_size", world_size)
    if world_size == 0:
        raise ValueError("world_size must be a positive int, got 0")
    if batch_sizes is not None and len(batch_sizes) != world_size:
        raise ValueError(
            f"batch_sizes must have one entry per rank (world_size={world_size}), got {list(batch_sizes)}"
        )
    state = DataParallel(
        _check_index("rank", rank, world_size), world_size, batch_sizes, _check_index("batch_dim", batch_dim)
    )
    previous, _data_parallel = _data_parallel, state
    try:
        yield state
    finally:
        _data_parallel = previous


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
    global _stream_rank
    if rank is None:
        rank, _ = _process_group_rank("rank", group)
    rank = _check_index("rank", rank, 1 << (64 - RANK_STREAM_BITS))
    previous, _stream_rank = _stream_rank, rank
    try:
        yield rank
    finally:
        _stream_rank = previous


def _dtensor_class() -> type | None:
    """DTensor, if ``torch.distributed.tensor`` is loaded (a DTensor cannot exist before it is)."""
    module = sys.modules.get("torch.distributed.tensor")
    return None if module is None else module.DTensor


def _is_dtensor(x: Tensor) -> bool:
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


def locate(
    input: Tensor,
    global_shape: Sequence[int] | None = None,
    offsets: Sequence[int] | None = None,
    *,
    batched: bool = True,
) -> Location | None:
    """The :class:`Location` of ``input`` from the arguments, its placements and the contexts in force.

    None when nothing places it (no ``global_shape``, no DTensor, no context): the plain path.
    ``batched=False`` says ``input`` holds no batch (a weight), so :func:`data_parallel` leaves it whole.
    Raises ``ValueError`` naming the argument for a shard that does not fit ``input``.
    """
    dtensor = _is_dtensor(input)
    if check_shard_arguments(global_shape, offsets) and dtensor:
        raise ValueError(
            "global_shape and offsets come from a DTensor's placements: pass them for plain tensors"
        )
    if dtensor:
        shard = dtensor_shard(input)
    elif global_shape is not None:
        shard = Shard(tuple(global_shape), tuple(offsets), tuple(input.shape))
    else:
        shard = None
    if _data_parallel is not None and batched:
        shape = tuple(input.shape)
        shard = _data_parallel.place(shard or Shard(shape, (0,) * len(shape), shape))
    if shard is None and _stream_rank is None and not dtensor:
        return None
    return Location(shard, _stream_rank, dtensor)


def masked(
    input: Tensor,
    p: float,
    scale: float,
    inplace: bool,
    seed: int | None,
    stream: int | Tensor,
    location: Location,
) -> Tensor:
    """``input * keep * scale`` with the mask of ``input``'s place in the global tensor.

    The training branch of ``dropkit.torch.functional.masked`` for a located input, inputs checked.
    Always the keyed ops: ``(seed, stream)`` travels as a tensor, eagerly as under ``torch.compile``.
    """
    key = located_key(seed, stream, location)
    local = to_local(input, location)
    shard = location.shard
    start = 0 if shard is None else shard.start
    if start is not None:
        output = _ops.dropout_keyed_op(local, key, p, scale, start)
    else:
        output = dropout_sharded_op(local, key, p, scale, list(shard.global_shape), list(shard.offsets))
    output = from_local(output, input, location)
    return input.copy_(output) if inplace else output


def located_key(seed: int | None, stream: int | Tensor, location: Location | None) -> Tensor:
    """The ``(seed, stream)`` key tensor; under :func:`independent_masks` the rank is in the stream."""
    if location is not None and location.stream_rank is not None:
        if isinstance(stream, Tensor):
            stream = stream + (location.stream_rank << RANK_STREAM_BITS)
        else:
            stream = rank_stream(stream, location.stream_rank)
    return _ops.key_tensor(seed, stream)


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


def _apply_runs(x: Tensor, p: float, seed: int, stream: int, scale: float, shard: Shard, out: Tensor) -> None:
    """Write the shard's dropout of contiguous ``x`` into contiguous ``out``, run by run."""
    kwargs = {"seed": seed, "stream": stream, "scale": scale}
    if x.device.type == "cpu":
        _cpu.on_numpy(x, out, lambda array, out_array: shard.dropout_apply(array, p, out=out_array, **kwargs))
        return
    _launch_per_run(_ops._kernel(x.device), x, p, seed, stream, scale, shard, out)


def _launch_per_run(
    kernel: Callable[..., Tensor],
    x: Tensor,
    p: float,
    seed: int,
    stream: int,
    scale: float,
    shard: Shard,
    out: Tensor,
) -> None:
    """One ``kernel(row, ..., start=...)`` launch per run of contiguous ``x`` into contiguous ``out``.

    Fine for a few long runs (a split along dim 1 of ``(B, T, H)`` has ``B``); a split of the last dim
    has one short run per row, and costs a launch each.
    """
    starts, length = shard.runs
    rows, out_rows = x.view(-1, length), out.view(-1, length)
    for row, out_row, start in zip(rows, out_rows, starts.tolist(), strict=True):
        kernel(row, p, seed=seed, stream=stream, scale=scale, start=start, out=out_row)


@torch.library.custom_op("dropkit::dropout_sharded", mutates_args=())
def dropout_sharded_op(
    x: Tensor, key: Tensor, p: float, scale: float, global_shape: list[int], offsets: list[int]
) -> Tensor:
    """``x * keep * scale`` where ``x`` sits at ``offsets`` in a tensor of ``global_shape``.

    ``key`` is ``(seed, stream)`` as an int64 CPU tensor of shape ``(2,)`` (see ``dropkit.torch._ops``).
    """
    seed, stream = _ops.unpack_key(key)
    shard = Shard(tuple(global_shape), tuple(offsets), tuple(x.shape))
    if x.numel() == 0:
        return _ops.empty_dense_like(x)
    return _ops.on_dense(x, lambda dense, out: _apply_runs(dense, p, seed, stream, scale, shard, out))


@dropout_sharded_op.register_fake
def _dropout_sharded_fake(
    x: Tensor, key: Tensor, p: float, scale: float, global_shape: list[int], offsets: list[int]
) -> Tensor:
    return _ops.empty_dense_like(x)


def _dropout_sharded_setup_context(ctx, inputs, output) -> None:
    _, key, ctx.p, ctx.scale, ctx.global_shape, ctx.offsets = inputs
    ctx.save_for_backward(key)


def _dropout_sharded_backward(ctx, grad: Tensor):
    # d(x * keep * scale)/dx = keep * scale: the forward op, applied to the gradient.
    (key,) = ctx.saved_tensors
    grad_input = dropout_sharded_op(grad, key, ctx.p, ctx.scale, ctx.global_shape, ctx.offsets)
    return grad_input, None, None, None, None, None


dropout_sharded_op.register_autograd(_dropout_sharded_backward, setup_context=_dropout_sharded_setup_context)
