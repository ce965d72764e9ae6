"""The custom ops of the torch face: one kernel call per device, a fake implementation, and autograd.

``dropkit::dropout(x, p, seed, stream, scale, start)`` returns ``x * keep * scale`` with the
contract's mask over ``x``'s logical row-major index (plus ``start``, the flat index of ``x[0...]``
in a larger tensor; 0 unless a caller shards). Seeds, streams and starts are unsigned 64-bit in the
contract and cross the op boundary as the int64 with the same bits (``_checks.to_signed``). Its
derivative in ``x`` is ``keep * scale``, so
backward is the same op applied to the gradient: autograd keeps ``(p, seed, stream, scale,
start)`` as Python numbers and no tensor, and double backward comes for free. Every other op here is
*self-adjoint* the same way except alpha dropout (``dy/dx = keep * a``); :func:`_self_adjoint`
registers their backward, :func:`_fake_like_input` their fake (meta) implementation.

Under ``torch.compile`` a seed drawn per call (``seed=None``) or a module's call counter is a run-
time value, not a constant that can be baked into the graph. Those calls use the *keyed* ops, which
take ``(seed, stream)`` as a 2-element int64 CPU tensor (:func:`key_tensor`) and save that 16-byte
key for backward; ``dropkit::draw_seed_`` fills a seed tensor from torch's default CPU generator at
run time, exactly as the eager path draws it, so compiled and eager runs agree.

The variants' ops (``shaped_dropout``, ``gaussian_dropout``, ``drop_block2d``, ``alpha_dropout``)
draw their mask on the CPU with the kernels the NumPy face uses (:mod:`dropkit.kernels`,
:mod:`dropkit.noise`, :mod:`dropkit.dropblock`) -- one entry per channel, sequence or sample -- and
apply it in one pass there, or with torch ops on another device (:mod:`._masks`). An eager call on an
unplaced input takes them with ``(seed, stream)`` as numbers (:func:`numbers_key`), no key tensor.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from dropkit.dropblock import drop_block_keep
from dropkit.noise import alpha_constants, gaussian_noise
from dropkit.sharding import Shard
from dropkit.torch import _cpu, _function, _launch, _masks
from dropkit.torch._checks import to_signed, to_unsigned, wide_of
from dropkit.torch._function import MaskCall, eager

__all__ = [
    "alpha_dropout",
    "alpha_dropout_op",
    "bernoulli",
    "draw_seed_op",
    "drop_block2d_op",
    "dropout_keyed_op",
    "dropout_op",
    "dropout_sharded_op",
    "fresh_seed",
    "gaussian_dropout_op",
    "key_tensor",
    "mask_args",
    "numbers_key",
    "shaped_dropout",
    "shaped_dropout_op",
    "take_call_op",
    "unpack_key",
]

fresh_seed = _function.draw_seed


def unpack_key(key: Tensor) -> tuple[int, int]:
    """The unsigned ``(seed, stream)`` of an int64 key tensor of shape ``(2,)`` (see :func:`key_tensor`)."""
    seed, stream = key.tolist()
    return to_unsigned(seed), to_unsigned(stream)


def _fake_like_input(op) -> None:
    """Register ``op``'s fake: an output of ``x``'s shape, dtype, device and stride order."""

    def fake(x: Tensor, *args) -> Tensor:
        return _launch.empty_dense_like(x)

    op.register_fake(fake)


_SAVED = object()  # stands for a tensor argument kept by save_for_backward


def _self_adjoint(op) -> None:
    """Register autograd for ``op(x, *args)`` whose derivative in ``x`` is ``op`` itself, same ``args``.

    Tensor arguments (the 16-byte ``(seed, stream)`` key) are saved for backward; numbers are kept on
    ``ctx``. No mask is saved: backward regenerates it.
    """

    def setup_context(ctx, inputs, output) -> None:
        args = inputs[1:]
        ctx.save_for_backward(*(a for a in args if isinstance(a, Tensor)))
        ctx.args = [_SAVED if isinstance(a, Tensor) else a for a in args]

    def backward(ctx, grad: Tensor):
        saved = iter(ctx.saved_tensors)
        args = [next(saved) if a is _SAVED else a for a in ctx.args]
        return op(grad, *args), *(None for _ in args)

    op.register_autograd(backward, setup_context=setup_context)


# --- dropout: the fused kernels ----------------------------------------------------------------


def _keyed(impl):
    """A keyed op's body: ``impl(x, seed, stream, *rest)`` with ``(seed, stream)`` from the key tensor."""

    def body(x: Tensor, key: Tensor, *rest):
        return impl(x, *unpack_key(key), *rest)

    return body


def _eager_keyed(custom, impl):
    """The public form of a keyed self-adjoint op: the eager Function, else the custom op ``custom``.

    A key made by :func:`key_tensor` for ``seed=None`` is marked ``drawn`` (vmap's randomness applies).
    """

    def op(x: Tensor, key: Tensor, *rest) -> Tensor:
        if not eager(x):
            return custom(x, key, *rest)
        seed, stream = unpack_key(key)
        drawn = getattr(key, "drawn", False)
        return _function.apply(MaskCall(impl, None, seed, stream, rest, drawn), x)

    op.__doc__ = custom.__doc__
    op.custom = custom  # the torch.library op itself (opcheck, tracers)
    return op


def _dropout_impl(
    x: Tensor, seed: int, stream: int, p: float, scale: float, start: int, out: Tensor | None = None
) -> Tensor:
    """``x * keep * scale``; ``out=x`` writes it into ``x`` (dense ``x`` in place, else through a copy)."""
    start = to_unsigned(start)  # int64 at the op boundary (to_unsigned leaves an unsigned value as it is)
    if out is not None:
        return _launch.apply_in_place(x, p, seed, stream, scale, start)
    if not x.is_contiguous() and _launch.stride_order(x) == list(range(x.dim() - 1, -1, -1)):
        x = x.contiguous()  # the output is row-major anyway (an expanded gradient, a slice)
    out = _cpu.fused(x, p, seed, stream, scale, start)
    return _launch.apply(x, p, seed, stream, scale, start) if out is None else out


def _dropout_sharded_impl(
    x: Tensor, seed: int, stream: int, p: float, scale: float, global_shape: list[int], offsets: list[int]
) -> Tensor:
    shard = Shard(tuple(global_shape), tuple(offsets), tuple(x.shape))
    if x.numel() == 0:
        return _launch.empty_dense_like(x)
    return _launch.apply_shard(x, p, seed, stream, scale, shard)


@torch.library.custom_op("dropkit::dropout", mutates_args=())
def _dropout_custom(x: Tensor, p: float, seed: int, stream: int, scale: float, start: int) -> Tensor:
    """``x * keep * scale``; ``seed`` and ``stream`` as int64 (see ``_checks.to_signed``)."""
    return _dropout_impl(x, to_unsigned(seed), to_unsigned(stream), p, scale, start)


def dropout_op(
    x: Tensor,
    p: float,
    seed: int,
    stream: int,
    scale: float,
    start: int,
    *,
    drawn: bool = False,
    inplace: bool = False,
) -> Tensor:
    """``x * keep * scale``; ``seed`` and ``stream`` as int64 (see ``_checks.to_signed``); ``drawn``: the
    seed was drawn for this call (``seed=None``). Eagerly the Function of :mod:`._function`, which calls
    the kernel directly (``inplace``: into ``x``, returned); else ``dropkit::dropout``, a new tensor."""
    if not eager(x):
        return _dropout_custom(x, p, seed, stream, scale, start)
    call = MaskCall(_dropout_impl, None, to_unsigned(seed), to_unsigned(stream), (p, scale, start), drawn)
    return _function.apply(call, x, inplace)


dropout_op.custom = _dropout_custom  # the torch.library op itself (opcheck, tracers)


@torch.library.custom_op("dropkit::dropout_keyed", mutates_args=())
def _dropout_keyed_custom(x: Tensor, key: Tensor, p: float, scale: float, start: int) -> Tensor:
    """``dropkit::dropout`` with ``(seed, stream)`` given as an int64 CPU tensor of shape ``(2,)``."""
    return _keyed(_dropout_impl)(x, key, p, scale, start)


@torch.library.custom_op("dropkit::dropout_sharded", mutates_args=())
def _dropout_sharded_custom(
    x: Tensor, key: Tensor, p: float, scale: float, global_shape: list[int], offsets: list[int]
) -> Tensor:
    """``x * keep * scale`` where ``x`` sits at ``offsets`` in a tensor of ``global_shape``: the shard's
    runs of global indexes, each through the fused kernel."""
    return _keyed(_dropout_sharded_impl)(x, key, p, scale, global_shape, offsets)


dropout_keyed_op = _eager_keyed(_dropout_keyed_custom, _dropout_impl)
dropout_sharded_op = _eager_keyed(_dropout_sharded_custom, _dropout_sharded_impl)


for _op in (_dropout_custom, _dropout_keyed_custom, _dropout_sharded_custom):
    _fake_like_input(_op)
    _self_adjoint(_op)


# A mutating op, so the compiler neither merges two draws (CSE) nor drops one; the
# nondeterministic_seeded tag keeps draws in program order.
@torch.library.custom_op(
    "dropkit::draw_seed_", mutates_args=("out",), tags=(torch.Tag.nondeterministic_seeded,)
)
def draw_seed_op(out: Tensor) -> None:
    """Fill the int64 scalar tensor ``out`` with :func:`fresh_seed`."""
    out.fill_(fresh_seed())


@draw_seed_op.register_fake
def _draw_seed_fake(out: Tensor) -> None:
    return None


@torch.library.custom_op("dropkit::take_call_", mutates_args=("calls",))
def take_call_op(calls: Tensor) -> Tensor:
    """This call's stream: the int64 scalar counter ``calls``, returned as it was, then advanced by one.

    For ``torch.jit.trace``, which keeps a module's counter as a constant shared with the module: a
    recorded op reads and advances it each time the traced graph runs (an ``add_`` would be dropped).
    """
    stream = calls.clone()
    calls.add_(1)
    return stream


@take_call_op.register_fake
def _take_call_fake(calls: Tensor) -> Tensor:
    return torch.empty_like(calls)


def key_tensor(seed: int | None, stream: int | Tensor) -> Tensor:
    """``(seed, stream)`` as the keyed ops' int64 CPU tensor of shape ``(2,)``, both reinterpreted
    signed; ``seed=None`` draws a fresh seed when the (compiled) graph runs."""
    if seed is None and not isinstance(stream, Tensor) and _function.eager_context():
        key = torch.tensor([fresh_seed(), to_signed(stream)])
        key.drawn = True  # the keyed ops' vmap rule honours randomness= for a seed drawn per call
        return key
    if seed is None:
        seed_t = torch.empty((), dtype=torch.int64)
        draw_seed_op(seed_t)
    else:
        seed_t = torch.tensor(to_signed(seed))
    stream_t = stream if isinstance(stream, Tensor) else torch.tensor(to_signed(stream))
    return torch.stack((seed_t, stream_t))


# --- the variants: a mask drawn by the kernels, applied in one pass (:mod:`._masks`) ----------------


def _mask(mask_shape: list[int], mask_global_shape: list[int], mask_offsets: list[int]) -> Shard:
    """The mask's :class:`~dropkit.sharding.Shard` an op's list arguments spell out (ops take lists)."""
    return _masks.shard(tuple(mask_global_shape), tuple(mask_offsets), tuple(mask_shape))


def mask_args(mask: Shard) -> tuple[list[int], list[int], list[int]]:
    """A mask shard as the ops' ``(mask_shape, mask_global_shape, mask_offsets)`` list arguments."""
    return list(mask.local_shape), list(mask.global_shape), list(mask.offsets)


def _masked(
    x: Tensor, seed: int, stream: int, p: float, mask: Shard, scale: float, **affine: float
) -> Tensor:
    """``keep ? x * scale (+ offset) : dropped`` with ``mask``'s decisions: one kernel call where it
    can, else the mask drawn (``Shard.keep_mask``) and applied."""
    out = _masks.draw_and_apply(x, p, seed, stream, mask, scale, **affine)
    if out is None:
        _masks.follow_threads(mask.size)
        out = _masks.apply_keep(x, mask.keep_mask(p, seed=seed, stream=stream), scale, **affine)
    return out


def _shaped(x: Tensor, seed: int, stream: int, p: float, scale: float, mask: Shard) -> Tensor:
    """``x * keep * scale`` with ``mask``'s decisions: the fused kernel for a full-shape mask (one range,
    or a shard's runs), else the broadcast kernel."""
    if mask.local_shape == x.shape:
        start = _masks.start(mask)
        if start is not None:
            return _dropout_impl(x, seed, stream, p, scale, start)
        return _dropout_sharded_impl(x, seed, stream, p, scale, *mask_args(mask)[1:])
    return _masked(x, seed, stream, p, mask, scale)


@torch.library.custom_op("dropkit::shaped_dropout", mutates_args=())
def _shaped_dropout_custom(
    x: Tensor,
    key: Tensor,
    p: float,
    scale: float,
    mask_shape: list[int],
    mask_global_shape: list[int],
    mask_offsets: list[int],
) -> Tensor:
    """``x * keep * scale`` with ``keep`` the mask shard's keep decisions broadcast to ``x``."""
    return _keyed(_shaped_dropout_impl)(x, key, p, scale, mask_shape, mask_global_shape, mask_offsets)


def _shaped_dropout_impl(x, seed, stream, p, scale, mask_shape, mask_global_shape, mask_offsets) -> Tensor:
    return _masked(x, seed, stream, p, _mask(mask_shape, mask_global_shape, mask_offsets), scale)


shaped_dropout_op = _eager_keyed(_shaped_dropout_custom, _shaped_dropout_impl)


def numbers_key(
    x: Tensor, located: bool, seed: int | None, stream: int | Tensor
) -> tuple[int, int, bool] | None:
    """``(seed, stream, drawn)`` as unsigned numbers for an eager call (:func:`._function.eager`) on an
    input ``x`` that nothing places (``located`` False), drawing a fresh seed for ``seed=None``; None
    where the keyed ops take the call (a placed input, a tracer or compiler, a tensor subclass)."""
    if located or isinstance(stream, Tensor) or not eager(x):
        return None
    return (fresh_seed(), stream, True) if seed is None else (seed, stream, False)


def shaped_dropout(
    x: Tensor, p: float, seed: int, stream: int, scale: float, mask: Shard, *, drawn: bool = False
) -> Tensor:
    """``x * keep * scale`` with ``mask``'s decisions for the unsigned ``(seed, stream)`` of
    :func:`numbers_key` (an eager call: the Function of :mod:`._function` around the kernels, no key
    tensor); ``drawn``: the seed was drawn for this call."""
    return _function.apply(MaskCall(_shaped, None, seed, stream, (p, scale, mask), drawn), x)


def bernoulli(x: Tensor, key: Tensor, p: float, scale: float, mask: Shard) -> Tensor:
    """``x * keep * scale`` with ``mask``'s keep decisions: the fused kernels for a full-shape mask,
    else the broadcast mask."""
    if mask.local_shape == tuple(x.shape):
        if mask.start is not None:
            return dropout_keyed_op(x, key, p, scale, to_signed(mask.start))
        return dropout_sharded_op(x, key, p, scale, list(mask.global_shape), list(mask.offsets))
    return shaped_dropout_op(x, key, p, scale, *mask_args(mask))


@torch.library.custom_op("dropkit::gaussian_dropout", mutates_args=())
def _gaussian_dropout_custom(
    x: Tensor, key: Tensor, p: float, global_shape: list[int], offsets: list[int]
) -> Tensor:
    """``x * eps``, ``eps`` the slice at ``offsets`` of ``gaussian_noise(global_shape, p, seed, stream)``,
    formed in float32/float64."""
    return _keyed(_gaussian_dropout_impl)(x, key, p, global_shape, offsets)


def _gaussian_dropout_impl(x, seed, stream, p, global_shape, offsets) -> Tensor:
    wide = wide_of(x.dtype)
    shape = tuple(x.shape)
    sharded = {} if tuple(global_shape) == shape else {"global_shape": global_shape, "offsets": offsets}
    _masks.follow_threads(x.numel())
    noise = torch.from_numpy(gaussian_noise(shape, p, seed=seed, stream=stream, **sharded))
    return torch.mul(x.to(wide), noise.to(wide).to(x.device), out=_launch.new_output(x))


@torch.library.custom_op("dropkit::drop_block2d", mutates_args=())
def _drop_block2d_custom(
    x: Tensor, key: Tensor, p: float, block_size: int, gamma_scale: float, batchwise: bool
) -> Tensor:
    """``x * keep * numel / kept`` with ``keep = drop_block_keep(x.shape, ...)``; zeros if nothing is kept."""
    return _keyed(_drop_block2d_impl)(x, key, p, block_size, gamma_scale, batchwise)


def _drop_block2d_impl(x, seed, stream, p, block_size, gamma_scale, batchwise) -> Tensor:
    options = {"block_size": block_size, "gamma_scale": gamma_scale, "batchwise": batchwise}
    _masks.follow_threads(x.numel())
    keep = drop_block_keep(tuple(x.shape), p, seed=seed, stream=stream, **options)
    kept = int(np.count_nonzero(keep))
    return _masks.apply_keep(x, keep, keep.size / kept if kept else 1.0)


for _op in (_shaped_dropout_custom, _gaussian_dropout_custom, _drop_block2d_custom):
    _fake_like_input(_op)
    _self_adjoint(_op)
gaussian_dropout_op = _eager_keyed(_gaussian_dropout_custom, _gaussian_dropout_impl)
drop_block2d_op = _eager_keyed(_drop_block2d_custom, _drop_block2d_impl)


@torch.library.custom_op("dropkit::alpha_dropout", mutates_args=())
def _alpha_dropout_custom(
    x: Tensor,
    key: Tensor,
    p: float,
    mask_shape: list[int],
    mask_global_shape: list[int],
    mask_offsets: list[int],
) -> Tensor:
    """``keep ? a x + a alpha' p : -a alpha' (1 - p)``, ``keep`` the mask shard's, ``p < 1``."""
    return _keyed(_alpha_dropout_impl)(x, key, p, mask_shape, mask_global_shape, mask_offsets)


def _alpha(x: Tensor, seed: int, stream: int, p: float, mask: Shard) -> Tensor:
    a, kept_offset, dropped_value = alpha_constants(p)
    return _masked(x, seed, stream, p, mask, a, offset=kept_offset, dropped=dropped_value)


def _alpha_dropout_impl(x, seed, stream, p, mask_shape, mask_global_shape, mask_offsets) -> Tensor:
    return _alpha(x, seed, stream, p, _mask(mask_shape, mask_global_shape, mask_offsets))


_fake_like_input(_alpha_dropout_custom)


def _alpha_setup_context(ctx, inputs, output) -> None:
    _, key, ctx.p, *mask = inputs
    ctx.mask = _mask(*mask)
    ctx.save_for_backward(key)


def _alpha_backward(ctx, grad: Tensor):
    # dy/dx = keep * a: a Bernoulli mask with scale a, the same keep decisions.
    (key,) = ctx.saved_tensors
    a = float(alpha_constants(ctx.p)[0])
    return bernoulli(grad, key, ctx.p, a, ctx.mask), None, None, None, None, None


_alpha_dropout_custom.register_autograd(_alpha_backward, setup_context=_alpha_setup_context)


def _alpha_derivative(t: Tensor, seed: int, stream: int, p: float, mask: Shard) -> Tensor:
    # dy/dx = keep * a: a Bernoulli mask with scale a, the same keep decisions.
    a = float(alpha_constants(p)[0])
    if not eager(t):
        return bernoulli(t, key_tensor(seed, stream), p, a, mask)
    call = MaskCall(_shaped, None, seed, stream, (p, a, mask), drawn=False)
    if torch.is_grad_enabled() or torch._C._are_functorch_transforms_active():
        return _function.apply(call, t)  # differentiable again: double backward
    return call(t)


def alpha_dropout(x: Tensor, p: float, seed: int, stream: int, mask: Shard, *, drawn: bool = False) -> Tensor:
    """Alpha dropout with ``mask``'s decisions for the unsigned ``(seed, stream)`` of :func:`numbers_key`
    (an eager call: the Function of :mod:`._function` around the kernels, no key tensor)."""
    return _function.apply(MaskCall(_alpha, _alpha_derivative, seed, stream, (p, mask), drawn), x)


def alpha_dropout_op(
    x: Tensor,
    key: Tensor,
    p: float,
    mask_shape: list[int],
    mask_global_shape: list[int],
    mask_offsets: list[int],
) -> Tensor:
    """Alpha dropout: the eager Function, else ``dropkit::alpha_dropout``."""
    if not eager(x):
        return _alpha_dropout_custom(x, key, p, mask_shape, mask_global_shape, mask_offsets)
    seed, stream = unpack_key(key)
    mask = _mask(mask_shape, mask_global_shape, mask_offsets)
    return alpha_dropout(x, p, seed, stream, mask, drawn=getattr(key, "drawn", False))


alpha_dropout_op.custom = _alpha_dropout_custom
