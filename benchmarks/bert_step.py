"""One BERT training step with torch's dropout or after ``dropkit.torch.convert``, on a set thread count.

A 2-layer ``transformers`` BERT built from a config (no weights downloaded; needs the ``[models]``
extra), eager attention, 8 x 128 tokens, hidden 256. Run each model in its own process, so one cannot
change the other's threads::

    python benchmarks/bert_step.py torch --threads 1
    python benchmarks/bert_step.py converted --threads 1

Prints the median of 8 timed steps after 2 warm-up steps, and both libraries' thread counts after.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=("torch", "converted"))
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads before anything runs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import numba
    from transformers import BertConfig, BertForMaskedLM

    import dropkit.torch as dk

    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=1024,
        vocab_size=1000,
        attn_implementation="eager",
    )
    ids = torch.randint(0, config.vocab_size, (8, 128))
    model = BertForMaskedLM(config).train()
    if args.model == "converted":
        dk.convert(model, seed=0)
    times = []
    for _ in range(10):
        start = time.perf_counter()
        model(input_ids=ids, labels=ids).loss.backward()
        times.append(time.perf_counter() - start)
    step = statistics.median(times[2:]) * 1e3
    print(
        f"{args.model}: {step:.1f} ms per step; torch threads {torch.get_num_threads()}, "
        f"numba threads {numba.get_num_threads()}"
    )


if __name__ == "__main__":
    main()
