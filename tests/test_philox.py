"""The generator against Random123's known answers and a scalar pure-Python oracle."""

import numpy as np
import pytest

from dropkit import keep_mask, philox4x32, random_bits
from dropkit.philox import keep_range, keep_threshold, random_range

MASK32 = 0xFFFFFFFF

# Random123 kat_vectors, philox4x32 with 10 rounds: (counter, key, output).
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((MASK32,) * 4, (MASK32,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


def philox_oracle(counter, key, rounds=10):
    """Philox4x32 one counter at a time, in plain Python integers: the definition, read slowly."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for _ in range(rounds):
        p0, p1 = 0xD2511F53 * c0, 0xCD9E8D57 * c2
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 & MASK32, (p0 >> 32) ^ c3 ^ k1, p0 & MASK32
        k0, k1 = (k0 + 0x9E3779B9) & MASK32, (k1 + 0xBB67AE85) & MASK32
    return c0, c1, c2, c3


def bits_oracle(seed, stream, index):
    block = index >> 2
    counter = (block & MASK32, block >> 32, stream & MASK32, stream >> 32)
    return philox_oracle(counter, (seed & MASK32, seed >> 32))[index & 3]


@pytest.mark.parametrize(("counter", "key", "expected"), KNOWN_ANSWERS)
def test_known_answers(counter, key, expected):
    assert tuple(philox4x32(counter, key).tolist()) == expected
    assert philox_oracle(counter, key) == expected


def test_philox_broadcasts_key_over_counters():
    counters = np.array([c for c, _, _ in KNOWN_ANSWERS], dtype=np.uint32)
    out = philox4x32(counters[:, None, :], np.array([[0, 0], [MASK32, MASK32]]))
    assert out.shape == (3, 2, 4) and out.dtype == np.uint32
    assert tuple(out[0, 0].tolist()) == KNOWN_ANSWERS[0][2]
    assert tuple(out[1, 1].tolist()) == KNOWN_ANSWERS[1][2]


def test_philox_rounds_argument_matches_oracle():
    assert tuple(philox4x32((1, 2, 3, 4), (5, 6), rounds=7).tolist()) == philox_oracle(
        (1, 2, 3, 4), (5, 6), rounds=7
    )


def test_random_bits_matches_scalar_oracle_on_random_inputs():
    rng = np.random.default_rng(12345)
    for _ in range(20):
        seed, stream = (int(v) for v in rng.integers(0, 2**64, size=2, dtype=np.uint64))
        index = rng.integers(0, 2**64, size=16, dtype=np.uint64)
        index[:4] = [0, 3, 2**32 - 1, 2**32 + 5]  # the 32-bit boundary of the block counter
        got = random_bits(seed, stream, index)
        assert got.dtype == np.uint32 and got.shape == index.shape
        assert got.tolist() == [bits_oracle(seed, stream, int(i)) for i in index]


def test_random_range_equals_random_bits_at_any_start():
    for start, count in [(0, 9), (3, 1), (5, 11), (2**32 - 2, 7), (2**40 + 1, 5)]:
        expected = random_bits(99, 7, np.arange(start, start + count, dtype=np.uint64))
        assert random_range(99, 7, start, count).tolist() == expected.tolist()


def test_keep_threshold_rounds_half_to_even():
    assert keep_threshold(0.0) == 0 and keep_threshold(1.0) == 2**32
    assert keep_threshold(0.5) == 2**31
    assert keep_threshold(2.5 / 2**32) == 2  # exactly halfway: ties go to even
    assert keep_threshold(3.5 / 2**32) == 4


def test_keep_mask_is_the_threshold_over_row_major_indexes():
    mask = keep_mask((3, 5), 0.3, seed=11, stream=4)
    bits = random_bits(11, 4, np.arange(15))
    assert mask.dtype == np.bool_ and mask.shape == (3, 5)
    assert mask.ravel().tolist() == (bits >= keep_threshold(0.3)).tolist()


def test_keep_mask_p0_keeps_all_and_p1_keeps_none():
    assert keep_mask(1000, 0.0, seed=1).all()
    assert not keep_mask(1000, 1.0, seed=1).any()
    assert keep_range(1.0, 1, 0, 0, 0).shape == (0,)


def test_keep_mask_empty_and_scalar_shapes():
    assert keep_mask((0, 3), 0.5, seed=1).shape == (0, 3)
    assert keep_mask((), 0.0, seed=1).shape == ()


def test_keep_fraction_within_six_sigma():
    # Each element is an independent Bernoulli(1 - p) draw: the kept count of n elements has
    # standard deviation sqrt(n p (1 - p)); a 6-sigma miss has probability ~2e-9.
    n = 1_000_000
    for p in (0.1, 0.5, 0.9):
        kept = keep_mask(n, p, seed=2024, stream=0).sum()
        assert abs(kept - n * (1 - p)) < 6 * np.sqrt(n * p * (1 - p))


def test_streams_and_seeds_give_different_masks():
    a = keep_mask(4096, 0.5, seed=1, stream=0)
    assert (a == keep_mask(4096, 0.5, seed=1, stream=0)).all()
    assert (a != keep_mask(4096, 0.5, seed=1, stream=1)).any()
    assert (a != keep_mask(4096, 0.5, seed=2, stream=0)).any()


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: random_bits(-1, 0, [0]), ValueError, r"seed must be an integer in \[0, 2\*\*64\)"),
        (lambda: random_bits(0, 2**64, [0]), ValueError, "stream must be"),
        (lambda: random_bits(0.5, 0, [0]), TypeError, "seed must be an integer"),
        (lambda: random_bits(0, 0, [-1]), ValueError, "index must be non-negative"),
        (lambda: random_bits(0, 0, [0.5]), TypeError, "index must be an integer array"),
        (lambda: keep_mask((2, -1), 0.5, seed=0), ValueError, "shape must be"),
        (lambda: keep_mask(4, 1.5, seed=0), ValueError, "between 0 and 1"),
        # p = 1 and empty ranges draw nothing, yet their keys are checked all the same.
        (lambda: keep_mask(4, 1.0, seed=-1), ValueError, r"seed must be an integer in \[0, 2\*\*64\)"),
        (lambda: keep_range(1.0, 0, "1", 0, 4), TypeError, "stream must be an integer"),
        (lambda: keep_mask((0, 3), 0.5, seed=2**64), ValueError, "seed must be an integer"),
        (lambda: random_range(0, 0, 2**64 - 2, 3), ValueError, r"start \+ count must be at most 2\*\*64"),
        (lambda: keep_range(1.0, 0, 0, 2**64 - 2, 3), ValueError, r"start \+ count must be at most"),
        (lambda: philox4x32([0, 0, 0], [0, 0]), TypeError, r"counter must be .*\(\.\.\., 4\)"),
        (lambda: philox4x32([0, 0, 0, 2**32], [0, 0]), ValueError, "counter words"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_message(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_keep_mask_takes_numpy_integer_dims_and_names_bad_shapes():
    assert keep_mask((np.int64(2), 3), 0.5, seed=1).shape == (2, 3)
    assert (keep_mask(np.int64(6), 0.5, seed=1) == keep_mask((2, 3), 0.5, seed=1).ravel()).all()
    for bad in [(2, True), (2, -1), (2, 1.0)]:
        with pytest.raises(ValueError, match=r"shape must be a sequence of non-negative ints"):
            keep_mask(bad, 0.5, seed=1)
    with pytest.raises(TypeError, match="shape must be a sequence"):
        keep_mask("23", 0.5, seed=1)
