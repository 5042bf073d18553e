"""Input-pipeline throughput: focusnet TensorLoader vs medmnist's Dataset + torch DataLoader.

Images/s delivered as normalised float tensors over the train split (batch 128, shuffled, CPU,
steady state: whole passes after a warm-up, at least 3 s), both pipelines in the same run, plus the ratio. Optionally (--mmap-gb) the peak memory of
opening a generated multi-GB 224-size file memory-mapped.

    python benchmarks/data_throughput.py --data-dir ../shared/data/medmnist
    python benchmarks/data_throughput.py --mmap-gb 2
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no spinning on shared cores

import argparse
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from focusnet.fileio import write_json, write_text

CASES = [("pneumoniamnist", 28), ("adrenalmnist3d", 28), ("adrenalmnist3d", 64)]


def time_epoch(batches, max_seconds: float, min_seconds: float = 3.0) -> float:
    """Images/s in steady state: one warm-up pass (caches, buffers, page mappings, capped at
    max_seconds), then batches over repeated passes for min(min_seconds, max_seconds) (a 28^3
    epoch alone lasts milliseconds). batches: an iterable, or a function returning one per pass."""

    def one_pass():
        return batches() if callable(batches) else batches

    def passes():
        while True:
            empty = True
            for item in one_pass():
                empty = False
                yield item
            if empty:
                return

    started = time.perf_counter()
    for _ in one_pass():  # warm-up
        if time.perf_counter() - started > max_seconds:
            break
    n, started = 0, time.perf_counter()
    for x, *_ in passes():
        n += x.shape[0]
        elapsed = time.perf_counter() - started
        if elapsed >= min(min_seconds, max_seconds):
            return n / elapsed
    raise RuntimeError("the pipeline delivered no batch to time")


def focusnet_rate(flag: str, size: int, data_dir: str, batch: int, max_seconds: float) -> float:
    from focusnet.data import TensorLoader, load_dataset

    split = load_dataset(flag, size, data_dir=data_dir, download=False).splits["train"]
    return time_epoch(TensorLoader(split, batch, shuffle=True), max_seconds)


def floor_rate(flag: str, size: int, data_dir: str, batch: int, max_seconds: float) -> float:
    """The work any float32 pipeline must do, alone: gather a shuffled uint8 batch, convert it to
    float32 and normalise it, into one reused buffer (cache-warm; no Python per batch beyond the
    three tensor ops). An upper bound for the loader, which must hand out a fresh buffer while
    the consumer still holds the previous batch."""
    from focusnet.data import load_dataset

    images = load_dataset(flag, size, data_dir=data_dir, download=False).splits["train"].images
    n, sample = images.shape[0], tuple(images.shape[1:])
    u8, out, bias = torch.empty((batch,) + sample, dtype=torch.uint8), torch.empty((batch,) + sample), torch.tensor(-1.0)

    def batches():
        order = torch.randperm(n)
        for start in range(0, n - batch + 1, batch):
            torch.index_select(images, 0, order[start : start + batch], out=u8)
            yield (torch.add(bias, out.copy_(u8), alpha=1 / 127.5, out=out),)

    return time_epoch(batches, max_seconds)


def medmnist_rate(flag: str, size: int, data_dir: str, batch: int, max_seconds: float, workers: int) -> float:
    import medmnist
    from torchvision import transforms

    cls = getattr(medmnist, medmnist.INFO[flag]["python_class"])
    if flag.endswith("3d"):  # medmnist 3D items are float arrays in [0, 1], (C, D, H, W)
        tf = lambda a: (torch.from_numpy(a).float() - 0.5) / 0.5
    else:
        tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean=[0.5], std=[0.5])])
    ds = cls(split="train", transform=tf, root=data_dir, size=size, download=False)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers)
    return time_epoch(loader, max_seconds)


def measure_throughput(data_dir: str, batch: int, max_seconds: float, workers: int) -> list[dict]:
    rows = []
    for flag, size in CASES:
        name = f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"
        if not os.path.exists(os.path.join(data_dir, name)):
            print(f"skip {name}: not in {data_dir}", file=sys.stderr)
            continue
        rows.append({
            "dataset": flag,
            "size": size,
            "focusnet": focusnet_rate(flag, size, data_dir, batch, max_seconds),
            "medmnist": medmnist_rate(flag, size, data_dir, batch, max_seconds, workers),
            "floor": floor_rate(flag, size, data_dir, batch, max_seconds),
        })
    return rows


def throughput_table(rows: list[dict]) -> str:
    lines = ["| dataset | size | focusnet img/s | medmnist img/s | ratio | floor img/s | floor / medmnist |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['size']} | {r['focusnet']:,.0f} | {r['medmnist']:,.0f} | {r['focusnet'] / r['medmnist']:.1f}x | {r['floor']:,.0f} | {r['floor'] / r['medmnist']:.1f}x |")
    return "\n".join(lines)


_MMAP_CHILD = """
import sys, torch
from focusnet.data import TensorLoader, load_npz
from focusnet.data.fakes import fake_info

def anon_mib():  # process-private memory; clean file-backed mmap pages are reclaimable page cache
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return int(status["RssAnon"].split()[0]) / 1024

base = anon_mib()
info = fake_info("big", n_samples=(int(sys.argv[2]), 16, 16), sizes=(224,))
split = load_npz(sys.argv[1], info, 224, mmap=sys.argv[3] == "1").splits["train"]
for i, (x, _, _) in enumerate(TensorLoader(split, 64, shuffle=True)):
    if i == 20: break
print(anon_mib() - base)
"""


def mmap_peak(gb: float) -> str:
    """Private (anonymous) memory added by opening a generated `gb`-GB 224-size file and reading
    20 shuffled batches of 64, memory-mapped vs in memory (Linux /proc)."""
    from focusnet.data.fakes import fake_info
    from focusnet.data.synthetic import _atomic_savez

    n = int(gb * 2**30 / 224**2)
    info = fake_info("big", n_samples=(n, 16, 16), sizes=(224,))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, info.filename(224))
        tile = np.random.default_rng(0).integers(0, 256, (1, 224, 224), dtype=np.uint8)
        arrays = {}
        for s, m in info.n_samples.items():  # a repeated tile: compresses fast, same layout as real files
            arrays[f"{s}_images"] = np.broadcast_to(tile, (m, 224, 224))
            arrays[f"{s}_labels"] = np.zeros((m, 1), np.uint8)
        _atomic_savez(path, arrays)
        added = {}
        for mm in ("1", "0"):
            out = subprocess.run([sys.executable, "-c", _MMAP_CHILD, path, str(n), mm], capture_output=True, text=True, check=True)
            added[mm] = float(out.stdout.split()[-1])
    return (f"| file | images | private memory added, mmap | in memory |\n|---|---|---|---|\n"
            f"| generated 224-size npz | {n * 224 * 224 / 2**30:.2f} GiB | {added['1']:,.0f} MiB | {added['0']:,.0f} MiB |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "medmnist"))
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--max-seconds", type=float, default=20.0, help="cap per measurement")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers for the medmnist pipeline")
    p.add_argument("--mmap-gb", type=float, default=0.0, help="also measure peak memory on a generated file of this size")
    args = p.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    rows = measure_throughput(args.data_dir, args.batch_size, args.max_seconds, args.workers)
    parts = [
        "## Input pipeline throughput",
        "",
        "FocusNet's TensorLoader against medmnist's Dataset + torch DataLoader, images/s of normalised float",
        f"batches (steady state), same run. torch {torch.__version__}, {os.cpu_count()} CPU cores, batch {args.batch_size}, medmnist workers {args.workers}.",
        "Floor: the bare uint8 gather + float32 conversion + normalisation of the same batches into one reused,",
        "cache-warm buffer, the least work any pipeline delivering float32 batches must do: a loader cannot beat",
        "it by more than noise, so floor / medmnist bounds the speed-up any such pipeline can show on this machine.",
        "",
        throughput_table(rows),
    ]
    if args.mmap_gb > 0:
        parts += ["", mmap_peak(args.mmap_gb)]
    parts += ["", "Command:", "", "    python benchmarks/data_throughput.py " + " ".join(sys.argv[1:]), ""]
    text = "\n".join(parts)
    print(text)
    results = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    write_json(os.path.join(results, "data_throughput.json"), {"batch_size": args.batch_size, "cpu_count": os.cpu_count(), "torch": torch.__version__, "rows": rows})
    write_text(os.path.join(results, "data_throughput.md"), text)


if __name__ == "__main__":
    main()
