"""The command line never shows a traceback: bad options, Ctrl-C, a missing extra, memory, a closed pipe.

Each case ends in one line on stderr and a status (2 for user error, 130 for Ctrl-C, 1 for memory)
and leaves no file behind.
"""

import contextlib
import importlib.util
import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

import dropkit
import oracle
from dropkit import bench
from dropkit.cli import main

ROOT = Path(__file__).parents[1]


def run_main(argv):
    """``main(argv)`` in this process: (status, stdout, stderr); argparse's exits count as statuses."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(argv)
        except SystemExit as exit:
            status = exit.code
    return status, out.getvalue(), err.getvalue()


def one_line_error(err, after_progress=False):
    """The one line ``err`` holds (after the progress lines a started benchmark prints, if any)."""
    lines = err.splitlines(keepends=True)
    if after_progress:
        assert all(line.startswith("  ") for line in lines[:-1]), err
        lines = lines[-1:]
    assert len(lines) == 1 and lines[0].endswith("\n") and "Traceback" not in err, err
    return lines[0].strip()


def test_version_prints_the_package_version():
    status, out, _ = run_main(["--version"])
    assert status == 0 and out == f"dropkit {dropkit.__version__}\n"


@pytest.mark.parametrize(
    ("argv", "help_of"),
    [
        (["--frobnicate"], "dropkit"),
        (["trace", "--frobnicate"], "dropkit trace"),
        (["train", "--epochs", "3", "--frobnicate", "x"], "dropkit train"),
        (["bench", "--quick", "--frobnicate"], "dropkit bench"),
        (["train", "--epochs", "many"], "dropkit train"),
        (["bench", "--sizes", "2**100"], "dropkit bench"),
        (["nonsense"], "dropkit"),
    ],
)
def test_a_bad_option_points_at_the_help_of_its_subcommand(argv, help_of):
    status, _, err = run_main(argv)
    assert status == 2
    assert one_line_error(err).startswith(f"{help_of}: error: ") and err.rstrip().endswith(
        f"(see {help_of} --help)"
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--epochs", "1\n2"],
        ["trace", "a\nb"],
        ["trace", "--seed", "1\n2"],
        ["bench", "--sizes", "64", "--no-torch", "--no-first-call", "--json", "no\nsuch/dir.json"],
    ],
)
def test_a_newline_in_an_argument_or_path_stays_on_one_line(argv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, _, err = run_main(argv)
    assert status == 2 and "\\n" in one_line_error(err)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ["--sizes", "2**50"],
            r"sizes: 1125899906842624 elements need about 48.0 PiB for the benchmark's arrays",
        ),
        (["--sizes", "99999999999999999999"], r"sizes: 99999999999999999999 elements need about"),
        (["--ps", "nan"], r"ps must be drop probabilities in \[0, 1\): dropout probability has to be"),
        (["--ps", "inf"], r"ps must be drop probabilities in \[0, 1\)"),
        (["--threads", "1000000"], r"threads must be in \[1, \d+\]"),
        (["--repeats", "-3"], r"repeats must be a positive integer, got -3"),
    ],
)
def test_bench_refuses_what_cannot_run_before_any_work(options, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, out, err = run_main(["bench", "--no-torch", "--no-first-call", "--json", "b.json", *options])
    assert status == 2 and out == ""
    assert re.search(message, one_line_error(err))
    assert list(tmp_path.iterdir()) == []


def interrupt(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("argv", "target"),
    [
        (["trace"], "dropkit.trace.worked_trace"),
        (
            ["bench", "--sizes", "64", "--no-torch", "--no-first-call", "--json", "b.json"],
            "dropkit.bench.run_benchmarks",
        ),
        (["bench", "--sizes", "64", "--no-torch", "--json", "b.json"], "dropkit.bench.first_call_latency"),
        (
            ["bench", "--sizes", "64", "--no-torch", "--no-first-call", "--json", "b.json"],
            "dropkit.bench.Path.write_text",
        ),
        (["train", "--epochs", "1", "--out", "run"], "dropkit.experiments.run.main"),
        (["train", "--epochs", "1", "--out", "run"], "dropkit.cli.missing_extra"),
    ],
)
def test_ctrl_c_anywhere_is_status_130_and_nothing_written(argv, target, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(target, interrupt)
    status, _, err = run_main(argv)
    assert status == 130
    assert one_line_error(err, after_progress=True) == f"dropkit {argv[0]}: interrupted; nothing written"
    assert list(tmp_path.iterdir()) == []


def test_out_of_memory_is_one_line_and_status_1(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def no_room(*args, **kwargs):
        raise MemoryError("Unable to allocate 8.00 EiB for an array with shape (2305843009213693952,)")

    monkeypatch.setattr("dropkit.bench.run_benchmarks", no_room)
    status, _, err = run_main(["bench", "--sizes", "64", "--no-first-call", "--json", "b.json"])
    assert status == 1
    assert one_line_error(err).startswith("dropkit bench: error: out of memory (Unable to allocate 8.00 EiB")
    assert err.rstrip().endswith("; nothing written") and list(tmp_path.iterdir()) == []


def without(*modules):
    """``importlib.util.find_spec`` as if ``modules`` were not installed."""
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name.split(".")[0] in modules else real(name, *args, **kwargs)

    return mock.patch("importlib.util.find_spec", find_spec)


@pytest.mark.parametrize(
    ("missing", "argv", "message"),
    [
        (["matplotlib"], [], "dropkit train needs matplotlib: pip install 'dropkit[train]'"),
        (["tqdm"], [], "dropkit train needs tqdm: pip install 'dropkit[train]'"),
        (["sklearn"], [], "dropkit train needs scikit-learn: pip install 'dropkit[train]'"),
        (
            ["sklearn", "tqdm", "matplotlib"],
            [],
            "needs matplotlib, tqdm and scikit-learn: pip install 'dropkit[train]'",
        ),
        (
            ["torch"],
            ["--backend", "torch"],
            "dropkit train --backend torch needs PyTorch: pip install 'dropkit[torch]'",
        ),
    ],
)
def test_a_missing_extra_is_named_before_any_work(missing, argv, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("dropkit.experiments.run.main", lambda args: pytest.fail("training started"))
    with without(*missing):
        status, out, err = run_main(["train", "--out", "run", *argv])
    assert status == 2 and out == ""
    assert one_line_error(err).endswith(message)
    assert list(tmp_path.iterdir()) == []


def test_digits_need_scikit_learn_but_idx_data_sets_do_not(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("dropkit.experiments.run.main", lambda args: 0)
    with without("sklearn"):
        assert run_main(["train", "--dataset", "fashion-mnist"])[0] == 0
        assert run_main(["train"])[0] == 2


def test_a_closed_pipe_ends_quietly():
    done = subprocess.run(
        f"{sys.executable} -m dropkit trace | head -c 10",
        shell=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        check=True,
    )
    assert len(done.stdout) == 10 and done.stderr == ""


def test_a_real_ctrl_c_during_bench_is_one_line_and_leaves_no_file(tmp_path):
    """SIGINT to a running ``dropkit bench``, as a terminal's Ctrl-C sends it."""
    argv = ["--sizes", "2**16", "--repeats", "20000", "--threads", "1", "--no-torch", "--no-first-call"]
    process = subprocess.Popen(
        [sys.executable, "-m", "dropkit", "bench", *argv, "--json", "b.json"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = process.stderr.readline()  # the first progress line: the benchmark is running
    assert "elements" in first
    time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    # 130, or ended by SIGINT itself (Python does so when a KeyboardInterrupt passed through certain C
    # frames on its way to dropkit's handler): a shell reports both as status 130.
    assert process.returncode in (130, -signal.SIGINT)
    assert err == "dropkit bench: interrupted; nothing written\n" and out == ""
    assert list(tmp_path.iterdir()) == []


@oracle.FAST
@given(st.text(max_size=30))
def test_any_seed_text_for_trace_is_a_trace_or_one_line(text):
    status, out, err = run_main(["trace", "--seed", text])
    if status == 0:
        assert 0 <= int(text) < 2**64 and "Philox words" in out
    else:
        assert status == 2 and "seed must be an integer in [0, 2**64)" in one_line_error(err)


TRAIN_OPTIONS = ["--hidden", "--p1", "--p2", "--lr", "--batch-size", "--epochs", "--seed", "--mc-samples"]
HOSTILE = ["nan", "inf", "-1", "0", "1e400", "10" * 30, "", "0x10", "1\n2", "NaN", "2**64", "--", "é"]


@oracle.FAST
@given(st.lists(st.tuples(st.sampled_from(TRAIN_OPTIONS), st.sampled_from(HOSTILE)), min_size=1, max_size=3))
def test_hostile_train_options_never_reach_a_traceback(options):
    argv = ["train", "--out", os.devnull + "/x"]  # a folder that cannot exist: nothing is ever written
    for option, value in options:
        argv += [option, value]
    with mock.patch("dropkit.experiments.run.run_experiment", side_effect=AssertionError("trained")):
        status, _, err = run_main(argv)
    assert status == 2 and one_line_error(err).startswith("dropkit train: error: ")


def test_bench_writes_its_files_whole_or_not_at_all(tmp_path, monkeypatch):
    real = Path.write_text
    calls = []

    def second_fails(self, text, *args, **kwargs):
        calls.append(self)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(self, text, *args, **kwargs)

    monkeypatch.setattr(bench.Path, "write_text", second_fails)
    argv = ["bench", "--sizes", "64", "--repeats", "1", "--threads", "1", "--no-torch", "--no-first-call"]
    status, _, err = run_main(
        [*argv, "--json", str(tmp_path / "b.json"), "--markdown", str(tmp_path / "b.md")]
    )
    assert status == 1 and "No space left on device" in one_line_error(err, after_progress=True)
    assert list(tmp_path.iterdir()) == []


def test_import_dropkit_torch_without_torch_says_how_to_install_it():
    script = "import sys; sys.modules['torch'] = None  # as if torch were not installed\nimport dropkit.torch"
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert done.returncode == 1
    assert (
        done.stderr.splitlines()[-1]
        == "ImportError: dropkit.torch needs PyTorch: pip install 'dropkit[torch]'"
    )
    assert "ModuleNotFoundError" not in done.stderr  # the hint replaces torch's own error, not chains it
