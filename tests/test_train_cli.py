"""`dropkit train` end to end with tiny settings: files, report, reproducibility, and every bad input."""

from __future__ import annotations

import csv
import gzip
import json
import re
import struct
import subprocess
import sys

import numpy as np
import pytest

from dropkit.cli import main
from dropkit.experiments.datasets import IDX_FILES
from dropkit.experiments.run import TrainOptions, prepare, run_experiment, write_files

TINY = ["--epochs", "2", "--hidden", "16", "--batch-size", "128", "--mc-samples", "3"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_cli(argv: list[str]) -> int:
    """``dropkit`` in-process; argparse's own errors exit through SystemExit."""
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code


def test_smoke_writes_png_json_and_csv_and_prints_both_runs(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(["train", *TINY, "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [
        "epochs.csv",
        "learning_curves.png",
        "metrics.json",
        "reliability.png",
    ]
    for name in ("learning_curves.png", "reliability.png"):
        assert (out / name).read_bytes().startswith(PNG_SIGNATURE)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["runs"]) == {"dropout", "no_dropout"}
    assert [run["p1"] for run in metrics["runs"].values()] == [0.5, 0.0]
    assert [len(run["epochs"]) for run in metrics["runs"].values()] == [2, 2]
    assert set(metrics["mc"]) >= {"no_dropout_deterministic", "dropout_deterministic", "dropout_mc"}
    assert metrics["mc"]["samples"] == 3 and metrics["mc"]["ece_bins"] == 15
    with open(out / "epochs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["run"], row["epoch"]) for row in rows] == [
        ("dropout", "1"),
        ("dropout", "2"),
        ("no_dropout", "1"),
        ("no_dropout", "2"),
    ]
    last = metrics["runs"]["no_dropout"]["epochs"][-1]
    assert float(rows[-1]["val_acc"]) == last["val_acc"]  # the CSV holds the exact numbers
    # The report: per-epoch rows of both runs, the gap table, the MC table and the paths.
    assert "run 1/2: dropout p1=0.5 p2=0.5" in stdout and "run 2/2: no dropout (p = 0)" in stdout
    assert stdout.count("epoch  train loss  train acc  val loss  val acc") == 2
    assert "acc gap" in stdout and "loss gap" in stdout and "best val acc" in stdout
    assert "dropout, MC mean of K=3" in stdout
    for name in ("learning_curves.png", "reliability.png", "metrics.json", "epochs.csv"):
        assert f"wrote {out / name}" in stdout


def test_same_seed_gives_identical_files(tmp_path, capsys):
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        assert run_cli(["train", *TINY, "--seed", "3", "--out", str(out)]) == 0
    for name in ("metrics.json", "epochs.csv", "learning_curves.png", "reliability.png"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    other = tmp_path / "c"
    assert run_cli(["train", *TINY, "--seed", "4", "--out", str(other)]) == 0
    assert (other / "metrics.json").read_bytes() != (first / "metrics.json").read_bytes()


def test_mc_samples_zero_skips_mc_dropout_and_its_diagram(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(["train", *TINY[:-1], "0", "--out", str(out)]) == 0
    assert not (out / "reliability.png").exists()
    assert "MC dropout" not in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["mc"]["samples"] == 0


def test_progress_bar_goes_to_stderr(tmp_path, capsys):
    prepared = prepare(TrainOptions(epochs=2, hidden=8, mc_samples=0, out=str(tmp_path)))
    run_experiment(prepared, progress=True)
    captured = capsys.readouterr()
    assert "run 1/2" in captured.err and "run 2/2" in captured.err and "batch" in captured.err
    assert "\r" not in captured.out


def test_idx_dataset_trains_end_to_end(tmp_path, capsys):
    rng = np.random.default_rng(0)
    labels = np.arange(40, dtype=np.uint8) % 10
    images = rng.integers(0, 256, size=(40, 5, 5), dtype=np.uint8)
    arrays = (images, labels, images[:20], labels[:20])
    for name, array in zip(IDX_FILES, arrays, strict=True):
        header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
        (tmp_path / f"{name}.gz").write_bytes(gzip.compress(header + array.tobytes()))
    out = tmp_path / "out"
    argv = ["train", "--dataset", "mnist", "--data-dir", str(tmp_path), "--epochs", "1", "--hidden", "8"]
    assert run_cli([*argv, "--batch-size", "16", "--mc-samples", "2", "--out", str(out)]) == 0
    assert "mnist, 40 train / 20 validation images (5x5, 10 classes)" in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["data"]["val_source"] == "t10k (test) files"


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_a_diverged_run_writes_strict_json_with_null_for_nan(tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        run_cli(
            [
                "train",
                "--lr",
                "1e6",
                "--epochs",
                "2",
                "--hidden",
                "16",
                "--mc-samples",
                "0",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    text = (out / "metrics.json").read_text()
    json.loads(text, parse_constant=lambda name: pytest.fail(f"metrics.json holds {name}"))
    assert "null" in text  # the diverged losses


def test_write_files_leaves_nothing_behind_when_one_file_fails(tmp_path):
    out = tmp_path / "new"
    with pytest.raises(FileNotFoundError):
        write_files(out, {"metrics.json": b"{}", "missing-dir/epochs.csv": b""})
    assert not out.exists()  # created for the write, removed again with the staged file
    out.mkdir()
    (out / "metrics.json").write_bytes(b"old")
    with pytest.raises(FileNotFoundError):
        write_files(out, {"metrics.json": b"new", "missing-dir/epochs.csv": b""})
    assert [p.name for p in out.iterdir()] == ["metrics.json"] and (
        out / "metrics.json"
    ).read_bytes() == b"old"


def bad_idx_dir(tmp_path):
    directory = tmp_path / "bad-idx"
    directory.mkdir()
    for name in IDX_FILES:
        (directory / name).write_bytes(b"\x1f\x00\x08\x03" + bytes(16))
    return directory


BAD_INPUTS = [
    (["--dataset", "cifar"], r"--dataset 'cifar' is unknown; choose one of digits, fashion-mnist, mnist"),
    (["--p1", "1.5"], r"--p1: dropout probability has to be between 0 and 1, but got 1\.5"),
    (["--p2", "-0.1"], r"--p2: dropout probability has to be between 0 and 1, but got -0\.1"),
    (["--p1", "nan"], r"--p1: dropout probability has to be between 0 and 1, but got nan"),
    (["--epochs", "0"], r"--epochs must be a positive integer, got 0"),
    (["--batch-size", "-4"], r"--batch-size must be a positive integer, got -4"),
    (["--hidden", "0"], r"--hidden must be a positive integer, got 0"),
    (["--lr", "0"], r"--lr must be a positive finite number, got 0\.0"),
    (["--mc-samples", "-1"], r"--mc-samples must be an integer >= 0, got -1"),
    (["--seed", "-1"], r"--seed must be an integer in \[0, 2\*\*64\), got -1"),
    (["--epochs", "two"], r"argument --epochs: invalid int value: 'two'"),
    (
        ["--dataset", "mnist", "--data-dir", "{tmp}/empty"],
        r"dataset 'mnist' needs train-images-idx3-ubyte\[\.gz\]",
    ),
    (["--dataset", "fashion-mnist", "--data-dir", "{bad_idx}"], r"not an IDX file \(magic number 0x1f000803"),
    (["--out", "{tmp}/a-file"], r"--out .*a-file exists and is not a directory"),
    (["--out", "{tmp}/a-file/sub"], r"--out .*a-file/sub cannot be created: .*a-file is not a directory"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, args, message):
    (tmp_path / "a-file").write_text("not a directory")
    (tmp_path / "empty").mkdir()
    places = {"tmp": tmp_path, "bad_idx": bad_idx_dir(tmp_path)}
    args = [arg.format(**places) for arg in args]
    out = tmp_path / "out"
    argv = ["train", *args] if "--out" in args else ["train", *args, "--out", str(out)]
    before = sorted(p.name for p in tmp_path.iterdir())
    assert run_cli(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing trained
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("dropkit train: error: "), captured.err
    assert re.search(message, lines[0]), lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_console_entry_point_reports_bad_input_without_traceback():
    done = subprocess.run(
        [sys.executable, "-m", "dropkit", "train", "--p1", "2"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert (
        done.stderr
        == "dropkit train: error: --p1: dropout probability has to be between 0 and 1, but got 2.0\n"
    )
    assert done.stdout == ""
