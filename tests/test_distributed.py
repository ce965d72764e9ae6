"""dropkit.torch on shards and ranks: every rank draws exactly its slice of the single-process mask.

The first half runs in this process (shards described explicitly, the contexts given a rank by hand).
The second half starts real ``torch.distributed`` jobs: gloo on 127.0.0.1, 2 and 3 CPU processes
spawned by ``torch.multiprocessing``; their gathered outputs are compared here, element for element,
with one process's ``dropout`` on the global tensor and with ``dropkit.keep_mask``.
"""

from __future__ import annotations

import contextlib
import os
import time
from datetime import timedelta

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

import dropkit.torch as dt  # noqa: E402
from dropkit.kernels import launch_per_run  # noqa: E402
from dropkit.philox import keep_mask  # noqa: E402
from dropkit.sharding import Shard, shard_keep_mask  # noqa: E402
from dropkit.torch import _checks, _cpu, _ops, _placement  # noqa: E402
from dropkit.torch import distributed as D  # noqa: E402
from torch_common import DTYPES, data  # noqa: E402


def part(x, offsets, local_shape):
    return x[tuple(slice(o, o + n) for o, n in zip(offsets, local_shape, strict=True))]


GLOBAL = (4, 6, 8)
# (offsets, local_shape) of shards of GLOBAL: one range, a middle-dim split (B runs), a last-dim split
# (B * T runs), a block in every dim.
SHARDS = [
    ((2, 0, 0), (2, 6, 8)),
    ((0, 2, 0), (4, 3, 8)),
    ((0, 0, 3), (4, 6, 5)),
    ((1, 1, 2), (2, 4, 3)),
]


# ---------------------------------------------------------------- one process


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("offsets", "local_shape"), SHARDS)
def test_shard_draws_its_slice_of_the_global_mask(dtype, offsets, local_shape):
    x = data(GLOBAL, dtype)
    expected = part(dt.dropout(x, 0.3, seed=5, stream=2), offsets, local_shape)
    local = part(x, offsets, local_shape).contiguous().requires_grad_()
    y = dt.dropout(local, 0.3, seed=5, stream=2, global_shape=GLOBAL, offsets=offsets)
    assert torch.equal(y, expected)
    keep = part(torch.from_numpy(keep_mask(GLOBAL, 0.3, seed=5, stream=2)), offsets, local_shape)
    assert torch.equal(y != 0, keep)
    assert np.array_equal(keep.numpy(), shard_keep_mask(GLOBAL, offsets, local_shape, 0.3, seed=5, stream=2))
    # Backward replays the same mask: d(sum y)/dx = keep * scale, rounded to the dtype as the forward is.
    y.backward(torch.ones_like(y))
    assert torch.equal(
        local.grad, part(dt.dropout(torch.ones_like(x), 0.3, seed=5, stream=2), offsets, local_shape)
    )


def test_strided_input_in_place_and_edge_probabilities():
    x = data(GLOBAL, torch.float64)
    offsets, local_shape = (0, 0, 3), (4, 6, 5)
    expected = part(dt.dropout(x, 0.5, seed=1, stream=0), offsets, local_shape)
    strided = part(x, offsets, local_shape)  # a view: not contiguous
    assert torch.equal(dt.dropout(strided, 0.5, seed=1, global_shape=GLOBAL, offsets=offsets), expected)
    permuted = strided.permute(2, 0, 1).contiguous().permute(1, 2, 0)  # same values, other stride order
    y = dt.dropout(permuted, 0.5, seed=1, global_shape=GLOBAL, offsets=offsets)
    assert torch.equal(y, expected) and y.stride() == permuted.stride()
    local = strided.clone()
    assert dt.dropout(local, 0.5, True, True, seed=1, global_shape=GLOBAL, offsets=offsets) is local
    assert torch.equal(local, expected)
    zeros = dt.dropout(strided.clone(), 1.0, seed=1, global_shape=GLOBAL, offsets=offsets)
    assert torch.equal(zeros, torch.zeros(local_shape, dtype=torch.float64))
    same = strided.clone()
    assert dt.dropout(same, 0.0, seed=1, global_shape=GLOBAL, offsets=offsets) is same


def test_launch_per_run_matches_the_global_mask():
    # The CUDA path launches the device kernel once per run; run it here with the CPU kernel.
    x = data(GLOBAL)
    offsets, local_shape = (1, 1, 2), (2, 4, 3)
    local = part(x, offsets, local_shape).contiguous()
    out = torch.empty_like(local)
    shard = Shard(GLOBAL, offsets, local_shape)
    starts, length = shard.runs
    rows, out_rows = local.view(-1, length), out.view(-1, length)
    launch_per_run(_cpu.dropout_apply, rows, out_rows, starts.tolist(), 0.3, seed=5, stream=2, scale=1 / 0.7)
    assert torch.equal(out, part(dt.dropout(x, 0.3, seed=5, stream=2), offsets, local_shape))


def test_module_forward_takes_the_shard_and_numbers_its_calls():
    x = data(GLOBAL)
    offsets, local_shape = (0, 2, 0), (4, 3, 8)
    layer = dt.Dropout(0.4, seed=9)
    for call in range(2):
        y = layer(part(x, offsets, local_shape), global_shape=GLOBAL, offsets=offsets)
        assert torch.equal(y, part(dt.dropout(x, 0.4, seed=9, stream=call), offsets, local_shape))
    assert layer.calls == 2
    # Unseeded: the seed comes from torch's generator, the shard still picks the slice.
    unseeded = dt.Dropout(0.4)
    torch.manual_seed(3)
    y = unseeded(part(x, offsets, local_shape), global_shape=GLOBAL, offsets=offsets)
    torch.manual_seed(3)
    assert torch.equal(y, part(dt.Dropout(0.4)(x), offsets, local_shape))
    layer.eval()
    local = part(x, offsets, local_shape)
    assert layer(local, global_shape=GLOBAL, offsets=offsets) is local


def test_data_parallel_even_split_is_the_global_batch():
    x = data((8, 5))
    expected = dt.dropout(x, 0.5, seed=4, stream=1)
    layer_outputs = []
    for rank in range(2):
        with D.data_parallel(rank, 2) as state:
            assert state == D.DataParallel(rank=rank, world_size=2)
            y = dt.dropout(x[4 * rank : 4 * rank + 4], 0.5, seed=4, stream=1)
            layer_outputs.append(dt.Dropout(0.5, seed=4)(x[4 * rank : 4 * rank + 4]))
        assert torch.equal(y, expected[4 * rank : 4 * rank + 4])
    assert torch.equal(torch.cat(layer_outputs), dt.dropout(x, 0.5, seed=4, stream=0))
    assert _placement.current().data_parallel is None


def test_data_parallel_uneven_batch_sizes_and_batch_dim():
    x = data((8, 5, 3))
    expected = dt.dropout(x, 0.5, seed=4)
    sizes = [3, 3, 2]
    for rank in range(3):
        begin = sum(sizes[:rank])
        with D.data_parallel(rank, batch_sizes=sizes):
            y = dt.dropout(x[begin : begin + sizes[rank]], 0.5, seed=4)
        assert torch.equal(y, expected[begin : begin + sizes[rank]])
    # Sequence-first (T, B, H): the batch is dim 1, a middle-dim split.
    t_first = data((4, 6, 3))
    expected = dt.dropout(t_first, 0.5, seed=4)
    for rank in range(3):
        with D.data_parallel(rank, 3, batch_dim=1):
            y = dt.dropout(t_first[:, 2 * rank : 2 * rank + 2], 0.5, seed=4)
        assert torch.equal(y, expected[:, 2 * rank : 2 * rank + 2])


def test_data_parallel_composes_with_a_tensor_parallel_shard():
    # 2 data-parallel ranks x 2 tensor-parallel ranks: the replica is (4, 6, 8), split along H.
    x = data((8, 6, 8))
    expected = dt.dropout(x, 0.5, seed=4)
    for dp_rank in range(2):
        for tp_rank in range(2):
            local = x[4 * dp_rank : 4 * dp_rank + 4, :, 4 * tp_rank : 4 * tp_rank + 4]
            with D.data_parallel(dp_rank, 2):
                y = dt.dropout(local, 0.5, seed=4, global_shape=(4, 6, 8), offsets=(0, 0, 4 * tp_rank))
            assert torch.equal(y, expected[4 * dp_rank : 4 * dp_rank + 4, :, 4 * tp_rank : 4 * tp_rank + 4])


def test_nested_contexts_restore_the_outer_one():
    with D.data_parallel(1, 2):
        with D.data_parallel(0, 4):
            assert _placement.current().data_parallel == D.DataParallel(0, 4)
        assert _placement.current().data_parallel == D.DataParallel(1, 2)
        with pytest.raises(RuntimeError, match="boom"), D.independent_masks(3):
            raise RuntimeError("boom")
        assert _placement.current().stream_rank is None
    assert _placement.current().data_parallel is None


def test_independent_masks_fold_the_rank_into_the_stream():
    x = data((6, 7))
    outputs = []
    for rank in range(3):
        with D.independent_masks(rank):
            outputs.append(dt.dropout(x, 0.5, seed=2, stream=5))
            layer_output = dt.Dropout(0.5, seed=2)(x)
        assert torch.equal(outputs[-1], dt.dropout(x, 0.5, seed=2, stream=D.rank_stream(5, rank)))
        assert torch.equal(layer_output, dt.dropout(x, 0.5, seed=2, stream=rank << 32))
    assert torch.equal(outputs[0], dt.dropout(x, 0.5, seed=2, stream=5))  # rank 0 is the plain stream
    assert not torch.equal(outputs[1] != 0, outputs[2] != 0)
    assert D.rank_stream(2**32 - 1, 2**32 - 1) == 2**64 - 1


def test_compiled_equals_eager_with_shards_and_contexts():
    torch._dynamo.reset()

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.seeded, self.free = dt.Dropout(0.5, seed=5), dt.Dropout(0.3)

        def forward(self, x):
            y = self.free(self.seeded(x))
            return y + dt.dropout(x, 0.2, seed=7, stream=3, global_shape=(4, 12, 8), offsets=(0, 2, 0))

    eager, twin, x = Net(), Net(), data(GLOBAL)
    compiled = torch.compile(twin, backend="aot_eager", fullgraph=True)
    contexts = [contextlib.nullcontext, lambda: D.data_parallel(1, 2), lambda: D.independent_masks(2)]
    for call, context in enumerate(contexts):
        with context():
            torch.manual_seed(call)
            expected = eager(x)
            torch.manual_seed(call)
            assert torch.equal(compiled(x), expected)
    assert twin.seeded.calls == eager.seeded.calls == 3


def test_sharded_op_passes_torch_library_opcheck():
    x = torch.randn(3, 4, 5, dtype=torch.float64).permute(2, 0, 1).requires_grad_()
    key = torch.tensor([_checks.to_signed(2**64 - 1), 5])
    torch.library.opcheck(_ops.dropout_sharded_op.custom, (x, key, 0.4, 1 / 0.6, [5, 3, 8], [0, 0, 2]))
    with torch._subclasses.fake_tensor.FakeTensorMode() as mode:
        fake = _ops.dropout_sharded_op(
            mode.from_tensor(x), mode.from_tensor(key), 0.4, 1 / 0.6, [5, 3, 8], [0, 0, 2]
        )
    assert fake.stride() == _ops.dropout_sharded_op(x, key, 0.4, 1 / 0.6, [5, 3, 8], [0, 0, 2]).stride()


def test_bad_placements_are_rejected_before_any_state_changes():
    x = torch.ones(4, 3)
    with pytest.raises(ValueError, match="global_shape and offsets go together"):
        dt.dropout(x, 0.5, seed=0, global_shape=(8, 3))
    with pytest.raises(ValueError, match=r"the shard runs past global_shape\[0\] = 6"):
        dt.dropout(x, 0.5, seed=0, global_shape=(6, 3), offsets=(4, 0))
    with pytest.raises(ValueError, match=r"local shape \(4, 3\) must have as many dims as global_shape"):
        dt.dropout(x, 0.5, seed=0, global_shape=(8, 3, 1), offsets=(0, 0, 0))
    layer = dt.Dropout(0.5, seed=1)
    with pytest.raises(ValueError, match=r"offsets\[1\] = 4 is out of range \[0, 3\]"):
        layer(x, global_shape=(8, 3), offsets=(0, 4))
    with (
        pytest.raises(ValueError, match=r"batch_sizes=\[3, 3, 2\]\) gives rank 2 2 rows along dim 0"),
        D.data_parallel(2, batch_sizes=[3, 3, 2]),
    ):
        layer(x)
    with (
        pytest.raises(ValueError, match=r"data_parallel\(batch_dim=0\) needs inputs with more than 0 dims"),
        D.data_parallel(0, 2),
    ):
        layer(torch.ones(()))
    assert layer.calls == 0
    with (
        pytest.raises(ValueError, match=r"stream must be below 2\*\*32 when the rank is folded"),
        D.independent_masks(1),
    ):
        dt.dropout(x, 0.5, seed=0, stream=2**32)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"rank": 2, "world_size": 2}, ValueError, r"rank must be a non-negative int, below 2, got 2"),
        ({"rank": 0, "world_size": 0}, ValueError, "world_size must be a positive int, got 0"),
        ({"rank": 0, "world_size": 3, "batch_sizes": [4, 4]}, ValueError, "one entry per rank"),
        ({"rank": 0, "batch_sizes": [4, -1]}, ValueError, r"batch_sizes\[i\] must be a non-negative int"),
        ({"rank": 0, "batch_sizes": 4}, TypeError, "batch_sizes must be a non-empty sequence of ints"),
        ({"rank": 0, "world_size": 2, "batch_dim": -1}, ValueError, "batch_dim must be a non-negative int"),
        ({"rank": 1.0, "world_size": 2}, TypeError, "rank must be an int, got float"),
        ({"world_size": 2}, ValueError, "rank is None and torch.distributed is not initialized"),
    ],
)
def test_bad_data_parallel_arguments(kwargs, error, match):
    with pytest.raises(error, match=match), D.data_parallel(**kwargs):
        pass
    assert _placement.current().data_parallel is None


def test_bad_independent_masks_arguments():
    with (
        pytest.raises(ValueError, match=r"rank is None and torch\.distributed is not initialized"),
        D.independent_masks(),
    ):
        pass
    with pytest.raises(ValueError, match=r"rank must be a non-negative int, below 4294967296"):
        D.rank_stream(0, 2**32)


# ---------------------------------------------------------------- real process groups

BATCH_SIZES = {2: [4, 4], 3: [3, 3, 2]}  # rows per rank along dim 0 of (sum, T, H)
T_CHUNKS = {2: [3, 3], 3: [3, 3, 1]}  # torch.chunk of T = 6 / 7 rows, as DTensor's Shard(1) splits
H_CHUNKS = {2: [4, 4], 3: [3, 3, 2]}  # of H = 8
H = 8
STEPS, LOCAL_BATCH = 4, 6
# Variants on DTensors of (B, T, H), each split along one dim: dropout1d reads (N, C, L), so a split of
# T splits its drawn channels; drop-path's per-sample mask is broadcast along T, so every rank draws
# the same decisions; Gaussian noise is per element, split along the last dim (B * T runs).
VARIANT_DTENSORS = {
    "dropout1d_t": (1, lambda x: dt.functional.dropout1d(x, 0.5, seed=3)),
    "drop_path_t": (1, lambda x: dt.functional.drop_path(x, 0.5, seed=3)),
    "gaussian_h": (2, lambda x: dt.functional.gaussian_dropout(x, 0.3, seed=3)),
    "feature_alpha_t": (1, lambda x: dt.functional.feature_alpha_dropout(x, 0.5, True, seed=3)),
    "noise_shape_h": (2, lambda x: dt.functional.dropout(x, 0.5, seed=3, noise_shape=(None, 1, None))),
}


def shape_for(world_size):
    return (sum(BATCH_SIZES[world_size]), sum(T_CHUNKS[world_size]), H)


def mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(5, 32),
        torch.nn.ReLU(),
        dt.Dropout(0.3, seed=11),
        torch.nn.Linear(32, 32),
        torch.nn.ReLU(),
        dt.Dropout(0.5, seed=12),
        torch.nn.Linear(32, 1),
    )


def batches(world_size):
    g = torch.Generator().manual_seed(1)
    rows = world_size * LOCAL_BATCH
    return torch.randn(STEPS, rows, 5, generator=g), torch.randn(STEPS, rows, 1, generator=g)


def train(model, inputs, targets, context=contextlib.nullcontext):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for x, y in zip(inputs, targets, strict=True):
        optimizer.zero_grad()
        with context():
            loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def _split(sizes, rank):
    begin = sum(sizes[:rank])
    return slice(begin, begin + sizes[rank])


def _gather(tensor):
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, tensor)
    return gathered


def _worker(rank, world_size, port, out_dir):
    """One rank: computes its local outputs, gathers them, and rank 0 saves them for the test."""
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # loopback only
    os.environ["NUMBA_NUM_THREADS"] = "1"  # 2-3 ranks share 2 cores
    torch.set_num_threads(1)
    store = dist.TCPStore("127.0.0.1", port, is_master=False, timeout=timedelta(seconds=60))
    dist.init_process_group(
        "gloo", store=store, rank=rank, world_size=world_size, timeout=timedelta(seconds=60)
    )
    try:
        from torch.distributed.tensor import DTensor, Partial, Replicate, distribute_tensor, init_device_mesh
        from torch.distributed.tensor import Shard as ShardPlacement

        results = {}
        x = data(shape_for(world_size))
        rows, t_part, h_part = (_split(s[world_size], rank) for s in (BATCH_SIZES, T_CHUNKS, H_CHUNKS))
        # Data parallel, dim 0: the context with batch_sizes (rank and world size from torch.distributed).
        with D.data_parallel(batch_sizes=BATCH_SIZES[world_size]):
            results["rows"] = _gather(dt.dropout(x[rows], 0.5, seed=3, stream=1))
            results["rows_module"] = _gather(dt.Dropout(0.5, seed=3)(x[rows]))
        # Middle and last dims, described explicitly.
        offsets_t, offsets_h = (0, t_part.start, 0), (0, 0, h_part.start)
        results["t"] = _gather(dt.dropout(x[:, t_part], 0.5, seed=3, global_shape=x.shape, offsets=offsets_t))
        results["h"] = _gather(
            dt.dropout(x[:, :, h_part], 0.5, seed=3, global_shape=x.shape, offsets=offsets_h)
        )
        with D.independent_masks():
            results["independent"] = _gather(dt.dropout(x, 0.5, seed=3, stream=7))
        # DTensor: offsets from the placements; the output keeps them; backward replays the mask.
        mesh = init_device_mesh("cpu", (world_size,))
        for name, placement in (
            ("dtensor_t", ShardPlacement(1)),
            ("dtensor_h", ShardPlacement(2)),
            ("dtensor_r", Replicate()),
        ):
            global_x = distribute_tensor(x.clone().requires_grad_(), mesh, [placement])
            y = dt.dropout(global_x, 0.5, seed=3)
            y.sum().backward()
            results[name] = (y.full_tensor(), y.placements == (placement,))
            results[name + "_grad"] = global_x.grad.full_tensor()
        for name, (dim, variant) in VARIANT_DTENSORS.items():
            global_x = distribute_tensor(x.clone().requires_grad_(), mesh, [ShardPlacement(dim)])
            y = variant(global_x)
            y.sum().backward()
            results[name] = (y.full_tensor(), y.placements == (ShardPlacement(dim),))
            results[name + "_grad"] = global_x.grad.full_tensor()
        # Alpha dropout is affine: on a Partial DTensor each rank would add the offset. It refuses.
        partial = DTensor.from_local(x / world_size, mesh, [Partial()])
        try:
            dt.functional.alpha_dropout(partial, 0.5, True, seed=3)
            results["alpha_partial"] = "not refused"
        except ValueError as error:
            results["alpha_partial"] = str(error)
        if world_size == 2:  # DDP: the same MLP as one process on the global batch
            inputs, targets = batches(world_size)
            local = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
            ddp = torch.nn.parallel.DistributedDataParallel(mlp())
            results["ddp"] = train(ddp, inputs[:, local], targets[:, local], D.data_parallel)
            naive = torch.nn.parallel.DistributedDataParallel(mlp())  # same seeds, no context: wrong masks
            results["naive"] = train(naive, inputs[:, local], targets[:, local])
        if rank == 0:
            torch.save(results, os.path.join(out_dir, "results.pt"))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def run_ranks(world_size, out_dir, timeout=120.0):
    """Spawn ``world_size`` ranks of :func:`_worker` and return rank 0's results; kill them on a hang.

    The parent holds the rendezvous store on a port the OS picks (bound to port 0 on 127.0.0.1), so no
    other process can take the port between choosing it and using it.
    """
    store = dist.TCPStore(
        "127.0.0.1", 0, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=60)
    )
    context = mp.start_processes(
        _worker,
        args=(world_size, store.port, str(out_dir)),
        nprocs=world_size,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + timeout
    try:
        while not context.join(timeout=1.0):
            if time.monotonic() > deadline:
                pytest.fail(f"{world_size} ranks did not finish within {timeout} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
            process.join(timeout=10)
        del store
    return torch.load(os.path.join(out_dir, "results.pt"))


def _concat(parts, dim):
    return torch.cat(parts, dim=dim)


@pytest.fixture(scope="module", params=[2, 3], ids=["2-ranks", "3-ranks-uneven"])
def ranks(request, tmp_path_factory):
    world_size = request.param
    return world_size, run_ranks(world_size, tmp_path_factory.mktemp(f"ranks{world_size}"))


def test_gathered_shards_equal_the_single_process_mask(ranks):
    world_size, results = ranks
    x = data(shape_for(world_size))
    expected = dt.dropout(x, 0.5, seed=3)
    keep = torch.from_numpy(keep_mask(x.shape, 0.5, seed=3))
    assert torch.equal(_concat(results["rows"], 0), dt.dropout(x, 0.5, seed=3, stream=1))
    assert torch.equal(_concat(results["rows_module"], 0), dt.dropout(x, 0.5, seed=3, stream=0))
    for name, dim in (("t", 1), ("h", 2)):
        gathered = _concat(results[name], dim)
        assert torch.equal(gathered, expected), name
        assert torch.equal(gathered != 0, keep), name


def test_dtensor_shards_equal_the_single_process_mask(ranks):
    world_size, results = ranks
    x = data(shape_for(world_size))
    expected = dt.dropout(x, 0.5, seed=3)
    gradient = dt.dropout(torch.ones_like(x), 0.5, seed=3)
    for name in ("dtensor_t", "dtensor_h", "dtensor_r"):
        output, same_placements = results[name]
        assert same_placements, name
        assert torch.equal(output, expected), name
        assert torch.equal(results[name + "_grad"], gradient), name


def test_dtensor_variants_equal_the_single_process_output(ranks):
    world_size, results = ranks
    x = data(shape_for(world_size))
    for name, (_, variant) in VARIANT_DTENSORS.items():
        output, same_placements = results[name]
        assert same_placements, name
        whole = x.clone().requires_grad_()
        expected = variant(whole)
        expected.sum().backward()
        assert torch.equal(output, expected), name
        assert torch.equal(results[name + "_grad"], whole.grad), name
    assert "Partial DTensor" in results["alpha_partial"]


def test_independent_masks_per_rank(ranks):
    world_size, results = ranks
    x = data(shape_for(world_size))
    for rank, output in enumerate(results["independent"]):
        assert torch.equal(output, dt.dropout(x, 0.5, seed=3, stream=D.rank_stream(7, rank)))


@pytest.mark.parametrize("ranks", [2], indirect=True, ids=["2-ranks"])
def test_ddp_training_equals_one_process_on_the_global_batch(ranks):
    world_size, results = ranks
    inputs, targets = batches(world_size)
    single = train(mlp(), inputs, targets)
    distributed_weights = {name.removeprefix("module."): w for name, w in results["ddp"].items()}
    assert distributed_weights.keys() == single.keys()
    for name, weight in single.items():
        # float32 all-reduce sums in another order than one process's matmul: equal to rounding only.
        torch.testing.assert_close(distributed_weights[name], weight, rtol=1e-5, atol=1e-6)
    # Without the context each rank draws rows [0, B) of the mask for its own batch: the run differs.
    naive = {name.removeprefix("module."): w for name, w in results["naive"].items()}
    assert max((naive[name] - weight).abs().max().item() for name, weight in single.items()) > 1e-3
