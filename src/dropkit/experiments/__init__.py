"""The experiments behind ``dropkit train`` and ``dropkit sweep``.

- :mod:`~dropkit.experiments.sources`: where (Fashion-)MNIST is found, and its published checksums;
- :mod:`~dropkit.experiments.download`: ``--download``, checked and atomic;
- :mod:`~dropkit.experiments.datasets`: digits and the IDX reader, the seeded train / validation split;
- :mod:`~dropkit.experiments.training`: the ``Backend`` protocol, the NumPy MLP backend and ``fit``;
- :mod:`~dropkit.experiments.torch_backend`: the same MLP in ``torch.nn`` (imports torch);
- :mod:`~dropkit.experiments.options`: both commands' options, defaults and checks;
- :mod:`~dropkit.experiments.protocol`: prepare, train every run of every seed, write the files;
- :mod:`~dropkit.experiments.stats`: mean ± sd and paired differences with t intervals;
- :mod:`~dropkit.experiments.report`: what the commands print, and their shared entry;
- :mod:`~dropkit.experiments.run` (``dropkit train``) and :mod:`~dropkit.experiments.sweep`
  (``dropkit sweep``); :mod:`~dropkit.experiments.plots`: the figures.

Importing this package is cheap: matplotlib, tqdm, threadpoolctl and torch are imported only when used.
"""

from dropkit.experiments.options import SweepOptions, TrainOptions
from dropkit.experiments.protocol import prepare, write_files
from dropkit.experiments.run import render, run_experiment

__all__ = ["SweepOptions", "TrainOptions", "prepare", "render", "run_experiment", "write_files"]
