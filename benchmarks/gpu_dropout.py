"""GPU benchmark of dropkit's Triton dropout kernel against torch, all figures from one run (issue 6).

For each size, dtype and drop probability it times, with ``triton.testing.do_bench`` (median, L2 flushed
between runs):

* ``x.clone()``: read n elements, write n -- the memory-copy bound;
* forward: dropkit's kernel vs ``aten.native_dropout`` (what ``F.dropout`` runs in training), which also
  writes a 1-byte mask;
* backward: dropkit's kernel on the gradient vs ``aten.native_dropout_backward``, which also reads it;
* forward + backward, back to back.

Bandwidth is *useful* bytes over time: 2 * n * element size for a forward or a backward (read one tensor,
write one), as for the clone, so ``x clone`` is the fraction of copy bandwidth reached; torch's mask
traffic is not counted for it. Then a stack of dropout layers, ``dropkit.torch.Dropout`` vs
``torch.nn.Dropout``, runs forward + backward through autograd: time, peak memory above the input and
its gradient, and bytes of CUDA tensors saved for backward (torch: one bool mask per layer; dropkit: none).

Usage::

    python benchmarks/gpu_dropout.py [--json results.json]

Needs a CUDA GPU and triton; without CUDA it exits with a message and status 1.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys

import torch

LOG2_SIZES = (24, 28)  # 2**24 and 2**28 elements
PS = (0.1, 0.5)  # drop probabilities
DTYPES = ("float32", "bfloat16")
STACK_LAYERS = 8  # dropout layers in the autograd stack
STACK_LOG2_SIZE = 26  # elements of the stack's input
STACK_P = 0.1
SEED, STREAM = 2**63 + 12345, 7  # any uint64 pair; a seed past 2**63 exercises the high key word
DROPKIT_STACK = "dropkit.torch.Dropout"
GOAL_OF_CLONE = 0.9  # forward and backward each reach >= 90% of x.clone() bandwidth


def bench_ms(fn) -> float:
    """Median time of ``fn`` in milliseconds (triton's do_bench: warmup, then timed runs, L2 flushed)."""
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median"))


def gbps(nbytes: int, ms: float) -> float:
    return nbytes / (ms * 1e-3) / 1e9


def check_mask(dropout_apply) -> None:
    """Refuse to time a kernel whose mask differs from the reference's (first 4099 elements, start 1)."""
    import numpy as np

    from dropkit.philox import keep_range

    x = torch.ones(4099, device="cuda")
    y = dropout_apply(x, 0.5, seed=SEED, stream=STREAM, scale=2.0, start=1)
    if not np.array_equal(y.cpu().numpy() != 0, keep_range(0.5, SEED, STREAM, 1, 4099)):
        raise SystemExit(
            "dropkit's Triton kernel draws a mask that differs from dropkit.keep_range: not timing it"
        )


def time_ops(dropout_apply, x: torch.Tensor, grad: torch.Tensor, p: float) -> dict[str, float]:
    """Milliseconds of dropkit's and torch's forward, backward and forward + backward on ``x``."""
    scale = 1.0 / (1.0 - p)
    _, mask = torch.ops.aten.native_dropout(x, p, True)

    def dropkit_fwd():
        return dropout_apply(x, p, seed=SEED, stream=STREAM, scale=scale)

    def dropkit_bwd():
        return dropout_apply(grad, p, seed=SEED, stream=STREAM, scale=scale)

    def torch_fwd():
        return torch.ops.aten.native_dropout(x, p, True)  # (output, bool mask)

    def torch_bwd():
        return torch.ops.aten.native_dropout_backward(grad, mask, scale)

    def dropkit_fwd_bwd():
        dropkit_fwd()
        return dropkit_bwd()

    def torch_fwd_bwd():
        _, fresh_mask = torch_fwd()
        return torch.ops.aten.native_dropout_backward(grad, fresh_mask, scale)

    ops = [dropkit_fwd, torch_fwd, dropkit_bwd, torch_bwd, dropkit_fwd_bwd, torch_fwd_bwd]
    return {op.__name__: bench_ms(op) for op in ops}


def kernel_rows(dropout_apply, log2_sizes, ps, dtypes) -> list[dict]:
    rows = []
    for log2_n in log2_sizes:
        n = 2**log2_n
        for dtype_name in dtypes:
            x = torch.randn(n, device="cuda", dtype=getattr(torch, dtype_name))
            grad = torch.randn_like(x)
            nbytes = 2 * n * x.element_size()  # read one tensor, write one
            clone_ms = bench_ms(x.clone)
            for p in ps:
                row = {"log2_n": log2_n, "dtype": dtype_name, "p": p, "clone_ms": clone_ms}
                row["clone_gbps"] = gbps(nbytes, clone_ms)
                times = time_ops(dropout_apply, x, grad, p)
                for name, ms in times.items():
                    row[f"{name}_ms"] = ms
                    row[f"{name}_gbps"] = gbps(2 * nbytes if name.endswith("fwd_bwd") else nbytes, ms)
                    row[f"{name}_of_clone"] = row[f"{name}_gbps"] / row["clone_gbps"]
                row["fwd_bwd_speedup_vs_torch"] = times["torch_fwd_bwd"] / times["dropkit_fwd_bwd"]
                rows.append(row)
            del x, grad
    return rows


def stack_row(make_layer, n: int, layers: int, p: float) -> dict:
    """Forward + backward through ``layers`` dropout layers on n float32 elements: time and memory."""
    stack = torch.nn.Sequential(*[make_layer(p) for _ in range(layers)]).cuda().train()
    x = torch.randn(n, device="cuda", requires_grad=True)
    grad = torch.ones(n, device="cuda")
    saved = []

    def pack(tensor):
        if tensor.is_cuda:
            saved.append(tensor.numel() * tensor.element_size())
        return tensor

    def step():
        x.grad = None
        stack(x).backward(grad)

    step()  # compile kernels and warm the caching allocator before measuring
    x.grad = None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    return {"peak_mib": peak / 2**20, "saved_bytes": sum(saved), "fwd_bwd_ms": bench_ms(step)}


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def print_tables(info: dict, rows: list[dict], stack: dict) -> None:
    print(f"# dropkit Triton dropout on {info['gpu']} ({info['date']})")
    print(
        f"torch {info['torch']}, triton {info['triton']}, CUDA {info['cuda']}; GB/s = useful bytes / time\n"
    )
    ops = ("dropkit_fwd", "torch_fwd", "dropkit_bwd", "torch_bwd")
    header = ["n", "dtype", "p", "clone GB/s"] + [f"{op} GB/s (x clone)" for op in ops]
    header += ["fwd+bwd ms dropkit / torch", "fwd+bwd speedup"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        cells = [f"2^{r['log2_n']}", r["dtype"], f"{r['p']}", f"{r['clone_gbps']:.0f}"]
        cells += [f"{r[op + '_gbps']:.0f} ({r[op + '_of_clone']:.2f})" for op in ops]
        cells.append(f"{r['dropkit_fwd_bwd_ms']:.3f} / {r['torch_fwd_bwd_ms']:.3f}")
        cells.append(f"{r['fwd_bwd_speedup_vs_torch']:.2f}x")
        print("| " + " | ".join(cells) + " |")

    print(f"\nStack of {STACK_LAYERS} dropout layers, p={STACK_P}, 2^{STACK_LOG2_SIZE} float32 elements,")
    print("forward + backward through autograd:\n")
    print("| layers | peak MiB above input | CUDA bytes saved for backward | fwd+bwd ms |")
    print("|---|---|---|---|")
    for name, s in stack.items():
        print(f"| {name} | {s['peak_mib']:.0f} | {s['saved_bytes']} | {s['fwd_bwd_ms']:.3f} |")

    print(f"\ngoals: forward >= {GOAL_OF_CLONE:.0%} of clone in every row: "
          f"{verdict(all(r['dropkit_fwd_of_clone'] >= GOAL_OF_CLONE for r in rows))}")  # fmt: skip
    print(f"       backward >= {GOAL_OF_CLONE:.0%} of clone in every row: "
          f"{verdict(all(r['dropkit_bwd_of_clone'] >= GOAL_OF_CLONE for r in rows))}")  # fmt: skip
    print(f"       fwd+bwd faster than torch in every row: "
          f"{verdict(all(r['fwd_bwd_speedup_vs_torch'] > 1.0 for r in rows))}")  # fmt: skip
    print(f"       0 bytes saved for backward: {verdict(stack[DROPKIT_STACK]['saved_bytes'] == 0)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log2-sizes", type=int, nargs="+", default=list(LOG2_SIZES))
    parser.add_argument("--ps", type=float, nargs="+", default=list(PS))
    parser.add_argument(
        "--dtypes", nargs="+", choices=["float16", "bfloat16", "float32", "float64"], default=list(DTYPES)
    )
    parser.add_argument("--json", help="also write every measurement to this file")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit(
            "gpu_dropout.py needs a CUDA GPU: torch.cuda.is_available() is False. Nothing was measured."
        )
    try:
        import triton
    except ImportError:
        raise SystemExit("gpu_dropout.py needs triton (pip install triton). Nothing was measured.") from None

    import dropkit.torch
    from dropkit.torch._triton import dropout_apply

    check_mask(dropout_apply)
    info = {
        "gpu": torch.cuda.get_device_name(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
    }
    rows = kernel_rows(dropout_apply, args.log2_sizes, args.ps, args.dtypes)
    n = 2**STACK_LOG2_SIZE
    stack = {
        DROPKIT_STACK: stack_row(lambda p: dropkit.torch.Dropout(p, seed=SEED), n, STACK_LAYERS, STACK_P),
        "torch.nn.Dropout": stack_row(torch.nn.Dropout, n, STACK_LAYERS, STACK_P),
    }
    print_tables(info, rows, stack)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "kernels": rows, "stack": stack}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
