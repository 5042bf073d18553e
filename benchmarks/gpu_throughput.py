"""GPU throughput: FocusNet against ResNet-18 side by side on one CUDA device, in fp32, bf16
autocast, bf16 autocast + channels_last, and bf16 autocast + torch.compile (of the forward and
loss, as `focusnet train --compile`; inference compiles the model; compile time is not timed).

Training steps (forward + backward + Adam) and inference, 2D at 28 px (batch 128) and 3D at 28^3
(batch 32), images/s as the median of alternated timings (FocusNet, ResNet, FocusNet, ...), each
timing `--steps` steps between two synchronisations. Writes benchmarks/results/gpu_throughput.{json,md};
`python benchmarks/report.py` puts it in BENCHMARKS.md. `--device cpu` exists only to test the script (give it `--out-dir` elsewhere).

    python benchmarks/gpu_throughput.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from focusnet.engine.speed import autocast as speed_autocast
from focusnet.engine.speed import channels_last_format, to_channels_last
from focusnet.fileio import write_json, write_text
from focusnet.models import EnhancedFocusNet2D, EnhancedFocusNet3D
from focusnet.models.resnet import resnet18, resnet18_3d
from performance import train_step_fn
from rows import command_line

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = {"2D 28 px, batch 128": (2, 128), "3D 28^3, batch 32": (3, 32)}
MODES = ("fp32", "bf16 autocast", "bf16 autocast + channels_last", "bf16 autocast + torch.compile")


def build(dims: int, mode: str, device: torch.device) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    models = {"FocusNet": EnhancedFocusNet2D(1, 2), "ResNet-18": resnet18(1, 2)} if dims == 2 else {"FocusNet": EnhancedFocusNet3D(1, 2), "ResNet-18": resnet18_3d(1, 2)}
    for m in models.values():
        m.to(device)
        if "channels_last" in mode:
            to_channels_last(m, dims)
    return models


def images_per_s(fns: dict, batch: int, steps: int, repeats: int, device: torch.device) -> tuple[dict[str, float], dict[str, float]]:
    """Median images/s of each fn, timed in alternation (each timing runs `steps` calls), and the
    seconds of each fn's untimed two-call warm-up (cuDNN picks its algorithms, torch.compile compiles)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    warmup_s = {}
    for name, fn in fns.items():
        sync()
        t0 = time.perf_counter()
        fn(), fn()
        sync()
        warmup_s[name] = time.perf_counter() - t0
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            sync()
            times[name].append(batch * steps / (time.perf_counter() - t0))
    return {name: statistics.median(v) for name, v in times.items()}, warmup_s


def measure(dims: int, batch: int, mode: str, device: torch.device, steps: int, repeats: int, backend: str = "inductor") -> dict:
    """Images/s of both models in `mode`; `backend` is torch.compile's for the compile mode."""
    models = build(dims, mode, device)
    x = torch.randn(batch, 1, *(28,) * dims, device=device)
    if "channels_last" in mode:
        x = x.contiguous(memory_format=channels_last_format(dims))
    y = torch.randint(0, 2, (batch, 1), device=device)
    autocast = speed_autocast(device, "bf16" in mode)

    def under_autocast(fn):
        def run():
            with autocast:
                fn()
        return run

    compiled = "torch.compile" in mode
    steps_fns = {name: train_step_fn(m, compile_backend=backend if compiled else None) for name, m in models.items()}
    train, train_warmup = images_per_s({n: under_autocast(lambda s=s: s(x, y)) for n, s in steps_fns.items()}, batch, steps, repeats, device)
    for m in models.values():
        m.eval()
    runners = {n: torch.compile(m, backend=backend) if compiled else m for n, m in models.items()}
    with torch.no_grad():
        infer, infer_warmup = images_per_s({n: under_autocast(lambda m=m: m(x)) for n, m in runners.items()}, batch, steps, repeats, device)
    out = {"dims": dims, "batch": batch, "mode": mode, "train_images_per_s": train, "inference_images_per_s": infer,
           "train_warmup_s": train_warmup, "inference_warmup_s": infer_warmup}
    print(out, flush=True)
    return out


def markdown(result: dict) -> str:
    lines = ["## GPU throughput: FocusNet vs ResNet-18", "", f"Machine: {result['machine']}. Command: `{result['command']}`.", "",
             "Images/s, median of alternated timings; ratio = FocusNet / ResNet-18. FocusNet's sequential fixations are many",
             "small kernels, so on a GPU its FLOPs saving buys no speed at 28 px; where bf16 autocast is slower than fp32,",
             "its cast kernels cost more than the arithmetic they save. torch.compile fuses many of those small kernels; its",
             "rows are the steady state: compilation happens in the untimed warm-up (its seconds are listed below the table).", "",
             "| case | precision | train FocusNet | train ResNet-18 | ratio | inference FocusNet | inference ResNet-18 | ratio |", "|---|---|---|---|---|---|---|---|"]
    order = [(case, mode) for case in CASES for mode in MODES]
    measured = sorted(zip(result["case_names"], result["rows"]), key=lambda cr: order.index((cr[0], cr[1]["mode"])))
    for case, r in measured:
        t, i = r["train_images_per_s"], r["inference_images_per_s"]
        lines.append(f"| {case} | {r['mode']} | {t['FocusNet']:,.0f} | {t['ResNet-18']:,.0f} | {t['FocusNet'] / t['ResNet-18']:.2f}x | "
                     f"{i['FocusNet']:,.0f} | {i['ResNet-18']:,.0f} | {i['FocusNet'] / i['ResNet-18']:.2f}x |")
    compiled = [(case, r) for case, r in measured if "torch.compile" in r["mode"] and "train_warmup_s" in r]
    if compiled:
        lines += ["", "Warm-up of the torch.compile rows (two calls each, compilation included), seconds:"]
        lines += [f"- {case}: FocusNet train {r['train_warmup_s']['FocusNet']:.0f} s, inference {r['inference_warmup_s']['FocusNet']:.0f} s; "
                  f"ResNet-18 train {r['train_warmup_s']['ResNet-18']:.0f} s, inference {r['inference_warmup_s']['ResNet-18']:.0f} s." for case, r in compiled]
    done = set(zip(result["case_names"], (r["mode"] for r in result["rows"])))
    missing = [f"{case}, {mode}" for case in CASES for mode in MODES if (case, mode) not in done]
    if missing:
        lines += ["", "Not measured in this run: " + "; ".join(missing) + "."]
    return "\n".join(lines + [""])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=10, help="steps per timing")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend of the compile mode")
    p.add_argument("--render", action="store_true", help="only rewrite the markdown from the JSON already measured")
    p.add_argument("--out-dir", default=os.path.join(HERE, "results"), help="where gpu_throughput.{json,md} go")
    args = p.parse_args()
    json_path, md_path = (os.path.join(args.out_dir, f"gpu_throughput.{ext}") for ext in ("json", "md"))
    if args.render:
        with open(json_path, encoding="utf-8") as f:
            write_text(md_path, markdown(json.load(f)))
        return
    device = torch.device(args.device)
    if device.type != "cuda" and os.path.abspath(args.out_dir) == os.path.join(HERE, "results"):
        raise SystemExit("--device cpu only tests the script: give --out-dir somewhere else, so the GPU results stay")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: run this on a machine with a GPU (or --device cpu to test the script)")
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU only, {os.cpu_count()} cores"
    result: dict = {"machine": f"{where}, torch {torch.__version__}", "command": command_line(), "case_names": [], "rows": []}
    for mode in MODES:  # compile's slow warm-up last; written after every row: a lease that ends early keeps what was measured
        for case, (dims, batch) in CASES.items():
            result["rows"].append(measure(dims, batch, mode, device, args.steps, args.repeats, args.compile_backend))
            result["case_names"].append(case)
            write_json(json_path, result)
            write_text(md_path, markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
