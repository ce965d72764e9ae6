"""dropkit.mc: the MC-dropout predictive mean, predictive entropy and expected calibration error."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dropkit import Dropout
from dropkit.mc import (
    expected_calibration_error,
    mc_dropout_predict,
    mc_predictive_mean,
    predictive_entropy,
    reliability_bins,
    summarize,
)
from dropkit.nn import Linear, ReLU, Sequential, softmax


def small_model(p: float) -> Sequential:
    rng = np.random.default_rng(0)
    return Sequential(
        Linear(5, 16, rng=rng, dtype=np.float64),
        ReLU(),
        Dropout(p, seed=3),
        Linear(16, 4, rng=rng, dtype=np.float64),
    )


def test_predictive_mean_averages_the_softmax_of_each_pass():
    passes = [np.array([[0.0, 1.0, 2.0]]), np.array([[3.0, 0.0, 0.0]]), np.array([[0.0, 0.0, 0.0]])]
    calls = iter(passes)
    mean = mc_predictive_mean(lambda x: next(calls), None, 3)
    np.testing.assert_allclose(mean, sum(softmax(p) for p in passes) / 3, rtol=1e-15)


def test_mc_dropout_predict_equals_k_training_mode_passes_and_restores_the_mode():
    x = np.random.default_rng(1).normal(size=(6, 5))
    model = small_model(0.5).eval()
    probs = mc_dropout_predict(model, x, 7)
    assert model.training is False and model[2].training is False  # eval mode restored
    assert model[2].calls == 7  # one fresh stream per pass
    twin = small_model(0.5)  # same weights, same dropout seed: passes use streams 0..6 again
    expected = sum(softmax(twin.forward(x)) for _ in range(7)) / 7
    np.testing.assert_allclose(probs, expected, rtol=1e-14)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-14)
    # The passes really differ: with p = 0.5 the average is not the deterministic prediction.
    assert not np.allclose(probs, softmax(small_model(0.5).eval()(x)))


def test_mc_dropout_with_p_zero_is_the_deterministic_prediction():
    x = np.random.default_rng(2).normal(size=(3, 5))
    np.testing.assert_allclose(
        mc_dropout_predict(small_model(0.0), x, 5), softmax(small_model(0.0).eval()(x)), rtol=1e-14
    )


def test_predictive_entropy_is_zero_when_certain_and_log_c_when_uniform():
    entropy = predictive_entropy([[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [0.5, 0.5, 0.0, 0.0]])
    np.testing.assert_allclose(entropy, [0.0, math.log(4), math.log(2)], rtol=1e-15)


def test_ece_by_hand():
    # Confidences 0.9 (right), 0.9 (wrong), 0.6 (right), 0.3 (wrong: a 4-class prediction).
    probs = [[0.9, 0.1, 0, 0], [0.05, 0.9, 0.05, 0], [0.6, 0.4, 0, 0], [0.3, 0.25, 0.25, 0.2]]
    labels = [0, 0, 0, 1]
    # bins of width 1/15: 0.9 -> bin 13, 0.6 -> bin 8, 0.3 -> bin 4
    # ECE = 2/4 |0.5 - 0.9| + 1/4 |1 - 0.6| + 1/4 |0 - 0.3| = 0.2 + 0.1 + 0.075
    assert expected_calibration_error(probs, labels) == pytest.approx(0.375, abs=1e-15)
    stats = reliability_bins(probs, labels)
    assert stats.counts.tolist() == [0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 2, 0]
    assert stats.accuracy[13] == 0.5 and stats.confidence[13] == pytest.approx(0.9)
    assert np.isnan(stats.accuracy[0]) and np.isnan(stats.confidence[0])  # empty bins have no value


def test_ece_is_zero_when_confidence_equals_accuracy():
    probs = np.array([[0.75, 0.25]] * 4)
    assert expected_calibration_error(probs, [0, 0, 0, 1]) == 0.0


def test_bins_are_closed_on_the_right():
    stats = reliability_bins([[0.5, 0.5], [1.0, 0.0]], [0, 0])
    assert stats.counts[7] == 1  # 0.5 = 7.5/15 lies in (7/15, 8/15]
    assert stats.counts[14] == 1  # confidence 1 is in the last bin
    np.testing.assert_allclose(stats.edges, np.arange(16) / 15)


def test_summarize_reports_accuracy_entropy_and_ece():
    probs, labels = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), np.array([0, 1, 1])
    result = summarize(probs, labels)
    assert result.accuracy == pytest.approx(2 / 3)
    assert result.mean_entropy == pytest.approx(predictive_entropy(probs).mean())
    assert result.ece == pytest.approx(expected_calibration_error(probs, labels))
    assert set(result.as_dict()) == {"accuracy", "mean_entropy", "ece"}


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match=r"samples must be a positive integer, got 0"):
        mc_predictive_mean(lambda x: x, np.zeros((1, 2)), 0)
    with pytest.raises(ValueError, match=r"bins must be a positive integer, got 0"):
        expected_calibration_error([[1.0, 0.0]], [0], bins=0)
    with pytest.raises(ValueError, match=r"probs must have shape \(N, classes\)"):
        predictive_entropy([0.5, 0.5])
    with pytest.raises(ValueError, match=r"labels must be an integer array of shape \(1,\)"):
        summarize([[1.0, 0.0]], [0, 1])
