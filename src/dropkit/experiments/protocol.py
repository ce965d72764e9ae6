"""The protocol both commands follow: check, load, train every run of every seed, evaluate the test set once.

1. :func:`prepare` checks every option and the output folder, then finds (or downloads) and loads
   the data, before anything is trained or written.
2. :func:`run_seeds` trains, for each seed, every :class:`Config` (a pair of drop probabilities)
   from that seed's initial weights and batch order, on that seed's train / validation split.
   Every per-epoch number, and the choice of the best epoch, is on the validation split; the test
   set is evaluated once per run, at the end, with the weights of its best validation epoch.
3. :func:`write_files` writes the results, every file or none.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from dropkit.experiments.datasets import Dataset, Splits, load_dataset
from dropkit.experiments.options import CommonOptions, check_options
from dropkit.experiments.training import Backend, EpochMetrics, NumpyBackend, Seeds, build_mlp, evaluate, fit

__all__ = [
    "LAST_K",
    "Config",
    "Prepared",
    "RunResult",
    "prepare",
    "print_table",
    "run_seeds",
    "without_nan",
    "write_files",
]

LAST_K = 5  # epochs averaged for the "last epochs" numbers: one epoch's accuracy jumps by ~1 point


@dataclass(frozen=True)
class Config:
    """One run of a seed: a key for files, a label for people, and the two drop probabilities."""

    key: str
    label: str
    p1: float
    p2: float


@dataclass(frozen=True)
class RunResult:
    """One run: its per-epoch history, the best validation epoch and the test numbers at that epoch."""

    seed: int
    config: Config
    history: list[EpochMetrics]
    best_epoch: int
    test_loss: float
    test_acc: float

    def summary(self) -> dict[str, float]:
        """The numbers compared across runs: final and last-``LAST_K``-epoch validation accuracy and
        loss, the final gaps (train - validation accuracy, validation - train loss), the best epoch
        and the test numbers."""
        last, tail = self.history[-1], self.history[-LAST_K:]
        best = self.history[self.best_epoch - 1]
        return {
            "final_val_acc": last.val_acc,
            "last_val_acc": float(np.mean([m.val_acc for m in tail])),
            "final_val_loss": last.val_loss,
            "last_val_loss": float(np.mean([m.val_loss for m in tail])),
            "final_train_acc": last.train_acc,
            "final_train_loss": last.train_loss,
            "acc_gap": last.train_acc - last.val_acc,
            "loss_gap": last.val_loss - last.train_loss,
            "best_epoch": self.best_epoch,
            "best_val_acc": best.val_acc,
            "test_acc": self.test_acc,
            "test_loss": self.test_loss,
        }


def check_output_dir(path: Path) -> Path:
    """Fail now, not after training, if ``path`` cannot become a directory we can write into."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {path} exists and is not a directory")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"--out {path} cannot be created: {existing} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise ValueError(f"--out {path} is not writable: {error.strerror or error}") from None
    return path


@dataclass(frozen=True)
class Prepared:
    """Checked options (every default resolved), the loaded data and the output folder."""

    options: Any  # TrainOptions or SweepOptions
    data: Dataset
    out_dir: Path
    downloaded: list[Path]

    @property
    def train_eval_size(self) -> int:
        """Training images the per-epoch train numbers are measured on: as many as validate (or all)."""
        return min(self.options.train_size, self.options.val_size)


def prepare(options: CommonOptions, *, progress: bool | None = None) -> Prepared:
    """Check every option and the output folder, then find, download if asked, and load the data.

    Raises ``ValueError`` (a bad option or file, an unwritable output), ``FileNotFoundError``
    (no data) or ``OSError`` (a failed download) before anything is trained or written.
    """
    options = check_options(options)
    out_dir = check_output_dir(options.output_dir())
    data, downloaded = load_dataset(
        options.dataset, data_dir=options.data_dir, download=options.download, progress=progress
    )
    pool = len(data.y_pool)
    train_size = pool - options.val_size if options.train_size is None else options.train_size
    if options.val_size >= pool or train_size < 1 or options.val_size + train_size > pool:
        raise ValueError(
            f"--val-size {options.val_size} + --train-size {train_size} do not fit in the {pool} "
            f"training images of {data.name} (each at least 1)"
        )
    return Prepared(replace(options, train_size=train_size), data, out_dir, downloaded)


@contextlib.contextmanager
def thread_limit(threads: int, backend: str) -> Iterator[None]:
    """BLAS and OpenMP (and torch's operators, for the torch backend) on ``threads`` threads."""
    from threadpoolctl import threadpool_limits

    with contextlib.ExitStack() as stack:
        stack.enter_context(threadpool_limits(limits=threads))
        if backend == "torch":
            from dropkit.experiments.torch_backend import thread_limit as torch_threads

            stack.enter_context(torch_threads(threads))
        yield


def make_backend(options: CommonOptions, data: Dataset, config: Config, seeds: Seeds) -> Backend:
    """The model of ``config`` for ``seeds``, on the backend the options name."""
    model = build_mlp(
        int(np.prod(data.x_pool.shape[1:])),
        data.classes,
        hidden=options.hidden,
        p1=config.p1,
        p2=config.p2,
        seeds=seeds,
    )
    if options.backend == "torch":
        from dropkit.experiments.torch_backend import TorchBackend  # torch is an optional extra

        return TorchBackend.from_numpy(model, options.lr)
    return NumpyBackend(model, options.lr)


def workers_and_blas_threads(threads: int, runs: int) -> tuple[int, int]:
    """How ``threads`` cores are shared by the ``runs`` of a seed: runs trained side by side, and BLAS
    threads for each.

    One BLAS thread per run, with the runs side by side, beats two BLAS threads per run one after
    the other: the runs never wait for each other, where BLAS's threads meet after every product
    and, on a machine busy with other work, spin waiting for a core (docs/train.md, "Speed").

    >>> workers_and_blas_threads(2, 2), workers_and_blas_threads(16, 2), workers_and_blas_threads(2, 6)
    ((2, 1), (2, 8), (2, 1))
    """
    workers = max(1, min(threads, runs))
    return workers, max(1, threads // workers)


class _Stopped(Exception):
    """Raised in a worker at its next batch once the command is interrupted."""


AfterSeed = Callable[[int, Splits, dict[str, RunResult], dict[str, Backend], float], Sequence[str]]


def run_seeds(
    prepared: Prepared,
    configs: Sequence[Config],
    *,
    out: TextIO,
    progress: bool | None = None,
    after_seed: AfterSeed | None = None,
) -> dict[int, dict[str, RunResult]]:
    """Train every config for every seed; returns ``results[seed][config.key]``.

    A seed's runs train side by side on ``options.threads`` cores (:func:`workers_and_blas_threads`);
    each run is a pure function of its seed and config, so the numbers do not depend on how many
    run at once. ``after_seed(seed, splits, results, backends, seconds)`` runs after each seed,
    with the backends at their best epochs; the lines it returns are printed to ``out``. A progress
    bar counts batches on stderr (``progress=None``: on a terminal only).
    """
    from tqdm import tqdm  # imported here: only training needs it

    options, data = prepared.options, prepared.data
    batches = math.ceil(options.train_size / options.batch_size)
    workers, blas_threads = workers_and_blas_threads(options.threads, len(configs))
    stop = threading.Event()
    results: dict[int, dict[str, RunResult]] = {}
    with (
        thread_limit(blas_threads, options.backend),
        tqdm(
            total=len(options.seeds) * len(configs) * options.epochs * batches,
            unit="batch",
            leave=False,
            disable=None if progress is None else not progress,
        ) as bar,
        ThreadPoolExecutor(workers) as pool,
    ):

        def on_batch(epoch: int, loss: float) -> None:
            if stop.is_set():
                raise _Stopped
            bar.update(1)

        def train(seed: int, seeds: Seeds, splits: Splits, config: Config) -> tuple[RunResult, Backend]:
            backend = make_backend(options, data, config, seeds)
            n_eval = prepared.train_eval_size
            fitted = fit(
                backend,
                (splits.x_train, splits.y_train),
                (splits.x_val, splits.y_val),
                train_eval=(splits.x_train[:n_eval], splits.y_train[:n_eval]),
                epochs=options.epochs,
                batch_size=options.batch_size,
                order_seed=seeds.order,
                on_batch=on_batch,
            )
            test_loss, test_acc = evaluate(backend, splits.x_test, splits.y_test)
            return RunResult(seed, config, fitted.history, fitted.best_epoch, test_loss, test_acc), backend

        try:
            for seed in options.seeds:
                started = time.perf_counter()
                bar.set_description(f"seed {seed}")
                seeds = Seeds.from_seed(seed)
                splits = data.split(seeds.split, val_size=options.val_size, train_size=options.train_size)
                futures = [pool.submit(train, seed, seeds, splits, config) for config in configs]
                done = [future.result() for future in futures]
                results[seed] = {config.key: run for config, (run, _) in zip(configs, done, strict=True)}
                backends = {config.key: backend for config, (_, backend) in zip(configs, done, strict=True)}
                if after_seed is not None:  # the workers are idle: give it every thread
                    with thread_limit(options.threads, options.backend):
                        lines = after_seed(
                            seed, splits, results[seed], backends, time.perf_counter() - started
                        )
                    for line in lines:
                        bar.write(line, file=out)
        except BaseException:
            stop.set()  # the workers stop at their next batch; the pool then joins them
            raise
    return results


def print_table(out: TextIO, header: Sequence[str], rows: Sequence[Sequence[str]], *, left: int = 1) -> None:
    """Columns padded to their widest cell: the first ``left`` left-aligned, the others right-aligned."""
    for line in table_lines(header, rows, left=left):
        print(line, file=out)


def table_lines(header: Sequence[str], rows: Sequence[Sequence[str]], *, left: int = 1) -> list[str]:
    """The lines :func:`print_table` prints."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(
            cell.ljust(width) if i < left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in [header, *rows]
    ]


def without_nan(value: Any) -> Any:
    """``value`` with every non-finite float (a diverged run's loss) as None: JSON has no NaN or inf."""
    if isinstance(value, dict):
        return {key: without_nan(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_nan(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_files(out_dir: Path, files: Mapping[str, bytes]) -> list[Path]:
    """Write every file or none: stage each next to its target, then rename them all into place."""
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []
    try:
        for name, content in files.items():
            temporary = out_dir / f".{name}.{os.getpid()}.tmp"
            staged.append((temporary, out_dir / name))
            with open(temporary, "wb") as handle:
                handle.write(content)
    except BaseException:
        for temporary, _ in staged:
            with contextlib.suppress(OSError):
                temporary.unlink()
        if created:
            with contextlib.suppress(OSError):
                out_dir.rmdir()
        raise
    for temporary, target in staged:
        os.replace(temporary, target)
    return [target for _, target in staged]
