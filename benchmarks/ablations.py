"""Ablations: does each FocusNet component earn its place?

Variants of the default model, each trained by `focusnet train --seeds ...` with the same preset
and epoch budget: M/P/K against single pathways, 0/1/2/4 saccades, predictive coding off,
saccadic suppression off. Test ACC/AUC mean +/- std over seeds, FLOPs per image. Rows accumulate
in benchmarks/results/ablations.json (done rows are skipped: stop and continue at will).

    python benchmarks/ablations.py --datasets pneumoniamnist synth-lesion --epochs 20
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no spinning on shared cores

import argparse
import time


from focusnet.data.synthetic import SYNTHETIC_SPECS
from focusnet.engine import TrainConfig, train_seeds
from focusnet.viz import checkpoint_hit_rate
from focusnet.engine.distributed import pick_device
from focusnet.fileio import write_text
from protocol import machine
from rows import SAMPLE_ORDER, append_row, command_line, load_rows, mean_pm_std, mean_std, readout_gate_field, readout_gate_note, seeds_cell, shared_orders_note, short_machine

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "ablations.json")
VARIANTS = {
    "default (M+P+K, 2 saccades, predictive coding, suppression)": {},
    "M pathway only": {"pathways": "m"},
    "P pathway only": {"pathways": "p"},
    "K pathway only": {"pathways": "k"},
    "0 saccades (glance only)": {"num_saccades": 0},
    "1 saccade": {"num_saccades": 1},
    "4 saccades": {"num_saccades": 4},
    "no predictive coding": {"predictive_coding": False},
    "no saccadic suppression": {"suppression": False},
    "with bottom-up saliency (option)": {"saliency": 2.0},  # off by default; at 28 px fovea_scaling makes no difference
    "with step losses (option)": {"step_loss_weight": 1.0},  # a training option: the glance and each saccade classify too
    "gated readout (option)": {"readout": "gated"},  # the head reads the glance plus a learned share (from 0) of the saccades
}
TRAIN_FIELDS = set(TrainConfig.__dataclass_fields__)  # variant keys that are training options, not FocusNet options


def seed_hit_rates(parent: str, seeds: list[int], cfg: TrainConfig) -> dict:
    """Fixation hit rate (test split, synthetic lesion boxes) of each seed's best model: mean +/- std."""
    results = [checkpoint_hit_rate(os.path.join(parent, f"seed_{s}", "best_model.pth"), data_dir=cfg.data_dir, device=cfg.device) for s in seeds]
    return {key: mean_std([r[key] for r in results]) for key in ("hit_rate", "random_hit_rate")}


def _hit_cell(row: dict) -> str:
    h = row.get("hit_rate")
    return f"{mean_pm_std(h['hit_rate'])} (random {h['random_hit_rate']['mean']:.3f})" if h else "-"


def row_key(row: dict) -> tuple:
    return (row["dataset"], row["variant"], row["epochs"], row["preset"], tuple(row["seeds"]))


def markdown(rows: list[dict]) -> str:
    lines = ["## Ablations", "", "Test ACC / AUC, mean +/- std (ddof=1) over seeds; same preset and epochs within a dataset.", "On synthetic data, the fixation hit rate: the share of test images where a saccade lands on the lesion box", "(`focusnet hit-rate`), beside that of uniformly random fixations.", ""]
    lines += ["| dataset | epochs | preset | variant | seeds | test ACC | test AUC | fixation hit rate | MFLOPs/image | machine |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["dataset"], r["epochs"])):  # grouped by dataset, in the order measured
        t = r["test"]
        lines.append(f"| {r['dataset']} | {r['epochs']} | {r['preset']} | {r['variant']} | {seeds_cell(r)} | {mean_pm_std(t['acc'])} | {mean_pm_std(t['auc'])} | {_hit_cell(r)} | {r['flops_per_image'] / 1e6:.1f} | {short_machine(r.get('machine'))} |")
    lines += readout_gate_note(rows, lambda r: f"{r['dataset']}, {r['epochs']} epochs") + shared_orders_note(rows)
    lines += ["", "Commands:", ""] + sorted({f"    {r['command']}" for r in rows}) + [""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["pneumoniamnist", "synth-lesion"])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="VARIANT", help="names from VARIANTS (quote each)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--preset", default="official")
    p.add_argument("--data-dir", default=os.path.join(HERE, "..", "..", "shared", "data", "medmnist"))
    p.add_argument("--device", default="auto")
    p.add_argument("--seed-workers", type=int, default=1, help="train this many seeds at once, one process each (worth it on a GPU)")
    args = p.parse_args()
    rows = load_rows(RESULTS)
    done = {row_key(r) for r in rows}
    command = command_line()
    for dataset in args.datasets:
        for variant in args.variants:
            if row_key({"dataset": dataset, "variant": variant, "epochs": args.epochs, "preset": args.preset, "seeds": args.seeds}) in done:
                continue
            options = VARIANTS[variant]
            train_options = {k: v for k, v in options.items() if k in TRAIN_FIELDS}
            model_options = {k: v for k, v in options.items() if k not in TRAIN_FIELDS}
            cfg = TrainConfig(dataset=dataset, model_options=model_options, **train_options, preset=args.preset, epochs=args.epochs, data_dir=args.data_dir, device=args.device, output_dir=os.path.join(HERE, "runs", "ablations"), report=False, progress=False)
            started = time.perf_counter()
            parent, summary = train_seeds(cfg, args.seeds, args.seed_workers)
            wall_s = time.perf_counter() - started
            hits = seed_hit_rates(parent, args.seeds, cfg) if dataset in SYNTHETIC_SPECS and VARIANTS[variant].get("num_saccades", 2) else None
            row = {"dataset": dataset, "variant": variant, "options": VARIANTS[variant], "epochs": args.epochs, "preset": args.preset, "seeds": args.seeds, "test": summary["test"], "hit_rate": hits, "flops_per_image": summary["runs"][0]["flops_per_image"], "wall_s": wall_s, "run_dir": os.path.relpath(parent, HERE), "command": command, "sample_order": SAMPLE_ORDER, "machine": machine(pick_device(args.device), cfg.amp, cfg.amp_cpu, cfg.channels_last), **readout_gate_field(summary["runs"])}
            rows = append_row(RESULTS, row, row_key, os.path.join(HERE, "results", "ablations.md"), markdown)  # under a lock: ablations can run side by side
    text = markdown(load_rows(RESULTS))
    write_text(os.path.join(HERE, "results", "ablations.md"), text)  # also when every row was done: the table's format may have changed
    print(text)


if __name__ == "__main__":
    main()
