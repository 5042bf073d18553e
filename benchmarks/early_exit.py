"""Selective attention: accuracy against average fixations and FLOPs with confidence-based early exit.

Each test image stops looking after the first step (glance = step 1) whose confidence reaches the
threshold; only images still looking are computed, so the saving is real. FLOPs are counted on the
real test images. The row at threshold > 1 is the model with all its fixations. The default
threshold is calibrated on the validation split (focusnet.engine.early_exit): the lowest one whose
val ACC stays within 0.5 points of all fixations'.

    python benchmarks/early_exit.py --checkpoint benchmarks/runs/breastmnist_<ts>/seed_{0,1,2} [more checkpoints]

The report's target pools the seeds of each dataset and budget: mean +/- std of the ACC change at
the default threshold and of the FLOPs saved.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no spinning on shared cores

import argparse
import sys

import torch
from torch import nn

from focusnet.data import load_dataset
from focusnet.engine import load_checkpoint
from focusnet.engine.distributed import DistContext
from focusnet.engine.early_exit import calibrate_threshold
from focusnet.engine.evaluator import eval_loader, predict_logits
from focusnet.fileio import write_json, write_text
from focusnet.flops import count_flops_on
from focusnet.metrics import get_acc, get_auc, probabilities
from focusnet.viz.common import run_config

HERE = os.path.dirname(os.path.abspath(__file__))
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.01)


class EarlyExit(nn.Module):
    """forward(x) -> logits of FocusNet.forward_early_exit, so the FLOP counter can run it."""

    def __init__(self, model: nn.Module, threshold: float, multi_label: bool) -> None:
        super().__init__()
        self.model, self.threshold, self.multi_label = model, threshold, multi_label
        self.steps: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits, steps = self.model.forward_early_exit(x, self.threshold, self.multi_label)
        self.steps.append(steps)
        return logits


def curve(checkpoint: str, split: str, data_dir: str | None) -> dict:
    ck = load_checkpoint(checkpoint)
    d = ck.data
    model = ck.build()
    data = load_dataset(d["flag"], d["size"], data_dir, as_rgb=d["as_rgb"])
    val_logits, val_labels = predict_logits(model, eval_loader(data.splits["val"], 256, DistContext(), d["mean"], d["std"]), DistContext(), steps=True)
    calibration = calibrate_threshold(val_logits, val_labels.numpy(), d["task"])
    loader = eval_loader(data.splits[split], 256, DistContext(), d["mean"], d["std"])
    batches = [(x, y) for x, y, _ in loader]
    labels = torch.cat([y for _, y in batches]).numpy()
    rows = []
    for threshold in sorted(set(THRESHOLDS) | {calibration["threshold"] or 1.01}):
        wrapper = EarlyExit(model, threshold, d["task"].startswith("multi-label")).eval()  # FLOP counting restores this mode
        flops, logits, steps = 0, [], []
        for x, _ in batches:
            flops += count_flops_on(wrapper, x) * len(x)
            logits.append(wrapper(x))
            steps.append(wrapper.steps[-1])
        scores = probabilities(torch.cat(logits), d["task"]).numpy()
        steps = torch.cat(steps).float()
        rows.append({"threshold": threshold, "acc": get_acc(labels, scores, d["task"]), "auc": get_auc(labels, scores, d["task"]), "mean_steps": float(steps.mean()), "mflops_per_image": flops / len(labels) / 1e6, "default": threshold == (calibration["threshold"] or 1.01)})
        print(rows[-1], flush=True)
    train = run_config(ck.path).get("train", {})  # the budget and seed it was trained with, for the report
    return {"checkpoint": checkpoint, "dataset": d["flag"], "epochs": train.get("epochs"), "seed": train.get("seed"), "split": split, "max_steps": ck.model_config["num_saccades"] + 1, "calibration": calibration, "rows": rows}


def markdown(results: list[dict], command: str) -> str:
    lines = ["## Selective attention: early exit", "", f"Command: `{command}`."]
    for result in results:
        lines += ["", *table(result)]
    return "\n".join(lines) + "\n"


def table(result: dict) -> list[str]:
    full = result["rows"][-1]
    lines = [
        f"{result['dataset']} {result['split']} split, checkpoint `{result['checkpoint']}` ({result.get('epochs', '?')} epochs, seed {result.get('seed', '?')}); steps count the glance (at most {result['max_steps']}).",
        f"The default threshold, {_threshold_text(result['calibration'])}, is calibrated on the validation split: the lowest of 0.50, 0.51, ..., 0.99",
        f"whose val ACC stays within 0.5 points of all fixations' (val ACC {result['calibration']['acc']:.4f} vs {result['calibration']['acc_all']:.4f}).",
        "",
        "| confidence threshold | mean steps | MFLOPs/image | ACC | AUC | ACC change vs all fixations (points) |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        label = ("all fixations" if r["threshold"] > 1 else f"{r['threshold']:.2f}") + (" (default)" if r["default"] else "")
        lines.append(f"| {label} | {r['mean_steps']:.2f} | {r['mflops_per_image']:.1f} | {r['acc']:.4f} | {r['auc']:.4f} | {100 * (r['acc'] - full['acc']):+.2f} |")
    return lines


def _threshold_text(calibration: dict) -> str:
    return "none (every image takes every fixation)" if calibration["threshold"] is None else f"{calibration['threshold']:.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", nargs="+", required=True, help="one table per checkpoint")
    p.add_argument("--split", default="test")
    p.add_argument("--data-dir", default=os.path.join(HERE, "..", "..", "shared", "data", "medmnist"))
    args = p.parse_args()
    results = [curve(c, args.split, args.data_dir) for c in args.checkpoint]
    command = "python benchmarks/early_exit.py " + " ".join(sys.argv[1:])
    write_json(os.path.join(HERE, "results", "early_exit.json"), {"results": results, "command": command})
    text = markdown(results, command)
    write_text(os.path.join(HERE, "results", "early_exit.md"), text)
    print(text)


if __name__ == "__main__":
    main()
