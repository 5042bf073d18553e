"""A self-contained report.html per run: every image embedded as base64 PNG, no scripts, no links
out, so it opens offline and can be mailed as one file.

    path = write_report("results/synth-lesion_latest")      # -> .../report.html

Sections: summary and metrics with 95% CIs beside the published MedMNIST numbers for the dataset;
training curves (log.csv); ROC curves, confusion matrix and reliability diagram of the test
predictions (the official CSV); the FocusNet figures (fixation gallery, pathway maps, mean gate per
class, receptive fields, Grad-CAM); the fixation hit rate on synthetic data; the configuration.
A section that cannot be built says why in the page instead of stopping the report.
"""

from __future__ import annotations

import csv
import html
import json
import os
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score, roc_curve

from ..data import load_run_data
from ..errors import FocusNetError
from ..fileio import check_writable_parent, write_text
from ..metrics import load_official_csv, reliability_curve
from ..official import official_numbers
from ..tasks import BINARY, MULTI_LABEL
from .common import load_run_model, new_figure, png_base64, predicted_labels, resolve_device
from .visualize import FIGURES, model_figures, select, split_hit_rate

REPORT = "report.html"
RUN_FIGURES = ("curves", "roc", "confusion", "reliability")
REPORT_FIGURES = RUN_FIGURES + FIGURES  # every figure id (fig-<name>) a FocusNet report holds

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1250px; padding: 0 1em; color: #1d1d1f; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; } th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
th { background: #f2f2f2; } tr.run td { font-weight: bold; background: #eef6ff; } tr.published td { color: #444; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; } figcaption { font-size: 0.9em; color: #444; }
.row { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; } .row figure { margin: 0; }
.missing { color: #a00; } .note { color: #555; font-size: 0.9em; } pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.8em; }
"""


# ----------------------------------------------------------------------------- reading the run


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return {}
    except ValueError as e:
        raise FocusNetError(f"{path} is not valid JSON ({e})") from None


def _read_log(run_dir: str) -> list[dict]:
    path = os.path.join(run_dir, "log.csv")
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8", newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def test_scores_path(run_dir: str) -> str | None:
    """The newest official-format test CSV of a run (probabilities, one row per test image)."""
    names = [n for n in os.listdir(run_dir) if n.endswith(".csv") and "_test_[AUC]" in n]
    return max((os.path.join(run_dir, n) for n in names), key=os.path.getmtime) if names else None


# ----------------------------------------------------------------------------- figures of the run


def curves_figure(log: list[dict]) -> Figure:
    """log.csv rows -> loss, validation ACC/AUC (best epochs marked) and learning rate per epoch."""
    epoch = [r["epoch"] for r in log]
    fig = new_figure(11, 3.0)
    ax = fig.subplots(1, 3)
    ax[0].plot(epoch, [r.get("train_loss", np.nan) for r in log], "o-", ms=3, label="train")
    ax[0].plot(epoch, [r.get("val_loss", np.nan) for r in log], "o-", ms=3, label="validation")
    ax[0].set_title("loss", fontsize=9)
    for key in ("val_acc", "val_auc"):
        ax[1].plot(epoch, [r.get(key, np.nan) for r in log], "o-", ms=3, label=key.replace("val_", "val ").upper())
    best = [r for r in log if r.get("best")]
    ax[1].plot([r["epoch"] for r in best], [r["val_auc"] for r in best], "*", ms=9, color="gold", mec="black", label="new best AUC")
    ax[1].set_title("validation", fontsize=9)
    ax[2].semilogy(epoch, [r.get("lr", np.nan) for r in log], "o-", ms=3)
    ax[2].set_title("learning rate", fontsize=9)
    for a in ax:
        a.set_xlabel("epoch", fontsize=8)
        a.grid(alpha=0.3)
    ax[0].legend(fontsize=7)
    ax[1].legend(fontsize=7)
    return fig


def _columns(labels: np.ndarray, scores: np.ndarray, task: str, names: dict) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, binary targets, scores) per ROC curve, as the official AUC forms its columns."""
    if task == MULTI_LABEL:
        return [(names.get(str(i), str(i)), labels[:, i], scores[:, i]) for i in range(scores.shape[1])]
    if task == BINARY:
        return [(names.get("1", "positive"), labels[:, 0], scores[:, -1])]
    return [(names.get(str(i), str(i)), (labels[:, 0] == i).astype(int), scores[:, i]) for i in range(scores.shape[1])]


def roc_figure(labels: np.ndarray, scores: np.ndarray, task: str, names: dict, auc: float | None) -> Figure:
    """labels (N, L), scores (N, K) probabilities -> one ROC curve per official AUC column."""
    fig = new_figure(5.6, 4.6)
    ax = fig.subplots()
    for name, target, score in _columns(labels, scores, task, names):
        if target.min() == target.max():
            continue  # a column without both classes has no ROC curve
        fpr, tpr, _ = roc_curve(target, score)
        ax.plot(fpr, tpr, lw=1.2, label=f"{name[:24]} ({roc_auc_score(target, score):.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set_xlabel("false positive rate", fontsize=8)
    ax.set_ylabel("true positive rate", fontsize=8)
    ax.set_title("test ROC" + (f" (official AUC {auc:.3f})" if auc is not None else ""), fontsize=9)
    ax.legend(fontsize=6, ncol=2 if scores.shape[1] > 8 else 1, loc="lower right")
    return fig


def confusion_figure(labels: np.ndarray, scores: np.ndarray, task: str, names: dict) -> Figure:
    """Single-label: K x K counts (colour: share of the true class). Multi-label: per label, the
    shares of TN, FP, FN, TP. Predictions are made as the official ACC makes them."""
    pred = predicted_labels(scores, task)
    if task == MULTI_LABEL:
        cells = np.stack([((labels == t) & (pred == p)).mean(axis=0) for t, p in ((0, 0), (0, 1), (1, 0), (1, 1))], axis=1)  # (L, 4)
        rows, cols, shares, text = [names.get(str(i), str(i))[:24] for i in range(labels.shape[1])], ["TN", "FP", "FN", "TP"], cells, cells
        fmt, xlabel, ylabel = "{:.2f}", "", "label"
    else:
        k = scores.shape[1]
        counts = np.zeros((k, k), dtype=np.int64)
        np.add.at(counts, (labels[:, 0], pred[:, 0]), 1)
        shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        rows = cols = [names.get(str(i), str(i))[:18] for i in range(k)]
        text, fmt, xlabel, ylabel = counts, "{:d}", "predicted", "true"
    fig = new_figure(max(4.2, 0.45 * len(cols) + 2.6), max(3.4, 0.4 * len(rows) + 1.8))
    ax = fig.subplots()
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    if len(rows) * len(cols) <= 400:
        for (r, c), v in np.ndenumerate(text):
            ax.text(c, r, fmt.format(v), ha="center", va="center", fontsize=6, color="white" if shares[r, c] > 0.5 else "black")
    ax.set_xticks(range(len(cols)), cols, rotation=40 if len(cols) > 4 else 0, ha="right" if len(cols) > 4 else "center", fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title("test confusion matrix", fontsize=9)
    return fig


def reliability_figure(labels: np.ndarray, scores: np.ndarray, task: str, ece: float | None) -> Figure:
    """Accuracy against confidence per bin (labels pooled for multi-label), and the bin counts."""
    curve = reliability_curve(labels, scores, task)
    centres = (curve["bin_lower"] + curve["bin_upper"]) / 2
    width = curve["bin_upper"][0] - curve["bin_lower"][0]
    fig = new_figure(5.0, 4.8)
    top, bottom = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    have = curve["count"] > 0
    top.bar(centres[have], curve["accuracy"][have], width=width, edgecolor="black", lw=0.5, label="accuracy")
    top.bar(centres[have], (curve["confidence"] - curve["accuracy"])[have], bottom=curve["accuracy"][have], width=width, color="red", alpha=0.3, label="gap to confidence")
    top.plot([0, 1], [0, 1], ":", color="grey")
    top.set_ylabel("accuracy", fontsize=8)
    top.set_title("test reliability" + (f" (ECE {ece:.3f})" if ece is not None else ""), fontsize=9)
    top.legend(fontsize=7, loc="upper left")
    bottom.bar(centres, curve["count"], width=width, color="grey")
    bottom.set_xlabel("confidence", fontsize=8)
    bottom.set_ylabel("images", fontsize=8)
    return fig


# ----------------------------------------------------------------------------- HTML pieces


def _img(name: str, fig: Figure, caption: str = "") -> str:
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f'<figure id="fig-{name}"><img alt="{name}" src="data:image/png;base64,{png_base64(fig)}">{cap}</figure>'


def _guard(build: Callable[[], str]) -> str:
    """A section's HTML, or one line saying why it could not be built."""
    try:
        return build()
    except Exception as e:  # noqa: BLE001 - one broken section must not lose the whole report
        reason = " ".join(str(e).split()) or type(e).__name__
        return f'<p class="missing">not available: {html.escape(type(e).__name__)}: {html.escape(reason[:300])}</p>'


def _ci(m: dict, key: str) -> str:
    lo, hi = m.get(f"{key}_ci", [float("nan")] * 2)
    return f"{m[key]:.4f} [{lo:.3f}, {hi:.3f}]"


def metrics_html(metrics: dict, flag: str) -> str:
    rows = []
    for split in ("test", "val"):
        if split in metrics:
            m = metrics[split]
            rows.append(f'<tr class="run"><td>this run, {split} (n={m.get("n", "?")})</td><td>{_ci(m, "acc")}</td><td>{_ci(m, "auc")}</td><td>ECE {m.get("ece", float("nan")):.4f}; bootstrap 95% CI</td></tr>')
    published = official_numbers(flag)
    for r in published:
        rows.append(f'<tr class="published"><td>{html.escape(r.method)}</td><td>{r.acc:.3f}</td><td>{r.auc:.3f}</td><td>{html.escape(r.source)}</td></tr>')
    note = "Published rows are quoted from their sources, for comparison; they were not produced by this run." if published else f"No published MedMNIST numbers for {html.escape(flag)}."
    return f"<table><tr><th>result</th><th>ACC</th><th>AUC</th><th>notes / source</th></tr>{''.join(rows)}</table><p class='note'>{note}</p>"


def summary_html(run_dir: str, config: dict, metrics: dict) -> str:
    data, train = config.get("data", {}), config.get("train", {})
    items = {
        "run folder": os.path.realpath(run_dir),
        "dataset": f"{data.get('flag', metrics.get('dataset', '?'))} ({data.get('task', '?')}, {data.get('spatial_dims', '?')}D, {data.get('size', '?')} px)",
        "model": f"{metrics.get('model', config.get('model', {}).get('name', '?'))}, {metrics.get('params', 0):,} parameters, {metrics.get('flops_per_image', 0) / 1e6:.1f} MFLOPs per image",
        "training": f"preset {train.get('preset', '?')}, {metrics.get('epochs', train.get('epochs', '?'))} epochs (best {metrics.get('best_epoch', '?')}), seed {train.get('seed', '?')}, {metrics.get('train_time_s', 0):.0f} s",
        "report written": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    return "<table>" + "".join(f"<tr><th>{k}</th><td>{html.escape(str(v))}</td></tr>" for k, v in items.items()) + "</table>"


def hit_rate_html(rate: dict) -> str:
    steps = "".join(f"<tr><td>saccade {t + 1}</td><td>{r:.3f}</td><td>{q:.3f}</td></tr>" for t, (r, q) in enumerate(zip(rate["per_step"], rate["random_per_step"])))
    return (
        f"<table><tr><th></th><th>FocusNet</th><th>random fixations</th></tr>"
        f"<tr class='run'><td>any saccade on the lesion</td><td>{rate['hit_rate']:.3f}</td><td>{rate['random_hit_rate']:.3f}</td></tr>{steps}</table>"
        f"<p class='note'>Share of {rate['n']} test images where a saccade's fixation lands inside the lesion box (the glance at the centre does not count). Random: uniform fixations over the image, same boxes.</p>"
    )


# ----------------------------------------------------------------------------- the report


def write_report(run_dir: str, out: str | None = None, n: int = 8, data_dir: str | None = None, device: str | torch.device = "cpu", seed: int = 0, pool: int = 256) -> str:
    """Build <run_dir>/report.html (or `out`) from the run folder; returns its path."""
    if n < 1 or pool < 1:
        raise FocusNetError(f"the gallery needs --n >= 1 images (and a pool >= 1), got n={n}, pool={pool}")
    if out:
        check_writable_parent(out)
    run_dir = os.path.dirname(os.path.abspath(run_dir)) if os.path.isfile(run_dir) else run_dir
    if not os.path.isdir(run_dir):
        raise FocusNetError(f"run folder {run_dir} not found")
    config, metrics = _read_json(os.path.join(run_dir, "config.json")), _read_json(os.path.join(run_dir, "metrics.json"))
    if not config and not metrics:
        raise FocusNetError(f"{run_dir} has neither config.json nor metrics.json; is it a FocusNet run folder?")
    desc = config.get("data", {})
    flag = desc.get("flag", metrics.get("dataset", "?"))
    device = resolve_device(device)  # before any work: --device cuda without a GPU is an error, not a missing section
    state: dict = {}

    def test_split():
        if "split" not in state:
            state["split"] = load_run_data(desc, data_dir, config.get("train", {})).splits["test"]
        return state["split"]

    body = [f"<h1>FocusNet run report: {html.escape(os.path.basename(os.path.realpath(run_dir)))}</h1>", _guard(lambda: summary_html(run_dir, config, metrics))]
    body += ["<h2>Metrics</h2>", _guard(lambda: metrics_html(metrics, flag))]
    body += ["<h2>Training</h2>", _guard(lambda: _img("curves", curves_figure(_need(_read_log(run_dir), "log.csv has no epochs"))))]
    body += ["<h2>Test predictions</h2>", _guard(lambda: _prediction_figures(run_dir, test_split(), desc, metrics.get("test", {})))]
    body += ["<h2>Where the network looks</h2>", _guard(lambda: _model_sections(run_dir, test_split(), n, seed, pool, device))]
    body += ["<h2>Configuration</h2>", f"<pre>{html.escape(json.dumps(config, indent=2, sort_keys=True))}</pre>"]
    page = f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>FocusNet report: {html.escape(flag)}</title><style>{CSS}</style></head><body>\n' + "\n".join(body) + "\n</body></html>\n"
    path = out or os.path.join(run_dir, REPORT)
    write_text(path, page)
    return path


def _need(value, message: str):
    if not value:
        raise FocusNetError(message)
    return value


def _prediction_figures(run_dir: str, split, desc: dict, test: dict) -> str:
    path = _need(test_scores_path(run_dir), "no test predictions CSV in the run folder")
    scores, labels = load_official_csv(path), split.labels.numpy()
    if len(scores) != len(labels):
        raise FocusNetError(f"{os.path.basename(path)} has {len(scores)} rows but the test split has {len(labels)} images")
    task, names = desc["task"], desc.get("label_names", {})
    return '<div class="row">' + "".join(
        _guard(build)
        for build in (
            lambda: _img("roc", roc_figure(labels, scores, task, names, test.get("auc"))),
            lambda: _img("confusion", confusion_figure(labels, scores, task, names)),
            lambda: _img("reliability", reliability_figure(labels, scores, task, test.get("ece"))),
        )
    ) + "</div>"


def _model_sections(run_dir: str, split, n: int, seed: int, pool: int, device: str | torch.device) -> str:
    run = load_run_model(os.path.join(run_dir, "best_model.pth"), device)
    if not run.is_focusnet:
        return f"<p class='note'>The model is a {html.escape(type(run.model).__name__)}: it has no fixations or pathways to show.</p>"
    pool_looked, gallery = select(run, split, n, seed, max(pool, n))
    parts = []
    for r in model_figures(run, pool_looked, gallery):
        parts.append(f"<h3>{html.escape(r.title)}</h3>" + _img(r.name, r.figure, r.note))
    rate = split_hit_rate(run, split, seed)
    if rate is not None:
        parts.append("<h3 id='hit-rate'>Fixation hit rate (synthetic lesions)</h3>" + hit_rate_html(rate))
    return "".join(parts)


def write_report_or_warn(run_dir: str, device: str | torch.device = "cpu") -> str | None:
    """For the trainer: write the report and print its path; on any failure print a one-line
    warning and return None (a finished training run never fails because of its report).
    TrainConfig(report=False) / --no-report skips it."""
    try:
        path = write_report(run_dir, device=device)
    except Exception as e:  # noqa: BLE001
        reason = " ".join(str(e).split())[:200]
        print(f"warning: report.html not written ({type(e).__name__}: {reason}); retry with: focusnet report {run_dir}", file=sys.stderr, flush=True)
        return None
    print(f"  report: {path}", flush=True)
    return path
