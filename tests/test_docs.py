"""Every fenced ```python block in README.md and docs/*.md runs, as a reader would paste it.

Each block must be complete: its imports, its inputs. A block that cannot run in the test suite
(it needs the real Fashion-MNIST or a GPU) says so on its fence line, ```python no-run, and is
reported as skipped with the file and line. Blocks run in a fresh temporary folder, so what they write
lands there; blocks that start a ``torch.distributed`` process group run in a subprocess of their own.
"""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```python(?P<info>[^\n]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.S | re.M
)
NO_RUN = "no-run"


def snippets():
    for path in DOCUMENTS:
        text = path.read_text()
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            yield pytest.param(
                path, line, match["info"].strip(), textwrap.dedent(match["body"]), id=f"{path.name}:{line}"
            )


SNIPPETS = list(snippets())


def test_the_docs_have_python_snippets_and_few_are_skipped():
    assert len(SNIPPETS) >= 10
    skipped = [s for s in SNIPPETS if NO_RUN in s.values[2]]
    assert len(skipped) <= 2, [s.id for s in skipped]


@pytest.mark.parametrize(("path", "line", "info", "body"), SNIPPETS)
def test_the_snippet_runs(path, line, info, body, tmp_path, monkeypatch):
    if NO_RUN in info:
        pytest.skip(f"{path.name}:{line} is marked {info!r}")
    if re.search(r"^\s*(import|from) torch|dropkit\.torch", body, re.M):
        pytest.importorskip("torch")
    monkeypatch.chdir(tmp_path)
    name = f"{path.relative_to(ROOT)}:{line}"
    if "init_process_group" in body:  # a process group is process-wide state: give it its own process
        done = subprocess.run(
            [sys.executable, "-c", body],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        )
        assert done.returncode == 0, f"{name} failed:\n{done.stderr[-3000:]}"
        return
    exec(compile(body, name, "exec"), {"__name__": "__snippet__"})
