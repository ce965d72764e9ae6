"""The eager autograd of every mask op: one ``torch.autograd.Function`` with backward, jvp and vmap.

Every op of the torch face is ``y = f(x)`` with a derivative ``dy/dx = D`` that is a diagonal
operator drawn from the same ``(seed, stream)`` (``keep * scale``, the Gaussian noise, alpha's
``keep * a``). So backward (``D g``) and forward-mode AD (``D t``) are one call, :meth:`MaskCall.grad`,
which redraws the mask and saves none; it is itself differentiable, so higher derivatives follow.

Eagerly this Function calls the kernel directly (no custom-op dispatch); under ``torch.compile``,
``torch.jit.trace``, ``torch.export`` and any tensor subclass or dispatch mode, the ops of
:mod:`dropkit.torch._ops` use their ``torch.library`` custom ops instead (:func:`eager` decides).

``torch.func.vmap``: an explicit seed names one mask, so every sample of the batch gets that same
mask (a pure function of its arguments, whatever ``randomness=``). A seed drawn per call
(``seed=None``) is randomness, and follows torch's ``randomness=`` as ``torch.nn.functional.dropout``
does: ``"error"`` (the default) raises torch's error, ``"same"`` gives every sample the one drawn
mask, ``"different"`` draws a fresh seed per sample from torch's default generator.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.utils._python_dispatch import _get_current_dispatch_mode

__all__ = ["MaskCall", "apply", "draw_seed", "eager", "eager_context"]

_INT63_LIMIT = 2**63 - 1  # fresh seeds are drawn from [0, 2**63 - 1), torch.randint's int64 range
_PLAIN = (Tensor, torch.nn.Parameter)


class _SeedBuffer(threading.local):
    """Each thread's int64 CPU scalar that seeds are drawn into: ``torch.randint(0, n, ())`` is
    ``empty(()).random_(0, n)``, the same draw from the same generator, less an allocation."""

    def __init__(self) -> None:
        with torch.inference_mode(False):  # writable outside inference mode, wherever first drawn
            self.tensor = torch.empty((), dtype=torch.int64, device="cpu")


_seed_buffer = _SeedBuffer()


def draw_seed() -> int:
    """A 63-bit seed from torch's default CPU generator (``torch.manual_seed`` governs it), drawn as
    ``torch.randint(0, 2**63 - 1, ())`` draws it.

    Inside a ``torch.func`` transform the draw is made below the transform: one plain seed, whose
    ``randomness=`` the vmap rule then honours.
    """
    if torch._C._functorch.peek_interpreter_stack() is None:
        return int(_seed_buffer.tensor.random_(0, _INT63_LIMIT))
    with torch._C._DisableFuncTorch():
        return int(_seed_buffer.tensor.random_(0, _INT63_LIMIT))


def eager_context() -> bool:
    """No compiler, tracer or dispatch mode is recording: ops run eagerly."""
    return (
        not torch.compiler.is_compiling()
        and not torch.jit.is_tracing()
        and _get_current_dispatch_mode() is None
    )


def eager(x: Tensor) -> bool:
    """Whether ``x`` takes the eager Function (else the custom op a tracer or compiler can record)."""
    return type(x) in _PLAIN and eager_context()


class MaskCall:
    """One op call, ``impl(x, seed, stream, *rest)``, with ``derivative(t, seed, stream, *rest)``
    (redrawn, differentiable).

    ``derivative=None``: the op is its own derivative (self-adjoint). ``seed`` and ``stream`` are
    unsigned 64-bit; ``drawn`` says the seed was drawn for this call
    (``seed=None``), which decides the vmap semantics. A plain object, not a pytree, so torch.func
    passes it through untouched.
    """

    __slots__ = ("derivative", "drawn", "impl", "rest", "seed", "stream")

    def __init__(
        self,
        impl: Callable[..., Tensor],
        derivative: Callable[..., Tensor] | None,
        seed: int,
        stream: int,
        rest: tuple[Any, ...],
        drawn: bool,
    ) -> None:
        self.impl, self.derivative, self.seed, self.stream, self.rest, self.drawn = (
            impl,
            derivative,
            seed,
            stream,
            rest,
            drawn,
        )

    def __call__(self, x: Tensor) -> Tensor:
        return self.impl(x, self.seed, self.stream, *self.rest)

    def into(self, x: Tensor) -> Tensor:
        """``self(x)`` written into ``x`` (an ``impl`` that takes ``out=``); returns ``x``."""
        return self.impl(x, self.seed, self.stream, *self.rest, out=x)

    def grad(self, t: Tensor) -> Tensor:
        """``D t``: the derivative applied to a gradient or a tangent (the same diagonal operator)."""
        if torch._C._functorch.is_legacy_batchedtensor(t):
            # torch's legacy vmap (gradcheck's batched forward grad) runs no Function vmap rule; D is
            # diagonal, so D t = t * D 1, with batching rules of torch's own.
            return t * self._derive(torch.ones(t.shape, dtype=t.dtype, device=t.device))
        return self._derive(t)

    def _derive(self, t: Tensor) -> Tensor:
        if self.derivative is not None:
            return self.derivative(t, self.seed, self.stream, *self.rest)
        if torch.is_grad_enabled() or torch._C._are_functorch_transforms_active():
            adjoint = MaskCall(self.impl, None, self.seed, self.stream, self.rest, drawn=False)
            return apply(adjoint, t)  # differentiable again: double backward, jvp of a jvp
        return self.impl(t, self.seed, self.stream, *self.rest)  # first order: the kernel, no Function

    def reseeded(self, seed: int) -> MaskCall:
        return MaskCall(self.impl, self.derivative, seed, self.stream, self.rest, self.drawn)


_RANDOMNESS_ERROR = (
    "vmap: called random operation while in randomness error mode. Please either use the 'same' or "
    "'different' randomness flags on vmap or perform the randomness operation out of vmap"
)  # torch's own message, word for word


class _Mask(torch.autograd.Function):
    @staticmethod
    def forward(call: MaskCall, x: Tensor) -> Tensor:
        return call(x)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.call = inputs[0]  # numbers only: the mask is redrawn, never saved

    @staticmethod
    def backward(ctx, grad: Tensor):
        return None, ctx.call.grad(grad)

    @staticmethod
    def jvp(ctx, _call_tangent, tangent: Tensor) -> Tensor:
        return ctx.call.grad(tangent)

    @staticmethod
    def vmap(info, in_dims, call: MaskCall, x: Tensor):
        dim = in_dims[1]
        if dim is None:
            return _Mask.apply(call, x), None
        if call.drawn and info.randomness == "error":
            raise RuntimeError(_RANDOMNESS_ERROR)
        samples = x.movedim(dim, 0).unbind(0)
        calls = [call] * len(samples)
        if call.drawn and info.randomness == "different":
            calls[1:] = [call.reseeded(draw_seed()) for _ in samples[1:]]
        return torch.stack([_Mask.apply(c, s) for c, s in zip(calls, samples, strict=True)]), 0


class _EagerMask(torch.autograd.Function):
    """:class:`_Mask` outside torch.func: a ``ctx`` forward, which spares ``Function.apply`` binding
    ``setup_context``'s signature on every call (a tenth of a small layer's time)."""

    @staticmethod
    def forward(ctx, call: MaskCall, x: Tensor) -> Tensor:
        ctx.call = call
        return call(x)

    backward = _Mask.backward
    jvp = _Mask.jvp


class _EagerMaskInPlace(torch.autograd.Function):
    """:class:`_EagerMask` writing into ``x``: ``mark_dirty`` bumps its version counter and moves its
    history onto this node. Backward needs no input (``D`` is drawn from the key), so nothing that
    the write destroys is ever needed."""

    @staticmethod
    def forward(ctx, call: MaskCall, x: Tensor) -> Tensor:
        ctx.call = call
        ctx.mark_dirty(x)
        return call.into(x)

    backward = _Mask.backward

    @staticmethod
    def jvp(ctx, _call_tangent, tangent: Tensor) -> Tensor:
        return tangent.copy_(ctx.call.grad(tangent))  # an in-place op's tangent is updated in place


def _c_apply(function: type[torch.autograd.Function]) -> Callable[..., Tensor]:
    """``function.apply`` less its Python layer (torch/autograd/function.py), which outside torch.func
    only unwraps dead functorch wrappers (done by the caller) and binds ``setup_context``'s arguments
    (a ``ctx`` forward has none): the C ``apply`` itself."""
    c_apply = torch._C._FunctionBase.__dict__.get("apply")  # private: a torch without it takes the public one
    return function.apply if c_apply is None else c_apply.__get__(None, function)


_eager_apply = _c_apply(_EagerMask)
_eager_apply_in_place = _c_apply(_EagerMaskInPlace)
_unwrap_if_dead = getattr(torch._C._functorch, "unwrap_if_dead", lambda x: x)


def apply(call: MaskCall, x: Tensor, inplace: bool = False) -> Tensor:
    """``call(x)`` with eager autograd: backward, forward AD and torch.func all redraw ``call``'s mask.

    ``inplace``: write into ``x`` and return it, when ``call.impl`` takes ``out=`` (eagerly, outside
    torch.func; there the result is a new tensor, which the caller copies into ``x``).

    >>> from dropkit import keep_mask
    >>> def impl(x, seed, stream, p):
    ...     return x * torch.from_numpy(keep_mask(x.shape, p, seed=seed, stream=stream)) / (1 - p)
    >>> call = MaskCall(impl, impl, 0, 0, (0.5,), drawn=False)
    >>> torch.func.jacfwd(lambda x: apply(call, x))(torch.ones(2))
    tensor([[0., 0.],
            [0., 2.]])
    """
    if torch._C._are_functorch_transforms_active():
        return _Mask.apply(call, x)
    return (_eager_apply_in_place if inplace else _eager_apply)(call, _unwrap_if_dead(x))
