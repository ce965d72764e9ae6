"""The command line's worked trace is what the README shows."""

import subprocess
import sys
from pathlib import Path

import pytest

from dropkit.cli import main


def test_trace_prints_the_worked_example(capsys):
    assert main(["trace"]) == 0
    out = capsys.readouterr().out
    assert "y = x * mask * 2   = [[2., 0., 6., 8.]]" in out
    assert "dL/dx = dL/dy*m*2  = [[2., 0., 2., 2.]]" in out
    assert "dL/dx              = [0.2, 0. , 0.6, 0. ]" in out


def test_the_readme_shows_the_trace_exactly(capsys):
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme[readme.index("## The worked trace") :]
    shown = section[section.index("```\n") + 4 : section.index("\n```", section.index("```\n") + 4)]
    assert main(["trace"]) == 0
    assert capsys.readouterr().out.rstrip("\n") == shown


def test_python_dash_m_runs_the_trace():
    done = subprocess.run([sys.executable, "-m", "dropkit"], capture_output=True, text=True, check=True)
    assert "Philox words" in done.stdout


@pytest.mark.parametrize("seed", ["-1", "2**64", str(2**64)])
def test_trace_rejects_a_seed_outside_uint64_with_status_2_and_one_line(seed, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["trace", "--seed", seed])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "seed must be an integer in [0, 2**64)" in err
