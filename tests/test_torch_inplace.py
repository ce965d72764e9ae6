"""``inplace=True`` writes the contract's mask into the input itself, with no full-size temporary.

Eagerly, a contiguous float32/float64 CPU input is the numba kernel's output, and the autograd Function
marks it dirty: the version counter moves, the history moves onto the dropout node, and backward
redraws ``keep * scale`` from the key (it needs no input, so nothing the write destroys is needed).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dropkit import keep_mask  # noqa: E402
from dropkit.torch import Dropout, dropout  # noqa: E402
from torch_common import DTYPES, data  # noqa: E402

P = 0.4
SCALE = 1 / (1 - P)


def expected(x, seed, stream):
    """``x * keep * scale`` with the contract's mask, from the NumPy reference mask."""
    keep = torch.from_numpy(keep_mask(tuple(x.shape), P, seed=seed, stream=stream))
    wide = torch.float64 if x.dtype == torch.float64 else torch.float32
    return torch.where(keep, x.to(wide) * torch.tensor(SCALE, dtype=wide), 0.0).to(x.dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "slice"])
def test_the_input_itself_holds_the_contracts_mask(dtype, layout):
    base = data((6, 10), dtype)
    x = {"contiguous": base, "transposed": base.t(), "slice": base[1:5, 2:9]}[layout]
    want = expected(x.clone(), seed=3, stream=7)
    pointer, version = x.data_ptr(), x._version
    y = dropout(x, P, inplace=True, seed=3, stream=7)
    assert y is x and x.data_ptr() == pointer and x._version > version
    assert torch.equal(x, want)


def test_a_seedless_module_draws_from_torchs_generator_into_the_input():
    torch.manual_seed(11)
    seed = int(torch.randint(0, 2**63 - 1, (), dtype=torch.int64))
    torch.manual_seed(11)
    x = data((64, 64))
    want = expected(x.clone(), seed=seed, stream=0)
    assert Dropout(P, inplace=True)(x) is x and torch.equal(x, want)
    layer, x = Dropout(P, inplace=True, seed=5), data((64, 64))
    want = expected(x.clone(), seed=5, stream=0)
    assert layer(x) is x and torch.equal(x, want) and layer.calls == 1


@pytest.mark.parametrize("view", [False, True])
def test_the_gradient_through_an_in_place_call_on_a_non_leaf_is_keep_times_scale(view):
    leaf = data((8, 9), torch.float64).requires_grad_()
    upstream = data((8, 9), torch.float64, generator_seed=1)
    rows = slice(2, 6) if view else slice(None)
    hidden = leaf * 1.0
    target = hidden[rows]
    y = dropout(target, P, inplace=True, seed=2, stream=1)
    assert y is target
    hidden.backward(upstream)
    keep_scale = torch.ones(8, 9, dtype=torch.float64)
    keep_scale[rows] = expected(torch.ones_like(target), seed=2, stream=1)
    assert torch.equal(leaf.grad, upstream * keep_scale)


def test_double_backward_through_an_in_place_call():
    leaf = data((5, 4), torch.float64).requires_grad_()
    upstream = data((5, 4), torch.float64, generator_seed=1).requires_grad_()
    y = dropout(leaf * 1.0, P, inplace=True, seed=9)
    (grad,) = torch.autograd.grad(y, leaf, upstream, create_graph=True)
    (second,) = torch.autograd.grad(grad.sum(), upstream)
    assert torch.equal(second, expected(torch.ones(5, 4, dtype=torch.float64), seed=9, stream=0))


def test_forward_ad_updates_the_tangent_in_place_too():
    import torch.autograd.forward_ad as fwad

    x, tangent = data((3, 5)), data((3, 5), generator_seed=1)
    with fwad.dual_level():
        dual = fwad.make_dual(x.clone(), tangent.clone())
        y = dropout(dual, P, inplace=True, seed=4)
        assert y is dual
        assert torch.equal(fwad.unpack_dual(y).tangent, expected(tangent, seed=4, stream=0))


def test_the_version_counter_catches_a_tensor_another_op_saved():
    leaf = torch.ones(6, requires_grad=True)
    hidden = leaf * 1.0
    squared = hidden * hidden  # saves hidden for its backward
    dropout(hidden, P, inplace=True, seed=0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        squared.sum().backward()


def test_refused_in_place_calls_draw_and_write_nothing():
    state = torch.get_rng_state()
    leaf = torch.ones(8, requires_grad=True)
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad"):
        dropout(leaf, P, inplace=True)
    with torch.inference_mode():
        frozen = torch.ones(8)
    with pytest.raises(RuntimeError, match="Inplace update to inference tensor outside InferenceMode"):
        dropout(frozen, P, inplace=True)  # torch's own dropout writes before it raises this
    expanded = torch.ones(1).expand(8)  # eight elements, one memory location
    with pytest.raises(RuntimeError, match="more than one element of the written-to tensor"):
        dropout(expanded, P, inplace=True)
    layer = Dropout(P, inplace=True, seed=1)
    with pytest.raises(RuntimeError, match="more than one element of the written-to tensor"):
        layer(expanded)
    assert layer.calls == 0 and torch.equal(torch.get_rng_state(), state)
    assert torch.equal(leaf, torch.ones(8)) and torch.equal(frozen, torch.ones(8))
    with torch.inference_mode():
        assert dropout(frozen, P, inplace=True, seed=1) is frozen  # inside inference mode, as torch


def _allocations(call) -> list[int]:
    """Bytes of every allocation torch's CPU allocator made during ``call()`` (its memory profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        call()
    return [event.self_cpu_memory_usage for event in prof.events() if event.self_cpu_memory_usage > 0]


@pytest.mark.parametrize("n", [64 * 64, 2**17])  # the serial kernel, and the threaded one
def test_no_tensor_is_allocated_for_a_dense_in_place_call(n):
    x = data((n,))
    assert _allocations(lambda: dropout(x, P, seed=0)) == [4 * n]  # the method sees a new output
    assert _allocations(lambda: dropout(x, P, inplace=True, seed=0)) == []
    strided = data((2 * n,))[::2]  # documented: staged through one contiguous copy
    assert _allocations(lambda: dropout(strided, P, inplace=True, seed=0)) == [4 * n]


_PEAK_SCRIPT = """
import torch
from dropkit.torch import dropout
def peak():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))
def growth(call):
    with open("/proc/self/clear_refs", "w") as f:  # "5": the resident peak restarts from here
        f.write("5")
    start = peak()
    call()
    return peak() - start
x = torch.ones(2**24)  # 64 MiB, every page touched
dropout(torch.ones(2**17), 0.5, inplace=True, seed=0)  # numba loaded, the threaded kernel's threads started
print(growth(lambda: dropout(x, 0.5, inplace=True, seed=1)), growth(lambda: dropout(x, 0.5, seed=2)))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads and resets Linux's VmHWM")
def test_the_resident_peak_does_not_grow_by_a_copy_of_a_large_input():
    # A second measure, blind to who allocates (torch, NumPy or numba): the process's resident peak.
    done = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT], capture_output=True, text=True, check=True)
    in_place, copy = (int(v) for v in done.stdout.split())
    size = 4 * 2**24
    assert in_place < size // 8, done.stdout  # well under one copy: no temporary
    assert copy > size * 3 // 4, done.stdout  # while the out-of-place call's output shows up whole


def test_the_in_place_result_equals_the_out_of_place_one_and_numpys():
    x = data((33, 65))
    y = dropout(x.clone(), P, seed=2**63 + 5, stream=2**64 - 1)
    dropout(x, P, inplace=True, seed=2**63 + 5, stream=2**64 - 1)
    assert torch.equal(x, y)
    keep = keep_mask((33, 65), P, seed=2**63 + 5, stream=2**64 - 1)
    assert np.array_equal(x.numpy() != 0, keep)
