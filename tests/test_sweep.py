"""`dropkit sweep`: one run per p for every seed, the per-p summary and its paired differences to p = 0."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest

from dropkit.cli import main
from dropkit.experiments.options import SweepOptions
from dropkit.experiments.protocol import prepare
from dropkit.experiments.sweep import run_sweep, summarize

TINY = ["--epochs", "2", "--hidden", "16", "--seeds", "0", "1"]


def run_cli(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code


def test_sweep_writes_png_json_csv_and_a_table_per_p(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert run_cli(["sweep", *TINY, "--ps", "0", "0.2", "0.5", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["sweep.csv", "sweep.json", "sweep.png"]
    assert (out / "sweep.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    document = json.loads((out / "sweep.json").read_text())
    assert document["summary"]["ps"] == [0.0, 0.2, 0.5]
    assert set(document["seeds"]["1"]) == {"p=0", "p=0.2", "p=0.5"}
    per_p = document["summary"]["per_p"]
    runs = document["seeds"]
    expected = [runs[s]["p=0.5"]["last_val_acc"] - runs[s]["p=0"]["last_val_acc"] for s in ("0", "1")]
    assert per_p["p=0.5"]["vs_p0"]["last_val_acc"]["mean"] == pytest.approx(sum(expected) / 2)
    assert per_p["p=0"]["vs_p0"]["test_acc"]["mean"] == 0.0
    with open(out / "sweep.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["seed"], row["p"]) for row in rows] == [
        (seed, p) for seed in ("0", "1") for p in ("0.0", "0.2", "0.5")
    ]
    assert float(rows[4]["test_acc"]) == runs["1"]["p=0.2"]["test_acc"]
    assert "dropkit sweep: digits from scikit-learn's digits" in stdout
    assert "the 3 runs of a seed share the seed's split, initial weights and batch order" in stdout
    assert re.search(r"^0\.5\s+0\.\d{4} ± 0\.\d{4}", stdout, re.MULTILINE)
    assert "Δ val acc vs p=0 [95% CI]" in stdout


def test_all_ps_of_a_seed_start_from_the_same_weights_and_p0_is_train_without_dropout(tmp_path):
    from dropkit.experiments.options import TrainOptions
    from dropkit.experiments.run import run_experiment

    options = SweepOptions(ps=(0.0, 0.5), seeds=(2,), epochs=3, hidden=16, out=str(tmp_path))
    swept = run_sweep(prepare(options), out=io.StringIO(), progress=False)[2]
    trained = run_experiment(
        prepare(TrainOptions(seeds=(2,), epochs=3, hidden=16, mc_samples=0, out=str(tmp_path))),
        out=io.StringIO(),
        progress=False,
    ).results[2]
    assert swept["p=0"].history == trained["no_dropout"].history
    assert swept["p=0.5"].history == trained["dropout"].history  # p1 = p2 = 0.5 is train's default
    summary = summarize({2: swept}, (0.0, 0.5))
    assert summary["per_p"]["p=0.5"]["last_val_acc"]["n"] == 1


BAD = [
    (["--ps", "0.5"], r"--ps takes 2 to 100 different probabilities, got 0\.5"),
    (["--ps", "0.1", "0.1"], r"--ps takes 2 to 100 different probabilities, got 0\.1 0\.1"),
    (["--ps", "0", "1.5"], r"--ps: dropout probability has to be between 0 and 1, but got 1\.5"),
    (["--ps", "0", "x"], r"argument --ps: invalid float value: 'x'"),
]


@pytest.mark.parametrize(("args", "message"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_sweep_input_exits_2_with_one_line(tmp_path, capsys, args, message):
    assert run_cli(["sweep", *args, "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert captured.out == "" and len(lines) == 1 and lines[0].startswith("dropkit sweep: error: ")
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "out").exists()
