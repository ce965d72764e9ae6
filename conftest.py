"""Doctest collection over ``src``: skip the modules whose optional dependency is not installed."""

import importlib
import importlib.util

import pytest
from _pytest.doctest import DoctestItem

collect_ignore_glob = []
if importlib.util.find_spec("torch") is None:
    collect_ignore_glob.append("src/dropkit/torch/*")
if importlib.util.find_spec("triton") is None:
    collect_ignore_glob.append("src/dropkit/torch/_triton.py")
if importlib.util.find_spec("numba") is None:
    collect_ignore_glob.append("src/dropkit/kernels/cpu.py")


@pytest.fixture(autouse=True)
def _torch_in_doctests(request: pytest.FixtureRequest) -> None:
    """The torch face's examples use ``torch`` as its users have it: imported."""
    if isinstance(request.node, DoctestItem) and "dropkit.torch" in request.node.name:
        request.getfixturevalue("doctest_namespace")["torch"] = importlib.import_module("torch")
