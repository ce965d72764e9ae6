"""The dropout variants on shards: every rank draws exactly its slice of the single-process output.

A variant's mask (or Gaussian noise) is drawn over the *global* input's mask shape, ``(N, C, 1, 1)``
for channel dropout of ``(N, C, H, W)``, and a shard draws its slice of it. So under
``data_parallel`` the ranks' outputs, concatenated, equal one process's output on the global batch
bit for bit, gradients too; explicit ``global_shape``/``offsets`` (with ``noise_shape``) give the
slice at those offsets; ``independent_masks`` folds the rank into the stream. The ranks are given by
hand here; tests/test_distributed.py runs real process groups, DTensors included.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import dropkit.torch as dt  # noqa: E402
from dropkit.torch import distributed as D  # noqa: E402
from torch_common import data  # noqa: E402

F = dt.functional

# name -> (dropout of a tensor with seed and stream, the global input's shape, its batch dim)
VARIANTS = {
    "noise_shape": (lambda x, **k: F.dropout(x, 0.5, noise_shape=(None, None, 1, 1), **k), (7, 3, 4, 5), 0),
    "dropout1d": (lambda x, **k: F.dropout1d(x, 0.5, **k), (7, 3, 5), 0),
    "dropout2d": (lambda x, **k: F.dropout2d(x, 0.5, **k), (7, 3, 4, 5), 0),
    "dropout3d": (lambda x, **k: F.dropout3d(x, 0.5, **k), (7, 3, 2, 2, 3), 0),
    "locked, batch first": (lambda x, **k: F.locked_dropout(x, 0.5, batch_first=True, **k), (7, 4, 5), 0),
    "locked, time first": (lambda x, **k: F.locked_dropout(x, 0.5, **k), (4, 7, 5), 1),
    "drop_path, row": (lambda x, **k: F.drop_path(x, 0.5, **k), (7, 4, 5), 0),
    "drop_path, batch": (lambda x, **k: F.drop_path(x, 0.5, mode="batch", **k), (7, 4, 5), 0),
    "gaussian": (lambda x, **k: F.gaussian_dropout(x, 0.3, **k), (7, 3, 5), 0),
    "alpha": (lambda x, **k: F.alpha_dropout(x, 0.5, True, **k), (7, 3, 5), 0),
    "feature alpha": (lambda x, **k: F.feature_alpha_dropout(x, 0.5, True, **k), (7, 3, 4, 5), 0),
}
# Rows per rank: an even split (the default, no batch_sizes) and an uneven one.
SPLITS = {"2 ranks": (None, 2), "3 ranks, uneven": ((3, 3, 1), 3)}
KEY = {"seed": 2**64 - 5, "stream": 9}


def rank_rows(batch_sizes, world_size, rows):
    """The ``(begin, end)`` rows of every rank, as ``data_parallel`` assigns them."""
    sizes = batch_sizes or (rows // world_size,) * world_size
    begins = [sum(sizes[:r]) for r in range(world_size)]
    return [(b, b + n) for b, n in zip(begins, sizes, strict=True)]


def run_ranks(fn, x, batch_dim, batch_sizes, world_size, **key):
    """Each rank's output and input gradient, its rows of ``x`` taken along ``batch_dim``."""
    outputs, grads = [], []
    for rank, (begin, end) in enumerate(rank_rows(batch_sizes, world_size, x.shape[batch_dim])):
        local = x.narrow(batch_dim, begin, end - begin).clone().requires_grad_()
        with D.data_parallel(rank, world_size, batch_sizes=batch_sizes, batch_dim=batch_dim):
            y = fn(local, **key)
        (y * torch.arange(y.numel()).reshape(y.shape)).sum().backward()  # a gradient that differs per element
        outputs.append(y.detach())
        grads.append(local.grad)
    return torch.cat(outputs, batch_dim), torch.cat(grads, batch_dim)


@pytest.mark.parametrize("split", SPLITS.values(), ids=SPLITS.keys())
@pytest.mark.parametrize("name", VARIANTS)
def test_data_parallel_ranks_draw_the_single_process_output(name, split):
    fn, shape, batch_dim = VARIANTS[name]
    batch_sizes, world_size = split
    if batch_sizes is None:
        shape = tuple(8 if d == batch_dim else n for d, n in enumerate(shape))  # divisible by 2
    x = data(shape)
    expected = fn(x, **KEY)
    output, grads = run_ranks(fn, x, batch_dim, batch_sizes, world_size, **KEY)
    assert torch.equal(output, expected)
    # The gradient replays each rank's slice of the mask: compare with one process given the same
    # upstream gradient (each rank numbered its own elements from 0).
    upstream = torch.cat(
        [
            torch.arange(expected.narrow(batch_dim, b, e - b).numel())
            .reshape(expected.narrow(batch_dim, b, e - b).shape)
            .float()
            for b, e in rank_rows(batch_sizes, world_size, shape[batch_dim])
        ],
        batch_dim,
    )
    whole = x.clone().requires_grad_()
    (fn(whole, **KEY) * upstream).sum().backward()
    assert torch.equal(grads, whole.grad)


@pytest.mark.parametrize("name", VARIANTS)
def test_an_explicit_shard_draws_its_slice_of_the_single_process_output(name):
    # A block in the first two dims and one along the last: offsets along drawn and broadcast dims.
    fn, shape, _ = VARIANTS[name]
    x = data(shape)
    expected = fn(x, **KEY)
    blocks = [
        ((1, 1) + (0,) * (len(shape) - 2), (shape[0] - 3, shape[1] - 1, *shape[2:])),
        ((0,) * (len(shape) - 1) + (2,), (*shape[:-1], shape[-1] - 2)),
    ]
    for offsets, local_shape in blocks:
        index = tuple(slice(o, o + n) for o, n in zip(offsets, local_shape, strict=True))
        got = fn(x[index].contiguous(), global_shape=shape, offsets=offsets, **KEY)
        assert torch.equal(got, expected[index]), (offsets, local_shape)


def test_module_forward_takes_an_explicit_shard():
    x = data((6, 3, 4, 5))
    single, shard = dt.Dropout2d(0.5, seed=4), dt.Dropout2d(0.5, seed=4)
    expected = single(x)
    assert torch.equal(shard(x[:, 1:], global_shape=x.shape, offsets=(0, 1, 0, 0)), expected[:, 1:])
    assert shard.calls == 1
    with pytest.raises(ValueError, match="global_shape and offsets go together"):
        shard(x, global_shape=x.shape)
    assert shard.calls == 1  # refused before the counter moved


def test_without_the_context_every_rank_draws_the_first_rows():
    # What the context fixes: a rank's local batch alone draws rows [0, B) of the mask.
    fn, shape, _ = VARIANTS["dropout2d"]
    x = data((8, *shape[1:]))
    expected = fn(x, **KEY)
    assert not torch.equal(fn(x[4:], **KEY), expected[4:])
    with D.data_parallel(1, 2):
        assert torch.equal(fn(x[4:], **KEY), expected[4:])


@pytest.mark.parametrize(
    "make",
    [
        lambda: dt.Dropout2d(0.5, seed=4),
        lambda: dt.DropPath(0.5, seed=4),
        lambda: dt.LockedDropout(0.5, batch_first=True, seed=4),
        lambda: dt.GaussianDropout(0.3, seed=4),
        lambda: dt.FeatureAlphaDropout(0.5, seed=4),
    ],
    ids=["Dropout2d", "DropPath", "LockedDropout", "GaussianDropout", "FeatureAlphaDropout"],
)
def test_modules_under_data_parallel_draw_the_single_process_output_call_after_call(make):
    x = data((6, 3, 4, 5))
    single, ranks = make().train(), [make().train() for _ in range(3)]
    for _ in range(2):  # the k-th call of every rank uses stream k, as one process's k-th call
        expected = single(x)
        parts = []
        for rank, layer in enumerate(ranks):
            with D.data_parallel(rank, 3):
                parts.append(layer(x[2 * rank : 2 * rank + 2]))
        assert torch.equal(torch.cat(parts), expected)
    assert all(layer.calls == single.calls == 2 for layer in ranks)


def test_weight_dropout_is_not_a_batch_shard():
    # DropConnect's mask is over the weight, which every rank holds whole: the same mask everywhere,
    # so the ranks' outputs are one process's rows.
    torch.manual_seed(0)
    single = dt.DropConnectLinear(5, 4, p=0.5, seed=8)
    ranks = [dt.DropConnectLinear(5, 4, p=0.5, seed=8) for _ in range(2)]
    for layer in ranks:
        layer.load_state_dict(single.state_dict())
    lstm = dt.WeightDrop(torch.nn.LSTM(5, 3, batch_first=True), "weight_hh_l0", p=0.5, seed=8)
    x = data((4, 2, 5))
    expected, (expected_lstm, _) = single(x), lstm(x)
    lstm.dropouts[0].calls = 0
    for rank, layer in enumerate(ranks):
        with D.data_parallel(rank, 2):
            assert torch.equal(layer(x[2 * rank : 2 * rank + 2]), expected[2 * rank : 2 * rank + 2])
            output, _ = lstm(x[2 * rank : 2 * rank + 2])
        lstm.dropouts[0].calls = 0
        torch.testing.assert_close(output, expected_lstm[2 * rank : 2 * rank + 2])


@pytest.mark.parametrize("name", VARIANTS)
def test_independent_masks_fold_the_rank_into_the_stream(name):
    fn, shape, _ = VARIANTS[name]
    x = data(shape)
    for rank in range(3):
        with D.independent_masks(rank):
            got = fn(x, **KEY)
        assert torch.equal(got, fn(x, seed=KEY["seed"], stream=D.rank_stream(KEY["stream"], rank)))


def test_drop_block_takes_independent_masks_but_refuses_shards():
    x = data((4, 2, 6, 6))
    expected = F.drop_block2d(x, 0.3, 3, seed=1, stream=D.rank_stream(2, 1))
    with D.independent_masks(1):
        assert torch.equal(F.drop_block2d(x, 0.3, 3, seed=1, stream=2), expected)
    layer = dt.DropBlock2d(0.3, 3, seed=1)
    with D.data_parallel(1, 2):
        with pytest.raises(ValueError, match="drop_block2d does not take shards"):
            F.drop_block2d(x, 0.3, 3, seed=1)
        with pytest.raises(ValueError, match="drop_block2d does not take shards"):
            layer(x)
        assert layer.calls == 0  # refused before the counter moved
        # Where nothing is drawn there is nothing to refuse: a model in eval mode runs.
        assert F.drop_block2d(x, 0.3, 3, training=False, seed=1) is x
        assert F.drop_block2d(x, 0.0, 3, seed=1) is x
        assert layer.eval()(x) is x
    with pytest.raises(ValueError, match="drop_block2d does not take shards"):
        F.drop_block2d(x[2:], 0.3, 3, seed=1, global_shape=(8, 2, 6, 6), offsets=(6, 0, 0, 0))


def test_a_mask_shape_error_under_a_shard_says_it_read_the_global_shape():
    with pytest.raises(ValueError, match=r"noise_shape.*x is the global tensor: the input is a shard of it"):
        F.dropout(data((2, 4)), 0.5, seed=0, noise_shape=(2, 1), global_shape=(4, 4), offsets=(2, 0))


# (offsets, local shape) of shards of (4, 6, 8) with noise_shape (None, 1, None): split along the
# broadcast dim (every shard draws the same (4, 1, 8) mask), along a drawn dim, and in every dim.
NOISE_SHARDS = [((0, 2, 0), (4, 3, 8)), ((0, 0, 4), (4, 6, 4)), ((1, 3, 2), (2, 2, 5))]


@pytest.mark.parametrize(("offsets", "local_shape"), NOISE_SHARDS)
def test_noise_shape_with_an_explicit_shard_draws_its_slice(offsets, local_shape):
    x = data((4, 6, 8))
    index = tuple(slice(o, o + n) for o, n in zip(offsets, local_shape, strict=True))
    expected = F.dropout(x, 0.5, noise_shape=(None, 1, None), **KEY)
    local = x[index].clone().requires_grad_()
    y = F.dropout(local, 0.5, noise_shape=(None, 1, None), global_shape=x.shape, offsets=offsets, **KEY)
    assert torch.equal(y, expected[index])
    y.sum().backward()
    ones = torch.ones_like(x)
    assert torch.equal(local.grad, F.dropout(ones, 0.5, noise_shape=(None, 1, None), **KEY)[index])


def test_noise_shape_under_a_shard_is_read_against_the_global_shape():
    # An explicit size must be the global one (the local size is rejected, see the test above).
    x = data((4, 4))
    y = F.dropout(x[2:], 0.5, seed=0, noise_shape=(4, 1), global_shape=(4, 4), offsets=(2, 0))
    assert torch.equal(y, F.dropout(x, 0.5, seed=0, noise_shape=(4, 1))[2:])


def test_compiled_variants_under_data_parallel_equal_eager():
    torch._dynamo.reset()
    layers = torch.nn.Sequential(dt.Dropout2d(0.5, seed=3), dt.DropPath(0.5, seed=4)).train()
    twin = torch.nn.Sequential(dt.Dropout2d(0.5, seed=3), dt.DropPath(0.5, seed=4)).train()
    compiled = torch.compile(twin, backend="aot_eager")
    x = data((4, 3, 4, 5))
    for _ in range(2):
        with D.data_parallel(1, 2):
            assert torch.equal(compiled(x), layers(x))
