"""Attention dropout for PyTorch: ``scaled_dot_product_attention`` whose mask is the contract's, never stored.

``torch.nn.functional.scaled_dot_product_attention`` with ``dropout_p > 0`` runs, on CPU, the math path
that materializes the ``(*batch, H, L, S)`` probabilities and their mask, and its masks differ between
backends. This drop-in draws the mask of :func:`dropkit.attention` (the contract's keep bits over the
logical probability tensor's flat index) and keeps ``O(B·H·L)`` beyond the inputs: the output and one
log-sum-exp per query row. Backward recomputes the probabilities and regenerates the mask tile by tile
(:mod:`dropkit.torch._attention_ops`): CPU tiles with torch's matmuls and dropkit's fused CPU kernel,
a Triton flash-attention kernel on CUDA.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from dropkit._validation import check_probability
from dropkit.torch import _ops, _placement
from dropkit.torch._attention_ops import attention_op
from dropkit.torch._base import Stochastic
from dropkit.torch._checks import FLOAT_DTYPES, check_seed_and_stream

__all__ = ["ScaledDotProductAttention", "scaled_dot_product_attention"]

Attend = Callable[[int | None, int | Tensor], Tensor]  # (seed, stream) -> output, every check done


def _check_tensors(query: Any, key: Any, value: Any) -> None:
    for name, x in (("query", query), ("key", key), ("value", value)):
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dtype not in FLOAT_DTYPES:
            raise TypeError(
                f"{name} must be a floating-point tensor (float16, bfloat16, float32 or float64), "
                f"got {x.dtype}"
            )
        if x.dim() < 2:
            raise ValueError(f"{name} must have shape (..., positions, features), got {tuple(x.shape)}")
    if not query.dtype == key.dtype == value.dtype:
        raise TypeError(
            "Expected query, key, and value to have the same dtype, but got query.dtype: "
            f"{query.dtype}, key.dtype: {key.dtype} and value.dtype: {value.dtype} instead."
        )
    if not query.device == key.device == value.device:
        raise ValueError(
            f"query, key and value must be on one device, got {query.device}, {key.device}, {value.device}"
        )
    if key.shape[-1] != query.shape[-1] or value.shape[:-1] != key.shape[:-1]:
        raise ValueError(
            "key must have query's feature size and value key's shape up to its last dim, got query "
            f"{tuple(query.shape)}, key {tuple(key.shape)}, value {tuple(value.shape)}"
        )


def _lead_shapes(query: Tensor, key: Tensor, enable_gqa: bool) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(lead, lead_kv)``: the broadcast dims before ``(L, ·)`` of the queries and of the keys/values."""
    q_lead, k_lead = tuple(query.shape[:-2]), tuple(key.shape[:-2])
    heads = None
    if enable_gqa and query.dim() >= 3 and key.dim() >= 3 and k_lead[-1] != q_lead[-1]:
        if q_lead[-1] % k_lead[-1]:
            raise ValueError(
                f"enable_gqa: query's {q_lead[-1]} heads (dim -3) must be a multiple of key's {k_lead[-1]}"
            )
        heads, k_lead = k_lead[-1], (*k_lead[:-1], q_lead[-1])
    try:
        lead = tuple(torch.broadcast_shapes(q_lead, k_lead))
    except RuntimeError:
        raise ValueError(
            f"query's and key's batch dims do not broadcast: {tuple(query.shape)} and {tuple(key.shape)} "
            "(different head counts need enable_gqa=True)"
        ) from None
    return lead, lead if heads is None else (*lead[:-1], heads)


def _check_mask(attn_mask: Any, shape: tuple[int, ...], is_causal: bool, query: Tensor) -> None:
    if attn_mask is None:
        return
    if not isinstance(attn_mask, Tensor):
        raise TypeError(f"attn_mask must be a torch.Tensor or None, got {type(attn_mask).__name__}")
    if is_causal:
        raise ValueError(
            "_scaled_dot_product_attention: Explicit attn_mask should not be set when is_causal=True"
        )
    if attn_mask.dtype != torch.bool and not attn_mask.is_floating_point():
        raise TypeError(f"attn_mask must be a bool or floating-point tensor, got {attn_mask.dtype}")
    if attn_mask.device != query.device:
        raise ValueError(f"attn_mask must be on query's device {query.device}, got {attn_mask.device}")
    try:
        fits = tuple(torch.broadcast_shapes(tuple(attn_mask.shape), shape)) == shape
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(
            f"attn_mask must broadcast to the attention probabilities' shape {shape}, "
            f"got {tuple(attn_mask.shape)}"
        )


def _check_scale(scale: Any, features: int) -> float:
    if scale is None:
        return 1.0 / math.sqrt(features)
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a real number or None, got {type(scale).__name__}")
    return float(scale)


def plan(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | None,
    dropout_p: float,
    is_causal: bool,
    scale: float | None,
    enable_gqa: bool,
    global_shape: Sequence[int] | None,
    offsets: Sequence[int] | None,
) -> Attend:
    """Check every argument, then return ``attend(seed, stream)``, which draws nothing until it runs."""
    p = check_probability(dropout_p, "dropout_p")
    _check_tensors(query, key, value)
    if _placement.is_dtensor(query) or _placement.is_dtensor(key):
        raise TypeError(
            "DTensor inputs are not supported: pass the local tensors with global_shape and offsets"
        )
    lead, lead_kv = _lead_shapes(query, key, enable_gqa)
    L, S = query.shape[-2], key.shape[-2]
    probabilities = (*lead, L, S)
    _check_mask(attn_mask, probabilities, is_causal, query)
    factor = _check_scale(scale, query.shape[-1])
    is_causal = bool(is_causal)
    # The probabilities' place (explicit, or under data_parallel): a meta tensor has their shape, no storage.
    location = _placement.locate(torch.empty(probabilities, device="meta"), global_shape, offsets)
    shard = None if location is None else location.shard
    global_probabilities = probabilities if shard is None else shard.global_shape
    place = (0,) * len(probabilities) if shard is None else shard.offsets
    if p == 0.0 and not (is_causal and any(place[-2:])):  # no dropout, no global causality: torch's own
        return lambda seed, stream: torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask, 0.0, is_causal, scale=scale, enable_gqa=enable_gqa
        )
    q = query.expand(*lead, L, query.shape[-1])
    k = key.expand(*lead_kv, S, key.shape[-1])
    v = value.expand(*lead_kv, S, value.shape[-1])

    def attend(seed: int | None, stream: int | Tensor) -> Tensor:
        if location is not None:
            stream = location.stream(stream)  # the rank folded in under independent_masks
        key_tensor = _ops.key_tensor(seed, stream) if p > 0.0 else _ops.key_tensor(0, 0)
        output, _ = attention_op(
            q, k, v, attn_mask, key_tensor, p, factor, is_causal, list(global_probabilities), list(place)
        )
        return output

    return attend


def scaled_dot_product_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
    *,
    seed: int | None = None,
    stream: int | None = None,
    global_shape: Sequence[int] | None = None,
    offsets: Sequence[int] | None = None,
) -> Tensor:
    """Drop-in for ``torch.nn.functional.scaled_dot_product_attention`` with the contract's dropout mask.

    ``softmax(query keyᵀ · scale + attn_mask) ⊙ D`` times ``value``, with
    ``D = keep_mask((*batch, H, L, S), dropout_p, seed, stream) / (1 - dropout_p)`` -- the mask and
    result of :func:`dropkit.attention`. As torch's, it drops whenever ``dropout_p > 0`` (use
    :class:`ScaledDotProductAttention` for a module that drops only in training); at ``dropout_p == 0``
    it is torch's own function, unless a shard's causal mask needs global positions.

    Args:
        query: ``(*batch, H, L, E)``; key ``(*batch, H_kv, S, E)``; value ``(*batch, H_kv, S, Ev)``. Batch
            dims broadcast; ``H_kv`` must equal ``H`` (or broadcast) unless ``enable_gqa``.
        attn_mask: bool (True takes part) or float (added to the scores), broadcastable to
            ``(*batch, H, L, S)``; a float mask that requires grad gets its gradient. Not with ``is_causal``.
        dropout_p: probability of *dropping* an attention probability, in [0, 1].
        is_causal: query ``i`` sees keys ``j <= i`` (top-left aligned, as torch); for a shard, positions
            are global: key ``j0 + j`` is visible to query ``i0 + i`` iff ``j0 + j <= i0 + i``.
        scale: factor on the scores; ``None`` is ``1 / sqrt(E)``.
        enable_gqa: grouped-query attention: query head ``h`` uses key/value head ``h // (H / H_kv)``.
        seed: unsigned 64-bit seed naming the mask; ``None`` draws a fresh 63-bit seed from torch's default
            CPU generator when ``dropout_p > 0`` (``torch.manual_seed`` reproduces it).
        stream: unsigned 64-bit stream (default 0); needs an explicit ``seed``.
        global_shape, offsets: these probabilities are the slice at ``offsets`` of a probability tensor of
            ``global_shape`` (a query shard of sequence parallelism: ``(0, 0, i0, 0)``), and draw that
            slice of its mask. Softmax normalizes over the keys given.

    Shape: returns ``(*batch, H, L, Ev)`` in query's dtype; the softmax is computed in float32 (float64
    for float64).

    >>> q = k = torch.zeros(2, 1); v = torch.tensor([[1.0], [3.0]])
    >>> scaled_dot_product_attention(q, k, v, dropout_p=0.5, seed=0)  # dropkit.attention's mask and output
    tensor([[3.],
            [4.]])
    """
    attend = plan(
        query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, global_shape, offsets
    )
    return attend(*check_seed_and_stream(seed, stream))


class ScaledDotProductAttention(Stochastic):
    """Attention with dropout on its probabilities in training only; see :func:`scaled_dot_product_attention`.

    Randomness as :class:`dropkit.torch.Dropout`: with ``seed=None`` each training call draws a fresh seed
    from torch's default CPU generator (stream 0); with an explicit ``seed`` the k-th training call uses
    stream k (also at ``dropout_p == 0``; a rejected call does not count). Eval mode never drops (unlike
    torch's function, which drops even in eval).

    Args:
        dropout_p: probability of *dropping* an attention probability, in [0, 1].
        seed: unsigned 64-bit seed, or ``None`` to follow torch's default generator.

    Shape: query ``(*batch, H, L, E)``, key ``(*batch, H_kv, S, E)``, value ``(*batch, H_kv, S, Ev)``;
    output ``(*batch, H, L, Ev)``.

    >>> attention = ScaledDotProductAttention(0.5, seed=0)
    >>> q = k = torch.zeros(2, 1); v = torch.tensor([[1.0], [3.0]])
    >>> attention(q, k, v).flatten().tolist(), attention.calls
    ([3.0, 4.0], 1)
    >>> attention.eval()(q, k, v).flatten().tolist(), attention.calls
    ([2.0, 2.0], 1)
    """

    def __init__(self, dropout_p: float = 0.0, *, seed: int | None = None) -> None:
        super().__init__(check_probability(dropout_p, "dropout_p"), seed=seed)

    @property
    def p(self) -> float:
        """The base's name for ``dropout_p`` (what :func:`dropkit.torch.mc_dropout` and schedules read)."""
        return self.dropout_p

    @p.setter
    def p(self, value: float) -> None:
        self.dropout_p = value

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        scale: float | None = None,
        enable_gqa: bool = False,
        *,
        global_shape: Sequence[int] | None = None,
        offsets: Sequence[int] | None = None,
    ) -> Tensor:
        """Attention of ``query`` over ``key``/``value``, dropping probabilities in training."""
        check_probability(self.dropout_p, "dropout_p")  # it may have been reassigned (a schedule)
        p = self.dropout_p if self.training else 0.0
        attend = plan(query, key, value, attn_mask, p, is_causal, scale, enable_gqa, global_shape, offsets)
        if not self.training or self.seed is None:
            return attend(None, 0)
        return self._counted(attend(self.seed, self._stream()))

    def extra_repr(self) -> str:
        return f"dropout_p={self.dropout_p}{self._seed_repr()}"
