"""The dispatcher and the numba kernel: every path gives the reference's bytes, element for element."""

import os
import subprocess
import sys

import numpy as np
import pytest

import dropkit.kernels as kernels
from dropkit import Dropout, keep_mask
from dropkit.kernels import dropout_apply, reference
from dropkit.philox import keep_range, keep_threshold, random_range

cpu = pytest.importorskip("dropkit.kernels.cpu", reason="numba is not installed")

SEED, STREAM = 0x0123456789ABCDEF, 2**40 + 5
# (length, start): odd lengths, lengths not a multiple of 4, unaligned starts, batch (128) and
# task (65536) boundaries crossed, starts past 2**32 and 2**34 (block 2**32), a range ending at 2**64.
RANGES = [
    (0, 3),
    (1, 0),
    (3, 1),
    (5, 2),
    (6, 3),
    (4097, 4093),
    (70001, 65533),
    (2 * 65536 + 7, 1),
    (1001, 2**32 - 7),
    (999, 2**33 + 2),
    (9001, 2**34 - 4099),  # block 2**32: the high counter word changes inside a batch
    (70001, 2**34 - 65533),
    (517, 2**64 - 517),
]
# 0 keeps all; 2**-32 and 3e-9 give thresholds 1 and 13; 1 - 2**-32 gives 2**32 - 1 (keeps only
# the word 0xFFFFFFFF); 1 keeps none.
PROBABILITIES = [0.0, 2**-32, 3e-9, 0.1, 0.5, 1 - 2**-32, 1.0]


@pytest.fixture
def kernel_calls(monkeypatch):
    """Record the dtype of every call that reaches a numba kernel (threaded or serial)."""
    calls = []

    def spy_on(original):
        def spy(x, *args):
            calls.append(x.dtype)
            return original(x, *args)

        return spy

    monkeypatch.setattr(cpu, "dropout_kernel", spy_on(cpu.dropout_kernel))
    monkeypatch.setattr(cpu, "dropout_kernel_serial", spy_on(cpu.dropout_kernel_serial))
    monkeypatch.setattr(kernels, "USE_NUMBA", True)
    return calls


def data(n, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(n).astype(dtype)


def scale_of(p):
    return 1.0 if p == 1.0 else 1.0 / (1.0 - p)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("n", "start"), RANGES)
def test_numba_equals_reference_bit_for_bit(kernel_calls, dtype, n, start):
    x = data(n, dtype)
    for p in PROBABILITIES:
        fast = dropout_apply(x, p, seed=SEED, stream=STREAM, scale=scale_of(p), start=start)
        slow = reference.dropout_apply(x, p, seed=SEED, stream=STREAM, scale=scale_of(p), start=start)
        assert fast.dtype == dtype and fast.shape == x.shape
        assert fast.tobytes() == slow.tobytes(), f"p={p}"
    assert kernel_calls == [np.dtype(dtype)] * len(PROBABILITIES)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_address_entry_equals_the_reference_past_2_to_the_63(dtype):
    # dropout_kernel_at takes int64 bit patterns: unsigned values past 2**63 arrive negative.
    signed = [v - 2**64 if v >= 2**63 else v for v in (2**64 - 70, 2**63 + 9, 2**64 - 1)]
    for p in (0.0, 0.3, 1.0):
        x = data(67, dtype)
        slow = reference.dropout_apply(x, p, seed=2**63 + 9, stream=2**64 - 1, scale=2.0, start=2**64 - 70)
        threshold, scale = keep_threshold(p), dtype(0.0 if p == 1.0 else 2.0)
        start, seed, stream = signed
        cpu.dropout_kernel_at(x.ctypes.data, x.ctypes.data, x.size, start, threshold, seed, stream, scale)
        assert x.tobytes() == slow.tobytes(), f"p={p}"  # out=x: in place


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_output_is_x_times_scale_where_keep_mask_keeps(kernel_calls, dtype):
    x = data((4, 33, 5), dtype)  # a 3-D array: the mask runs over its row-major flat index
    got = dropout_apply(x, 0.3, seed=7, stream=9, scale=1 / 0.7, start=2**32 + 1)
    keep = keep_range(0.3, 7, 9, 2**32 + 1, x.size).reshape(x.shape)
    factor = dtype(1 / 0.7)  # scale rounded once to the data type, product rounded once
    np.testing.assert_array_equal(got, np.where(keep, x * factor, dtype(0)))
    assert np.signbit(got[~keep]).sum() == 0  # dropped elements are +0.0 even where x < 0
    assert len(kernel_calls) == 1


def test_in_place_and_out_arrays(kernel_calls):
    x = data(10_003, np.float32)
    expected = reference.dropout_apply(x, 0.5, seed=1, stream=2, scale=2.0, start=6)
    out = np.full_like(x, np.nan)
    assert dropout_apply(x, 0.5, seed=1, stream=2, scale=2.0, start=6, out=out) is out
    assert out.tobytes() == expected.tobytes()
    y = x.copy()
    assert dropout_apply(y, 0.5, seed=1, stream=2, scale=2.0, start=6, out=y) is y
    assert y.tobytes() == expected.tobytes()
    z = x.copy()  # torch hands over a second ndarray object on the same buffer for in-place ops
    dropout_apply(z, 0.5, seed=1, stream=2, scale=2.0, start=6, out=z.view())
    assert z.tobytes() == expected.tobytes()
    assert len(kernel_calls) == 3


def test_overlapping_out_takes_the_reference_path_and_stays_correct(kernel_calls):
    buffer = data(1001, np.float64)
    x, out = buffer[1:], buffer[:-1]  # out is x shifted by one element: not an in-place alias
    expected = reference.dropout_apply(x.copy(), 0.5, seed=3, stream=4, scale=2.0)
    dropout_apply(x, 0.5, seed=3, stream=4, scale=2.0, out=out)
    assert out.tobytes() == expected.tobytes()
    assert kernel_calls == []


@pytest.mark.parametrize(
    "make",
    [
        lambda: data(1001, np.float16),
        lambda: data(2002, np.float32)[::2],
        lambda: data(30, np.float64).reshape(5, 6).T,
    ],
    ids=["float16", "strided", "transposed"],
)
def test_other_arrays_take_the_reference_path(kernel_calls, make):
    x = make()
    got = dropout_apply(x, 0.25, seed=5, stream=6, scale=4 / 3, start=3)
    expected = reference.dropout_apply(x, 0.25, seed=5, stream=6, scale=4 / 3, start=3)
    assert got.dtype == x.dtype and got.shape == x.shape
    np.testing.assert_array_equal(got, expected)
    assert kernel_calls == []


def test_use_numba_switch_forces_the_reference(kernel_calls, monkeypatch):
    monkeypatch.setattr(kernels, "USE_NUMBA", False)
    x = data(4099, np.float32)
    got = dropout_apply(x, 0.5, seed=1, stream=1, scale=2.0)
    assert got.tobytes() == reference.dropout_apply(x, 0.5, seed=1, stream=1, scale=2.0).tobytes()
    assert kernel_calls == [] and not kernels.numba_available()


def test_environment_variable_disables_numba():
    code = "import dropkit.kernels as k; print(k.USE_NUMBA, k.numba_available())"
    for value, expected in (("1", "False False"), ("0", "True True")):
        env = {**os.environ, "DROPKIT_DISABLE_NUMBA": value}
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        assert done.stdout.split() == expected.split()


def test_without_numba_the_package_falls_back(monkeypatch):
    monkeypatch.setitem(sys.modules, "numba", None)  # `import numba` now raises ImportError
    monkeypatch.delitem(sys.modules, "dropkit.kernels.cpu")
    monkeypatch.delattr(kernels, "cpu", raising=False)
    kernels._cpu_module.cache_clear()
    try:
        assert not kernels.numba_available()
        x = data(103, np.float32)
        got = dropout_apply(x, 0.5, seed=2, stream=3, scale=2.0, start=1)
        assert (
            got.tobytes() == reference.dropout_apply(x, 0.5, seed=2, stream=3, scale=2.0, start=1).tobytes()
        )
    finally:
        kernels._cpu_module.cache_clear()


def test_mask_does_not_depend_on_thread_count(kernel_calls):
    numba = pytest.importorskip("numba")
    x = data(3 * 65536 + 11, np.float32)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = dropout_apply(x, 0.5, seed=8, stream=8, scale=2.0, start=5)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = dropout_apply(x, 0.5, seed=8, stream=8, scale=2.0, start=5)
    finally:
        numba.set_num_threads(before)
    assert one.tobytes() == many.tobytes()


def test_p_one_gives_zeros_even_with_an_infinite_scale(kernel_calls):
    x = data(1000, np.float32)
    x[0] = np.nan
    got = dropout_apply(x, 1.0, seed=0, stream=0, scale=np.inf)
    assert got.tobytes() == np.zeros_like(x).tobytes()


def test_numpy_layer_forward_and_backward_use_the_kernel(kernel_calls):
    layer = Dropout(0.4, seed=11)
    x = data(6 * 1000, np.float32).reshape(6, 1000)
    y = layer(x)
    grad = layer.backward(np.ones_like(x))
    keep = keep_mask(x.shape, 0.4, seed=11, stream=0)
    factor = np.float32(1 / 0.6)
    np.testing.assert_array_equal(y, np.where(keep, x * factor, np.float32(0)))
    np.testing.assert_array_equal(grad, np.where(keep, factor, np.float32(0)))
    assert kernel_calls == [np.dtype(np.float32)] * 2


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"p": 1.5}, ValueError, "dropout probability has to be between 0 and 1"),
        ({"p": "0.5"}, TypeError, "p must be a real number"),
        ({"seed": -1}, ValueError, r"seed must be an integer in \[0, 2\*\*64\)"),
        ({"stream": 2**64}, ValueError, r"stream must be an integer in \[0, 2\*\*64\)"),
        ({"start": 1.0}, TypeError, r"start must be an integer in \[0, 2\*\*64\)"),
        ({"out": np.zeros(7, np.float32)}, ValueError, r"out must be an ndarray of x's shape \(8,\)"),
        ({"out": np.zeros(8, np.float64)}, ValueError, "and dtype float32, got"),
        ({"out": [0.0] * 8}, ValueError, "got list"),
        ({"start": 2**64 - 7}, ValueError, r"start \+ count must be at most 2\*\*64"),
        ({"start": 2**64 - 7, "p": 1.0}, ValueError, r"start \+ count must be at most 2\*\*64"),  # every p
    ],
)
def test_bad_arguments_raise_before_writing(kwargs, error, match):
    x = np.ones(8, np.float32)
    out = np.full(8, 7.0, np.float32)
    arguments = {"p": 0.5, "seed": 0, "stream": 0, "scale": 2.0, "out": out, **kwargs}
    with pytest.raises(error, match=match):
        dropout_apply(x, **arguments)
    assert (out == 7.0).all() and (x == 1.0).all()


def test_read_only_out_and_integer_x_are_rejected():
    read_only = np.zeros(4, np.float32)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="out must be a writeable array"):
        dropout_apply(np.ones(4, np.float32), 0.5, seed=0, stream=0, scale=2.0, out=read_only)
    with pytest.raises(TypeError, match=r"x must be a floating-point array .* got dtype int64"):
        dropout_apply(np.ones(4, np.int64), 0.5, seed=0, stream=0, scale=2.0)


def test_a_word_equal_to_the_threshold_is_kept(kernel_calls):
    x = np.ones(4099, np.float32)
    words = random_range(3, 4, 10, x.size)
    # Thresholds set to words the mask really draws, one on each side of 2**31: a compare done
    # with > instead of >=, or in signed 32-bit integers, flips these elements.
    for k in (int(np.argmax(words < 2**31)), int(np.argmax(words >= 2**31)), 4098):
        p = int(words[k]) / 2**32  # exact in float64, so keep_threshold(p) == words[k]
        assert keep_threshold(p) == words[k]
        got = dropout_apply(x, p, seed=3, stream=4, scale=1.0, start=10)
        assert got[k] == 1.0
        assert got.tobytes() == reference.dropout_apply(x, p, seed=3, stream=4, scale=1.0, start=10).tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threaded_and_serial_kernels_agree_across_tasks(dtype):
    x = data(3 * cpu.SERIAL_MAX + 9, dtype)
    start, threshold = 2**33 + cpu.SERIAL_MAX - 6, keep_threshold(0.3)  # crosses 4 task boundaries
    integers = [np.uint64(v) for v in (start, threshold, SEED, STREAM)]
    threaded, serial = np.empty_like(x), np.empty_like(x)
    cpu.dropout_kernel(x, threaded, *integers, 1 / 0.7)
    cpu.dropout_kernel_serial(x, serial, *integers, 1 / 0.7)
    expected = reference.dropout_apply(x, 0.3, seed=SEED, stream=STREAM, scale=1 / 0.7, start=start)
    assert threaded.tobytes() == expected.tobytes() and serial.tobytes() == expected.tobytes()
