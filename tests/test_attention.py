"""The NumPy attention-dropout reference: its mask is keep_mask's, its gradients are the derivatives."""

from __future__ import annotations

import numpy as np
import pytest

import dropkit
from dropkit.attention import attention, attention_backward, attention_probabilities
from dropkit.philox import keep_mask


def arrays(*shapes, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(dtype) for shape in shapes]


def test_exported_from_the_package():
    assert dropkit.attention is attention


@pytest.mark.parametrize("p", [0.0, 0.3, 0.9])
def test_output_with_identity_values_is_the_dropped_probabilities(p):
    # With V = I the output is P ⊙ D itself: each kept probability times 1/(1-p), each dropped one 0.
    q, k = arrays((2, 3, 5, 4), (2, 3, 7, 4))
    y = attention(q, k, np.broadcast_to(np.eye(7), (2, 3, 7, 7)), p=p, seed=11, stream=4)
    keep = keep_mask((2, 3, 5, 7), p, seed=11, stream=4)
    P = attention_probabilities(q, k)
    assert np.array_equal(y != 0, keep)  # P > 0 everywhere here, so y is 0 exactly where dropped
    np.testing.assert_allclose(y, P * keep / (1 - p), rtol=1e-12, atol=0)


def test_p_zero_is_plain_attention_and_p_one_gives_zeros():
    q, k, v = arrays((3, 4, 2), (3, 6, 2), (3, 6, 5))
    scores = q @ k.transpose(0, 2, 1) / np.sqrt(2)
    P = np.exp(scores - scores.max(-1, keepdims=True))
    P /= P.sum(-1, keepdims=True)
    np.testing.assert_allclose(attention(q, k, v, p=0.0, seed=0), P @ v, rtol=1e-12)
    assert np.array_equal(attention(q, k, v, p=1.0, seed=0), np.zeros((3, 4, 5)))
    grads = attention_backward(np.ones((3, 4, 5)), q, k, v, p=1.0, seed=0)
    assert all(np.array_equal(g, np.zeros_like(x)) for g, x in zip(grads, (q, k, v), strict=True))


def _numeric_gradient(f, x, eps=1e-6):
    grad = np.zeros_like(x)
    for i in np.ndindex(*x.shape):
        old = x[i]
        x[i] = old + eps
        up = f()
        x[i] = old - eps
        down = f()
        x[i] = old
        grad[i] = (up - down) / (2 * eps)
    return grad


CASES = {
    "plain": ((1, 2, 3, 2), (1, 2, 4, 2), (1, 2, 4, 3), {}),
    "causal": ((2, 1, 4, 2), (2, 1, 4, 2), (2, 1, 4, 2), {"causal": True}),
    "grouped heads": ((1, 4, 3, 2), (1, 2, 3, 2), (1, 2, 3, 2), {}),
    "broadcast batch": ((2, 1, 3, 2), (1, 1, 4, 2), (1, 1, 4, 2), {"scale": 0.7}),
    "bool mask": ((1, 2, 3, 2), (1, 2, 4, 2), (1, 2, 4, 2), {"mask": np.array([[1, 0, 1, 1]], bool)}),
    "float mask": ((1, 2, 3, 2), (1, 2, 4, 2), (1, 2, 4, 2), {"mask": np.linspace(-1, 1, 12).reshape(3, 4)}),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_backward_is_the_numerical_derivative(case):
    # Central differences in float64: the error is O(eps^2) ~ 1e-12 relative, far below the tolerance.
    q_shape, k_shape, v_shape, kwargs = CASES[case]
    q, k, v = arrays(q_shape, k_shape, v_shape, seed=1)
    kwargs = {"p": 0.4, "seed": 3, "stream": 2, **kwargs}
    out_grad = arrays(attention(q, k, v, **kwargs).shape, seed=2)[0]
    analytic = attention_backward(out_grad, q, k, v, **kwargs)
    for x, g in zip((q, k, v), analytic, strict=True):
        numeric = _numeric_gradient(lambda: float((attention(q, k, v, **kwargs) * out_grad).sum()), x)
        assert g.shape == x.shape
        np.testing.assert_allclose(g, numeric, rtol=1e-6, atol=1e-8)


def test_torch_autograd_agrees():
    torch = pytest.importorskip("torch")
    q, k, v, dy = arrays((2, 4, 6, 3), (2, 2, 5, 3), (2, 2, 5, 4), (2, 4, 6, 4), seed=5)
    mask = np.random.default_rng(6).random((6, 5)) > 0.3
    kwargs = {"p": 0.25, "seed": 9, "stream": 1, "mask": mask}
    tq, tk, tv = (torch.tensor(x, requires_grad=True) for x in (q, k, v))
    scores = tq @ tk.repeat_interleave(2, dim=1).transpose(-1, -2) / np.sqrt(3)
    P = torch.softmax(scores.masked_fill(~torch.tensor(mask), -torch.inf), dim=-1)
    D = torch.tensor(keep_mask((2, 4, 6, 5), 0.25, seed=9, stream=1) / 0.75)
    y = (P * D) @ tv.repeat_interleave(2, dim=1)
    y.backward(torch.tensor(dy))
    np.testing.assert_allclose(attention(q, k, v, **kwargs), y.detach().numpy(), rtol=1e-12)
    for ours, theirs in zip(attention_backward(dy, q, k, v, **kwargs), (tq, tk, tv), strict=True):
        np.testing.assert_allclose(ours, theirs.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_fully_masked_row_gives_zeros():
    q, k, v = arrays((3, 2), (4, 2), (4, 2))
    mask = np.ones((3, 4), bool)
    mask[1] = False
    y = attention(q, k, v, p=0.2, seed=0, mask=mask)
    assert np.array_equal(y[1], [0.0, 0.0]) and np.isfinite(y).all()
    dq, _, _ = attention_backward(np.ones((3, 2)), q, k, v, p=0.2, seed=0, mask=mask)
    assert np.array_equal(dq[1], [0.0, 0.0])


@pytest.mark.parametrize("causal", [False, True])
def test_query_shard_equals_its_rows_of_the_whole(causal):
    # Sequence parallelism: rows [i0, i0 + 3) of the queries, all keys, draw those rows of the mask and,
    # causal, see keys by global position.
    q, k, v = arrays((2, 2, 8, 3), (2, 2, 8, 3), (2, 2, 8, 3), seed=7)
    kwargs = {"p": 0.5, "seed": 2, "stream": 5, "causal": causal}
    whole = attention(q, k, v, **kwargs)
    grads = attention_backward(np.ones_like(whole), q, k, v, **kwargs)
    for i0 in (0, 3, 5):
        rows = slice(i0, i0 + 3)
        shard = {"global_shape": (2, 2, 8, 8), "offsets": (0, 0, i0, 0)}
        part = attention(q[:, :, rows], k, v, **kwargs, **shard)
        np.testing.assert_allclose(part, whole[:, :, rows], rtol=1e-12, atol=1e-15)
        dq, _, _ = attention_backward(np.ones_like(part), q[:, :, rows], k, v, **kwargs, **shard)
        np.testing.assert_allclose(dq, grads[0][:, :, rows], rtol=1e-12, atol=1e-15)


def test_key_shard_draws_its_columns_of_the_mask():
    q, k = arrays((1, 4, 2), (1, 10, 2))
    y = attention(q, k[:, 6:], np.eye(4)[None], p=0.5, seed=1, global_shape=(1, 4, 10), offsets=(0, 0, 6))
    assert np.array_equal(y != 0, keep_mask((1, 4, 10), 0.5, seed=1)[:, :, 6:])


def test_float32_and_float16_compute_in_float32():
    q, k, v = arrays((2, 5, 4), (2, 6, 4), (2, 6, 4))
    exact = attention(q, k, v, p=0.3, seed=1)
    for dtype, tolerance in ((np.float32, 1e-6), (np.float16, 2e-3)):
        y = attention(q.astype(dtype), k.astype(dtype), v.astype(dtype), p=0.3, seed=1)
        assert y.dtype == dtype
        np.testing.assert_allclose(y, exact, rtol=tolerance, atol=tolerance * 4)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"p": 1.5}, ValueError, "between 0 and 1"),
        ({"k": np.zeros((6, 3))}, ValueError, "k must have q's feature size 4"),
        ({"v": np.zeros((5, 4))}, ValueError, "v must have k's shape up to its last dim"),
        ({"q": np.zeros((3, 5, 4)), "k": np.zeros((2, 6, 4)), "v": np.zeros((2, 6, 4))}, ValueError, "heads"),
        ({"mask": np.ones((5, 7), bool)}, ValueError, r"mask must broadcast to the probabilities' shape"),
        ({"mask": np.ones((5, 6), np.int64)}, TypeError, "mask must be a bool or floating-point array"),
        ({"scale": "1"}, TypeError, "scale must be a real number or None"),
        ({"q": np.zeros((5, 4), np.int32)}, TypeError, "q must be a floating-point array"),
        ({"global_shape": (5, 6)}, ValueError, "global_shape and offsets go together"),
        ({"global_shape": (5, 6), "offsets": (1, 0)}, ValueError, "the shard runs past global_shape"),
        ({"seed": -1}, ValueError, r"seed must be an integer in \[0, 2\*\*64\)"),
    ],
)
def test_bad_input_is_named(kwargs, error, match):
    arguments = {"q": np.zeros((5, 4)), "k": np.zeros((6, 4)), "v": np.zeros((6, 4)), "p": 0.1, "seed": 0}
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        attention(arguments.pop("q"), arguments.pop("k"), arguments.pop("v"), **arguments)
