"""The torch backend of ``dropkit train`` is the NumPy backend's twin: same start, same masks, same steps.

The two differ only in float32 rounding (torch's and NumPy's matmuls sum in different orders), so
losses and weights are compared with a relative tolerance of 1e-4 after a few SGD steps; the masks
themselves are compared exactly (zero pattern of the hidden activations, stream counters).
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import dropkit  # noqa: E402
from dropkit.experiments.torch_backend import TorchBackend, to_torch  # noqa: E402
from dropkit.experiments.training import NumpyBackend, Seeds, build_mlp  # noqa: E402
from dropkit.nn import Linear, Sequential  # noqa: E402
from dropkit.torch import Dropout  # noqa: E402


def small_mlp(p1=0.5, p2=0.3):
    return build_mlp(12, 3, hidden=16, p1=p1, p2=p2, seeds=Seeds.from_seed(4))


def batches(steps=5, size=8):
    rng = np.random.default_rng(0)
    return [
        (rng.normal(size=(size, 12)).astype(np.float32), rng.integers(0, 3, size=size)) for _ in range(steps)
    ]


def test_twin_starts_from_the_same_weights_and_dropout_seeds():
    numpy_model = small_mlp()
    twin = to_torch(numpy_model)
    x = batches(1)[0][0]
    np.testing.assert_allclose(
        twin.eval()(torch.from_numpy(x)).detach().numpy(), numpy_model.eval()(x), rtol=1e-5, atol=1e-6
    )
    dropouts = [m for m in twin if isinstance(m, Dropout)]
    assert [(d.p, d.seed) for d in dropouts] == [
        (0.5, Seeds.from_seed(4).dropout[0]),
        (0.3, Seeds.from_seed(4).dropout[1]),
    ]


def test_training_steps_match_the_numpy_backend():
    numpy_backend = NumpyBackend(small_mlp(), lr=0.1)
    torch_backend = TorchBackend.from_numpy(small_mlp(), lr=0.1)
    for x, y in batches():
        expected = numpy_backend.train_step(x, y)
        assert torch_backend.train_step(x, y) == pytest.approx(expected, rel=1e-4)
    for ours, theirs in zip(
        [m for m in torch_backend.model if isinstance(m, torch.nn.Linear)],
        [layer for layer in numpy_backend.model.layers if isinstance(layer, Linear)],
        strict=True,
    ):
        np.testing.assert_allclose(ours.weight.detach().numpy().T, theirs.weight.value, rtol=1e-4, atol=1e-6)
    x = batches(1)[0][0]
    # MC dropout: same streams, so the same masks, pass for pass.
    for _ in range(2):
        np.testing.assert_allclose(
            torch_backend.logits(x, dropout=True), numpy_backend.logits(x, dropout=True), rtol=1e-4, atol=1e-5
        )
    torch_calls = [m.calls for m in torch_backend.model if isinstance(m, Dropout)]
    numpy_calls = [layer.calls for layer in numpy_backend.model.layers if isinstance(layer, dropkit.Dropout)]
    assert torch_calls == numpy_calls == [7, 7]


def test_eval_logits_draw_nothing():
    backend = TorchBackend.from_numpy(small_mlp(), lr=0.1)
    x = batches(1)[0][0]
    assert np.array_equal(backend.logits(x), backend.logits(x))
    assert [m.calls for m in backend.model if isinstance(m, Dropout)] == [0, 0]


def test_unsupported_layers_are_refused_by_name():
    model = Sequential(dropkit.Dropout(0.5, mode="classic", seed=1))
    with pytest.raises(TypeError, match=r"to_torch converts .* got Dropout\(p=0.5, mode='classic'"):
        to_torch(model)


def test_state_round_trips_the_weights():
    backend = TorchBackend.from_numpy(small_mlp(), lr=0.1)
    saved, (x, y) = backend.state(), batches(1)[0]
    before = backend.logits(x)
    backend.train_step(x, y)
    assert not np.array_equal(backend.logits(x), before)
    backend.load_state(saved)
    np.testing.assert_array_equal(backend.logits(x), before)


def test_dropkit_train_backend_torch_reproduces_the_numpy_experiment(tmp_path):
    from dropkit.experiments import TrainOptions, prepare, run_experiment

    metrics, reports = {}, {}
    for backend in ("numpy", "torch"):
        options = TrainOptions(hidden=16, epochs=2, mc_samples=2, seeds=(0,), backend=backend, threads=1)
        prepared = prepare(dataclasses.replace(options, out=str(tmp_path / backend)))
        report = io.StringIO()
        experiment = run_experiment(prepared, out=report, progress=False)
        metrics[backend], reports[backend] = experiment.metrics, report.getvalue()
    assert "backend torch (torch.nn + dropkit.torch.Dropout, CPU), 1 thread(s)" in reports["torch"]
    assert "backend numpy (dropkit.nn)" in reports["numpy"]
    numpy_run, torch_run = metrics["numpy"], metrics["torch"]
    assert torch_run["config"] == {**numpy_run["config"], "backend": "torch"}
    for key in ("dropout", "no_dropout"):
        ours, theirs = torch_run["seeds"]["0"][key], numpy_run["seeds"]["0"][key]
        for a, b in zip(ours["epochs"], theirs["epochs"], strict=True):
            # Same masks and batches; float32 rounding differs, so a borderline image may flip (1/N each).
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3)
            assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-3)
            assert a["val_acc"] == pytest.approx(b["val_acc"], abs=0.01)
        assert ours["test_acc"] == pytest.approx(theirs["test_acc"], abs=0.01)
    mc = [run["mc"]["per_seed"]["0"]["dropout_mc"]["accuracy"] for run in (torch_run, numpy_run)]
    assert mc[0] == pytest.approx(mc[1], abs=0.01)


def test_the_torch_runs_default_folder_is_not_the_numpy_one():
    from dropkit.experiments import TrainOptions

    numpy_dir = TrainOptions(dataset="fashion-mnist").output_dir()
    torch_dir = TrainOptions(dataset="fashion-mnist", backend="torch").output_dir()
    assert (str(numpy_dir), str(torch_dir)) == (
        "runs/train-fashion-mnist-seeds0-4",
        "runs/train-fashion-mnist-torch-seeds0-4",
    )
