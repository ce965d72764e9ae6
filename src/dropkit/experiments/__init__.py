"""The experiments behind ``dropkit train``: datasets, a backend-independent training loop, plots.

- :mod:`~dropkit.experiments.datasets`: scikit-learn's digits and an IDX reader for (Fashion-)MNIST;
- :mod:`~dropkit.experiments.training`: the ``Backend`` protocol, the NumPy MLP backend and ``fit``;
- :mod:`~dropkit.experiments.plots`: learning curves and reliability diagrams as PNG bytes;
- :mod:`~dropkit.experiments.run`: the command itself (options, checks, report, atomic writes).

Importing this package is cheap: scikit-learn, matplotlib and tqdm are imported only when used.
"""

from dropkit.experiments.run import TrainOptions, prepare, render, run_experiment, write_files

__all__ = ["TrainOptions", "prepare", "render", "run_experiment", "write_files"]
