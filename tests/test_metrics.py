"""focusnet.metrics: equality with the official MedMNIST evaluator, bootstrap, calibration, CSV."""

import time

import numpy as np
import pandas as pd
import pytest
import torch
from medmnist.evaluator import getACC, getAUC
from sklearn.metrics import roc_auc_score

from focusnet.errors import FocusNetError
from focusnet.metrics import (
    _resample_counts,
    _weighted_auc,
    bootstrap_ci,
    evaluate_predictions,
    expected_calibration_error,
    get_acc,
    get_auc,
    load_official_csv,
    official_csv_name,
    probabilities,
    reliability_curve,
    save_official_csv,
)
from focusnet.tasks import BINARY, MULTI_CLASS, MULTI_LABEL, ORDINAL, TASKS


def fake(task: str, n: int, k: int, seed: int = 0, ties: bool = False, signal: float = 1.0):
    """Labels (N, L) int64 as in the .npz files and probabilities (N, K) from noisy logits."""
    rng = np.random.default_rng(seed)
    if task == MULTI_LABEL:
        y = rng.integers(0, 2, (n, k))
        logits = signal * (2 * y - 1) + rng.normal(size=(n, k))
    else:
        k = 2 if task == BINARY else k
        y = rng.integers(0, k, (n, 1))
        logits = signal * np.eye(k)[y[:, 0]] + rng.normal(size=(n, k))
    if ties:  # coarse logits -> many tied scores, the hard case for AUC
        logits = np.round(logits)
    s = probabilities(torch.from_numpy(logits), task).numpy()
    return y, s


# ------------------------------------------------------------------ official equality


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("ties", [False, True])
def test_equal_to_official_evaluator(task, dtype, ties):
    for seed in range(2):
        y, s = fake(task, 300, 5, seed=seed, ties=ties)
        s = s.astype(dtype)
        assert get_auc(y, s, task) == getAUC(y, s, task)
        assert get_acc(y, s, task) == getACC(y, s, task)
        assert get_acc(y, s, task, threshold=0.3) == getACC(y, s, task, threshold=0.3)


def test_binary_accepts_positive_column_only_and_flat_labels():
    y, s = fake(BINARY, 200, 2, seed=1)
    for scores in (s[:, 1], s[:, 1:]):
        assert get_auc(y[:, 0], scores, BINARY) == getAUC(y, s, BINARY)
        assert get_acc(y[:, 0], scores, BINARY) == getACC(y, s, BINARY)


def test_multiclass_acc_is_argmax_and_multilabel_acc_is_per_label_threshold():
    s = np.array([[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]])
    assert get_acc(np.array([[1], [2]]), s, MULTI_CLASS) == 0.5
    s = np.array([[0.9, 0.4], [0.6, 0.7]])  # predictions [[1, 0], [1, 1]]
    assert get_acc(np.array([[1, 0], [0, 1]]), s, MULTI_LABEL) == pytest.approx(0.75, abs=0)


def test_refuses_logits_and_bad_shapes():
    y, s = fake(MULTI_CLASS, 50, 4)
    with pytest.raises(FocusNetError, match="probabilities"):
        get_auc(y, np.log(s), MULTI_CLASS)
    with pytest.raises(FocusNetError, match="y_score must be"):
        get_acc(y, s[:10], MULTI_CLASS)
    with pytest.raises(FocusNetError, match="unknown task"):
        get_acc(y, s, "regression")
    with pytest.raises(FocusNetError, match="single class"):
        get_auc(np.zeros((50, 1), int), s[:, :2] / s[:, :2].sum(1, keepdims=True), BINARY)
    with pytest.raises(FocusNetError, match="no samples"):  # was an IndexError
        get_auc(np.zeros((0, 1), int), np.zeros((0, 2)), BINARY)


def test_probabilities():
    logits = torch.tensor([[0.0, 1.0, -1.0], [2.0, 2.0, 2.0]])
    p = probabilities(logits, MULTI_CLASS)
    torch.testing.assert_close(p.sum(1), torch.ones(2))
    torch.testing.assert_close(p[1], torch.full((3,), 1 / 3))
    torch.testing.assert_close(probabilities(logits, MULTI_LABEL), torch.sigmoid(logits))
    with pytest.raises(FocusNetError):
        probabilities(logits[0], MULTI_CLASS)


# ------------------------------------------------------------------ bootstrap


@pytest.mark.parametrize("ties", [False, True])
def test_weighted_auc_matches_sklearn_on_expanded_resamples(ties):
    rng = np.random.default_rng(0)
    n = 400
    score = rng.integers(0, 6, n) / 5 if ties else rng.random(n)
    target = rng.integers(0, 2, n)
    assert abs(_weighted_auc(np.ones((1, n)), target, score)[0] - roc_auc_score(target, score)) < 1e-12
    w = _resample_counts(rng, 4, n)
    for r in range(4):
        idx = np.repeat(np.arange(n), w[r].astype(int))  # the resample as explicit rows
        assert abs(_weighted_auc(w[r : r + 1], target, score)[0] - roc_auc_score(target[idx], score[idx])) < 1e-12


def test_resample_counts_sum_to_n():
    w = _resample_counts(np.random.default_rng(0), 7, 31)
    assert w.shape == (7, 31) and (w.sum(1) == 31).all()


@pytest.mark.parametrize("task", TASKS)
def test_ci_contains_estimate_and_shrinks_with_n(task):
    widths = []
    for n in (200, 3200):
        y, s = fake(task, n, 4, seed=3)
        ci = bootstrap_ci(y, s, task, n_boot=300, seed=0)
        acc, auc = get_acc(y, s, task), get_auc(y, s, task)
        assert ci["acc_ci"][0] <= acc <= ci["acc_ci"][1]
        assert ci["auc_ci"][0] <= auc <= ci["auc_ci"][1]
        widths.append((ci["acc_ci"][1] - ci["acc_ci"][0], ci["auc_ci"][1] - ci["auc_ci"][0]))
    # 16x the samples: width ~ 1/sqrt(n) -> about 4x narrower
    assert widths[1][0] < widths[0][0] / 2.5 and widths[1][1] < widths[0][1] / 2.5


def test_bootstrap_is_seeded_and_skips_single_class_resamples():
    y = np.zeros((20, 1), int)
    y[0] = 1  # one positive: about 36% of resamples miss it
    s = np.linspace(0.05, 0.95, 20)
    s[0] = 0.99
    a = bootstrap_ci(y, s, BINARY, n_boot=500, seed=1)
    assert a == bootstrap_ci(y, s, BINARY, n_boot=500, seed=1)
    assert 250 < a["n_auc"] < 400
    assert a["auc_ci"] == [1.0, 1.0]  # the positive always outranks every negative
    y, s = fake(BINARY, 100, 2)
    assert bootstrap_ci(y, s, BINARY, n_boot=200, seed=1) != bootstrap_ci(y, s, BINARY, n_boot=200, seed=2)


def test_bootstrap_speed_1000_resamples_5000_samples():
    y, s = fake(BINARY, 5000, 2)
    start = time.perf_counter()
    bootstrap_ci(y, s, BINARY, n_boot=1000)
    assert time.perf_counter() - start < 5.0  # ~0.5 s measured on 2 cores


# ------------------------------------------------------------------ calibration


def test_ece_zero_when_confidence_equals_accuracy():
    # binary: 10 samples at p=0.7 with 7 positives, 10 at p=0.1 (confidence 0.9) with 9 negatives
    p = np.r_[np.full(10, 0.7), np.full(10, 0.1)]
    y = np.r_[np.ones(7), np.zeros(3), np.ones(1), np.zeros(9)].astype(int)[:, None]
    assert expected_calibration_error(y, p, BINARY) < 1e-12
    # multi-class: confidence 0.5 and 4 of 8 correct
    s = np.tile([0.5, 0.3, 0.2], (8, 1))
    assert expected_calibration_error(np.array([0, 0, 0, 0, 1, 1, 2, 2])[:, None], s, MULTI_CLASS) < 1e-12


def test_ece_small_for_sampled_calibrated_scores_large_for_overconfident():
    rng = np.random.default_rng(0)
    p = rng.random(20000)
    y = (rng.random(20000) < p).astype(int)[:, None]
    assert expected_calibration_error(y, p, BINARY) < 0.015
    sharp = np.where(p > 0.5, 1 - (1 - p) ** 3, p**3)  # pushed towards 0/1: overconfident
    assert expected_calibration_error(y, sharp, BINARY) > 0.1


def test_ece_hand_computed():
    # multi-class, 5 bins (0, .2], ..., (.8, 1]:
    #   conf .9 correct -> bin 4;  .7 wrong, .65 correct -> bin 3;  .5 correct -> bin 2
    #   ECE = 1/4*|1-.9| + 2/4*|.5-.675| + 1/4*|1-.5| = .025 + .0875 + .125 = .2375
    s = np.array([[0.9, 0.05, 0.05], [0.7, 0.2, 0.1], [0.3, 0.5, 0.2], [0.1, 0.25, 0.65]])
    y = np.array([[0], [1], [1], [2]])
    assert expected_calibration_error(y, s, ORDINAL, n_bins=5) == pytest.approx(0.2375, abs=1e-12)
    # binary, p = positive score: confidences .9 (right), .75 (wrong), .65 (wrong), .55 (right)
    #   ECE = 1/4*.1 + 2/4*.7 + 1/4*.45 = .4875
    p = np.array([0.9, 0.25, 0.65, 0.55])
    yb = np.array([[1], [1], [0], [1]])
    assert expected_calibration_error(yb, p, BINARY, n_bins=5) == pytest.approx(0.4875, abs=1e-12)
    # multi-label: mean over labels; second label all right at confidence .9 -> .1
    s2 = np.stack([p, [0.9, 0.1, 0.9, 0.1]], 1)
    y2 = np.concatenate([yb, [[1], [0], [1], [0]]], 1)
    assert expected_calibration_error(y2, s2, MULTI_LABEL, n_bins=5) == pytest.approx(0.29375, abs=1e-12)


def test_reliability_curve():
    s = np.array([[0.9, 0.05, 0.05], [0.7, 0.2, 0.1], [0.3, 0.5, 0.2], [0.1, 0.25, 0.65]])
    y = np.array([[0], [1], [1], [2]])
    c = reliability_curve(y, s, MULTI_CLASS, n_bins=5)
    np.testing.assert_array_equal(c["count"], [0, 0, 1, 2, 1])
    np.testing.assert_allclose(c["confidence"][2:], [0.5, 0.675, 0.9])
    np.testing.assert_allclose(c["accuracy"][2:], [1.0, 0.5, 1.0])
    assert np.isnan(c["accuracy"][:2]).all()
    np.testing.assert_allclose(c["bin_upper"], [0.2, 0.4, 0.6, 0.8, 1.0])


# ------------------------------------------------------------------ summary and CSV


def test_evaluate_predictions():
    y, s = fake(MULTI_CLASS, 300, 3, seed=5)
    m = evaluate_predictions(y, s, MULTI_CLASS, n_boot=200)
    assert set(m) == {"acc", "auc", "acc_ci", "auc_ci", "ece", "n"}
    assert m["acc"] == getACC(y, s, MULTI_CLASS) and m["auc"] == getAUC(y, s, MULTI_CLASS)
    assert m["n"] == 300 and 0 <= m["ece"] <= 1
    assert all(isinstance(v, float) for v in m["acc_ci"] + m["auc_ci"])


def test_official_csv_round_trip(tmp_path):
    _, s = fake(MULTI_CLASS, 57, 4, seed=2)
    path = tmp_path / official_csv_name("dermamnist", "test", 0.91234, 0.7456, run="s0", size=64)
    assert path.name == "dermamnist_64_test_[AUC]0.912_[ACC]0.746@s0.csv"
    save_official_csv(path, s)
    assert path.read_text().splitlines()[0].startswith("0,")
    np.testing.assert_array_equal(load_official_csv(path), s)
    # what medmnist.Evaluator.parse_and_evaluate reads
    official = pd.read_csv(path, index_col=0, header=None).sort_index().values
    np.testing.assert_array_equal(official, s)
    # float32 scores survive exactly too
    save_official_csv(path, s.astype(np.float32))
    np.testing.assert_array_equal(load_official_csv(path), s.astype(np.float32))


def test_load_official_csv_sorts_rows_and_rejects_bad_index(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("1,0.25,0.75\n0,0.5,0.5\n")
    np.testing.assert_array_equal(load_official_csv(path), [[0.5, 0.5], [0.25, 0.75]])
    path.write_text("0,0.5,0.5\n5,0.5,0.5\n")
    with pytest.raises(FocusNetError, match="0..N-1"):
        load_official_csv(path)
    with pytest.raises(FocusNetError, match="cannot read"):
        load_official_csv(tmp_path / "missing.csv")
