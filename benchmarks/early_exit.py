"""Selective attention: accuracy against average fixations and FLOPs with confidence-based early exit.

Each test image stops looking after the first step (glance = step 1) whose confidence reaches the
threshold; only images still looking are computed, so the saving is real. FLOPs are counted on the
real test images. The row at threshold > 1 is the model with all its fixations.

    python benchmarks/early_exit.py --checkpoint benchmarks/runs/breastmnist_<ts>/seed_0
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
from focusnet.engine.evaluator import eval_loader
from focusnet.fileio import write_json, write_text
from focusnet.flops import count_flops_on
from focusnet.metrics import get_acc, get_auc, probabilities

HERE = os.path.dirname(os.path.abspath(__file__))
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.01)
DEFAULT_THRESHOLD = 0.9


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
    loader = eval_loader(data.splits[split], 256, DistContext(), d["mean"], d["std"])
    batches = [(x, y) for x, y, _ in loader]
    labels = torch.cat([y for _, y in batches]).numpy()
    rows = []
    for threshold in THRESHOLDS:
        wrapper = EarlyExit(model, threshold, d["task"].startswith("multi-label")).eval()  # FLOP counting restores this mode
        flops, logits, steps = 0, [], []
        for x, _ in batches:
            flops += count_flops_on(wrapper, x) * len(x)
            logits.append(wrapper(x))
            steps.append(wrapper.steps[-1])
        scores = probabilities(torch.cat(logits), d["task"]).numpy()
        steps = torch.cat(steps).float()
        rows.append({"threshold": threshold, "acc": get_acc(labels, scores, d["task"]), "auc": get_auc(labels, scores, d["task"]), "mean_steps": float(steps.mean()), "mflops_per_image": flops / len(labels) / 1e6})
        print(rows[-1], flush=True)
    return {"checkpoint": checkpoint, "dataset": d["flag"], "split": split, "max_steps": ck.model_config["num_saccades"] + 1, "rows": rows}


def markdown(result: dict, command: str) -> str:
    full = result["rows"][-1]
    lines = [
        "## Selective attention: early exit",
        "",
        f"{result['dataset']} {result['split']} split, checkpoint `{result['checkpoint']}`; steps count the glance (at most {result['max_steps']}).",
        f"The default threshold is {DEFAULT_THRESHOLD}. Command: `{command}`.",
        "",
        "| confidence threshold | mean steps | MFLOPs/image | ACC | AUC | ACC change vs all fixations (points) |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        label = "all fixations" if r["threshold"] > 1 else f"{r['threshold']:.2f}" + (" (default)" if r["threshold"] == DEFAULT_THRESHOLD else "")
        lines.append(f"| {label} | {r['mean_steps']:.2f} | {r['mflops_per_image']:.1f} | {r['acc']:.4f} | {r['auc']:.4f} | {100 * (r['acc'] - full['acc']):+.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--data-dir", default=os.path.join(HERE, "..", "..", "shared", "data", "medmnist"))
    args = p.parse_args()
    result = curve(args.checkpoint, args.split, args.data_dir)
    command = "python benchmarks/early_exit.py " + " ".join(sys.argv[1:])
    write_json(os.path.join(HERE, "results", "early_exit.json"), {**result, "command": command})
    text = markdown(result, command)
    write_text(os.path.join(HERE, "results", "early_exit.md"), text)
    print(text)


if __name__ == "__main__":
    main()
