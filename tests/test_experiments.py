"""dropkit.experiments: the backend-independent loop, the NumPy backend's step, the statistics across
seeds, the protocol (validation chooses, the test set is seen once) and the documented digits result."""

from __future__ import annotations

import io
import itertools
import math

import numpy as np
import pytest

from dropkit.experiments.datasets import load_digits
from dropkit.experiments.options import TrainOptions
from dropkit.experiments.protocol import LAST_K, prepare
from dropkit.experiments.run import run_experiment
from dropkit.experiments.stats import paired_difference, spread, t_quantile_975
from dropkit.experiments.training import NumpyBackend, Seeds, build_mlp, fit
from dropkit.nn import SoftmaxCrossEntropy


def test_seeds_are_a_pure_function_of_the_seed():
    assert Seeds.from_seed(7) == Seeds.from_seed(7)
    seeds = Seeds.from_seed(7)
    assert len({seeds.split, seeds.init, seeds.order, *seeds.dropout}) == 5
    assert Seeds.from_seed(8) != seeds
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*64\), got -1"):
        Seeds.from_seed(-1)


def test_both_runs_start_from_the_same_weights():
    seeds = Seeds.from_seed(0)
    with_dropout = build_mlp(64, 10, hidden=32, p1=0.5, p2=0.5, seeds=seeds)
    without = build_mlp(64, 10, hidden=32, p1=0.0, p2=0.0, seeds=seeds)
    for a, b in zip(with_dropout.parameters(), without.parameters(), strict=True):
        np.testing.assert_array_equal(a.value, b.value)
    assert (with_dropout[3].p, without[3].p) == (0.5, 0.0)


def test_numpy_step_skips_the_input_gradient_and_changes_no_parameter_gradient():
    """The step forms no dL/dx, yet stores exactly the gradients the full backward stores."""
    rng = np.random.default_rng(0)
    x, y = rng.random((16, 8, 8), dtype=np.float32), rng.integers(0, 10, 16)
    full, short = (build_mlp(64, 10, hidden=32, p1=0.5, p2=0.5, seeds=Seeds.from_seed(3)) for _ in range(2))
    loss = SoftmaxCrossEntropy()
    loss(full.train()(x), y)
    assert full.backward(loss.backward()).shape == x.shape
    loss(short.train()(x), y)
    assert short.backward(loss.backward(), input_grad=False) is None
    for a, b in zip(full.parameters(), short.parameters(), strict=True):
        np.testing.assert_array_equal(a.grad, b.grad)


def test_backend_state_round_trips_the_weights():
    backend = NumpyBackend(build_mlp(64, 10, hidden=16, p1=0.5, p2=0.5, seeds=Seeds.from_seed(1)), lr=0.1)
    saved = backend.state()
    x, y = np.random.default_rng(0).random((8, 64), dtype=np.float32), np.arange(8)
    before = backend.logits(x)
    backend.train_step(x, y)
    assert not np.array_equal(backend.logits(x), before)
    backend.load_state(saved)
    np.testing.assert_array_equal(backend.logits(x), before)


class RecordingBackend:
    """A backend that learns nothing, records what the loop feeds it, and scores a scripted accuracy."""

    def __init__(self, accuracies=()):
        self.batches: list[np.ndarray] = []
        self.dropout_flags: list[bool] = []
        self.accuracies = list(accuracies)
        self.weights = 0  # the "weights": the number of the epoch last trained
        self.restored: list[int] = []

    def train_step(self, x, y):
        self.batches.append(y.copy())
        return 0.0

    def logits(self, x, *, dropout=False):
        self.dropout_flags.append(dropout)
        logits = np.zeros((len(x), 3))
        if self.accuracies and len(x) == 4:  # the validation set (labels 0): right on a scripted share
            logits[:, 1] = 1
            logits[: round(4 * self.accuracies[len(self.dropout_flags) // 2 - 1]), 0] = 2
        return logits

    def state(self):
        return len(self.dropout_flags) // 2

    def load_state(self, state):
        self.restored.append(state)


def test_loop_talks_to_any_backend_and_replays_the_batch_order():
    x, y = np.zeros((10, 2), np.float32), np.arange(10) % 3
    runs = [RecordingBackend(), RecordingBackend()]
    for backend in runs:
        result = fit(
            backend, (x, y), (x[:4], y[:4]), train_eval=(x[:5], y[:5]), epochs=3, batch_size=4, order_seed=5
        )
    assert [len(b) for b in runs[0].batches] == [4, 4, 2] * 3  # the last batch of an epoch is smaller
    for first, second in zip(*(backend.batches for backend in runs), strict=True):
        np.testing.assert_array_equal(first, second)
    epochs = [np.sort(np.concatenate(runs[0].batches[i : i + 3])) for i in (0, 3, 6)]
    for seen in epochs:
        np.testing.assert_array_equal(seen, np.sort(y))  # every example once per epoch
    assert not np.array_equal(runs[0].batches[0], runs[0].batches[3])  # reshuffled each epoch
    assert runs[0].dropout_flags == [False] * 6  # train sample and validation, dropout off
    assert [m.epoch for m in result.history] == [1, 2, 3]
    assert result.history[0].train_loss == pytest.approx(np.log(3))  # zero logits: uniform over 3 classes


def test_loop_ends_at_the_first_best_validation_epoch():
    x, y = np.zeros((10, 2), np.float32), np.zeros(10, dtype=np.int64)
    backend = RecordingBackend(accuracies=[0.25, 0.75, 0.5, 0.75])
    result = fit(
        backend, (x, y), (x[:4], y[:4]), train_eval=(x[:5], y[:5]), epochs=4, batch_size=5, order_seed=0
    )
    assert [m.val_acc for m in result.history] == [0.25, 0.75, 0.5, 0.75]
    assert result.best_epoch == 2 and backend.restored == [2]  # a tie later does not move it
    last_best = RecordingBackend(accuracies=[0.25, 0.5])
    fit(last_best, (x, y), (x[:4], y[:4]), train_eval=(x[:5], y[:5]), epochs=2, batch_size=5, order_seed=0)
    assert last_best.restored == []  # the last epoch is the best: nothing to restore


def test_training_loss_falls_over_a_few_epochs():
    seeds = Seeds.from_seed(0)
    splits = load_digits().split(seeds.split, val_size=500, train_size=500)
    backend = NumpyBackend(build_mlp(64, 10, hidden=64, p1=0.5, p2=0.5, seeds=seeds), lr=0.1)
    train = (splits.x_train, splits.y_train)
    result = fit(
        backend, train, (splits.x_val, splits.y_val), train_eval=train, epochs=5, batch_size=32, order_seed=1
    )
    losses = [m.train_loss for m in result.history]
    assert all(later < earlier for earlier, later in itertools.pairwise(losses))
    assert losses[0] < np.log(10) and losses[-1] < 0.6 * losses[0]  # below chance (log 10), falling fast
    assert result.history[-1].val_acc > 0.7


def test_t_quantiles_match_scipy():
    from scipy.stats import t

    for df in (*range(1, 40), 50, 100, 1000):
        assert t_quantile_975(df) == pytest.approx(t.ppf(0.975, df), abs=1e-4), df
    with pytest.raises(ValueError, match="df must be a positive integer, got 0"):
        t_quantile_975(0)


def test_paired_difference_is_the_t_interval_of_the_per_seed_differences():
    a, b = [0.86, 0.87, 0.85, 0.88, 0.86], [0.85, 0.85, 0.86, 0.86, 0.84]
    d = paired_difference(a, b)
    diffs = np.subtract(a, b)
    half = 2.7764 * diffs.std(ddof=1) / math.sqrt(5)
    assert d.mean == pytest.approx(diffs.mean()) and d.sd == pytest.approx(diffs.std(ddof=1))
    assert (d.low, d.high) == (pytest.approx(diffs.mean() - half), pytest.approx(diffs.mean() + half))
    assert (d.positive, d.negative, d.n) == (4, 1, 5)
    assert d.beyond_noise is False  # 0.012 ± 0.018: the interval holds 0
    one = paired_difference([0.9], [0.8])
    assert math.isnan(one.low) and not one.beyond_noise and one.format() == "+0.1000"
    assert spread([0.5]).format() == "0.5000" and math.isnan(spread([0.5]).sd)
    with pytest.raises(ValueError, match="must pair up"):
        paired_difference([1.0, 2.0], [1.0])


def test_validation_chooses_and_the_test_set_is_evaluated_once_per_run(tmp_path, monkeypatch):
    """Every per-epoch number is on the validation split; the test set is seen after training only."""
    import dropkit.experiments.protocol as protocol

    seen = []
    real = protocol.evaluate

    def spy(backend, x, y):
        seen.append(len(y))
        return real(backend, x, y)

    monkeypatch.setattr(protocol, "evaluate", spy)
    options = TrainOptions(seeds=(0, 1), epochs=3, hidden=16, mc_samples=0, out=str(tmp_path))
    experiment = run_experiment(prepare(options), out=io.StringIO(), progress=False)
    assert seen == [597] * 4  # two seeds x two runs, once each, the 597 test digits
    for runs in experiment.results.values():
        for run in runs.values():
            best = max(run.history, key=lambda m: (m.val_acc, -m.epoch))
            assert run.best_epoch == best.epoch


def test_summary_numbers_are_the_histories(tmp_path):
    options = TrainOptions(seeds=(4,), epochs=7, hidden=16, mc_samples=0, out=str(tmp_path))
    run = run_experiment(prepare(options), out=io.StringIO(), progress=False).results[4]["dropout"]
    summary, last = run.summary(), run.history[-1]
    assert summary["final_val_acc"] == last.val_acc
    assert summary["last_val_acc"] == pytest.approx(np.mean([m.val_acc for m in run.history[-LAST_K:]]))
    assert summary["acc_gap"] == last.train_acc - last.val_acc
    assert summary["loss_gap"] == last.val_loss - last.train_loss
    assert summary["best_val_acc"] == run.history[run.best_epoch - 1].val_acc


def test_default_digits_run_is_the_documented_one(tmp_path):
    """Seeds 0 and 1 of `dropkit train` with every default, as docs/train.md's seed table reports them
    (a seed's runs do not depend on the other seeds, so two of the five suffice).

    MC dropout runs after training and cannot change these numbers, so it is skipped. The tolerance,
    0.003, is 3 of the 1,050 validation images (2 of the 597 test images): room for another BLAS's
    rounding, not for a change of the result.
    """
    experiment = run_experiment(
        prepare(TrainOptions(seeds=(0, 1), mc_samples=0, out=str(tmp_path))),
        out=io.StringIO(),
        progress=False,
    )
    documented = {  # (seed, run): (val acc, mean val acc of the last 5 epochs, val loss, acc gap, test acc)
        (0, "dropout"): (0.9257, 0.9234, 0.2234, 0.0743, 0.9229),
        (0, "no_dropout"): (0.9210, 0.9208, 0.2579, 0.0790, 0.9112),
        (1, "dropout"): (0.9324, 0.9326, 0.2039, 0.0676, 0.9313),
        (1, "no_dropout"): (0.9210, 0.9217, 0.2378, 0.0790, 0.9313),
    }
    for (seed, key), expected in documented.items():
        summary = experiment.results[seed][key].summary()
        got = tuple(
            summary[m] for m in ("final_val_acc", "last_val_acc", "final_val_loss", "acc_gap", "test_acc")
        )
        assert got == pytest.approx(expected, abs=0.003), (seed, key)
    for seed in (0, 1):  # the no-dropout model fits every training image; dropout's gap is the smaller
        assert experiment.results[seed]["no_dropout"].history[-1].train_acc == 1.0
        gaps = [experiment.results[seed][key].summary()["acc_gap"] for key in ("dropout", "no_dropout")]
        assert gaps[0] < gaps[1]
