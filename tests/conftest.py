"""Fixtures every test file may use; shared constants and inputs live in ``torch_common.py`` and
``oracle.py`` beside this file (plain modules, imported by name)."""

import numpy as np
import pytest


@pytest.fixture
def rng():
    """A fresh NumPy generator per test, so a test's inputs do not depend on which tests ran before it."""
    return np.random.default_rng(2024)


@pytest.fixture
def fixed_torch_seed():
    """``torch.manual_seed(0)`` before the test: seedless draws (``seed=None``) start from one state."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
