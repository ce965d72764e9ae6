"""The measurements of ``dropkit bench``: dropout on the CPU against torch, textbook NumPy and memory.

Every time is the median of ``repeats`` samples after a warm-up run (runs under 2 ms are repeated
within a sample), and every ratio compares times measured in the same run, so a busy machine skews
the ratios less than the times. Methods, for float32 data of each size and each drop probability ``p``:

- **dropkit**: :func:`dropkit.kernels.dropout_apply` into a preallocated output (the fused numba
  kernel when numba is installed). Backward is the same call on the gradient, the mask regenerated
  from ``(seed, stream)``; nothing but those two integers is kept between them.
- **torch**: ``torch.nn.functional.dropout`` forward, and autograd's backward through it.
- **dropkit.torch**: ``dropkit.torch.functional.dropout``, the drop-in for it, timed the same way: a
  new output per call, autograd around the same kernel, a seed drawn per call from torch's generator.
- **textbook NumPy**: ``mask = (uniform floats >= p) / (1 - p)``, ``y = x * mask``, ``dx = dy * mask``.
- **memory pass**: ``np.multiply(x, s, out=y)``: one read and one write of the data, the floor any
  elementwise op pays (NumPy runs it on one thread). ``dropkit p=0`` is the kernel's own
  read+write pass (no mask drawn) on all its threads; ``torch.mul`` is ``torch.mul(x, 2)`` into a
  new tensor, the floor for torch ops, which all allocate their output.

Nothing is imported at module level beyond NumPy, so ``dropkit --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dropkit._validation import check_count, check_probability, shown
from dropkit.bench.timing import Timed, median_ms, medians_ms

__all__ = ["BenchReport", "Row", "run_benchmarks"]

# float32 elements: a 64x64 layer (per-call overhead, where torch's own dispatch dominates), 4, 64, 256 MiB
DEFAULT_SIZES = (2**12, 2**20, 2**24, 2**26)
DEFAULT_PS = (0.1, 0.5)
DEFAULT_REPEATS = 7
QUICK_SIZES = (2**12, 2**20, 2**22)
QUICK_REPEATS = 3
GOAL_SIZE = 2**24  # issue 5's goals are stated at this size
MEMORY = "memory pass"
TORCH_HUGE_PAGES = "THP_MEM_ALLOC_ENABLE"  # torch's switch for madvise(MADV_HUGEPAGE) on its CPU allocations
KERNEL_HUGE_PAGES = Path("/sys/kernel/mm/transparent_hugepage/enabled")  # always, madvise or never
SEED = 0x5EED
# Peak bytes a benchmark holds per float32 element: x, y and the gradient, then for torch and dropkit.torch
# at once (their samples alternate) an input clone, its gradient and an output each, torch's saved mask,
# and one call's temporaries. A size needing more than the machine's memory is refused before anything runs.
BYTES_PER_ELEMENT = 48


@dataclass
class Row:
    """One timed method and phase at one size and probability."""

    size: int
    p: float
    method: str  # "dropkit", "dropkit.torch", "torch", "textbook NumPy", "memory pass", "torch.mul", ...
    phase: str  # "forward", "forward, new array", "backward", "forward+backward", "read+write", ...
    ms: float  # median wall time in milliseconds
    vs_memory: float  # ms / the memory pass's ms at this size
    torch_over_this: float | None  # torch's ms for the same phase / ms: > 1 means faster than torch
    kept_bytes_per_element: float | None  # bytes held from forward to backward, per element


@dataclass
class BenchReport:
    """All rows of one run, the machine they ran on, and the first-call latency."""

    config: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    first_call: dict[str, float] | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        """The report, with its ``goals()``, as indented JSON."""
        return json.dumps({**asdict(self), "goals": self.goals()}, indent=2)

    def goals(self) -> list[dict[str, Any]]:
        """Issue 5's goals at 2**24 elements: each measured ratio against its target."""
        targets = [
            ("dropkit", "forward", "vs_memory", "<=", 2.0),
            ("dropkit", "backward", "vs_memory", "<=", 2.0),
            ("dropkit", "forward+backward", "vs_memory", "<=", 3.0),
            ("dropkit", "forward", "torch_over_this", ">=", 10.0),
            ("dropkit", "forward+backward", "torch_over_this", ">=", 10.0),
        ]
        found = []
        for row in self.rows:
            for method, phase, key, op, target in targets:
                value = getattr(row, key)
                if (row.size, row.method, row.phase) == (GOAL_SIZE, method, phase) and value is not None:
                    met = value <= target if op == "<=" else value >= target
                    name = f"{phase} {'÷ memory pass' if key == 'vs_memory' else 'speed-up over torch'}"
                    found.append({"p": row.p, "goal": f"{name} {op} {target}", "measured": value, "met": met})
        return found

    def table(self, markdown: bool = False) -> str:
        """The rows as an aligned text table, or as a Markdown table with the setup above it."""
        header = ["elements", "p", "method", "phase", "ms", "× memory pass", "torch ÷ this", "kept B/elem"]
        body = [
            [
                f"2^{row.size.bit_length() - 1}" if row.size & (row.size - 1) == 0 else str(row.size),
                f"{row.p:g}",
                row.method,
                row.phase,
                f"{row.ms:.4f}" if row.ms < 1 else f"{row.ms:.2f}",  # 4 decimals: 0.1 µs
                f"{row.vs_memory:.2f}",
                "" if row.torch_over_this is None else f"{row.torch_over_this:.2f}",
                "" if row.kept_bytes_per_element is None else f"{row.kept_bytes_per_element:g}",
            ]
            for row in self.rows
        ]
        lines = [self._setup_line()]
        if markdown:
            lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(cells) + " |" for cells in body]
        else:
            widths = [max(len(cells[i]) for cells in [header, *body]) for i in range(len(header))]
            for cells in [header, *body]:  # text left-aligned, numbers (from "ms" on) right-aligned
                padded = [
                    c.rjust(w) if i >= 4 else c.ljust(w)
                    for i, (c, w) in enumerate(zip(cells, widths, strict=True))
                ]
                lines.append("  ".join(padded).rstrip())
        lines += self._footer(markdown)
        return "\n".join(lines)

    def _setup_line(self) -> str:
        c = self.config
        pages = c.get("huge_pages")
        switch = "" if pages is None else "set" if pages[TORCH_HUGE_PAGES] else "unset"
        pages_note = "" if pages is None else f" ({TORCH_HUGE_PAGES} {switch}, kernel THP {pages['kernel']})"
        return (
            f"float32, {c['threads']} thread(s) on {c['cpu']} ({c['cores']} cores), median of "
            f"{c['repeats']} after a warm-up; numpy {c['numpy']}, numba {c['numba']}, "
            f"torch {c['torch']}{pages_note}"
        )

    def _footer(self, markdown: bool) -> list[str]:
        bullet = "- " if markdown else "  "
        lines = []
        if self.first_call:
            lines += ["", "First call in a fresh process, numba cache warm:"]
            lines += [bullet + f"{name}: {seconds:.2f} s" for name, seconds in self.first_call.items()]
        goals = self.goals()
        if goals:
            lines += ["", f"Goals at 2^{GOAL_SIZE.bit_length() - 1} elements (issue 5):"]
            for g in goals:
                verdict = "met" if g["met"] else "NOT met"
                lines.append(bullet + f"p={g['p']:g}: {g['goal']}: measured {g['measured']:.2f} ({verdict})")
        if self.notes:
            lines += ["", "Notes:", *(bullet + note for note in self.notes)]
        return lines


def _import_torch() -> Any:
    try:
        import torch
    except ImportError:
        return None
    return torch


def _kept_bytes_per_element(torch: Any, dropout: Callable[..., Any], x: np.ndarray, p: float) -> float:
    """Bytes autograd saves for ``dropout``'s backward, per element, besides the input itself."""
    saved = []
    leaf = torch.from_numpy(x).requires_grad_()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        dropout(leaf, p)
    own = leaf.untyped_storage().data_ptr()
    kept = sum(t.untyped_storage().nbytes() for t in saved if t.untyped_storage().data_ptr() != own)
    return kept / x.size


def _time_dropkit(x: np.ndarray, p: float, repeats: int) -> dict[str, float]:
    from dropkit.kernels import dropout_apply

    scale, y, grad, grad_x = 1.0 / (1.0 - p), np.empty_like(x), x[::-1].copy(), np.empty_like(x)

    def forward() -> None:
        dropout_apply(x, p, seed=SEED, stream=1, scale=scale, out=y)

    def backward() -> None:  # the same (seed, stream): the forward's mask, regenerated
        dropout_apply(grad, p, seed=SEED, stream=1, scale=scale, out=grad_x)

    def both() -> None:
        forward()
        backward()

    return {
        "forward": median_ms(forward, repeats),
        # What a layer's forward pays: a fresh output array, its pages faulted in by the kernel.
        "forward, new array": median_ms(
            lambda: dropout_apply(x, p, seed=SEED, stream=1, scale=scale), repeats
        ),
        "backward": median_ms(backward, repeats),
        "forward+backward": median_ms(both, repeats),
        "read+write": median_ms(
            lambda: dropout_apply(x, 0.0, seed=SEED, stream=1, scale=scale, out=y), repeats
        ),
    }


def _torch_methods(torch: Any) -> dict[str, Callable[..., Any]]:
    """torch's dropout and, when it imports, dropkit's drop-in for it (the kernel under autograd)."""
    methods = {"torch": lambda t, p: torch.nn.functional.dropout(t, p, training=True)}
    try:
        from dropkit.torch.functional import dropout as dropkit_dropout
    except ImportError:
        return methods
    methods["dropkit.torch"] = lambda t, p: dropkit_dropout(t, p)  # seed=None: torch's generator, per call
    return methods


def _autograd_phases(dropout: Callable[..., Any], data: Any, grad: Any, p: float) -> dict[str, Timed]:
    """A torch-style ``dropout(tensor, p)``'s phases: forward without grad, autograd's backward, both."""
    leaf = data.detach().clone().requires_grad_()
    graph: dict[str, Any] = {}

    def fresh_forward() -> None:
        leaf.grad = None  # so backward allocates its gradient rather than adding into an old one
        graph["y"] = dropout(leaf, p)

    def both() -> None:
        dropout(leaf, p).backward(grad)

    return {
        "forward": (lambda: dropout(data, p), None),
        "backward": (lambda: graph["y"].backward(grad), fresh_forward),
        "forward+backward": (both, lambda: setattr(leaf, "grad", None)),
    }


def _time_autograd(
    torch: Any, methods: dict[str, Callable[..., Any]], x: np.ndarray, p: float, repeats: int
) -> dict[str, dict[str, float]]:
    """Each method's phases (:func:`_autograd_phases`), every phase's samples taken in turns."""
    data, grad = torch.from_numpy(x), torch.from_numpy(x[::-1].copy())
    phases = {method: _autograd_phases(dropout, data, grad, p) for method, dropout in methods.items()}
    times: dict[str, dict[str, float]] = {method: {} for method in methods}
    for phase in ("forward", "backward", "forward+backward"):
        for method, ms in medians_ms({m: timed[phase] for m, timed in phases.items()}, repeats).items():
            times[method][phase] = ms
    return times


def _time_textbook(x: np.ndarray, p: float, repeats: int) -> tuple[dict[str, float], float]:
    rng = np.random.default_rng(SEED)
    grad = x[::-1].copy()
    keep = np.float32(1.0 - p)
    state: dict[str, np.ndarray] = {}

    def forward() -> np.ndarray:
        state["mask"] = (rng.random(x.shape, dtype=np.float32) >= p) / keep  # float32, kept for backward
        return x * state["mask"]

    def both() -> None:
        forward()
        grad * state["mask"]

    times = {
        "forward": median_ms(forward, repeats),
        "backward": median_ms(lambda: grad * state["mask"], repeats),
        "forward+backward": median_ms(both, repeats),
    }
    return times, state["mask"].nbytes / x.size


@contextlib.contextmanager
def _threads(threads: int, torch: Any) -> Iterator[None]:
    """Run numba's kernels and torch on ``threads`` threads inside the block, then restore both."""
    from dropkit.kernels import numba_available

    numba = None
    if numba_available():
        import numba

        if threads > numba.config.NUMBA_NUM_THREADS:
            raise ValueError(
                f"threads must be in [1, {numba.config.NUMBA_NUM_THREADS}] (numba's NUMBA_NUM_THREADS), "
                f"got {threads}"
            )
    previous = (
        None if numba is None else numba.get_num_threads(),
        None if torch is None else torch.get_num_threads(),
    )
    try:
        if numba is not None:
            numba.set_num_threads(threads)
        if torch is not None:
            torch.set_num_threads(threads)
        yield
    finally:
        if numba is not None:
            numba.set_num_threads(previous[0])
        if torch is not None:
            torch.set_num_threads(previous[1])


def _huge_pages() -> dict[str, Any]:
    """What decides the page size of torch's CPU tensors: torch's switch and the kernel's THP mode.

    torch reads ``THP_MEM_ALLOC_ENABLE`` once, with C's ``atoi``, and then advises huge pages for its
    allocations of 2 MiB or more; the kernel honours that advice in mode ``madvise`` or ``always``, and
    in ``always`` gives huge pages without it.
    """
    setting = re.match(r"\s*[+-]?\d+", os.environ.get(TORCH_HUGE_PAGES, ""))
    try:
        mode = re.search(r"\[(\w+)\]", KERNEL_HUGE_PAGES.read_text())
    except OSError:
        mode = None
    return {
        TORCH_HUGE_PAGES: setting is not None and int(setting.group()) != 0,
        "kernel": mode.group(1) if mode else "unknown",
    }


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_benchmarks(
    sizes: Sequence[int] = DEFAULT_SIZES,
    ps: Sequence[float] = DEFAULT_PS,
    *,
    repeats: int = DEFAULT_REPEATS,
    threads: int | None = None,
    use_torch: bool = True,
    progress: Callable[[str], Any] | None = None,
) -> BenchReport:
    """Time every method at every size and ``p``; returns the rows (first-call latency not included).

    Args:
        sizes: numbers of float32 elements, each >= 1.
        ps: drop probabilities in [0, 1).
        repeats: timed runs per measurement (>= 1), after one warm-up.
        threads: threads for numba and torch; ``None`` uses every core numba sees.
        use_torch: time torch when it is importable (its rows are skipped, with a note, otherwise).
        progress: called with a short line before each measurement (e.g. ``print``).

    >>> report = run_benchmarks([1000], [0.5], repeats=1, use_torch=False)
    >>> sorted({(row.method, row.phase) for row in report.rows})[:2]
    [('dropkit', 'backward'), ('dropkit', 'forward')]
    """
    from dropkit.kernels import numba_available

    sizes, ps = [_check_size(s) for s in sizes], [_check_p(p) for p in ps]
    repeats = check_count("repeats", repeats)
    cores = os.cpu_count() or 1
    threads = cores if threads is None else threads
    threads = check_count("threads", threads)
    if threads > cores:
        raise ValueError(f"threads must be in [1, {cores}] (the cores this machine has), got {threads}")
    # numba's threads start first, on their own OpenMP runtime with passive waits (see
    # dropkit.kernels.cpu); started after torch they would share torch's spinning one.
    fast = numba_available()
    torch = _import_torch() if use_torch else None
    with _threads(threads, torch):
        numba_version = "not used"
        if fast:
            import numba

            numba_version = numba.__version__
        report = BenchReport(
            config={
                "dtype": "float32",
                "threads": threads,
                "cores": cores,
                "cpu": _cpu_name(),
                "repeats": repeats,
                "numpy": np.__version__,
                "numba": numba_version,
                "torch": torch.__version__ if torch is not None else "not used",
                "python": platform.python_version(),
            }
        )
        if torch is None:
            report.notes.append(
                "torch rows skipped: torch is " + ("not installed" if use_torch else "turned off")
            )
        if not numba_available():
            report.notes.append("numba is not used: the dropkit rows time the NumPy reference path")
        if torch is not None:
            pages = report.config["huge_pages"] = _huge_pages()
            if pages["kernel"] == "madvise" and not pages[TORCH_HUGE_PAGES]:
                report.notes.append(
                    f"torch's CPU allocator faults new tensors in 4 KiB pages here: set {TORCH_HUGE_PAGES}=1 "
                    "for 2 MiB pages (docs/benchmarks.md, 'The torch face'), as NumPy asks for its arrays"
                )
        report.notes.append(
            "memory pass = np.multiply(x, s, out=y) on one thread; torch.mul = torch.mul(x, 2) into a new "
            "tensor, torch's floor for an op that allocates; dropkit p=0 = the kernel's read+write pass "
            "on all threads; dropkit writes into preallocated arrays except in 'forward, new array'; "
            "torch and NumPy allocate their outputs"
        )
        kept_autograd: dict[tuple[str, float], float] = {}
        for size in sizes:
            x = np.random.default_rng(size).standard_normal(size, dtype=np.float32)
            y = np.empty_like(x)
            memory_ms = median_ms(lambda x=x, y=y: np.multiply(x, np.float32(2.0), out=y), repeats)
            # torch's floor when it allocates its output, as F.dropout and every torch layer do.
            tensor = None if torch is None else torch.from_numpy(x)
            torch_memory_ms = (
                None if torch is None else median_ms(lambda t=tensor: torch.mul(t, 2.0), repeats)
            )
            for p in ps:
                if progress is not None:
                    progress(f"  {size} elements, p={p:g}")
                times: dict[str, dict[str, float]] = {"dropkit": _time_dropkit(x, p, repeats)}
                kept = {"dropkit": 0.0}
                methods = {} if torch is None else _torch_methods(torch)
                times.update(_time_autograd(torch, methods, x, p, repeats) if methods else {})
                for method, dropout in methods.items():
                    if (method, p) not in kept_autograd:  # per element, so 2**20 elements tell
                        sample = x[: min(size, 2**20)]
                        kept_autograd[method, p] = _kept_bytes_per_element(torch, dropout, sample, p)
                    kept[method] = kept_autograd[method, p]
                times["textbook NumPy"], kept["textbook NumPy"] = _time_textbook(x, p, repeats)
                read_write = times["dropkit"].pop("read+write")
                report.rows.append(Row(size, p, MEMORY, "read+write", memory_ms, 1.0, None, None))
                report.rows.append(
                    Row(size, p, "dropkit p=0", "read+write", read_write, read_write / memory_ms, None, None)
                )
                if torch_memory_ms is not None:
                    ratio = torch_memory_ms / memory_ms
                    report.rows.append(
                        Row(size, p, "torch.mul", "new tensor", torch_memory_ms, ratio, None, None)
                    )
                for method, phases in times.items():
                    for phase, ms in phases.items():
                        torch_ms = times.get("torch", {}).get(phase.split(",")[0])
                        speedup = None if torch_ms is None else torch_ms / ms
                        report.rows.append(
                            Row(size, p, method, phase, ms, ms / memory_ms, speedup, kept[method])
                        )
        return report


def _memory_bytes() -> int | None:
    """The machine's physical memory in bytes, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def _bytes_text(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _check_size(size: Any) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"sizes must be integers >= 1, got {shown(size)}")
    memory = _memory_bytes()
    if memory is not None and size * BYTES_PER_ELEMENT > memory:
        raise ValueError(
            f"sizes: {shown(size)} elements need about {_bytes_text(size * BYTES_PER_ELEMENT)} for the "
            f"benchmark's arrays, more than this machine's {_bytes_text(memory)} of memory"
        )
    return size


def _check_p(p: Any) -> float:
    try:
        p = check_probability(p)
    except ValueError as error:
        raise ValueError(f"ps must be drop probabilities in [0, 1): {error}") from None
    if p == 1.0:
        raise ValueError("p must be below 1 for the benchmark (p = 1 is all zeros), got 1.0")
    return p
