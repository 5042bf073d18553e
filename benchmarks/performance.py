"""Compute and speed: FocusNet against ResNet-18, side by side in one run.

- FLOPs per image (torch's counter plus the sampling/pooling ops it counts as zero) at every
  input size: 2D 28/64/128/224, 3D 28/64.
- Time per image, inference (batch `--batch`, no grad) at every size, median of `--repeats`
  timings taken in alternation (FocusNet, ResNet, FocusNet, ...) so both see the same machine load.
- Training throughput at 28 px (forward + backward + Adam step, batch 128) and inference throughput.
- Pipeline overhead: an epoch of the real trainer (`focusnet train`: loader, steps, per-step
  checks) against the pure forward/backward/step time of as many batches already in memory.

Writes benchmarks/results/performance.{json,md}; `python benchmarks/report.py` puts it in BENCHMARKS.md.

    python benchmarks/performance.py
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no spinning on shared cores

import argparse
import csv
import statistics
import sys
import tempfile
import time

import torch

from focusnet.data import TensorLoader, load_dataset
from focusnet.engine import TrainConfig, train
from focusnet.engine.trainer import LossModel
from focusnet.fileio import write_json, write_text
from focusnet.flops import count_flops
from focusnet.models import EnhancedFocusNet2D, EnhancedFocusNet3D
from focusnet.models.resnet import resnet18, resnet18_3d, resnet18_224
from focusnet.tasks import make_criterion

HERE = os.path.dirname(os.path.abspath(__file__))


def models_2d(num_classes: int = 2) -> dict[str, torch.nn.Module]:
    return {"FocusNet": EnhancedFocusNet2D(1, num_classes), "ResNet-18 (28, CIFAR stem)": resnet18(1, num_classes), "ResNet-18 (224, torchvision)": resnet18_224(1, num_classes)}


def models_3d(num_classes: int = 2) -> dict[str, torch.nn.Module]:
    return {"FocusNet": EnhancedFocusNet3D(1, num_classes), "ResNet-18 3D": resnet18_3d(1, num_classes)}


@torch.no_grad()
def seconds_per_image(models: dict[str, torch.nn.Module], shape: tuple[int, ...], repeats: int) -> dict[str, float]:
    """Median inference seconds per image for each model, timed in alternation."""
    x = torch.randn(shape)
    for m in models.values():
        m.eval()(x)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, m in models.items():
            t0 = time.perf_counter()
            m(x)
            times[name].append((time.perf_counter() - t0) / shape[0])
    return {name: statistics.median(v) for name, v in times.items()}


def scaling(repeats: int, batch: int) -> list[dict]:
    rows = []
    for dims, sizes, build in ((2, (28, 64, 128, 224), models_2d), (3, (28, 64), models_3d)):
        for size in sizes:
            models = build()
            shape = (1, 1, *(size,) * dims)
            flops = {name: count_flops(m, shape) for name, m in models.items()}
            # Keep each timing to about the work of `batch` 28-px images: ResNet-18 at 224 px costs
            # 58 GFLOPs per image, the 3D ResNet-18 at 64^3 ~280 GFLOPs per volume.
            n = max(1, batch * 28**dims // (size**dims * (16 if dims == 3 else 1)))
            secs = seconds_per_image(models, (n, 1, *(size,) * dims), repeats if n > 1 else max(3, repeats // 3))
            rows.append({"dims": dims, "size": size, "batch": n, "flops": flops, "seconds_per_image": secs})
            print(f"{dims}D {size}: " + ", ".join(f"{k} {flops[k] / 1e6:,.0f} MFLOPs {secs[k] * 1e3:.2f} ms" for k in models), flush=True)
    return rows


def train_step_fn(model: torch.nn.Module, task: str = "multi-class", k: int = 2, compile_backend: str | None = None):
    """One training step (forward, loss, backward, Adam) as a function of (x, y); with a compile
    backend, the forward and loss are compiled as `focusnet train --compile` compiles them."""
    loss_model = LossModel(model, make_criterion(task, k), 0.1).train()
    if compile_backend:
        loss_model = torch.compile(loss_model, backend=compile_backend)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        loss, _ = loss_model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def throughput(repeats: int) -> dict:
    """Images/s at 28 px, batch 128: training steps and inference, FocusNet vs ResNet-18 (28)."""
    torch.manual_seed(0)
    models = {"FocusNet": EnhancedFocusNet2D(1, 2), "ResNet-18 (28)": resnet18(1, 2)}
    x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 2, (128, 1))
    steps = {name: train_step_fn(m) for name, m in models.items()}
    for s in steps.values():
        s(x, y)  # warm-up
    train: dict[str, list[float]] = {n: [] for n in models}
    for _ in range(repeats):
        for name, s in steps.items():
            t0 = time.perf_counter()
            s(x, y)
            train[name].append(128 / (time.perf_counter() - t0))
    infer = {n: 1.0 / s for n, s in seconds_per_image(models, (128, 1, 28, 28), repeats).items()}
    out = {"train_images_per_s": {n: statistics.median(v) for n, v in train.items()}, "inference_images_per_s": infer}
    print(f"throughput: {out}", flush=True)
    return out


def pipeline_overhead(data_dir: str | None, batches: int, repeats: int = 3) -> dict:
    """A real epoch of `focusnet train` (synth-lesion, batch 128, capped at `batches` batches; its
    log.csv epoch_s: fetching, steps and the trainer's per-step checks, validation left out)
    against the pure forward/backward/Adam step of the same model and loss on as many batches
    already in memory. Both start from a fresh model (the first step's one-time costs on both
    sides); alternated `repeats` times, medians compared."""
    data = load_dataset("synth-lesion", 28, data_dir)
    cached = [b for _, b in zip(range(batches), TensorLoader(data.splits["train"], 128, shuffle=True, seed=0))]
    epoch_s, pure_s = [], []
    with tempfile.TemporaryDirectory() as out:
        for _ in range(repeats):
            cfg = TrainConfig(dataset="synth-lesion", data_dir=data_dir, epochs=1, batch_size=128, max_batches=batches, n_boot=10, report=False, progress=False, device="cpu", output_dir=out)
            run = train(cfg, link=False)
            with open(os.path.join(run.run_dir, "log.csv"), newline="") as f:
                epoch_s.append(float(next(csv.DictReader(f))["epoch_s"]))
            torch.manual_seed(0)
            step = train_step_fn(EnhancedFocusNet2D(1, 4), k=4)
            t0 = time.perf_counter()
            for x, y, _ in cached:
                step(x, y)
            pure_s.append(time.perf_counter() - t0)
    out = {"batches": batches, "repeats": repeats, "epoch_s": epoch_s, "pure_s": pure_s, "ratio": statistics.median(epoch_s) / statistics.median(pure_s)}
    print(f"pipeline: {out}", flush=True)
    return out


def markdown(result: dict) -> str:
    lines = ["## Compute and speed: FocusNet vs ResNet-18", "", f"Machine: {result['machine']}. Command: `{result['command']}`.", ""]
    lines += ["FLOPs per image (forward; grid_sample, pooling and means counted) and inference time per image, median of alternated timings.",
              "Both models get the same batch at a size; the batch shrinks with the input so each timing is affordable on 2 cores, which",
              "makes small batches (1 image at 224 px) less efficient per image for both: compare the ratios, not times across rows.", ""]
    lines += ["| input | batch | FocusNet MFLOPs | ResNet-18 MFLOPs | FLOPs ratio | FocusNet ms/image | ResNet-18 ms/image | time ratio |", "|---|---|---|---|---|---|---|---|"]
    for r in result["scaling"]:
        names = list(r["flops"])
        for ref in names[1:]:
            f, rf = r["flops"]["FocusNet"], r["flops"][ref]
            t, rt = r["seconds_per_image"]["FocusNet"], r["seconds_per_image"][ref]
            size = "x".join([str(r["size"])] * r["dims"])
            lines.append(f"| {size} vs {ref} | {r['batch']} | {f / 1e6:,.1f} | {rf / 1e6:,.1f} | 1/{rf / f:,.1f} | {t * 1e3:.3f} | {rt * 1e3:.3f} | {rt / t:.1f}x |")
    tp = result["throughput"]
    lines += ["", "Throughput at 28 px, batch 128, CPU (images/s, median; ratio = FocusNet / ResNet-18 (28)):", "", "| | FocusNet | ResNet-18 (28) | ratio |", "|---|---|---|---|"]
    for key, label in (("train_images_per_s", "training (forward + backward + Adam)"), ("inference_images_per_s", "inference")):
        a, b = tp[key]["FocusNet"], tp[key]["ResNet-18 (28)"]
        lines.append(f"| {label} | {a:,.0f} | {b:,.0f} | {a / b:.1f}x |")
    p = result["pipeline"]
    lines += ["", f"Pipeline overhead: an epoch of `focusnet train` over {p['batches']} batches (log.csv's epoch_s, validation left out) took {p['ratio']:.3f}x the pure forward/backward/step time of as many batches held in memory (median of {p['repeats']}, alternated; target <= 1.15).", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--batch", type=int, default=32, help="inference batch for the scaling table (3D uses batch/32)")
    p.add_argument("--pipeline-batches", type=int, default=20)
    p.add_argument("--data-dir", default=None)
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    result = {
        "machine": f"CPU only, {os.cpu_count()} cores, torch {torch.__version__}",
        "command": "python benchmarks/performance.py " + " ".join(sys.argv[1:]),
        "throughput": throughput(args.repeats),
        "pipeline": pipeline_overhead(args.data_dir, args.pipeline_batches),
        "scaling": scaling(args.repeats, args.batch),
    }
    write_json(os.path.join(HERE, "results", "performance.json"), result)
    text = markdown(result)
    write_text(os.path.join(HERE, "results", "performance.md"), text)
    print(text)


if __name__ == "__main__":
    main()
