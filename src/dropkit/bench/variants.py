"""The torch face's variants against their torch twins: time per call, forward+backward, on the CPU.

For every variant module of :mod:`dropkit.torch` (and the timm and torchvision peers) the twin is
torch's own module where one exists (``torch.nn.Dropout2d``, ``torch.nn.AlphaDropout``, ...), else the
torch expression the peer library runs, written out here (timm's ``drop_path`` and ``drop_block_2d``,
torchvision's ``stochastic_depth`` and ``drop_block2d``; a Gaussian and a locked mask). Each call is
``layer(x).sum().backward()`` on a float32 input that requires grad; dropkit and the twin alternate
call for call, so a shared machine's changing load slows both alike, and each time is the median of
``repeats`` calls after a warm-up. The ratio is dropkit's time over the twin's (below 1: dropkit is
faster).

Nothing heavy is imported at module level, so importing this module is cheap.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from dropkit.bench import timing

__all__ = ["SIZES", "add_arguments", "cases", "main", "measure", "table"]

# "small": per-call overhead, where torch's dispatch dominates; "large": (64, 256, 32, 32) activations
SIZES = ("small", "large")
DEFAULT_REPEATS = {"small": 300, "large": 5}
P = 0.5

Case = tuple[str, Callable[[], Any], Callable[[], Any], tuple[int, ...]]


def _shapes(size: str) -> dict[str, tuple[int, ...]]:
    if size == "small":
        return {"1d": (8, 16, 64), "2d": (8, 16, 8, 8), "3d": (8, 16, 4, 4, 4), "seq": (16, 8, 64)}
    return {
        "1d": (64, 256, 1024),
        "2d": (64, 256, 32, 32),
        "3d": (64, 256, 4, 16, 16),
        "seq": (256, 64, 1024),
    }


def cases(size: str) -> list[Case]:
    """``(name, dropkit layer factory, twin factory, input shape)`` for every variant at ``size``."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    import dropkit.torch as dk
    from dropkit.torch import timm, torchvision

    shapes = _shapes(size)

    class Twin(nn.Module):
        def __init__(self, function: Callable[[torch.Tensor], torch.Tensor]) -> None:
            super().__init__()
            self.function = function

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.function(x)

    def bernoulli(x: torch.Tensor, shape: Sequence[int], keep: float) -> torch.Tensor:
        return x * x.new_empty(shape).bernoulli_(keep).div_(keep)

    def gaussian(x: torch.Tensor) -> torch.Tensor:
        return x * (1 + math.sqrt(P / (1 - P)) * torch.randn_like(x))

    def timm_block(x: torch.Tensor, couple_channels: bool) -> torch.Tensor:  # timm 1.0.23's drop_block_2d
        n, c, h, w = x.shape
        k = min(3, h, w)
        gamma = P * h * w / k**2 / ((h - k + 1) * (w - k + 1))
        mask = x.new_empty((n, 1 if couple_channels else c, h, w)).bernoulli_(gamma)
        keep = 1.0 - F.max_pool2d(mask, kernel_size=k, stride=1, padding=k // 2)
        return x * (keep * (keep.numel() / keep.to(torch.float32).sum().add(1e-7)).to(x.dtype))

    def vision_block(x: torch.Tensor) -> torch.Tensor:  # torchvision's drop_block2d
        n, c, h, w = x.shape
        k = min(3, h, w)
        gamma = P * h * w / (k**2 * ((h - k + 1) * (w - k + 1)))
        noise = x.new_empty((n, c, h - k + 1, w - k + 1)).bernoulli_(gamma)
        noise = F.max_pool2d(F.pad(noise, [k // 2] * 4, value=0), stride=1, kernel_size=k, padding=k // 2)
        noise = 1 - noise
        return x * noise * (noise.numel() / (1e-6 + noise.sum()))

    d2, seq = shapes["2d"], shapes["seq"]
    return [
        ("Dropout", lambda: dk.Dropout(P), lambda: nn.Dropout(P), d2),
        ("Dropout1d", lambda: dk.Dropout1d(P), lambda: nn.Dropout1d(P), shapes["1d"]),
        ("Dropout2d", lambda: dk.Dropout2d(P), lambda: nn.Dropout2d(P), d2),
        ("Dropout3d", lambda: dk.Dropout3d(P), lambda: nn.Dropout3d(P), shapes["3d"]),
        ("AlphaDropout", lambda: dk.AlphaDropout(P), lambda: nn.AlphaDropout(P), d2),
        ("FeatureAlphaDropout", lambda: dk.FeatureAlphaDropout(P), lambda: nn.FeatureAlphaDropout(P), d2),
        ("GaussianDropout", lambda: dk.GaussianDropout(P), lambda: Twin(gaussian), d2),
        (
            "LockedDropout",
            lambda: dk.LockedDropout(P),
            lambda: Twin(lambda x: bernoulli(x, (1, *x.shape[1:]), 1 - P)),
            seq,
        ),
        (
            "DropPath",
            lambda: dk.DropPath(P),
            lambda: Twin(lambda x: bernoulli(x, (x.shape[0],) + (1,) * (x.dim() - 1), 1 - P)),
            d2,
        ),
        (
            "DropBlock2d",
            lambda: dk.DropBlock2d(P, 3),
            lambda: Twin(lambda x: timm_block(x, couple_channels=False)),
            d2,
        ),
        (
            "timm.DropPath",
            lambda: timm.DropPath(P),
            lambda: Twin(lambda x: bernoulli(x, (x.shape[0], 1, 1, 1), 1 - P)),
            d2,
        ),
        ("timm.DropBlock2d", lambda: timm.DropBlock2d(P, 3), lambda: Twin(lambda x: timm_block(x, True)), d2),
        (
            "torchvision.StochasticDepth",
            lambda: torchvision.StochasticDepth(P, "row"),
            lambda: Twin(lambda x: bernoulli(x, (x.shape[0], 1, 1, 1), 1 - P)),
            d2,
        ),
        ("torchvision.DropBlock2d", lambda: torchvision.DropBlock2d(P, 3), lambda: Twin(vision_block), d2),
    ]


def _microseconds(ours: Callable, theirs: Callable, x: Any, repeats: int) -> tuple[float, float]:
    """Median µs per ``layer(x).sum().backward()`` of both layers, each call writing a fresh gradient."""

    def fresh_grad() -> None:
        x.grad = None  # no timed call adds into the gradient of the one before

    layers = {"ours": ours, "theirs": theirs}
    runs = {name: (lambda f=layer: f(x).sum().backward(), fresh_grad) for name, layer in layers.items()}
    medians = timing.medians_ms(runs, repeats)
    return 1e3 * medians["ours"], 1e3 * medians["theirs"]


def measure(size: str, repeats: int, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Median microseconds per ``layer(x).sum().backward()`` for dropkit and its twin, in turns
    (:func:`dropkit.bench.timing.medians_ms`)."""
    import torch

    rows = []
    for name, ours_of, theirs_of, shape in cases(size):
        if names is not None and name not in names:
            continue
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0), requires_grad=True)
        ours, theirs = _microseconds(ours_of(), theirs_of(), x, repeats)
        rows.append({"variant": name, "shape": list(shape), "dropkit_us": ours, "torch_us": theirs})
    return rows


def table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as a Markdown table: variant, shape, both times and their ratio."""
    lines = ["| variant | shape | dropkit µs | torch µs | ratio |", "|---|---|---|---|---|"]
    for row in rows:
        shape = "×".join(str(n) for n in row["shape"])
        ratio = row["dropkit_us"] / row["torch_us"]
        lines.append(
            f"| {row['variant']} | {shape} | {row['dropkit_us']:.0f} | {row['torch_us']:.0f} | {ratio:.2f} |"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``benchmarks/torch_variants.py``."""
    parser.add_argument("--sizes", nargs="+", choices=SIZES, default=["small"], help="input sizes")
    parser.add_argument("--repeats", type=int, metavar="N", help="timed calls (default 300 small, 5 large)")
    parser.add_argument("--threads", type=int, default=1, metavar="N", help="torch threads (default 1)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="these variants only")


def main(args: argparse.Namespace) -> int:
    """Measure the sizes asked for and print one table per size, with the load average; torch's thread
    count is restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        for size in args.sizes:
            repeats = args.repeats if args.repeats is not None else DEFAULT_REPEATS[size]
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
            rows = measure(size, repeats, args.only)
            print(f"\n{size}: {args.threads} thread(s), {repeats} samples each, load average {load:.2f}")
            print(table(rows))
    finally:
        torch.set_num_threads(threads)
    sys.stdout.flush()
    return 0
