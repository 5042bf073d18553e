"""When do saccades earn their place? The striped-patch probe at several image sizes.

A bright patch of 1-px stripes sits at a random position in noise; the stripes' orientation is the
class (focusnet.data.synthetic.striped_patch_task). At 28 px the glance resolves the stripes; at
64 and 128 px it sees only a blob, so the class must come from a fixation. Each variant of
FocusNet trains for the same few epochs (Adam 1e-3, batch 50, the predictive-coding loss at 0.1)
and is scored on 500 test images: ACC, and the fixation hit rate (a saccade inside the patch box)
beside that of uniformly random fixations. Rows accumulate in benchmarks/results/saccade_probe.json
(done rows are skipped).

    python benchmarks/saccade_probe.py --sizes 28 64 128 --seeds 0 1 2
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no spinning on shared cores

import argparse
import sys
import time

import torch
import torch.nn.functional as F

from focusnet.data.synthetic import striped_patch_task
from focusnet.flops import count_flops
from focusnet.models import FocusNet, FocusNetConfig
from focusnet.viz import hit_rate
from rows import append_row, command_line, load_rows, mean_pm_std, mean_std

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "saccade_probe.json")
VARIANTS = {
    "default": {},
    "glance only (0 saccades)": {"num_saccades": 0},
    "fovea in pixels": {"fovea_scaling": "pixels"},
    "bottom-up saliency": {"saliency": 2.0},
    "fovea in pixels + bottom-up saliency": {"fovea_scaling": "pixels", "saliency": 2.0},
}


def run(size: int, options: dict, seed: int, epochs: int, n_train: int) -> dict:
    torch.manual_seed(seed)
    x, y, _ = striped_patch_task(n_train, size, seed=1000 + seed)
    x_test, y_test, boxes = striped_patch_task(500, size, seed=2000 + seed)
    model = FocusNet(FocusNetConfig.from_dict({"in_channels": 1, "num_classes": 2, **options}))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x)).split(50):
            trace = model.forward_trace(x[idx])
            loss = F.cross_entropy(trace.logits, y[idx]) + 0.1 * trace.prediction_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        trace = model.forward_trace(x_test)
    out = {"acc": float((trace.logits.argmax(1) == y_test).float().mean()), "flops_per_image": count_flops(model, (1, 1, size, size))}
    if model.config.num_saccades:
        h = hit_rate(trace.fixations.numpy(), boxes)
        out.update(hit_rate=h["hit_rate"], random_hit_rate=h["random_hit_rate"])
    return out


def row_key(row: dict) -> tuple:
    return (row["size"], row["variant"], row["epochs"], row["n_train"], tuple(row["seeds"]))


def markdown(rows: list[dict]) -> str:
    lines = [
        "## When saccades earn their place: the striped-patch probe",
        "",
        "A 6-px patch of 1-px stripes at a random position in noise; the class is the stripes' orientation",
        "(`focusnet.data.synthetic.striped_patch_task`). The glance resolves the stripes at 28 px but not beyond.",
        "Test ACC (chance 0.5) and fixation hit rate (a saccade inside the patch), mean +/- std over seeds;",
        "random: uniformly random fixations on the same images.",
        "",
        "| image size | variant | epochs | seeds | test ACC | fixation hit rate | random | MFLOPs/image |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["size"], list(VARIANTS).index(r["variant"]) if r["variant"] in VARIANTS else 99)):
        hit = mean_pm_std(r["hit_rate"]) if r.get("hit_rate") else "-"
        rand = f"{r['random_hit_rate']['mean']:.3f}" if r.get("random_hit_rate") else "-"
        lines.append(f"| {r['size']} | {r['variant']} | {r['epochs']} | {len(r['seeds'])} | {mean_pm_std(r['acc'])} | {hit} | {rand} | {r['flops_per_image'] / 1e6:.1f} |")
    lines += ["", "Commands:", ""] + sorted({f"    {r['command']}" for r in rows}) + [""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[28, 64, 128])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), help="names from VARIANTS")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--n-train", type=int, default=2000)
    args = p.parse_args()
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        sys.exit(f"error: unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    rows = load_rows(RESULTS)
    done = {row_key(r) for r in rows}
    command = command_line()
    for size in args.sizes:
        for variant in args.variants:
            if row_key({"size": size, "variant": variant, "epochs": args.epochs, "n_train": args.n_train, "seeds": args.seeds}) in done:
                continue
            started = time.perf_counter()
            results = [run(size, VARIANTS[variant], s, args.epochs, args.n_train) for s in args.seeds]
            row = {"size": size, "variant": variant, "options": VARIANTS[variant], "epochs": args.epochs, "n_train": args.n_train, "seeds": args.seeds,
                   "acc": mean_std([r["acc"] for r in results]), "flops_per_image": results[0]["flops_per_image"], "wall_s": time.perf_counter() - started, "command": command}
            if "hit_rate" in results[0]:
                row.update(hit_rate=mean_std([r["hit_rate"] for r in results]), random_hit_rate=mean_std([r["random_hit_rate"] for r in results]))
            rows = append_row(RESULTS, row, row_key, os.path.join(HERE, "results", "saccade_probe.md"), markdown)
            print(f"{size} px, {variant}: ACC {row['acc']['mean']:.3f}" + (f", hit rate {row['hit_rate']['mean']:.3f}" if "hit_rate" in row else ""), flush=True)
    print(markdown(load_rows(RESULTS)))


if __name__ == "__main__":
    main()
