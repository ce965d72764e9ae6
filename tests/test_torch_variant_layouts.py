"""The torch face's broadcast path on every layout it takes, against the reference, byte for byte.

Channel, locked, drop-path and alpha dropout apply their mask with the broadcast kernel over the input's
memory order; these tests feed it what the layers meet: contiguous, channels_last and strided inputs,
the expanded scalar a ``sum`` gives backward, inf and NaN, every float dtype, and sizes that take the
threads. The oracle is ``dropkit.keep_mask`` and :func:`dropkit.kernels.reference.apply_keep`.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import dropkit  # noqa: E402
from dropkit.kernels import reference  # noqa: E402
from dropkit.noise import alpha_constants  # noqa: E402
from dropkit.torch import functional as F  # noqa: E402
from torch_common import DTYPES  # noqa: E402

SEED, STREAM, P = 2**63 + 7, 3, 0.4


def expected(x: torch.Tensor, mask_shape: tuple[int, ...], alpha: bool = False) -> torch.Tensor:
    """The reference's output for ``x`` (any layout; bfloat16 through float32) as a contiguous tensor."""
    keep = dropkit.keep_mask(mask_shape, P, seed=SEED, stream=STREAM)
    a, offset, dropped = alpha_constants(P) if alpha else (1 / (1 - P), None, 0.0)
    wide = x.detach().float() if x.dtype in (torch.float16, torch.bfloat16) else x.detach()
    y = reference.apply_keep(wide.contiguous().numpy(), keep, a, offset=offset, dropped=dropped)
    return torch.from_numpy(y).to(x.dtype)


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bytes at every logical index (so NaN, inf and the sign of zero count)."""
    bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
    return a.dtype == b.dtype and bool((a.contiguous().view(bits) == b.contiguous().view(bits)).all())


def inputs(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    x.view(-1)[:4] = torch.tensor([float("inf"), float("nan"), -0.0, -1.0]).to(dtype)
    return x


CASES = {  # name: (call, mask shape of an input of shape)
    "dropout2d": (lambda x: F.dropout2d(x, P, seed=SEED, stream=STREAM), lambda s: (*s[:2], 1, 1)),
    "locked": (lambda x: F.locked_dropout(x, P, seed=SEED, stream=STREAM), lambda s: (1, *s[1:])),
    "drop_path": (lambda x: F.drop_path(x, P, seed=SEED, stream=STREAM), lambda s: (s[0], 1, 1, 1)),
    "feature_alpha": (
        lambda x: F.feature_alpha_dropout(x, P, True, seed=SEED, stream=STREAM),
        lambda s: (*s[:2], 1, 1),
    ),
}


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_every_layout_gives_the_references_bytes(name, dtype, layout):
    call, mask_shape_of = CASES[name]
    x = inputs((4, 6, 5, 3), dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        x = inputs((4, 6, 5, 6), dtype)[..., ::2]
    y = call(x)
    assert same(y, expected(x, mask_shape_of(tuple(x.shape)), alpha=name == "feature_alpha"))
    if layout == "channels_last":  # dense in the input's stride order, as torch's own ops
        assert y.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("shape", [(4, 6, 5, 3), (4, 64, 32, 16)], ids=["small", "threaded"])
def test_the_gradient_of_a_sum_is_the_mask_times_the_scale(name, shape):
    call, mask_shape_of = CASES[name]
    x = inputs(shape, torch.float32).requires_grad_()
    y = call(x)
    assert same(y, expected(x, mask_shape_of(shape), alpha=name == "feature_alpha"))
    y.sum().backward()  # the upstream gradient is an expanded scalar, read as one value
    keep = torch.from_numpy(dropkit.keep_mask(mask_shape_of(shape), P, seed=SEED, stream=STREAM))
    scale = alpha_constants(P)[0] if name == "feature_alpha" else 1 / (1 - P)
    gradient = torch.where(keep, torch.tensor(np.float32(scale)), torch.tensor(0.0)).expand(shape)
    assert same(x.grad, gradient.contiguous())


def test_float64_threaded_channel_dropout_is_the_references():
    x = inputs((2, 64, 32, 32), torch.float64)
    assert same(F.dropout2d(x, P, seed=SEED, stream=STREAM), expected(x, (2, 64, 1, 1)))
