"""The options of ``dropkit train`` and ``dropkit sweep``, their defaults, and the checks run before any work.

Every default is in one place, :class:`CommonOptions` and its two children; the ones that depend
on the dataset (epochs, split sizes) are in :data:`DATASET_DEFAULTS`. :func:`check_options`
refuses the first bad option with a one-line ``ValueError`` naming it, including sizes that could
not fit in this machine's memory, before any data is read.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from dropkit._validation import check_count, check_positive_finite, check_probability, check_uint64
from dropkit.experiments.datasets import DATASETS, IMAGE_FEATURES
from dropkit.experiments.training import EVAL_CHUNK

__all__ = [
    "BACKENDS",
    "DATASET_DEFAULTS",
    "CommonOptions",
    "DatasetDefaults",
    "SweepOptions",
    "TrainOptions",
    "add_arguments",
    "check_options",
    "from_namespace",
]

BACKENDS = ("numpy", "torch")
MAX_SEEDS = 1000
MAX_PS = 100
MAX_EPOCHS = 1_000_000
MAX_MC_SAMPLES = 10_000
_POOL_BOUND = {"digits": 1200, "fashion-mnist": 60_000, "mnist": 60_000}  # for the memory estimate


@dataclass(frozen=True)
class DatasetDefaults:
    """The defaults that depend on the dataset."""

    epochs: int
    batch_size: int
    val_size: int
    train_size: int | None  # None: every pool image not in the validation split


DATASET_DEFAULTS = {
    # 150 training images make the no-dropout model overfit visibly; the rest of the pool validates.
    # Batches of 32 (5 steps an epoch, not one full batch): measured over seeds 0-4 (docs/train.md),
    # the setting where dropout's validation accuracy is the higher beyond the noise between seeds.
    "digits": DatasetDefaults(epochs=100, batch_size=32, val_size=1050, train_size=150),
    # The texts' setting: batch 256, 10 epochs; 10,000 of the 60,000 training images validate.
    "fashion-mnist": DatasetDefaults(epochs=10, batch_size=256, val_size=10_000, train_size=None),
    "mnist": DatasetDefaults(epochs=10, batch_size=256, val_size=10_000, train_size=None),
}


@dataclass(frozen=True)
class CommonOptions:
    """Options both commands take; each field is the option of the same name (``--batch-size``...)."""

    dataset: str = "digits"
    data_dir: str | None = None  # default: the search order of dropkit.experiments.sources
    download: bool = False
    val_size: int | None = None  # default: DATASET_DEFAULTS
    train_size: int | None = None
    hidden: int = 256  # units in each of the two hidden layers
    lr: float = 0.1  # SGD learning rate
    batch_size: int | None = None  # default: DATASET_DEFAULTS
    epochs: int | None = None
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    backend: str = "numpy"  # numpy (dropkit.nn) or torch (torch.nn + dropkit.torch.Dropout, CPU)
    threads: int | None = None  # cores to use; default: all of them
    out: str | None = None

    command = "train"

    def output_dir(self) -> Path:
        """``out``, or ``runs/<command>-<dataset>[-torch]-seed<seeds>``."""
        if self.out is not None:
            return Path(self.out)
        seeds = list(self.seeds)
        if len(seeds) == 1:
            label = f"seed{seeds[0]}"
        elif seeds == list(range(seeds[0], seeds[0] + len(seeds))):
            label = f"seeds{seeds[0]}-{seeds[-1]}"
        else:
            label = "seeds" + "_".join(map(str, seeds))
        backend = "" if self.backend == "numpy" else f"-{self.backend}"
        return Path("runs", f"{self.command}-{self.dataset}{backend}-{label}")


@dataclass(frozen=True)
class TrainOptions(CommonOptions):
    """``dropkit train``: the texts' model (256 units, p = 0.5, SGD lr 0.1, batch 256), with and without
    dropout."""

    p1: float = 0.5  # drop probability after the first hidden layer
    p2: float = 0.5  # drop probability after the second hidden layer
    mc_samples: int = 30  # MC-dropout passes over the test set; 0 skips MC dropout


@dataclass(frozen=True)
class SweepOptions(CommonOptions):
    """``dropkit sweep``: one run per drop probability ``p`` (both hidden layers), for every seed."""

    ps: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.5, 0.8)

    command = "sweep"


_HELP = {
    "dataset": f"one of {', '.join(DATASETS)}",
    "data_dir": "folder of the IDX files of fashion-mnist / mnist (default: $DROPKIT_DATA/<dataset>, "
    "~/.cache/dropkit/<dataset>, /usr/share/datasets/<dataset>, torchvision's and Keras's folders)",
    "download": "fetch missing fashion-mnist / mnist files (SHA-256 checked) into --data-dir or the cache",
    "val_size": "validation images drawn from the training pool with each seed "
    "(default 10000 for fashion-mnist / mnist, 1050 for digits)",
    "train_size": "training images drawn from the rest of the pool (default all of it; 150 for digits)",
    "hidden": "units in each hidden layer",
    "lr": "SGD learning rate",
    "batch_size": "minibatch size (default 256; 32 for digits)",
    "epochs": "passes over the training set (default 10 for fashion-mnist / mnist, 100 for digits)",
    "seeds": "seeds: each one's split, initial weights, batch order and masks, shared by its runs",
    "backend": "numpy (the from-scratch MLP) or torch (the same MLP in torch.nn with dropkit.torch.Dropout)",
    "threads": "cores to use: a seed's runs train side by side, sharing them (default: every core)",
    "out": "output folder (default runs/<command>-<dataset>[-torch]-seed<seeds>)",
    "p1": "drop probability after the first hidden layer, in [0, 1]",
    "p2": "drop probability after the second hidden layer, in [0, 1]",
    "mc_samples": "MC-dropout passes over the test set after training; 0 skips MC dropout",
    "ps": "drop probabilities to sweep, each used in both hidden layers",
}


def _seed(text: str) -> int:
    try:
        return check_uint64("seed", int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a seed is an integer in [0, 2**64), got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser, options: type[CommonOptions]) -> argparse.ArgumentParser:
    """Add one option per field of ``options`` (``TrainOptions`` or ``SweepOptions``) to ``parser``."""
    defaults = options()
    for option in fields(options):
        name, default = f"--{option.name.replace('_', '-')}", getattr(defaults, option.name)
        help_text = _HELP[option.name]
        if option.name == "download":
            parser.add_argument(name, action="store_true", help=help_text)
            continue
        if isinstance(default, tuple):
            shown = " ".join(f"{value:g}" if isinstance(value, float) else str(value) for value in default)
            kind = _seed if option.name == "seeds" else float
            parser.add_argument(
                name, type=kind, nargs="+", default=default, help=f"{help_text} (default {shown})"
            )
            continue
        kind = {"int": int, "float": float, "str": str}[str(option.type).split(" ")[0]]
        shown = "" if default is None or "(default" in help_text else f" (default {default})"
        parser.add_argument(name, type=kind, default=default, help=help_text + shown)
    return parser


def from_namespace(args: argparse.Namespace, options: type[CommonOptions]) -> CommonOptions:
    """The options dataclass holding ``args``' values (lists become tuples)."""
    values = {f.name: getattr(args, f.name) for f in fields(options)}
    return options(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not a POSIX system that knows
        return None


def _gib(size: float) -> str:
    return f"{size / 2**30:.3g} GiB"


def memory_estimate(features: int, hidden: int, classes: int, batch: int, backend: str) -> int:
    """Bytes the model and its activations take, roughly: weights, gradients, the best epoch's copy
    and the update's temporary (twice for torch, converted from a NumPy model), plus float32
    activations of one training batch and one evaluation chunk."""
    params = features * hidden + hidden * hidden + hidden * classes + 2 * hidden + classes
    model = 4 * 4 * params * (2 if backend == "torch" else 1)
    return model + 4 * (batch + EVAL_CHUNK) * (features + 8 * hidden + classes)


def _probability(name: str, value: Any) -> float:
    try:
        return check_probability(value, name)
    except (TypeError, ValueError) as error:
        raise ValueError(f"--{name}: {error}") from None


def check_options(options: CommonOptions) -> CommonOptions:
    """Return ``options`` with numbers normalised and dataset defaults filled in; raise
    ``ValueError`` naming the first bad option."""
    if options.dataset not in DATASETS:
        raise ValueError(f"--dataset {options.dataset!r} is unknown; choose one of {', '.join(DATASETS)}")
    if options.dataset == "digits":
        for given, name in ((options.data_dir is not None, "--data-dir"), (options.download, "--download")):
            if given:
                raise ValueError(f"{name} is for fashion-mnist and mnist; digits ships with scikit-learn")
    if options.backend not in BACKENDS:
        raise ValueError(f"--backend {options.backend!r} is unknown; choose one of {', '.join(BACKENDS)}")
    if options.backend == "torch" and importlib.util.find_spec("torch") is None:
        raise ValueError("--backend torch needs PyTorch: pip install 'dropkit[torch]'")
    changes: dict[str, Any] = {}
    if isinstance(options, TrainOptions):
        changes["p1"], changes["p2"] = _probability("p1", options.p1), _probability("p2", options.p2)
        changes["mc_samples"] = check_count("--mc-samples", options.mc_samples, minimum=0)
        if changes["mc_samples"] > MAX_MC_SAMPLES:
            raise ValueError(f"--mc-samples must be at most {MAX_MC_SAMPLES}, got {options.mc_samples}")
    if isinstance(options, SweepOptions):
        ps = tuple(_probability("ps", p) for p in options.ps)
        if not 2 <= len(ps) <= MAX_PS or len(set(ps)) != len(ps):
            raise ValueError(
                f"--ps takes 2 to {MAX_PS} different probabilities, got {' '.join(map(str, ps))}"
            )
        changes["ps"] = ps
    seeds = tuple(options.seeds)
    if not 1 <= len(seeds) <= MAX_SEEDS or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds takes 1 to {MAX_SEEDS} different seeds, got {' '.join(map(str, seeds))}")
    for seed in seeds:
        try:
            check_uint64("seed", seed)
        except (TypeError, ValueError) as error:
            raise ValueError(f"--seeds: {error}") from None
    defaults = DATASET_DEFAULTS[options.dataset]
    epochs = check_count("--epochs", defaults.epochs if options.epochs is None else options.epochs)
    if epochs > MAX_EPOCHS:
        raise ValueError(f"--epochs must be at most {MAX_EPOCHS}, got {epochs}")
    val_size = check_count("--val-size", defaults.val_size if options.val_size is None else options.val_size)
    train_size = options.train_size if options.train_size is not None else defaults.train_size
    if train_size is not None:
        train_size = check_count("--train-size", train_size)
    for name, size in (("--val-size", val_size), ("--train-size", train_size)):
        if size is not None and size >= _POOL_BOUND[options.dataset]:
            raise ValueError(
                f"{name} must be below the {_POOL_BOUND[options.dataset]} training images of "
                f"{options.dataset}, got {size}"
            )
    cores = os.cpu_count() or 1
    threads = cores if options.threads is None else options.threads
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= cores:
        raise ValueError(
            f"--threads must be an integer in [1, {cores}] (this machine's cores), got {threads}"
        )
    hidden = check_count("--hidden", options.hidden)
    batch_size = check_count(
        "--batch-size", defaults.batch_size if options.batch_size is None else options.batch_size
    )
    needed = memory_estimate(
        IMAGE_FEATURES[options.dataset],
        hidden,
        10,
        min(batch_size, train_size or _POOL_BOUND[options.dataset]),
        options.backend,
    )
    available = _memory_bytes()
    if available is not None and needed > available:
        raise ValueError(
            f"--hidden {hidden} with --batch-size {batch_size}: the model and its activations need about "
            f"{_gib(needed)}, more than this machine's {_gib(available)} of memory"
        )
    return replace(
        options,
        hidden=hidden,
        lr=check_positive_finite("--lr", options.lr),
        batch_size=batch_size,
        epochs=epochs,
        val_size=val_size,
        train_size=train_size,
        seeds=seeds,
        threads=threads,
        **changes,
    )
