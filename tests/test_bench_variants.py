"""benchmarks/torch_variants.py: every variant has a twin, and a row carries both times and the ratio.

No time is asserted (speed lives in the benchmark's output, docs/benchmarks.md); the rows are checked
for what they hold, on two calls each.
"""

from __future__ import annotations

import argparse

import pytest

pytest.importorskip("torch")

from dropkit.bench import variants


def test_every_case_builds_a_layer_and_a_twin_that_run_on_its_input():
    import torch

    for name, ours_of, theirs_of, shape in variants.cases("small"):
        x = torch.ones(shape, requires_grad=True)
        for layer in (ours_of(), theirs_of()):
            y = layer(x)
            assert y.shape == x.shape, name
            y.sum().backward()


def test_rows_and_table_hold_both_times_and_the_ratio(capsys):
    rows = variants.measure("small", 2, ["Dropout2d", "timm.DropPath"])
    assert [row["variant"] for row in rows] == ["Dropout2d", "timm.DropPath"]
    assert all(row["dropkit_us"] > 0 and row["torch_us"] > 0 for row in rows)
    lines = variants.table(rows).splitlines()
    assert lines[0].startswith("| variant | shape |") and len(lines) == 4
    assert lines[2].startswith("| Dropout2d | 8×16×8×8 |")
    parser = argparse.ArgumentParser()
    variants.add_arguments(parser)
    assert variants.main(parser.parse_args(["--only", "DropPath", "--repeats", "2"])) == 0
    assert "| DropPath |" in capsys.readouterr().out
