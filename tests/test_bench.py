"""`dropkit bench` on tiny sizes: the table's structure and the files it writes, never its timings."""

import argparse
import json

import pytest

from dropkit import bench
from dropkit.bench import GOAL_SIZE, BenchReport, Row, run_benchmarks
from dropkit.cli import main

PHASES = {"forward", "backward", "forward+backward"}


def methods_and_phases(report, size, p):
    return {(row.method, row.phase) for row in report.rows if (row.size, row.p) == (size, p)}


def test_rows_cover_every_method_phase_size_and_p_without_torch():
    report = run_benchmarks([1000, 4097], [0.1, 0.5], repeats=1, threads=1, use_torch=False)
    expected = {("memory pass", "read+write"), ("dropkit p=0", "read+write")}
    expected |= {(method, phase) for method in ("dropkit", "textbook NumPy") for phase in PHASES}
    expected.add(("dropkit", "forward, new array"))
    for size in (1000, 4097):
        for p in (0.1, 0.5):
            assert methods_and_phases(report, size, p) == expected
    assert len(report.rows) == 2 * 2 * len(expected)
    for row in report.rows:
        assert row.ms > 0 and row.torch_over_this is None
        if row.method == "memory pass":
            assert row.vs_memory == 1.0
    kept = {row.method: row.kept_bytes_per_element for row in report.rows}
    assert kept["dropkit"] == 0.0 and kept["textbook NumPy"] == 4.0  # a float32 mask
    assert kept["memory pass"] is None
    assert any("torch rows skipped" in note for note in report.notes)
    assert report.config["threads"] == 1 and report.config["torch"] == "not used"


def test_torch_rows_carry_ratios_and_the_bytes_autograd_keeps():
    pytest.importorskip("torch")
    report = run_benchmarks([2048], [0.5], repeats=1, threads=1)
    rows = {(row.method, row.phase): row for row in report.rows}
    for phase in PHASES:
        assert rows[("torch", phase)].torch_over_this == pytest.approx(1.0)
        dropkit, torch = rows[("dropkit", phase)], rows[("torch", phase)]
        assert dropkit.torch_over_this == pytest.approx(torch.ms / dropkit.ms)
    allocating = rows[("dropkit", "forward, new array")]
    assert allocating.torch_over_this == pytest.approx(rows[("torch", "forward")].ms / allocating.ms)
    # torch's CPU dropout saves its mask for backward: at least a byte per element.
    assert rows[("torch", "forward")].kept_bytes_per_element >= 1.0
    assert rows[("torch.mul", "new tensor")].ms > 0
    for phase in PHASES:  # dropkit's drop-in, timed like torch, keeps no tensor for backward
        assert rows[("dropkit.torch", phase)].kept_bytes_per_element == 0.0


@pytest.mark.parametrize(
    ("value", "mode", "switch", "advice"),
    [
        (None, "madvise", "unset", True),
        ("0", "madvise", "unset", True),
        ("1", "madvise", "set", False),
        ("2abc", "madvise", "set", False),  # torch reads it with C's atoi
        ("yes", "madvise", "unset", True),
        (None, "always", "unset", False),  # the kernel gives huge pages anyway
        (None, "never", "unset", False),  # the switch would change nothing
    ],
)
def test_the_report_says_what_decides_torchs_page_size(monkeypatch, tmp_path, value, mode, switch, advice):
    pytest.importorskip("torch")
    if value is None:
        monkeypatch.delenv("THP_MEM_ALLOC_ENABLE", raising=False)
    else:
        monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", value)
    setting = tmp_path / "enabled"
    setting.write_text(" ".join(f"[{m}]" if m == mode else m for m in ("always", "madvise", "never")) + "\n")
    monkeypatch.setattr(bench.measure, "KERNEL_HUGE_PAGES", setting)
    report = run_benchmarks([64], [0.5], repeats=1, threads=1)
    assert report.config["huge_pages"] == {"THP_MEM_ALLOC_ENABLE": switch == "set", "kernel": mode}
    assert report.table().splitlines()[0].endswith(f"(THP_MEM_ALLOC_ENABLE {switch}, kernel THP {mode})")
    assert any("set THP_MEM_ALLOC_ENABLE=1" in note for note in report.notes) is advice


def test_table_markdown_and_json_hold_every_row(tmp_path):
    report = run_benchmarks([1024], [0.5], repeats=1, threads=1, use_torch=False)
    text = report.table().splitlines()
    assert text[0].startswith("float32, 1 thread(s)")
    assert text[1].split()[:4] == ["elements", "p", "method", "phase"]
    assert sum(line.startswith("2^10") for line in text) == len(report.rows)
    markdown = report.table(markdown=True).splitlines()
    assert sum(line.startswith("| 2^10 |") for line in markdown) == len(report.rows)
    assert "| elements | p | method | phase | ms | × memory pass | torch ÷ this | kept B/elem |" in markdown
    data = json.loads(report.to_json())
    assert set(data) == {"config", "rows", "first_call", "notes", "goals"}
    assert len(data["rows"]) == len(report.rows)
    assert data["rows"][0].keys() == Row.__dataclass_fields__.keys()


def goal_row(method, phase, ms, memory_ms=5.0, torch_ms=None):
    speedup = None if torch_ms is None else torch_ms / ms
    return Row(GOAL_SIZE, 0.5, method, phase, ms, ms / memory_ms, speedup, 0.0)


def test_goals_compare_each_ratio_at_2_to_the_24_with_its_target():
    report = BenchReport(
        config={},
        rows=[
            goal_row("dropkit", "forward", 9.0, torch_ms=180.0),  # 1.8x the pass, 20x faster than torch
            goal_row("dropkit", "backward", 11.0),  # 2.2x the pass: missed
            goal_row("dropkit", "forward+backward", 20.0, torch_ms=150.0),  # 4x, 7.5x faster: both missed
            Row(2**20, 0.5, "dropkit", "forward", 1.0, 9.0, 1.0, 0.0),  # other sizes are not goals
        ],
    )
    met = {g["goal"]: g["met"] for g in report.goals()}
    assert met == {
        "forward ÷ memory pass <= 2.0": True,
        "forward speed-up over torch >= 10.0": True,
        "backward ÷ memory pass <= 2.0": False,
        "forward+backward ÷ memory pass <= 3.0": False,
        "forward+backward speed-up over torch >= 10.0": False,
    }


def test_cli_prints_the_table_and_writes_json_and_markdown(tmp_path, capsys):
    json_path, markdown_path = tmp_path / "bench.json", tmp_path / "bench.md"
    argv = ["bench", "--sizes", "2**10", "3000", "--ps", "0.5", "--repeats", "1", "--threads", "1"]
    argv += ["--no-torch", "--no-first-call", "--json", str(json_path), "--markdown", str(markdown_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "textbook NumPy" in out and "3000" in out
    data = json.loads(json_path.read_text())
    assert {row["size"] for row in data["rows"]} == {1024, 3000}
    assert markdown_path.read_text().count("| dropkit |") == 2 * (len(PHASES) + 1)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--threads", "0"], "threads must be a positive integer, got 0"),
        (["--ps", "1.0"], "p must be below 1 for the benchmark"),
        (["--ps", "-0.5"], "dropout probability has to be between 0 and 1"),
        (["--repeats", "0"], "repeats must be a positive integer, got 0"),
        (["--markdown", "no-such-folder/b.md"], "--markdown: 'no-such-folder/b.md' must be a file in"),
        (["--markdown", "."], "--markdown: '.' must be a file in an existing folder"),
        (["--markdown", "b.json"], "--json and --markdown must be different files"),
    ],
)
def test_cli_rejects_bad_values_with_status_2(options, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    command = ["bench", "--sizes", "64", "--no-torch", "--no-first-call", "--json", "b.json", *options]
    assert main(command) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # rejected before anything ran or was written


def test_the_thread_counts_are_restored_after_a_run():
    numba = pytest.importorskip("numba")
    torch = pytest.importorskip("torch")
    before = numba.get_num_threads(), torch.get_num_threads()
    run_benchmarks([64], [0.5], repeats=1, threads=1)
    assert (numba.get_num_threads(), torch.get_num_threads()) == before


def test_sizes_parse_powers_of_two_and_reject_the_rest():
    assert [bench._parse_size(s) for s in ("2**20", "2^20", "1048576")] == [2**20] * 3
    for bad in ("0", "3**4", "big", "-8"):
        with pytest.raises(argparse.ArgumentTypeError, match="sizes must be positive integers"):
            bench._parse_size(bad)


def test_first_call_latency_runs_in_a_fresh_process():
    latency = bench.first_call_latency(runs=1)
    assert list(latency) == ["import dropkit", "first call (2^20 elements)", "second call"]
    assert all(seconds > 0 for seconds in latency.values())
