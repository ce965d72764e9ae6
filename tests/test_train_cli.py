"""`dropkit train` end to end with tiny settings: files, report, reproducibility, and every bad input."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from dropkit.cli import main
from dropkit.experiments import sources
from dropkit.experiments.datasets import DATASETS
from dropkit.experiments.options import TrainOptions
from dropkit.experiments.protocol import prepare, write_files
from dropkit.experiments.run import run_experiment
from idx_helpers import write_idx_dir

TINY = ["--epochs", "2", "--hidden", "16", "--mc-samples", "3"]
TWO_SEEDS = ["--seeds", "0", "1"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FILES = ["epochs.csv", "learning_curves.png", "metrics.json", "reliability.png", "runs.csv"]


def run_cli(argv: list[str]) -> int:
    """``dropkit`` in-process; argparse's own errors exit through SystemExit."""
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code


def test_smoke_writes_the_files_and_reports_seeds_differences_and_verdicts(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(["train", *TINY, *TWO_SEEDS, "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == FILES
    for name in ("learning_curves.png", "reliability.png"):
        assert (out / name).read_bytes().startswith(PNG_SIGNATURE)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["seeds"]) == {"0", "1"}
    assert set(metrics["seeds"]["0"]) == {"dropout", "no_dropout"}
    assert [run["p1"] for run in metrics["seeds"]["1"].values()] == [0.5, 0.0]
    assert [len(run["epochs"]) for run in metrics["seeds"]["0"].values()] == [2, 2]
    assert metrics["data"] | {"dataset": "digits", "train_size": 150, "val_size": 1050} == metrics["data"]
    assert metrics["data"]["test_size"] == 597 and metrics["config"]["batch_size"] == 32
    gap = metrics["summary"]["acc_gap"]
    dropout_gaps = [metrics["seeds"][s]["dropout"]["acc_gap"] for s in "01"]
    plain_gaps = [metrics["seeds"][s]["no_dropout"]["acc_gap"] for s in "01"]
    assert gap["dropout"]["mean"] == pytest.approx(sum(dropout_gaps) / 2)
    assert gap["difference"]["mean"] == pytest.approx((sum(dropout_gaps) - sum(plain_gaps)) / 2)
    assert gap["difference"]["low"] < gap["difference"]["mean"] < gap["difference"]["high"]
    assert metrics["mc"]["samples"] == 3 and metrics["mc"]["evaluated_on"] == "test set"
    assert set(metrics["mc"]["per_seed"]["1"]) == {
        "no_dropout_deterministic",
        "dropout_deterministic",
        "dropout_mc",
    }
    with open(out / "epochs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["seed"], row["run"], row["epoch"]) for row in rows[:3]] == [
        ("0", "dropout", "1"),
        ("0", "dropout", "2"),
        ("0", "no_dropout", "1"),
    ]
    assert len(rows) == 8
    last = metrics["seeds"]["1"]["no_dropout"]["epochs"][-1]
    assert float(rows[-1]["val_acc"]) == last["val_acc"]  # the CSV holds the exact numbers
    with open(out / "runs.csv", newline="") as handle:
        runs = list(csv.DictReader(handle))
    assert float(runs[0]["test_acc"]) == metrics["seeds"]["0"]["dropout"]["test_acc"]
    # The report: the set-up, per-epoch rows of each seed, per-seed rows, the comparison, the verdicts.
    assert "test: 597 images (a fixed 597 of the 1797 digits), evaluated once per run" in stdout
    assert "train loss and accuracy on a fixed 150 of the training images" in stdout
    assert stdout.count("epoch  train loss  train acc  val loss  val acc  train loss") == 2
    assert "per seed (final epoch; last 5: mean of the last 5 epochs" in stdout
    assert (
        "across 2 seeds: mean ± sd; paired difference dropout − no dropout with its 95% t interval" in stdout
    )
    assert "validation accuracy (mean of the last 5 epochs): dropout" in stdout
    assert "dropout, MC mean of K=3" in stdout
    for name in FILES:
        assert f"wrote {out / name}" in stdout


def test_one_seed_says_it_has_no_noise_estimate(tmp_path, capsys):
    assert run_cli(["train", *TINY, "--seeds", "3", "--mc-samples", "0", "--out", str(tmp_path)]) == 0
    stdout = capsys.readouterr().out
    assert "one seed: no estimate of the noise between seeds" in stdout
    assert "(one seed: no interval)" in stdout


def test_same_seeds_give_identical_files(tmp_path, capsys):
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        assert run_cli(["train", *TINY, *TWO_SEEDS, "--out", str(out)]) == 0
    for name in FILES:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    other = tmp_path / "c"
    assert run_cli(["train", *TINY, "--seeds", "0", "4", "--out", str(other)]) == 0
    assert (other / "metrics.json").read_bytes() != (first / "metrics.json").read_bytes()


def test_a_seed_gives_the_same_runs_alone_or_among_others(tmp_path):
    def run(seeds):
        options = TrainOptions(seeds=seeds, epochs=2, hidden=16, mc_samples=0, out=str(tmp_path))
        return run_experiment(prepare(options), out=io.StringIO(), progress=False)

    both, alone = run((0, 1)), run((1,))
    assert alone.results[1]["dropout"].history == both.results[1]["dropout"].history


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores")
def test_runs_side_by_side_give_the_numbers_of_runs_one_after_the_other(tmp_path):
    def run(threads):
        options = TrainOptions(
            seeds=(3,), epochs=3, hidden=16, mc_samples=0, threads=threads, out=str(tmp_path)
        )
        return run_experiment(prepare(options), out=io.StringIO(), progress=False).results[3]

    alone, side_by_side = run(1), run(2)
    for key in ("dropout", "no_dropout"):
        assert side_by_side[key] == alone[key]


def test_mc_samples_zero_skips_mc_dropout_and_its_diagram(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(["train", *TINY, "--seeds", "0", "--mc-samples", "0", "--out", str(out)]) == 0
    assert not (out / "reliability.png").exists()
    assert "MC dropout" not in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["mc"]["samples"] == 0


def test_progress_bar_goes_to_stderr(tmp_path, capsys):
    prepared = prepare(TrainOptions(epochs=2, hidden=8, mc_samples=0, seeds=(0,), out=str(tmp_path)))
    run_experiment(prepared, progress=True)
    captured = capsys.readouterr()
    assert "seed 0" in captured.err and "batch" in captured.err
    assert "\r" not in captured.out


def test_default_output_folder_names_the_dataset_backend_and_seeds():
    assert str(TrainOptions().output_dir()) == "runs/train-digits-seeds0-4"
    assert str(TrainOptions(seeds=(7,), backend="torch").output_dir()) == "runs/train-digits-torch-seed7"
    assert str(TrainOptions(dataset="mnist", seeds=(1, 5)).output_dir()) == "runs/train-mnist-seeds1_5"


def test_idx_dataset_trains_end_to_end_with_its_own_split(tmp_path, capsys):
    data_dir = write_idx_dir(tmp_path / "idx")
    out = tmp_path / "out"
    argv = ["train", "--dataset", "mnist", "--data-dir", str(data_dir), "--epochs", "1", "--hidden", "8"]
    argv += ["--val-size", "10", "--train-size", "25", "--seeds", "0", "--mc-samples", "2", "--out", str(out)]
    assert run_cli(argv) == 0
    stdout = capsys.readouterr().out
    assert f"dropkit train: mnist from {data_dir} (SHA-256: NOT the published files)" in stdout
    assert "data: 25 train / 10 validation images, drawn from the 40 training images with each seed" in stdout
    assert "test: 20 images (t10k files)" in stdout
    data = json.loads((out / "metrics.json").read_text())["data"]
    assert (data["pool_size"], data["test_size"], data["sha256_verified"]) == (40, 20, False)


def test_fashion_mnist_is_found_in_the_documented_places(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sources, "DEBIAN_ROOT", tmp_path / "debian")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("DROPKIT_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--dataset", "fashion-mnist", "--epochs", "1", "--hidden", "8", "--val-size", "10"]
    argv += ["--seeds", "0", "--mc-samples", "0", "--out", str(tmp_path / "out")]
    assert run_cli(argv) == 2
    assert "dataset 'fashion-mnist' not found in" in capsys.readouterr().err
    write_idx_dir(tmp_path / "debian" / "fashion-mnist")  # as `apt-get install dataset-fashion-mnist` does
    assert run_cli(argv) == 0
    assert f"fashion-mnist from {tmp_path / 'debian' / 'fashion-mnist'}" in capsys.readouterr().out
    monkeypatch.setenv("DROPKIT_DATA", str(tmp_path / "mine"))
    write_idx_dir(tmp_path / "mine" / "fashion-mnist")
    assert run_cli(argv) == 0
    assert f"fashion-mnist from {tmp_path / 'mine' / 'fashion-mnist'}" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_a_diverged_run_writes_strict_json_with_null_for_nan(tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        run_cli(["train", "--lr", "1e6", *TINY, "--seeds", "0", "--mc-samples", "0", "--out", str(out)]) == 0
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
    assert [p.name for p in out.iterdir()] == ["metrics.json"]
    assert (out / "metrics.json").read_bytes() == b"old"


def bad_idx_dir(tmp_path):
    directory = tmp_path / "bad-idx"
    directory.mkdir()
    for name in sources.IDX_FILES:
        (directory / name).write_bytes(b"\x1f\x00\x08\x03" + bytes(16))
    return directory


BAD_INPUTS = [
    (["--dataset", "cifar"], rf"--dataset 'cifar' is unknown; choose one of {', '.join(DATASETS)}"),
    (["--p1", "1.5"], r"--p1: dropout probability has to be between 0 and 1, but got 1\.5"),
    (["--p2", "-0.1"], r"--p2: dropout probability has to be between 0 and 1, but got -0\.1"),
    (["--p1", "nan"], r"--p1: dropout probability has to be between 0 and 1, but got nan"),
    (["--epochs", "0"], r"--epochs must be a positive integer, got 0"),
    (["--epochs", "10000000"], r"--epochs must be at most 1000000, got 10000000"),
    (["--batch-size", "-4"], r"--batch-size must be a positive integer, got -4"),
    (["--hidden", "0"], r"--hidden must be a positive integer, got 0"),
    (
        ["--hidden", "100000000000"],
        r"--hidden 100000000000 with --batch-size 32: .* need about .* GiB, more than",
    ),
    (["--lr", "0"], r"--lr must be a positive finite number, got 0\.0"),
    (["--lr", "inf"], r"--lr must be a positive finite number, got inf"),
    (["--mc-samples", "-1"], r"--mc-samples must be an integer >= 0, got -1"),
    (["--mc-samples", "100000"], r"--mc-samples must be at most 10000, got 100000"),
    (["--seeds", "-1"], r"argument --seeds: a seed is an integer in \[0, 2\*\*64\), got '-1'"),
    (["--seed", "18446744073709551616"], r"argument --seeds: a seed is an integer in \[0, 2\*\*64\)"),
    (["--seeds", "1", "1"], r"--seeds takes 1 to 1000 different seeds, got 1 1"),
    (["--val-size", "0"], r"--val-size must be a positive integer, got 0"),
    (["--val-size", "1200"], r"--val-size must be below the 1200 training images of digits, got 1200"),
    (["--train-size", "2000"], r"--train-size must be below the 1200 training images of digits, got 2000"),
    (["--val-size", "1100"], r"--val-size 1100 \+ --train-size 150 do not fit in the 1200 training images"),
    (["--threads", "0"], r"--threads must be an integer in \[1, \d+\] \(this machine's cores\), got 0"),
    (["--threads", "4096"], r"--threads must be an integer in \[1, \d+\]"),
    (["--backend", "jax"], r"--backend 'jax' is unknown; choose one of numpy, torch"),
    (["--data-dir", "{tmp}"], r"--data-dir is for fashion-mnist and mnist; digits ships with scikit-learn"),
    (["--download"], r"--download is for fashion-mnist and mnist; digits ships with scikit-learn"),
    (["--epochs", "two"], r"argument --epochs: invalid int value: 'two'"),
    (["--dataset", "mnist", "--data-dir", "{tmp}/empty"], r"dataset 'mnist': .*empty lacks train-images"),
    (["--dataset", "fashion-mnist", "--data-dir", "{bad_idx}"], r"not an IDX file \(magic number 0x1f000803"),
    (["--out", "{tmp}/a-file"], r"--out .*a-file exists and is not a directory"),
    (["--out", "{tmp}/a-file/sub"], r"--out .*a-file/sub cannot be created: .*a-file is not a directory"),
    (["--out", "{tmp}/a-file/two\nlines"], r"--out .*a-file/two lines cannot be created"),
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


def test_ctrl_c_during_training_exits_130_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "dropkit", "train", "--epochs", "100000", "--seeds", "0", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    for line in process.stdout:  # the set-up lines are printed before training starts
        if line.startswith("seeds 0:"):
            break
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert stderr.splitlines()[-1] == "dropkit train: interrupted; nothing written"
    assert "Traceback" not in stderr
    assert not out.exists()
