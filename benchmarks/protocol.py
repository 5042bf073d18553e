"""Official-protocol accuracy: FocusNet and ResNet-18 trained by the same command, mean +/- std
over seeds, beside the published MedMNIST numbers.

Each row is `focusnet train --seeds ...` on one dataset with one model and epoch budget. Rows
accumulate in benchmarks/results/protocol.json (a row already there is skipped, so a long
benchmark can be stopped and continued); benchmarks/results/protocol.md is regenerated from the
JSON, and `python benchmarks/report.py` folds it into BENCHMARKS.md. `--extend` adds seeds to a
row without retraining those it has (`--seeds 0 1 2 --extend` on a seed-0 row trains 1 and 2).

    # the side-by-side rows (same reduced budget for both models) and FocusNet's full protocol:
    python benchmarks/protocol.py --datasets breastmnist --models focusnet resnet18 --epochs 10
    python benchmarks/protocol.py --datasets breastmnist pneumoniamnist --models focusnet --epochs 100
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no spinning on shared cores

import argparse
import json
import time

import torch

from focusnet.engine import TrainConfig, train_seeds
from focusnet.cli import parse_options
from focusnet.engine.distributed import pick_device
from focusnet.fileio import write_text
from focusnet.official import official_numbers
from rows import SAMPLE_ORDER, append_row, command_line, load_rows, mean_pm_std, merge_seed_rows, readout_gate_field, readout_gate_note, replace_rows, reproducing_command, seeds_cell, shared_orders_note

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "protocol.json")
MARKDOWN = os.path.join(HERE, "results", "protocol.md")
DATA_DIR = os.path.join(HERE, "..", "..", "shared", "data", "medmnist")
OFFICIAL_METHOD = {2: "ResNet-18 (28)", 3: "ResNet-18+3D"}


SPEED_FLAGS = ("amp_cpu", "channels_last")  # train options that change speed, not the protocol; a row records those it used


def settings_key(row: dict) -> tuple:
    """What a row was trained with, seeds aside: rows that share it can be merged (--extend)."""
    return (row["dataset"], row["size"], row["model"], json.dumps(row.get("options", {}), sort_keys=True), row["preset"], row["epochs"], tuple(sorted(row.get("speed", []))))


def row_key(row: dict) -> tuple:
    return settings_key(row) + (tuple(row["seeds"]),)


def parts_to_extend(rows: list[dict], wanted: dict, on_machine: str) -> list[dict]:
    """The rows with `wanted`'s settings, trained on `on_machine`, whose seeds are all among its
    seeds, largest first, each sharing no seed with those before it: what --extend folds into one row
    (seeds from another machine or torch are not pooled)."""
    same = sorted((r for r in rows if settings_key(r) == settings_key(wanted) and r["machine"] == on_machine and set(r["seeds"]) <= set(wanted["seeds"])), key=lambda r: -len(r["seeds"]))
    parts, taken = [], set()
    for r in same:
        if not taken & set(r["seeds"]):
            parts.append(r)
            taken |= set(r["seeds"])
    return parts


def model_label(row: dict) -> str:
    """'focusnet', or with its non-default options: 'focusnet (fovea_scaling=pixels, saliency=2)'."""
    options = row.get("options") or {}
    return row["model"] + (" (" + ", ".join(f"{k}={v}" for k, v in sorted(options.items())) + ")" if options else "")


def row_config(dataset: str, size: int, model: str, options: dict, preset: str, epochs: int, data_dir: str, device: str, output_dir: str, speed: tuple[str, ...] = ()) -> TrainConfig:
    return TrainConfig(dataset=dataset, size=size, model=model, model_options=options, preset=preset, epochs=epochs, data_dir=data_dir, device=device, output_dir=output_dir, report=False, progress=False, download=False, **{flag: True for flag in speed})


def config_machine(cfg: TrainConfig) -> str:
    return machine(pick_device(cfg.device), cfg.amp, cfg.amp_cpu, cfg.channels_last)


def run_row(dataset: str, size: int, model: str, options: dict, preset: str, epochs: int, seeds: list[int], data_dir: str, device: str, output_dir: str, seed_workers: int = 1, speed: tuple[str, ...] = ()) -> dict:
    cfg = row_config(dataset, size, model, options, preset, epochs, data_dir, device, output_dir, speed)
    started = time.perf_counter()
    parent, summary = train_seeds(cfg, seeds, seed_workers)
    wall = time.perf_counter() - started
    runs = summary["runs"]
    return {
        "dataset": dataset,
        "size": size,
        "model": runs[0]["model"],
        "options": options,
        "preset": preset,
        "epochs": epochs,
        "seeds": list(seeds),
        "test": summary["test"],
        "val": summary["val"],
        "best_epochs": [r["best_epoch"] for r in runs],
        "params": runs[0]["params"],
        "flops_per_image": runs[0]["flops_per_image"],
        "wall_s": wall,
        "machine": config_machine(cfg),
        "speed": sorted(speed),
        "seed_workers": seed_workers,
        "command": command_line(),
        "sample_order": SAMPLE_ORDER,
        "run_folder": os.path.relpath(parent, os.path.join(HERE, "..")),
        **readout_gate_field(runs),
    }


def machine(device: torch.device, amp: bool, amp_cpu: bool = False, channels_last: bool = False) -> str:
    """The device and what changes its arithmetic or speed: 'CPU only, 2 cores, channels-last, torch 2.x'."""
    cuda = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if cuda else f"CPU only, {os.cpu_count()} cores"
    notes = (["bf16 autocast"] if (amp if cuda else amp_cpu) else []) + (["channels-last"] if channels_last else [])
    return ", ".join([name, *notes, f"torch {torch.__version__}"])


def markdown(rows: list[dict]) -> str:
    lines = [
        "## Accuracy under the official MedMNIST protocol",
        "",
        "Test ACC and AUC, mean +/- std (ddof=1) over the seeds, of the best-validation-AUC epoch;",
        "Adam 1e-3, MultiStepLR x0.1 at 50%/75% of the epochs, batch 128 (2D) / 32 (3D), no augmentation.",
        "The published numbers are MedMNIST v2's 100-epoch ResNet-18 (Yang et al. 2023), quoted, not rerun.",
        "Rows with fewer than 100 epochs are a reduced budget (2 CPU cores cannot afford 100 ResNet-18 epochs; the synthetic",
        "lesion task's own protocol is 50 epochs): compare rows only at the same epochs, and not every budget has a ResNet-18",
        "row. Wall time is the whole row (all seeds) on the machine named.",
        "",
        "| dataset | model | epochs | seeds | test ACC | test AUC | published ResNet-18 ACC / AUC | MFLOPs/image | params | wall time | machine |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["dataset"], r["size"], -r["epochs"], model_label(r))):
        dims = 3 if r["dataset"].endswith("3d") else 2
        ref = [o for o in official_numbers(r["dataset"]) if o.method == OFFICIAL_METHOD[dims]] if r["size"] == 28 else []  # published at 28 only
        published = f"{ref[0].acc:.3f} / {ref[0].auc:.3f}" if ref else "n/a"
        t = r["test"]
        lines.append(
            f"| {r['dataset']} ({r['size']}) | {model_label(r)} | {r['epochs']} | {seeds_cell(r)} | "
            f"{mean_pm_std(t['acc'])} | {mean_pm_std(t['auc'])} | {published} | "
            f"{r['flops_per_image'] / 1e6:,.1f} | {r['params']:,} | {r['wall_s'] / 60:.1f} min | {r['machine']} |"
        )
    if any(not r["machine"].startswith("CPU") for r in rows):
        lines += ["", "Rows on a GPU were run by `OUTPUT_DIR=/dev/shm/runs bash benchmarks/gpu_protocol.sh DATA_DIR EPOCHS`: several rows at once,",
                  "each row's seeds in parallel processes, so their wall times overlap and compare no models. They train under bf16",
                  "autocast (the default on CUDA); CPU rows train in fp32 unless their machine says bf16 autocast."]
    lines += readout_gate_note(rows, lambda r: f"{model_label(r)} on {r['dataset']} ({r['size']}), {r['epochs']} epochs") + shared_orders_note(rows)
    lines += ["", "Commands (a row trained in several runs and folded with --extend shows the fold, which alone trains it):", ""]
    lines += sorted({f"    {reproducing_command(r['command'])}" for r in rows}) + [""]
    return "\n".join(lines)


def fill_row(rows: list[dict], wanted: dict, model: str, args: argparse.Namespace, speed: tuple[str, ...]) -> list[dict]:
    """Train the row `wanted` and store it; with --extend, train only the seeds that rows of its
    settings on this machine lack and fold those rows into it. Returns the rows."""
    on_machine = config_machine(row_config(wanted["dataset"], args.size, model, wanted["options"], args.preset, args.epochs, args.data_dir, args.device, args.output_dir, speed))
    parts = parts_to_extend(rows, wanted, on_machine) if args.extend else []
    missing = [s for s in args.seeds if not any(s in p["seeds"] for p in parts)]
    if missing:
        parts.append(run_row(wanted["dataset"], args.size, model, wanted["options"], args.preset, args.epochs, missing, args.data_dir, args.device, args.output_dir, args.seed_workers, speed))
    if len(parts) == 1:
        return append_row(RESULTS, parts[0], row_key, MARKDOWN, markdown)
    merged = merge_seed_rows(parts)
    if not missing:  # this command trained nothing but did the folding: reproducing the row takes it too
        merged["command"] += " && " + command_line()
    return replace_rows(RESULTS, parts, merged, row_key, MARKDOWN, markdown)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["breastmnist", "pneumoniamnist", "adrenalmnist3d"])
    p.add_argument("--models", nargs="+", default=["focusnet", "resnet18"])
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--preset", default="official")
    p.add_argument("--data-dir", default=DATA_DIR)
    p.add_argument("--device", default="auto")
    p.add_argument("--output-dir", default=os.path.join(HERE, "runs"))
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="a FocusNet option for the focusnet rows, e.g. --option saliency=2")
    p.add_argument("--seed-workers", type=int, default=1, help="train this many seeds at once, one process each (worth it on a GPU)")
    p.add_argument("--amp-cpu", action="store_true", help="bf16 autocast on the CPU too (recorded in the machine column)")
    p.add_argument("--channels-last", action="store_true", help="channels-last memory layout for every row (recorded in the machine column)")
    p.add_argument("--extend", action="store_true", help="fold the rows already trained with these settings on some of --seeds into one row, training only the seeds they lack")
    args = p.parse_args()
    speed = tuple(flag for flag in SPEED_FLAGS if getattr(args, flag))
    rows = load_rows(RESULTS)
    done = {row_key(r) for r in rows}
    options = parse_options(args.option)
    for dataset in args.datasets:
        for model in args.models:
            opts = options if model == "focusnet" else {}  # the baselines take no options
            name = "resnet18_3d" if model == "resnet18" and dataset.endswith("3d") else model
            wanted = {"dataset": dataset, "size": args.size, "model": name, "options": opts, "preset": args.preset, "epochs": args.epochs, "seeds": args.seeds, "speed": speed}
            if row_key(wanted) in done:
                print(f"skip {row_key(wanted)}: already in {RESULTS}")
                continue
            rows = fill_row(rows, wanted, model, args, speed)
    rows = load_rows(RESULTS)
    write_text(MARKDOWN, markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
