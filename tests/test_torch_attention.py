"""dropkit.torch's scaled_dot_product_attention: the reference's mask and gradients, torch's semantics,
no probability-sized tensor saved or allocated, compiled, checkpointed, sharded and on 2 gloo ranks."""

from __future__ import annotations

import os
import time
from datetime import timedelta

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

import dropkit  # noqa: E402
import dropkit.torch as dt  # noqa: E402
from dropkit.philox import keep_mask  # noqa: E402
from dropkit.torch import _attention_cpu, _ops  # noqa: E402
from dropkit.torch import distributed as D  # noqa: E402
from dropkit.torch._attention_ops import attention_backward_op, attention_op  # noqa: E402
from dropkit.torch.functional import scaled_dot_product_attention as sdpa  # noqa: E402

F = torch.nn.functional


def randn(*shape, dtype=torch.float64, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiles of 16 scores, so small shapes cross many tiles (and causal tiles cut their keys)."""
    monkeypatch.setattr(_attention_cpu, "TILE_ELEMENTS", 16)


def reference(q, k, v, dy=None, **kwargs):
    """dropkit.attention (and its backward) on the tensors' NumPy arrays."""
    arrays = [x.detach().numpy() for x in (q, k, v)]
    if dy is None:
        return torch.from_numpy(dropkit.attention(*arrays, **kwargs))
    grads = dropkit.attention_backward(dy.numpy(), *arrays, **kwargs)
    return [torch.from_numpy(g) for g in grads]


# (query, key, value shapes, torch keywords, reference keywords)
CASES = {
    "plain": ((2, 3, 7, 4), (2, 3, 9, 4), (2, 3, 9, 5), {}, {}),
    "causal": ((1, 2, 9, 4), (1, 2, 9, 4), (1, 2, 9, 3), {"is_causal": True}, {"causal": True}),
    "causal L > S": ((1, 2, 9, 4), (1, 2, 5, 4), (1, 2, 5, 3), {"is_causal": True}, {"causal": True}),
    "gqa": ((2, 4, 6, 4), (2, 2, 7, 4), (2, 2, 7, 4), {"enable_gqa": True}, {}),
    "broadcast": ((2, 1, 6, 4), (1, 3, 7, 4), (1, 3, 7, 4), {"scale": 0.3}, {"scale": 0.3}),
    "unbatched": ((6, 4), (7, 4), (7, 2), {}, {}),
    "5-d": ((2, 2, 2, 5, 4), (2, 2, 2, 6, 4), (2, 2, 2, 6, 4), {}, {}),
}


def _masks():
    bool_mask = torch.rand(3, 7, 9, generator=torch.Generator().manual_seed(4)) > 0.3
    bool_mask[0, 2] = False  # a query row that sees no key: zeros, as torch
    return {"bool mask": bool_mask, "float mask": randn(7, 9, seed=5)}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_output_and_gradients_equal_the_reference(case, small_tiles):
    q_shape, k_shape, v_shape, kwargs, ref_kwargs = CASES[case]
    q, k, v = (randn(*s, seed=i).requires_grad_() for i, s in enumerate((q_shape, k_shape, v_shape)))
    y = sdpa(q, k, v, dropout_p=0.4, seed=2**64 - 1, stream=3, **kwargs)
    expected = reference(q, k, v, p=0.4, seed=2**64 - 1, stream=3, **ref_kwargs)
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-13)
    dy = randn(*y.shape, seed=9)
    y.backward(dy)
    grads = reference(q, k, v, dy, p=0.4, seed=2**64 - 1, stream=3, **ref_kwargs)
    for ours, theirs in zip((q, k, v), grads, strict=True):
        torch.testing.assert_close(ours.grad, theirs, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("mask_name", ["bool mask", "float mask"])
def test_masks_equal_the_reference(mask_name, small_tiles):
    mask = _masks()[mask_name]
    q, k, v = (randn(2, 3, n, 4, seed=i).requires_grad_() for i, n in enumerate((7, 9, 9)))
    y = sdpa(q, k, v, mask, dropout_p=0.3, seed=1)
    expected = reference(q, k, v, p=0.3, seed=1, mask=mask.numpy())
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-13)
    dy = randn(*y.shape, seed=9)
    y.backward(dy)
    grads = reference(q, k, v, dy, p=0.3, seed=1, mask=mask.numpy())
    for ours, theirs in zip((q, k, v), grads, strict=True):
        torch.testing.assert_close(ours.grad, theirs, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("causal", [False, True])
def test_identity_values_show_the_mask_element_for_element(causal, small_tiles):
    # With V = I the output is P ⊙ D, so y != 0 exactly where keep_mask keeps (P > 0 where visible).
    # Backward's mask: with dY = I, dV = (P ⊙ D)ᵀ, zero exactly where dropped.
    B, H, L, S = 2, 3, 9, 9
    q, k = randn(B, H, L, 4, seed=1), randn(B, H, S, 4, seed=2)
    eye = torch.eye(S, dtype=torch.float64).expand(B, H, S, S).clone().requires_grad_()
    for dtype in (torch.float64, torch.float32, torch.bfloat16, torch.float16):
        v = eye.detach().to(dtype).requires_grad_()
        y = sdpa(q.to(dtype), k.to(dtype), v, dropout_p=0.5, is_causal=causal, seed=7, stream=2**40)
        keep = torch.from_numpy(keep_mask((B, H, L, S), 0.5, seed=7, stream=2**40))
        visible = torch.ones(L, S, dtype=torch.bool).tril() if causal else torch.ones(L, S, dtype=torch.bool)
        assert torch.equal(y != 0, keep & visible), dtype
        y.backward(torch.eye(L, dtype=dtype).expand(B, H, L, L))
        assert torch.equal(v.grad.transpose(-1, -2) != 0, keep & visible), dtype


def test_gradcheck_float64():
    q, k, v = (randn(1, 2, n, 3, seed=i).requires_grad_() for i, n in enumerate((5, 4, 4)))
    bias = randn(5, 4, seed=3).requires_grad_()
    assert torch.autograd.gradcheck(lambda *t: sdpa(*t, dropout_p=0.4, seed=1, stream=2), (q, k, v))
    assert torch.autograd.gradcheck(lambda *t: sdpa(*t, dropout_p=0.4, seed=1), (q, k, v, bias))
    gqa = randn(1, 4, 5, 3, seed=4).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda *t: sdpa(*t, dropout_p=0.3, is_causal=True, enable_gqa=True, seed=5), (gqa, k, v)
    )


def test_float_mask_gradient_is_summed_over_its_broadcast_dims(small_tiles):
    q, k, v = (randn(2, 3, n, 4, seed=i) for i, n in enumerate((6, 5, 5)))
    D = torch.from_numpy(keep_mask((2, 3, 6, 5), 0.3, seed=2) / 0.7)
    for shape in [(6, 5), (3, 1, 5), (2, 1, 6, 1), (2, 3, 6, 5)]:
        bias = randn(*shape, seed=8).requires_grad_()
        sdpa(q, k, v, bias, dropout_p=0.3, seed=2).sum().backward()
        expected = bias.detach().clone().requires_grad_()
        P = torch.softmax(q @ k.transpose(-1, -2) / 2 + expected, dim=-1)
        ((P * D) @ v).sum().backward()
        torch.testing.assert_close(bias.grad, expected.grad, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("causal", [False, True])
def test_p_zero_equals_torch(dtype, causal):
    q, k, v = (randn(2, 4, 70, 16, dtype=dtype, seed=i).requires_grad_() for i in range(3))
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    assert torch.equal(sdpa(q, k, v, is_causal=causal), expected)  # dropout_p == 0: torch's own function
    # dropkit's op itself, at p = 0, within float tolerance: softmax in float32, one rounding at the end.
    out, _ = attention_op(q, k, v, None, _ops.key_tensor(0, 0), 0.0, 0.25, causal, [2, 4, 70, 70], [0] * 4)
    tolerance = {torch.float32: 2e-6, torch.bfloat16: 1.6e-2, torch.float16: 2e-3}[dtype]
    torch.testing.assert_close(out, expected, rtol=tolerance, atol=tolerance)
    dy = randn(2, 4, 70, 16, dtype=dtype, seed=5)
    grads = torch.autograd.grad(expected, (q, k, v), dy)
    ours = torch.autograd.grad(out, (q, k, v), dy)
    for a, b in zip(ours, grads, strict=True):
        torch.testing.assert_close(a, b, rtol=tolerance * 4, atol=tolerance * 4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_low_precision_follows_the_float64_reference(dtype, small_tiles):
    # Grouped heads: in half precision dK and dV are summed in float32 one key head at a time.
    q, k, v, dy = (
        randn(2, 4, 8, 4, seed=0),
        randn(2, 2, 9, 4, seed=1),
        randn(2, 2, 9, 4, seed=2),
        randn(2, 4, 8, 4),
    )
    q, k, v, dy = (x.to(dtype).double() for x in (q, k, v, dy))  # the reference sees the rounded inputs
    expected = [reference(q, k, v, p=0.2, seed=3), *reference(q, k, v, dy, p=0.2, seed=3)]
    inputs = [x.to(dtype).requires_grad_() for x in (q, k, v)]
    y = sdpa(*inputs, dropout_p=0.2, seed=3, enable_gqa=True)
    y.backward(dy.to(dtype))
    assert y.dtype == dtype
    # float32 sums rounded once to the dtype: half a unit in its last place, on values of O(1).
    tolerance = {torch.float32: 1e-6, torch.bfloat16: 2e-2, torch.float16: 3e-3}[dtype]
    for ours, theirs in zip([y, *(x.grad for x in inputs)], expected, strict=True):
        torch.testing.assert_close(ours.double(), theirs, rtol=tolerance, atol=tolerance)


def test_p_one_gives_zeros_and_zero_gradients():
    q, k, v = (randn(2, 2, 5, 3, seed=i).requires_grad_() for i in range(3))
    y = sdpa(q, k, v, dropout_p=1.0, seed=0)
    assert torch.equal(y, torch.zeros_like(y))
    y.sum().backward()
    assert all(torch.equal(x.grad, torch.zeros_like(x)) for x in (q, k, v))


def test_saves_inputs_output_and_row_log_sum_exp_only():
    # Everything autograd keeps between forward and backward, packed through a hook: nothing L x S.
    B, H, L, S, E = 1, 2, 64, 48, 4
    q, k, v = (randn(B, H, n, E, seed=i).requires_grad_() for i, n in enumerate((L, S, S)))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(tuple(t.shape)) or t, lambda t: t):
        sdpa(q, k, v, dropout_p=0.1, seed=0)
    assert sorted(saved) == sorted([(B, H, L, E), (B, H, S, E), (B, H, S, E), (B, H, L, E), (B, H, L), (2,)])


def test_largest_allocation_is_one_tile():
    # torch's profiler records every CPU allocation; none may hold the (B, H, L, S) probabilities.
    B, H, L, E = 1, 1, 2048, 8
    q, k, v = (randn(B, H, L, E, dtype=torch.float32, seed=i).requires_grad_() for i in range(3))
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
    ) as prof:
        sdpa(q, k, v, dropout_p=0.1, seed=0).sum().backward()
    largest = max(event.self_cpu_memory_usage for event in prof.events())
    assert largest == _attention_cpu.TILE_ELEMENTS * 4 < B * H * L * L * 4 // 8


def test_compiled_fullgraph_equals_eager():
    free, seeded = dt.ScaledDotProductAttention(0.3), dt.ScaledDotProductAttention(0.5, seed=2**63)

    def f(q, k, v):
        return (
            free(q, k, v) + seeded(q, k, v, is_causal=True) + sdpa(q, k, v, dropout_p=0.2, seed=4, stream=1)
        )

    q, k, v = (randn(2, 2, 9, 4, dtype=torch.float32, seed=i).requires_grad_() for i in range(3))
    torch.manual_seed(0)
    eager = f(q, k, v)
    eager_grads = torch.autograd.grad(eager.sum(), (q, k, v))
    seeded.calls = 0
    torch.manual_seed(0)
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")(q, k, v)
    assert torch.equal(compiled, eager)
    for a, b in zip(torch.autograd.grad(compiled.sum(), (q, k, v)), eager_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert seeded.calls == 1


def test_ops_pass_torch_library_opcheck():
    q, k, v = (randn(2, 2, n, 3, seed=i).requires_grad_() for i, n in enumerate((5, 4, 4)))
    key = _ops.key_tensor(2**64 - 1, 3)
    bias = randn(5, 4, seed=3).requires_grad_()
    for args in ((None, key, 0.3, 0.5, True), (bias, key, 0.3, 0.5, False)):
        torch.library.opcheck(attention_op, (q, k, v, *args, [2, 2, 5, 4], [0] * 4))
    out, lse = attention_op(q, k, v, bias, key, 0.3, 0.5, False, [2, 2, 5, 4], [0] * 4)
    tensors = [x.detach() for x in (torch.ones_like(out), q, k, v, bias, out, lse)]  # it has no derivative
    torch.library.opcheck(
        attention_backward_op, (*tensors, key, 0.3, 0.5, False, [2, 2, 5, 4], [0] * 4, True)
    )


def test_checkpoint_recompute_draws_the_same_mask():
    attention = dt.ScaledDotProductAttention(0.5)  # seed from torch's generator, which checkpoint restores
    q, k, v = (randn(2, 2, 6, 4, seed=i).requires_grad_() for i in range(3))
    torch.manual_seed(3)
    plain = torch.autograd.grad(attention(q, k, v).sum(), (q, k, v))
    torch.manual_seed(3)
    y = torch.utils.checkpoint.checkpoint(attention, q, k, v, use_reentrant=False)
    for a, b in zip(torch.autograd.grad(y.sum(), (q, k, v)), plain, strict=True):
        assert torch.equal(a, b)


def test_module_numbers_training_calls_and_never_drops_in_eval():
    attention = dt.ScaledDotProductAttention(0.4, seed=9)
    assert repr(attention) == "ScaledDotProductAttention(dropout_p=0.4, seed=9)"
    q, k, v = (randn(1, 2, 5, 3, seed=i) for i in range(3))
    for stream in range(3):
        assert torch.equal(attention(q, k, v), sdpa(q, k, v, dropout_p=0.4, seed=9, stream=stream))
    assert attention.calls == 3
    attention.eval()
    assert torch.equal(attention(q, k, v), F.scaled_dot_product_attention(q, k, v))
    assert attention.calls == 3
    attention.train()
    with pytest.raises(ValueError, match="key must have query's feature size"):
        attention(q, k[..., :2], v)
    assert attention.calls == 3  # a rejected call takes no stream
    attention.dropout_p = 0.0
    assert torch.equal(attention(q, k, v), F.scaled_dot_product_attention(q, k, v))
    assert attention.calls == 4  # a training call at p = 0 still takes its stream


def test_unseeded_calls_follow_torch_manual_seed_and_draw_only_when_dropping():
    q, k, v = (randn(1, 2, 5, 3, seed=i) for i in range(3))
    torch.manual_seed(5)
    first = sdpa(q, k, v, dropout_p=0.5)
    torch.manual_seed(5)
    seed = _ops.fresh_seed()
    assert torch.equal(first, sdpa(q, k, v, dropout_p=0.5, seed=seed))
    state = torch.get_rng_state()
    sdpa(q, k, v)
    dt.ScaledDotProductAttention(0.5).eval()(q, k, v)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("causal", [False, True])
def test_query_shards_draw_their_rows_of_the_single_process_mask(causal, small_tiles):
    q, k, v = (randn(2, 2, 12, 4, seed=i).requires_grad_() for i in range(3))
    whole = sdpa(q, k, v, dropout_p=0.5, is_causal=causal, seed=3, stream=1)
    dq = torch.autograd.grad(whole.sum(), q)[0]
    for i0, rows in ((0, 5), (5, 4), (9, 3)):
        part = q[:, :, i0 : i0 + rows].detach().requires_grad_()
        y = sdpa(
            part, k, v, dropout_p=0.5, is_causal=causal, seed=3, stream=1,
            global_shape=(2, 2, 12, 12), offsets=(0, 0, i0, 0),
        )  # fmt: skip
        torch.testing.assert_close(y, whole[:, :, i0 : i0 + rows], rtol=1e-13, atol=1e-14)
        y.sum().backward()
        torch.testing.assert_close(part.grad, dq[:, :, i0 : i0 + rows], rtol=1e-12, atol=1e-13)
    # At p = 0 a causal shard still needs its global positions, which torch's own function lacks.
    y = sdpa(q[:, :, 6:], k, v, is_causal=True, global_shape=(2, 2, 12, 12), offsets=(0, 0, 6, 0))
    torch.testing.assert_close(y, F.scaled_dot_product_attention(q, k, v, is_causal=True)[:, :, 6:])


def test_shard_with_indexes_past_2_to_the_32_equals_the_reference(small_tiles):
    q, k, v = (randn(1, 2, n, 4, seed=i) for i, n in enumerate((5, 7, 7)))
    shard = {"global_shape": (1, 2**22, 40, 32), "offsets": (0, 2**22 - 2, 12, 4)}
    y = sdpa(q, k, v, dropout_p=0.5, is_causal=True, seed=8, **shard)
    expected = reference(q, k, v, p=0.5, seed=8, causal=True, **shard)
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-13)


def test_key_shard_and_data_parallel_rows():
    q, k = randn(2, 2, 6, 4, seed=1), randn(2, 2, 10, 4, seed=2)
    eye = torch.eye(4, dtype=torch.float64).expand(2, 2, 4, 4)
    y = sdpa(q, k[:, :, 6:], eye, dropout_p=0.5, seed=1, global_shape=(2, 2, 6, 10), offsets=(0, 0, 0, 6))
    assert torch.equal(y != 0, torch.from_numpy(keep_mask((2, 2, 6, 10), 0.5, seed=1)[..., 6:]))
    v = randn(2, 2, 10, 4, seed=3)
    whole = sdpa(q.repeat(2, 1, 1, 1), k.repeat(2, 1, 1, 1), v.repeat(2, 1, 1, 1), dropout_p=0.5, seed=4)
    with D.data_parallel(rank=1, world_size=2):
        assert torch.equal(sdpa(q, k, v, dropout_p=0.5, seed=4), whole[2:])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"dropout_p": 1.5}, ValueError, "between 0 and 1"),
        ({"dropout_p": "0.1"}, TypeError, "dropout_p must be a real number"),
        ({"query": np.zeros((5, 4))}, TypeError, "query must be a torch.Tensor"),
        ({"key": torch.zeros(6, 4, dtype=torch.int64)}, TypeError, "key must be a floating-point tensor"),
        ({"value": torch.zeros(6, 4, dtype=torch.float32)}, TypeError, "the same dtype"),
        ({"key": torch.zeros(6, 3, dtype=torch.float64)}, ValueError, "key must have query's feature size"),
        ({"attn_mask": torch.ones(5, 7, dtype=torch.bool)}, ValueError, "attn_mask must broadcast"),
        ({"attn_mask": torch.ones(5, 6, dtype=torch.int8)}, TypeError, "attn_mask must be a bool or float"),
        (
            {"attn_mask": torch.ones(5, 6, dtype=torch.bool), "is_causal": True},
            ValueError,
            "Explicit attn_mask",
        ),
        ({"scale": "1"}, TypeError, "scale must be a real number or None"),
        ({"stream": 3}, ValueError, "stream needs an explicit seed"),
        ({"seed": 2**64}, ValueError, r"seed must be an integer in \[0, 2\*\*64\)"),
        ({"global_shape": (5, 6)}, ValueError, "global_shape and offsets go together"),
        ({"global_shape": (5, 6), "offsets": (1, 0)}, ValueError, "the shard runs past global_shape"),
    ],
)
def test_bad_input_is_named_and_draws_nothing(kwargs, error, match):
    arguments = {"query": randn(5, 4), "key": randn(6, 4), "value": randn(6, 4), "dropout_p": 0.1}
    arguments.update(kwargs)
    state = torch.get_rng_state()
    with pytest.raises(error, match=match):
        sdpa(**arguments)
    assert torch.equal(torch.get_rng_state(), state)


def test_grouped_heads_need_enable_gqa():
    q, k = randn(1, 4, 5, 3), randn(1, 2, 5, 3)
    with pytest.raises(ValueError, match="enable_gqa"):
        sdpa(q, k, k, dropout_p=0.1, seed=0)
    with pytest.raises(ValueError, match="must be a multiple of key's 3"):
        sdpa(q, randn(1, 3, 5, 3), randn(1, 3, 5, 3), dropout_p=0.1, seed=0, enable_gqa=True)


# ---------------------------------------------------------------- 2 gloo ranks: a query shard each

GLOBAL = (2, 2, 10, 10)  # (B, H, L, S); rank r holds query rows [5r, 5r + 5)


def _inputs():
    return [randn(*GLOBAL[:3], 4, seed=i) for i in range(3)]


def _worker(rank, world_size, port, out_dir):
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # loopback only
    os.environ["NUMBA_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    store = dist.TCPStore("127.0.0.1", port, is_master=False, timeout=timedelta(seconds=60))
    dist.init_process_group(
        "gloo", store=store, rank=rank, world_size=world_size, timeout=timedelta(seconds=60)
    )
    try:
        q, k, v = _inputs()
        rows = GLOBAL[2] // world_size
        local = q[:, :, rank * rows : (rank + 1) * rows].clone().requires_grad_()
        y = sdpa(
            local, k, v, dropout_p=0.5, is_causal=True, seed=6, stream=2,
            global_shape=GLOBAL, offsets=(0, 0, rank * rows, 0),
        )  # fmt: skip
        y.sum().backward()
        gathered = [None] * world_size
        dist.all_gather_object(gathered, (y.detach(), local.grad))
        if rank == 0:
            torch.save(gathered, os.path.join(out_dir, "attention.pt"))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_equal_one_process(tmp_path):
    store = dist.TCPStore(
        "127.0.0.1", 0, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=60)
    )
    context = mp.start_processes(
        _worker, args=(2, store.port, str(tmp_path)), nprocs=2, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + 120
    try:
        while not context.join(timeout=1.0):
            if time.monotonic() > deadline:
                pytest.fail("2 ranks did not finish within 120 s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
            process.join(timeout=10)
        del store
    gathered = torch.load(tmp_path / "attention.pt")
    q, k, v = _inputs()
    q.requires_grad_()
    whole = sdpa(q, k, v, dropout_p=0.5, is_causal=True, seed=6, stream=2)
    whole.sum().backward()
    torch.testing.assert_close(torch.cat([y for y, _ in gathered], dim=2), whole, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(torch.cat([g for _, g in gathered], dim=2), q.grad, rtol=1e-12, atol=1e-13)
