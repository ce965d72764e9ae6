"""The Triton attention kernels (dropkit.torch._attention_triton) draw the reference's masks and gradients.

As in test_triton.py: under ``TRITON_INTERPRET=1`` (set before triton is imported) the kernels run on CPU
tensors, so ``test_interpreter_suite`` reruns this module in a fresh process with the variable set. With
CUDA and no interpreter the same tests run compiled on the GPU, plus one through the public function.
Shapes are tiny and tiles 16 x 16, so the interpreter stays fast and every shape crosses several tiles.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import pytest

if importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed (pip install triton)", allow_module_level=True)
torch = pytest.importorskip("torch")

import dropkit  # noqa: E402
from dropkit.philox import keep_mask  # noqa: E402
from dropkit.torch import _attention_cpu  # noqa: E402

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
CUDA = torch.cuda.is_available()
DEVICE = "cpu" if INTERPRETED else "cuda"
runs_kernel = pytest.mark.skipif(
    not (INTERPRETED or CUDA), reason="needs CUDA, or TRITON_INTERPRET=1 (test_interpreter_suite)"
)
gpu_only = pytest.mark.skipif(INTERPRETED or not CUDA, reason="needs a CUDA GPU")

if INTERPRETED or CUDA:
    from dropkit.torch import _attention_triton as T


@pytest.fixture(autouse=True)
def small_tiles(monkeypatch):
    if INTERPRETED or CUDA:
        monkeypatch.setattr(T, "BLOCK_M", 16)
        monkeypatch.setattr(T, "BLOCK_N", 16)


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def run(q, k, v, dy, *, bias=None, p=0.3, seed=2**64 - 3, stream=2**33 + 1, scale=0.5, causal=False,
        global_shape=None, offsets=None, dtype=torch.float32):  # fmt: skip
    """The kernels' output and gradients, in float64 on the CPU."""
    lead, L, S = tuple(q.shape[:-2]), q.shape[-2], k.shape[-2]
    global_shape = list(global_shape or (*lead, L, S))
    offsets = list(offsets or [0] * len(global_shape))
    q, k, v, dy = (x.to(dtype).to(DEVICE) for x in (q, k, v, dy))
    bias_grad = bias is not None and bias.dtype != torch.bool
    bias = None if bias is None else bias.to(DEVICE).to(torch.float32 if bias_grad else torch.bool)
    args = (p, seed, stream, scale, causal, global_shape, offsets)
    out, lse = T.forward(q, k, v, bias, *args)
    grads = T.backward(dy, q, k, v, bias, out, lse, *args, bias_grad)
    return [x.cpu().double() for x in (out, *grads)]


def reference(q, k, v, dy, *, p=0.3, seed=2**64 - 3, stream=2**33 + 1, scale=0.5, causal=False, **kwargs):
    arrays = [x.numpy() for x in (q, k, v)]
    kwargs = {"p": p, "seed": seed, "stream": stream, "scale": scale, "causal": causal, **kwargs}
    y = dropkit.attention(*arrays, **kwargs)
    grads = dropkit.attention_backward(dy.numpy(), *arrays, **kwargs)
    return [torch.from_numpy(x) for x in (y, *grads)]


# (B, H, H_kv, L, S, E, Ev): S = 24 rows start on multiples of 4 (one Philox call per four keys); S = 23
# does not (a call per key, its lane picked); GQA; head sizes below the 16 of tl.dot's padding.
SHAPES = {
    "aligned": (1, 2, 2, 20, 24, 8, 8),
    "unaligned": (1, 2, 2, 20, 23, 8, 5),
    "gqa": (1, 4, 2, 17, 20, 4, 4),
}


@runs_kernel
@pytest.mark.parametrize(("name", "causal"), [("aligned", False), ("unaligned", True), ("gqa", False)])
def test_identity_values_show_the_mask_element_for_element(name, causal):
    # V = I: the output is P ⊙ D, nonzero exactly where keep_mask keeps (and the key is visible).
    # dY = I: dV = (P ⊙ D)ᵀ summed over the heads sharing it, so for H_kv == H it shows the mask too.
    B, H, Hk, L, S, E, _ = SHAPES[name]
    q, k = randn(B, H, L, E, seed=1), randn(B, Hk, S, E, seed=2)
    v = torch.eye(S, dtype=torch.float64).expand(B, Hk, S, S)
    dy = torch.eye(L, S, dtype=torch.float64).expand(B, H, L, S) if Hk == H else randn(B, H, L, S)
    out, _, _, dv, _ = run(q, k, v, dy, p=0.5, causal=causal)
    keep = torch.from_numpy(keep_mask((B, H, L, S), 0.5, seed=2**64 - 3, stream=2**33 + 1))
    visible = torch.ones(L, S, dtype=torch.bool).tril() if causal else torch.ones(L, S, dtype=torch.bool)
    assert torch.equal(out != 0, keep & visible)
    if Hk == H:  # dV[j, i] = (P ⊙ D)[i, j] for i < L <= S
        assert torch.equal(dv.transpose(-1, -2)[..., :L, :] != 0, keep & visible)


@runs_kernel
@pytest.mark.parametrize(("name", "causal"), [("aligned", True), ("unaligned", False), ("gqa", True)])
def test_output_and_gradients_equal_the_reference(name, causal):
    B, H, Hk, L, S, E, Ev = SHAPES[name]
    q, k, v = randn(B, H, L, E, seed=1), randn(B, Hk, S, E, seed=2), randn(B, Hk, S, Ev, seed=3)
    dy = randn(B, H, L, Ev, seed=4)
    # float32 kernels against the float64 reference: a few float32 roundings of O(1) values.
    for ours, expected in zip(
        run(q, k, v, dy, causal=causal)[:4], reference(q, k, v, dy, causal=causal), strict=True
    ):
        torch.testing.assert_close(ours, expected, rtol=1e-4, atol=2e-5)


@runs_kernel
def test_masks_and_their_gradient():
    q, k, v, dy = (
        randn(1, 2, 18, 8, seed=1),
        randn(1, 2, 20, 8, seed=2),
        randn(1, 2, 20, 8),
        randn(1, 2, 18, 8),
    )
    bool_mask = torch.rand(2, 1, 20, generator=torch.Generator().manual_seed(5)) > 0.3
    ours = run(q, k, v, dy, bias=bool_mask)
    expected = reference(q, k, v, dy, mask=bool_mask.numpy())
    for a, b in zip(ours[:4], expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-5)
    bias = randn(18, 1, seed=6)
    ours = run(q, k, v, dy, bias=bias)
    expected = reference(q, k, v, dy, mask=bias.numpy())
    for a, b in zip(ours[:4], expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-5)
    # The mask's gradient against the CPU tiles' (test_torch_attention.py checks those against autograd).
    args = (0.3, 2**64 - 3, 2**33 + 1, 0.5, False, [1, 2, 18, 20], [0] * 4)
    y, lse = _attention_cpu.forward(q, k, v, bias, *args)
    dbias = _attention_cpu.backward(dy, q, k, v, bias, y, lse, *args, True)[3]
    torch.testing.assert_close(ours[4], dbias, rtol=1e-4, atol=2e-5)


@runs_kernel
@pytest.mark.parametrize(
    ("global_shape", "offsets"),
    [
        ((1, 2, 40, 32), (0, 0, 12, 4)),
        ((1, 2, 40, 30), (0, 0, 12, 4)),
        ((1, 2**22, 40, 32), (0, 2**22 - 2, 12, 4)),
    ],
    ids=["aligned", "unaligned", "indexes past 2**32"],
)
def test_shard_draws_its_slice_with_global_causal_positions(global_shape, offsets):
    # Queries [12, 22) against keys [4, 28) of the global tensor: the slice of its mask, global causality.
    q, k, v, dy = (
        randn(1, 2, 10, 8, seed=1),
        randn(1, 2, 24, 8, seed=2),
        randn(1, 2, 24, 8),
        randn(1, 2, 10, 8),
    )
    shard = {"global_shape": global_shape, "offsets": offsets}
    ours = run(q, k, v, dy, causal=True, **shard)
    for a, b in zip(ours[:4], reference(q, k, v, dy, causal=True, **shard), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-5)


@runs_kernel
def test_unbatched_and_five_dim_inputs():
    for lead in ((), (2, 1, 2)):
        q, k, v, dy = (randn(*lead, n, 4, seed=i) for i, n in enumerate((9, 11, 11, 9)))
        for a, b in zip(run(q, k, v, dy)[:4], reference(q, k, v, dy), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-5)


@runs_kernel
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_follows_the_reference(dtype):
    q, k, v, dy = (randn(1, 2, 20, 8, seed=i) for i in range(4))
    # P and dS are rounded to the data type before their matmuls (as in flash attention): a few units of
    # its last place (2**-11 for float16, 2**-8 for bfloat16) on sums of O(1) values.
    tolerance = {torch.float16: 4e-3, torch.bfloat16: 1e-1}[dtype]
    cast = [x.to(dtype).double() for x in (q, k, v, dy)]
    for a, b in zip(
        run(q, k, v, dy, causal=True, dtype=dtype)[:4], reference(*cast, causal=True), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=tolerance, atol=tolerance)


@runs_kernel
def test_p_zero_is_attention_and_p_one_gives_zeros():
    q, k, v, dy = (randn(1, 2, 20, 8, seed=i) for i in range(4))
    ours = run(q, k, v, dy, p=0.0, causal=True, scale=8**-0.5)[:4]
    inputs = [x.clone().requires_grad_() for x in (q, k, v)]
    expected = torch.nn.functional.scaled_dot_product_attention(*inputs, is_causal=True)
    expected.backward(dy)
    for a, b in zip(ours, (expected.detach(), *(x.grad for x in inputs)), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-5)
    out, dq, dk, dv, _ = run(q, k, v, dy, p=1.0)
    assert all(torch.equal(x, torch.zeros_like(x)) for x in (out, dq, dk, dv))


@runs_kernel
def test_float64_is_refused_with_its_reason():
    q = randn(1, 1, 4, 4)
    with pytest.raises(TypeError, match="float16, bfloat16 or float32"):
        T.forward(
            q.to(DEVICE), q.to(DEVICE), q.to(DEVICE), None, 0.1, 0, 0, 1.0, False, [1, 1, 4, 4], [0] * 4
        )


@gpu_only
def test_public_function_on_cuda_equals_the_cpu_tiles():
    from dropkit.torch.functional import scaled_dot_product_attention as sdpa

    q, k, v = (randn(2, 4, 300, 64, seed=i).float() for i in range(3))
    inputs = [x.cuda().requires_grad_() for x in (q, k, v)]
    y = sdpa(*inputs, dropout_p=0.2, is_causal=True, seed=5, stream=1)
    y.sum().backward()
    cpu = [x.clone().requires_grad_() for x in (q, k, v)]
    expected = sdpa(*cpu, dropout_p=0.2, is_causal=True, seed=5, stream=1)
    expected.sum().backward()
    torch.testing.assert_close(y.cpu(), expected, rtol=1e-4, atol=1e-5)
    for a, b in zip(inputs, cpu, strict=True):
        torch.testing.assert_close(a.grad.cpu(), b.grad, rtol=1e-3, atol=1e-4)


def test_interpreter_suite():
    if INTERPRETED:
        pytest.skip("already running under the interpreter")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    command = [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider", "-p", "no:randomly"]
    run_ = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    report = run_.stdout[-6000:] + run_.stderr[-2000:]
    assert run_.returncode == 0, report
    passed = re.search(r"(\d+) passed", run_.stdout)
    assert passed and int(passed.group(1)) >= 15, report
