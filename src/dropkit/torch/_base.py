"""What every dropout of the torch face shares: the training-call protocol, for functions and modules.

A variant is a *plan*: ``plan(input, ...)`` runs every check of the input and its placement and
returns ``apply(seed, stream) -> output``, which draws nothing until called. Then

- a functional form is ``run(input, p, training, inplace, seed, stream, plan(...))``: key checks, the
  identity cases (not training, ``p == 0``, an empty input), then ``apply``;
- a module is a :class:`Stochastic` whose ``_plan`` builds the plan; its ``forward`` runs the same
  protocol with its own seed and call counter.

Randomness: ``seed=None`` draws a fresh 63-bit seed from torch's default CPU generator per call and
uses stream 0; an explicit ``seed`` takes ``stream`` (a module: the k-th training call uses stream k).
Every check comes before the draw, so a rejected call moves nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from dropkit._validation import check_probability, check_uint64
from dropkit.torch import _ops, _placement
from dropkit.torch._checks import check_inplace, check_seed_and_stream
from dropkit.torch._function import eager_context

__all__ = ["Apply", "Stochastic", "copy_if", "on_local", "run", "traceable"]

Apply = Callable[[int | None, int | Tensor], Tensor]  # (seed, stream) -> output, every check done


def run(
    input: Tensor,
    p: float,
    training: bool,
    inplace: bool,
    seed: int | None,
    stream: int | None,
    apply: Apply,
) -> Tensor:
    """The functional forms' common tail: key checks, the identity cases, then ``apply(seed, stream)``."""
    seed, stream = check_seed_and_stream(seed, stream)
    if not training or p == 0.0 or input.numel() == 0:
        return input
    check_inplace(input, inplace)
    return apply(seed, stream)


def traceable(function: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """``function`` as one node of a ``torch.fx.symbolic_trace`` graph (like torch's dropout functions),
    drawing its mask when the traced graph runs; an ordinary call otherwise."""

    @functools.wraps(function)
    def call(input: Tensor, *args, **kwargs) -> Tensor:
        if isinstance(input, torch.fx.Proxy):
            return input.tracer.create_proxy("call_function", call, (input, *args), kwargs)
        return function(input, *args, **kwargs)

    return call


def on_local(
    op: Callable[[Tensor, Tensor], Tensor],
    input: Tensor,
    placed: _placement.Placed,
    seed: int | None,
    stream: int | Tensor,
) -> Tensor:
    """``op(local input, key)`` on the input's local tensor (a DTensor's shard), rewrapped like ``input``.

    The key is ``(seed, stream)`` as the keyed ops' tensor, with the rank folded into the stream under
    ``independent_masks``.
    """
    location = placed.location
    if location is not None:
        stream = location.stream(stream)
    local = _placement.to_local(input, location)
    return _placement.from_local(op(local, _ops.key_tensor(seed, stream)), input, location)


def copy_if(inplace: bool, input: Tensor, output: Tensor) -> Tensor:
    """``output`` written into ``input`` when in place (unless an op wrote it there), else ``output``."""
    return input.copy_(output) if inplace and output is not input else output


class Stochastic(nn.Module):
    """The one base of dropkit's torch modules: a seed, a training-call counter, the call protocol.

    With an explicit ``seed`` the k-th training call uses stream k; with ``seed=None`` every call
    draws a fresh seed from torch's default generator and the counter is not used. A subclass checks
    its own ``p`` (``_check_p``) and says how it applies itself to an input (``_plan``).
    """

    stochastic = True  # dropkit.torch.mc_dropout turns on every module that says so
    inplace = False
    # What torch.jit.script must not compile: the seed may exceed TorchScript's int64.
    __jit_ignored_attributes__ = ("seed",)
    __jit_unused_properties__ = ("calls",)

    def __init__(self, p: float, *, seed: int | None) -> None:
        super().__init__()
        self.p = p  # checked by the subclass, whose range it knows
        self.seed = None if seed is None else check_uint64("seed", seed)
        # The call counter is a tensor, not an int, so a compiled graph advances it at run time
        # instead of baking one stream in. It stays on the CPU and out of state_dict (torch's
        # Dropout has no state), and inference_mode(False) keeps it writable outside inference mode.
        with torch.inference_mode(False):
            self._calls = torch.zeros((), dtype=torch.int64)

    @property
    def calls(self) -> int:
        """Training calls so far; with an explicit seed, the next one uses stream ``calls``.

        Settable (to resume a seeded run mid-way): ``layer.calls = k``.
        """
        return int(self._calls)

    @calls.setter
    def calls(self, value: int) -> None:
        value = check_uint64("calls", value)
        if value >= 2**63:
            raise ValueError(f"calls must be an integer in [0, 2**63), got {value}")
        self._calls.fill_(value)

    def _stream(self) -> int | Tensor:
        """This call's stream: a Python int eagerly, a run-time tensor in a compiled or traced graph."""
        if eager_context():
            return int(self._calls)
        if torch.jit.is_tracing():
            return _ops.take_call_op(self._calls)  # counts the call too, when the traced graph runs
        return self._calls.clone()

    def _counted(self, output: Tensor) -> Tensor:
        """Count a training call once it has succeeded, so a rejected call moves nothing."""
        if torch.jit.is_tracing():
            return output  # counted by the recorded take_call_ (a trace drops this add_)
        if torch.compiler.is_compiling() or torch._C._functorch.peek_interpreter_stack() is None:
            self._calls.add_(1)
        else:  # torch.func forbids mutating a captured tensor; the counter is state, not data
            with torch._C._DisableFuncTorch():
                self._calls.add_(1)
        return output

    def _check_p(self) -> None:
        check_probability(self.p)  # p may have been reassigned since construction (a schedule)

    def _plan(
        self, input: Tensor, global_shape: Sequence[int] | None, offsets: Sequence[int] | None
    ) -> Apply:
        raise NotImplementedError

    def forward(
        self,
        input: Tensor,
        global_shape: list[int] | None = None,
        offsets: list[int] | None = None,
    ) -> Tensor:
        """The layer in training (a fresh mask per call); ``input`` itself in eval or at ``p == 0``.

        ``global_shape``, ``offsets``: ``input`` is that slice of a global tensor (docs/distributed.md).
        Under ``torch.jit.script`` the layer is its eval-mode self, the identity (and these two are
        not keyword-only: TorchScript compiles no keyword-only argument).
        """
        if torch.jit.is_scripting():
            if self.training:
                raise RuntimeError(
                    "a dropkit module compiled by torch.jit.script runs in eval mode only (its "
                    "training mask comes from dropkit's kernels, which TorchScript cannot call); call "
                    ".eval(), or script dropkit.torch.revert(model) to train with torch's dropout"
                )
            return input
        else:
            return self._forward(input, global_shape, offsets)

    def _forward(
        self, input: Tensor, global_shape: Sequence[int] | None, offsets: Sequence[int] | None
    ) -> Tensor:
        if isinstance(input, torch.fx.Proxy):  # a leaf of torch.fx graphs, as torch's dropout modules are
            kwargs = {} if global_shape is None else {"global_shape": global_shape, "offsets": offsets}
            return input.tracer.create_proxy(
                "call_module", input.tracer.path_of_module(self), (input,), kwargs
            )
        self._check_p()
        apply = self._plan(input, global_shape, offsets)  # every check first: a rejected input moves nothing
        if not self.training:
            return input
        seeded = self.seed is not None  # else every call draws a seed; the counter is not used
        if self.p == 0.0 or input.numel() == 0:  # still a training call: it takes its stream
            return self._counted(input) if seeded else input
        check_inplace(input, self.inplace)
        output = apply(self.seed, self._stream() if seeded else 0)
        return self._counted(output) if seeded else output

    def _seed_repr(self) -> str:
        return "" if self.seed is None else f", seed={self.seed}"
