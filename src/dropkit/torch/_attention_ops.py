"""The attention-dropout custom ops: forward and backward, one implementation per device, fakes, autograd.

``dropkit::attention(q, k, v, bias, key, p, scale, causal, global_shape, offsets) -> (Y, lse)`` is
scaled dot-product attention with the contract's dropout on its probabilities (see
:mod:`dropkit.attention`): ``(seed, stream)`` travel as the 2-element int64 ``key`` of
:func:`dropkit.torch._ops.key_tensor`, so a seed drawn per call or a module's call counter stays a run-time
value under ``torch.compile``. ``global_shape``/``offsets`` place the ``(*lead, L, S)`` probabilities in
the logical tensor whose flat index the mask follows.

Autograd saves ``q, k, v``, the output ``Y`` and the per-row log-sum-exp ``lse`` (``(*lead, L)``, float32)
and the key; ``dropkit::attention_backward`` recomputes the probabilities and regenerates the mask tile by
tile. Double backward is not supported.
"""

from __future__ import annotations

import importlib.util
from types import ModuleType

import torch
from torch import Tensor

from dropkit.torch import _attention_cpu, _ops
from dropkit.torch._checks import wide_of

__all__ = ["attention_backward_op", "attention_op"]


def _implementation(device: torch.device) -> ModuleType:
    """The module with ``forward``/``backward`` for ``device``: CPU tiles, or the Triton kernels."""
    if device.type == "cpu":
        return _attention_cpu
    if device.type != "cuda":
        raise RuntimeError(f"dropkit.torch attention supports CPU and CUDA tensors, got a tensor on {device}")
    try:
        from dropkit.torch import _attention_triton
    except ImportError as error:
        if importlib.util.find_spec("triton") is None:
            raise RuntimeError(
                "dropkit.torch attention on CUDA tensors needs triton (pip install triton), not installed"
            ) from error
        raise
    return _attention_triton


@torch.library.custom_op("dropkit::attention", mutates_args=())
def attention_op(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    bias: Tensor | None,
    key: Tensor,
    p: float,
    scale: float,
    causal: bool,
    global_shape: list[int],
    offsets: list[int],
) -> tuple[Tensor, Tensor]:
    """``(Y, lse)``: attention with dropout on the probabilities, and each score row's log-sum-exp."""
    seed, stream = _ops.unpack_key(key)
    return _implementation(q.device).forward(
        q, k, v, bias, p, seed, stream, scale, causal, global_shape, offsets
    )


@attention_op.register_fake
def _attention_fake(q, k, v, bias, key, p, scale, causal, global_shape, offsets):
    out = q.new_empty((*q.shape[:-1], v.shape[-1]))
    return out, q.new_empty(q.shape[:-1], dtype=wide_of(q.dtype))


@torch.library.custom_op("dropkit::attention_backward", mutates_args=())
def attention_backward_op(
    grad: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    bias: Tensor | None,
    out: Tensor,
    lse: Tensor,
    key: Tensor,
    p: float,
    scale: float,
    causal: bool,
    global_shape: list[int],
    offsets: list[int],
    bias_grad: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(dQ, dK, dV, dBias)``, the mask regenerated from ``key``; ``dBias`` is empty unless ``bias_grad``."""
    seed, stream = _ops.unpack_key(key)
    return _implementation(q.device).backward(
        grad, q, k, v, bias, out, lse, p, seed, stream, scale, causal, global_shape, offsets, bias_grad
    )


@attention_backward_op.register_fake
def _attention_backward_fake(
    grad, q, k, v, bias, out, lse, key, p, scale, causal, global_shape, offsets, bias_grad
):
    dbias = bias.new_empty(bias.shape) if bias_grad else q.new_empty(0)
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape), dbias


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, bias, key, ctx.p, ctx.scale, ctx.causal, ctx.global_shape, ctx.offsets = inputs
    out, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(q, k, v, bias, out, lse, key)


def _backward(ctx, grad: Tensor, _grad_lse: Tensor | None):
    q, k, v, bias, out, lse, key = ctx.saved_tensors
    bias_grad = bool(ctx.needs_input_grad[3])
    dq, dk, dv, dbias = attention_backward_op(
        grad, q, k, v, bias, out, lse, key, ctx.p, ctx.scale, ctx.causal, ctx.global_shape, ctx.offsets,
        bias_grad,
    )  # fmt: skip
    return dq, dk, dv, dbias if bias_grad else None, None, None, None, None, None, None


attention_op.register_autograd(_backward, setup_context=_setup_context)
