"""``Dropout``: drop-in for ``torch.nn.Dropout`` over :func:`dropkit.torch.functional.dropout`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from dropkit._validation import check_probability, check_uint64
from dropkit.torch import distributed
from dropkit.torch import functional as F

__all__ = ["Dropout"]


class SeededModule(nn.Module):
    """What every dropkit module keeps: its seed and its training-call counter.

    With an explicit ``seed`` the k-th training call uses stream k; with ``seed=None`` every call
    draws a fresh seed from torch's default generator and the counter is not used.
    """

    stochastic = True  # dropkit.torch.mc_dropout turns on every module that says so

    def __init__(self, *, seed: int | None) -> None:
        super().__init__()
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
        """This call's stream: a Python int eagerly, a run-time tensor inside a compiled graph."""
        return self._calls.clone() if torch.compiler.is_compiling() else int(self._calls)

    def _counted(self, output: Tensor) -> Tensor:
        """Count a training call once it has succeeded, so a rejected call moves nothing."""
        self._calls.add_(1)
        return output

    def _seed_repr(self) -> str:
        return "" if self.seed is None else f", seed={self.seed}"


class Dropout(SeededModule):
    """Inverted dropout whose mask is the contract's, regenerated in backward instead of stored.

    In training ``y = x * m / (1 - p)`` with ``m = keep_mask(x.shape, p, seed=..., stream=...)``;
    in eval mode ``y = x`` (the input object itself).

    Randomness: with ``seed=None`` each training call draws a fresh seed from torch's default CPU
    generator and uses stream 0, exactly as ``torch.nn.Dropout`` consumes torch's RNG, so
    ``torch.manual_seed`` and ``torch.utils.checkpoint`` reproduce its masks. With an explicit
    ``seed`` the k-th training call (k = 0, 1, 2, ...) uses stream k, like :class:`dropkit.Dropout`,
    whatever the run, device or compiler -- but a checkpoint recompute is a new call (see docs/torch.md).

    Args:
        p: probability of *dropping* an element, in [0, 1] (not the keep rate).
        inplace: write the result into the input.
        seed: unsigned 64-bit seed, or ``None`` to follow torch's default generator.

    Shape: any; output has the input's shape, dtype, device and stride order.

    >>> layer = Dropout(0.5, seed=0)
    >>> layer
    Dropout(p=0.5, inplace=False, seed=0)
    >>> layer(torch.ones(2, 4))
    tensor([[0., 2., 2., 2.],
            [2., 0., 2., 0.]])
    >>> layer.calls
    1
    """

    def __init__(self, p: float = 0.5, inplace: bool = False, *, seed: int | None = None) -> None:
        super().__init__(seed=seed)
        self.p = check_probability(p)
        self.inplace = inplace

    def forward(
        self,
        input: Tensor,
        *,
        global_shape: Sequence[int] | None = None,
        offsets: Sequence[int] | None = None,
    ) -> Tensor:
        """``y = x * M / (1 - p)`` in training, ``x`` in eval; shape unchanged.

        ``global_shape``, ``offsets``: ``input`` is that slice of a global tensor (docs/distributed.md).
        """
        if self.seed is None or not self.training:
            return F.dropout(
                input, self.p, self.training, self.inplace, global_shape=global_shape, offsets=offsets
            )
        check_probability(self.p)  # p may have been reassigned since construction (a schedule)
        F.check_input(input)
        location = distributed.locate(input, global_shape, offsets)
        if self.p == 0.0 or input.numel() == 0:  # still a training call: it takes its stream
            return self._counted(input)
        F.check_inplace(input, self.inplace)
        output = F.masked(input, self.p, self.inplace, self.seed, self._stream(), location)
        return self._counted(output)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}{self._seed_repr()}"
