"""The command line's worked trace is what the README shows."""

import subprocess
import sys

from dropkit.cli import main


def test_trace_prints_the_worked_example(capsys):
    assert main(["trace"]) == 0
    out = capsys.readouterr().out
    assert "y = x * mask * 2   = [[2., 0., 6., 8.]]" in out
    assert "dL/dx = dL/dy*m*2  = [[2., 0., 2., 2.]]" in out
    assert "dL/dx              = [0.2, 0. , 0.6, 0. ]" in out


def test_python_dash_m_runs_the_trace():
    done = subprocess.run([sys.executable, "-m", "dropkit"], capture_output=True, text=True, check=True)
    assert "Philox words" in done.stdout
