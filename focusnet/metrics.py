"""Official MedMNIST metrics (ACC, AUC), bootstrap confidence intervals and calibration.

Shapes: y_true is (N, L) or (N,) integer labels as stored in the MedMNIST .npz files
(L = number of labels for multi-label, else 1). y_score is (N, K) probabilities
(softmax, or sigmoid for multi-label) - never raw logits; binary tasks may also give
(N,) or (N, 1) scores of the positive class.

`get_auc`/`get_acc` reproduce `medmnist.evaluator.getAUC`/`getACC` bit for bit: same
per-column `roc_auc_score`, same summation order, same thresholds. They differ only in
validating shapes (instead of `squeeze()`) and refusing logits.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from focusnet.errors import FocusNetError
from focusnet.tasks import BINARY, MULTI_LABEL, check_task

_PROB_TOL = 1e-6  # float32 softmax can overshoot [0, 1] by a few ulps
_BOOT_CELLS = 2_000_000  # resamples x samples held in memory at once (~16 MB per float64 array)


# ---------------------------------------------------------------- input checks


def _labels(y_true: np.ndarray, task: str) -> np.ndarray:
    """(N, L) labels; (N,) is accepted for single-label tasks."""
    y = np.asarray(y_true)
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2 or (task != MULTI_LABEL and y.shape[1] != 1):
        want = "(N, L)" if task == MULTI_LABEL else "(N, 1) or (N,)"
        raise FocusNetError(f"y_true must be {want} for task {task!r}, got {y.shape}; pass the split's labels array")
    return y


def _scores(y_score: np.ndarray, n: int, task: str) -> np.ndarray:
    """(N, K) probabilities, unchanged dtype (roc_auc_score must see the caller's values)."""
    s = np.asarray(y_score)
    if s.ndim == 1 and task == BINARY:
        s = s[:, None]
    if s.ndim != 2 or s.shape[0] != n:
        raise FocusNetError(f"y_score must be (N={n}, K) for task {task!r}, got {s.shape}")
    if s.size and (s.min() < -_PROB_TOL or s.max() > 1 + _PROB_TOL or np.isnan(s).any()):
        raise FocusNetError(
            "y_score has NaN or values outside [0, 1]; pass probabilities "
            "(focusnet.metrics.probabilities(logits, task)), not logits"
        )
    return s


def _prepare(y_true: np.ndarray, y_score: np.ndarray, task: str) -> tuple[np.ndarray, np.ndarray]:
    check_task(task)
    y = _labels(y_true, task)
    s = _scores(y_score, y.shape[0], task)
    if task == MULTI_LABEL and s.shape[1] != y.shape[1]:
        raise FocusNetError(f"multi-label y_score has {s.shape[1]} columns but y_true has {y.shape[1]} labels")
    return y, s


def _binary_columns(y: np.ndarray, s: np.ndarray, task: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(targets, scores) per AUC column, in the order and dtype the official code uses."""
    if task == MULTI_LABEL:
        for i in range(s.shape[1]):
            yield y[:, i], s[:, i]
    elif task == BINARY:
        yield y[:, 0], s[:, -1]
    else:  # multi-class, ordinal-regression: one-vs-rest
        for i in range(s.shape[1]):
            yield (y[:, 0] == i).astype(float), s[:, i]


# ---------------------------------------------------------------- official metrics


def get_auc(y_true: np.ndarray, y_score: np.ndarray, task: str) -> float:
    """AUC as `medmnist.evaluator.getAUC`: mean per-label / one-vs-rest ROC AUC, or the
    last column's ROC AUC for binary-class."""
    y, s = _prepare(y_true, y_score, task)
    if len(y) == 0:
        raise FocusNetError("AUC is undefined on no samples; pass a non-empty split")
    aucs = []
    for i, (t, p) in enumerate(_binary_columns(y, s, task)):
        if np.all(t == t[0]):
            raise FocusNetError(
                f"AUC is undefined: column {i} of y_true has a single class; evaluate on a split with both"
            )
        aucs.append(roc_auc_score(t, p))
    return float(sum(aucs) / len(aucs))  # left-to-right sum from 0, like the official loop


def single_class_columns(y_true: np.ndarray, task: str, num_classes: int) -> list[int]:
    """The AUC columns (labels, or classes one-vs-rest; the one column of a binary task) whose
    targets take a single value in y_true (N, L): get_auc is undefined on such a split."""
    if len(y_true) == 0:
        return []
    y, s = _prepare(y_true, np.zeros((len(y_true), num_classes)), task)
    return [i for i, (t, _) in enumerate(_binary_columns(y, s, task)) if np.all(t == t[0])]


def _correct(y: np.ndarray, s: np.ndarray, task: str, threshold: float = 0.5) -> np.ndarray:
    """Boolean correctness: (N, L) per label for multi-label, else (N, 1)."""
    if task == MULTI_LABEL:
        return y == (s > threshold)
    if task == BINARY:
        return y == (s[:, -1:] > threshold)
    return y == np.argmax(s, axis=-1)[:, None]


def get_acc(y_true: np.ndarray, y_score: np.ndarray, task: str, threshold: float = 0.5) -> float:
    """ACC as `medmnist.evaluator.getACC`: mean per-label accuracy at score > threshold
    (multi-label), last column > threshold (binary), else argmax accuracy."""
    y, s = _prepare(y_true, y_score, task)
    correct = _correct(y, s, task, threshold)
    n = correct.shape[0]
    accs = [np.count_nonzero(correct[:, i]) / n for i in range(correct.shape[1])]
    return float(sum(accs) / len(accs))


def probabilities(logits: torch.Tensor, task: str) -> torch.Tensor:
    """(B, K) logits -> (B, K) probabilities: sigmoid for multi-label, else softmax over K."""
    check_task(task)
    if logits.ndim != 2:
        raise FocusNetError(f"logits must be (B, K), got {tuple(logits.shape)}")
    return torch.sigmoid(logits) if task == MULTI_LABEL else torch.softmax(logits, dim=1)


# ---------------------------------------------------------------- bootstrap


def _resample_counts(rng: np.random.Generator, rows: int, n: int) -> np.ndarray:
    """(rows, n) float64 multiplicities of each sample in `rows` bootstrap resamples."""
    idx = rng.integers(0, n, size=(rows, n)) + (np.arange(rows) * n)[:, None]
    return np.bincount(idx.ravel(), minlength=rows * n).reshape(rows, n).astype(np.float64)


def _weighted_auc(w: np.ndarray, target: np.ndarray, score: np.ndarray) -> np.ndarray:
    """ROC AUC under sample weights: w (R, N) -> (R,), NaN where a class is absent.

    Mann-Whitney form, one sort shared by all R resamples: each positive scores the
    negative weight strictly below it plus half the negative weight tied with it.
    """
    order = np.argsort(score, kind="stable")
    s, pos = score[order], target[order].astype(bool)
    new = np.r_[True, s[1:] != s[:-1]]
    starts = np.flatnonzero(new)  # tie group g spans sorted positions [starts[g], ends[g])
    ends = np.r_[starts[1:], len(s)]
    group = np.cumsum(new)[pos] - 1  # tie group of each positive
    ws = w[:, order]
    cneg = np.zeros((w.shape[0], len(s) + 1))
    np.cumsum(ws * ~pos, axis=1, out=cneg[:, 1:])  # cneg[:, j] = negative weight in positions < j
    wpos = ws[:, pos]
    below_plus_half_tied = 0.5 * (cneg[:, starts[group]] + cneg[:, ends[group]])
    num = np.sum(wpos * below_plus_half_tied, axis=1)
    p = wpos.sum(axis=1)
    denom = p * (ws.sum(axis=1) - p)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, num / denom, np.nan)


def _boot_chunk(w: np.ndarray, y: np.ndarray, s: np.ndarray, task: str, correct: np.ndarray):
    """ACC (R,) and AUC (R,) of the resamples whose multiplicities are w (R, N)."""
    acc = w @ correct.mean(axis=1) / w.shape[1]  # per-sample mean over labels == mean of per-label ACC
    cols = [_weighted_auc(w, t, p) for t, p in _binary_columns(y, s, task)]
    return acc, np.mean(cols, axis=0)  # NaN if any column lacked a class: resample skipped


def bootstrap_ci(
    y_true: np.ndarray,
    y_score: np.ndarray,
    task: str,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict:
    """Percentile bootstrap (1 - alpha) CIs of ACC and AUC over test samples.

    Resamples in which some AUC column has a single class are skipped for AUC only.
    Returns {"acc_ci": [lo, hi], "auc_ci": [lo, hi], "n_boot": n_boot, "n_auc": used}.
    """
    y, s = _prepare(y_true, y_score, task)
    if n_boot < 1:
        raise FocusNetError(f"n_boot must be >= 1, got {n_boot}")
    n, rng = y.shape[0], np.random.default_rng(seed)
    correct = _correct(y, s, task).astype(np.float64)
    s = s.astype(np.float64)
    rows = max(1, _BOOT_CELLS // max(n, 1))
    accs, aucs = [], []
    for start in range(0, n_boot, rows):
        w = _resample_counts(rng, min(rows, n_boot - start), n)
        acc, auc = _boot_chunk(w, y, s, task, correct)
        accs.append(acc)
        aucs.append(auc)
    acc, auc = np.concatenate(accs), np.concatenate(aucs)
    auc = auc[~np.isnan(auc)]
    q = [100 * alpha / 2, 100 * (1 - alpha / 2)]
    auc_ci = np.percentile(auc, q).tolist() if auc.size else [float("nan")] * 2
    return {"acc_ci": np.percentile(acc, q).tolist(), "auc_ci": auc_ci, "n_boot": n_boot, "n_auc": int(auc.size)}


# ---------------------------------------------------------------- calibration


def _confidence(y_true: np.ndarray, y_score: np.ndarray, task: str) -> tuple[np.ndarray, np.ndarray]:
    """Top-label (confidence, correct), each (N, C): C = labels for multi-label, else 1.

    Binary decisions (binary-class, and each label of multi-label) use the positive score
    p like the official ACC: prediction p > 0.5, confidence max(p, 1 - p).
    """
    y, s = _prepare(y_true, y_score, task)
    s = s.astype(np.float64)
    if task == MULTI_LABEL or task == BINARY:
        p = s if task == MULTI_LABEL else s[:, -1:]
        return np.maximum(p, 1 - p), y == (p > 0.5)
    return s.max(axis=1, keepdims=True), y == np.argmax(s, axis=1)[:, None]


def _bin_stats(conf: np.ndarray, correct: np.ndarray, n_bins: int) -> tuple[np.ndarray, ...]:
    """Per-bin (count, sum of confidence, sum of correct) over equal-width bins (lo, hi]."""
    if n_bins < 1:
        raise FocusNetError(f"n_bins must be >= 1, got {n_bins}")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    b = np.searchsorted(edges[1:-1], conf, side="left")  # conf in (edges[b], edges[b+1]]
    count = np.bincount(b, minlength=n_bins).astype(np.float64)
    return count, np.bincount(b, conf, n_bins), np.bincount(b, correct.astype(np.float64), n_bins)


def _ece(conf: np.ndarray, correct: np.ndarray, n_bins: int) -> float:
    count, sum_conf, sum_correct = _bin_stats(conf, correct, n_bins)
    return float(np.abs(sum_correct - sum_conf).sum() / count.sum())  # sum_b n_b/N |acc_b - conf_b|


def expected_calibration_error(y_true: np.ndarray, y_score: np.ndarray, task: str, n_bins: int = 15) -> float:
    """Top-label ECE with `n_bins` equal-width bins; multi-label: mean over labels of the
    binary (top-label) ECE of each label."""
    conf, correct = _confidence(y_true, y_score, task)
    return float(np.mean([_ece(conf[:, j], correct[:, j], n_bins) for j in range(conf.shape[1])]))


def reliability_curve(y_true: np.ndarray, y_score: np.ndarray, task: str, n_bins: int = 15) -> dict:
    """Reliability diagram data, labels pooled for multi-label.

    Returns arrays of length n_bins: "bin_lower", "bin_upper", "confidence" (mean per bin),
    "accuracy" (per bin), "count"; empty bins have NaN confidence/accuracy.
    """
    conf, correct = _confidence(y_true, y_score, task)
    count, sum_conf, sum_correct = _bin_stats(conf.ravel(), correct.ravel(), n_bins)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "bin_lower": edges[:-1],
            "bin_upper": edges[1:],
            "confidence": np.where(count > 0, sum_conf / count, np.nan),
            "accuracy": np.where(count > 0, sum_correct / count, np.nan),
            "count": count.astype(np.int64),
        }


# ---------------------------------------------------------------- summary


def evaluate_predictions(y_true: np.ndarray, y_score: np.ndarray, task: str, n_boot: int = 1000, seed: int = 0) -> dict:
    """All test metrics as plain JSON-able values:
    {"acc", "auc", "acc_ci": [lo, hi], "auc_ci": [lo, hi], "ece", "n"}."""
    ci = bootstrap_ci(y_true, y_score, task, n_boot=n_boot, seed=seed)
    return {
        "acc": get_acc(y_true, y_score, task),
        "auc": get_auc(y_true, y_score, task),
        "acc_ci": ci["acc_ci"],
        "auc_ci": ci["auc_ci"],
        "ece": expected_calibration_error(y_true, y_score, task),
        "n": int(np.asarray(y_true).shape[0]),
    }


# ---------------------------------------------------------------- official CSV


def official_csv_name(flag: str, split: str, auc: float, acc: float, run: str, size: int = 28) -> str:
    """File name `medmnist.Evaluator` gives results: {flag}{_size}_{split}_[AUC]x_[ACC]y@{run}.csv."""
    size_flag = "" if size == 28 else f"_{size}"
    return f"{flag}{size_flag}_{split}_[AUC]{auc:.3f}_[ACC]{acc:.3f}@{run}.csv"


def save_official_csv(path: str | os.PathLike, y_score: np.ndarray) -> None:
    """Write (N, K) scores as the official evaluator does: no header, one row per sample,
    `index,score_0,...,score_{K-1}`; floats as shortest round-trip repr."""
    s = np.asarray(y_score, dtype=np.float64)
    if s.ndim == 1:
        s = s[:, None]
    if s.ndim != 2:
        raise FocusNetError(f"y_score must be (N, K), got {s.shape}")
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(",".join([str(i), *map(repr, row)]) + "\n" for i, row in enumerate(s.tolist()))


def load_official_csv(path: str | os.PathLike) -> np.ndarray:
    """Read an official-format CSV back to (N, K) float64 scores, rows sorted by index."""
    try:
        table = np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64)
    except (OSError, ValueError) as e:
        raise FocusNetError(f"cannot read predictions CSV {os.fspath(path)!r}: {e}") from e
    order = np.argsort(table[:, 0], kind="stable")
    if not np.array_equal(table[order, 0], np.arange(len(table))):
        raise FocusNetError(f"{os.fspath(path)!r}: first column must index the samples 0..N-1")
    return table[order, 1:]
