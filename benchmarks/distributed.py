"""Data-parallel scaling on CPU: `torchrun` with 1 and 2 processes (gloo), one thread each.

Trains FocusNet on the synthetic lesion data for a fixed number of batches per epoch with the
same global batch, reads the training throughput (images/s of the last epoch) from each run's
log.csv, and reports the scaling efficiency rate(N) / (N x rate(1)). Also reports the peak
resident memory of the largest process.

With one process per core, DDP makes every rank wait for the slowest at each step, so any other
busy process on the machine slows the whole group while one process still has a spare core: on a
shared 2-core machine that alone takes the efficiency from ~0.85 to ~0.4. Each run therefore
records the CPU time used by other processes while it ran (/proc/stat less its own children's),
the process counts alternate over --repeats rounds, and the table gives medians.

    python benchmarks/distributed.py --nprocs 1 2 --repeats 3
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import statistics
import shutil
import subprocess
import sys
import tempfile
import time

from focusnet.fileio import write_json, write_text

HERE = os.path.dirname(os.path.abspath(__file__))


def run(nproc: int, workdir: str, args: argparse.Namespace) -> dict:
    out = os.path.join(workdir, f"n{nproc}")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    source = ["--data", args.data] if args.data else ["--dataset", args.dataset]
    cmd = [*launch, "-m", "focusnet", "train", *source, "--size", str(args.size), "--epochs", str(args.epochs), "--max-batches", str(args.batches), "--batch-size", str(args.batch_size), "--n-boot", "10", "--no-report", "--output-dir", out, "--num-threads", "1"]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    busy, own, started = busy_cpu_s(), children_cpu_s(), time.perf_counter()
    peak = watch_memory(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True), out)
    other = max(0.0, busy_cpu_s() - busy - (children_cpu_s() - own))
    (latest,) = [d for d in os.listdir(out) if d.endswith("_latest")]
    with open(os.path.join(out, latest, "log.csv")) as f:
        rows = list(csv.DictReader(f))
    shutil.rmtree(out)  # the next round starts a fresh run folder
    return {"nproc": nproc, "images_per_s": float(rows[-1]["images_per_s"]), "other_cores": other / (time.perf_counter() - started), **peak}


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent not idle (/proc/stat, all cores)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def summarise(runs: list[dict]) -> list[dict]:
    """Per process count: the median throughput over the rounds (with the range), the median CPU
    other processes used meanwhile (in cores), the largest memory peaks; efficiency from medians."""
    rows = []
    for n in dict.fromkeys(r["nproc"] for r in runs):
        mine = [r for r in runs if r["nproc"] == n]
        rates = [r["images_per_s"] for r in mine]
        rows.append({"nproc": n, "images_per_s": statistics.median(rates), "images_per_s_runs": rates, "other_cores": statistics.median(r["other_cores"] for r in mine),
                     "peak_private_mib": max(r["peak_private_mib"] for r in mine), "peak_rss_mib": max(r["peak_rss_mib"] for r in mine)})
    base = rows[0]["images_per_s"] / rows[0]["nproc"]
    for r in rows:
        r["efficiency"] = r["images_per_s"] / (r["nproc"] * base)
    return rows


def watch_memory(proc: subprocess.Popen, marker: str) -> dict:
    """Poll /proc while `proc` runs: the largest private (RssAnon) and total (VmRSS) resident memory
    of any training process (command line containing `marker`), in MiB. File-backed pages of the
    memory-mapped data are shared page cache; private memory is what each process really holds."""
    anon, total = 0, 0
    while proc.poll() is None:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmdline = f.read()
                if marker.encode() not in cmdline or b"torch.distributed.run" in cmdline:
                    continue  # another process, or the launcher
                with open(f"/proc/{pid}/status") as f:
                    fields = dict(line.split(":", 1) for line in f if ":" in line)
            except OSError:
                continue
            anon = max(anon, int(fields.get("RssAnon", "0 kB").split()[0]))
            total = max(total, int(fields.get("VmRSS", "0 kB").split()[0]))
        time.sleep(0.2)
    if proc.returncode:
        raise SystemExit(f"training failed: {proc.stderr.read()[-2000:]}")
    return {"peak_private_mib": anon / 1024, "peak_rss_mib": total / 1024}


def large_npz(folder: str, gib: float) -> str:
    """A binary 2D MedMNIST-format npz of `gib` GiB of 224x224 images, converted once to the
    FocusNet cache (so the timed runs only read it, memory-mapped)."""
    import numpy as np

    from focusnet.data.custom import prepare_custom

    n = int(gib * 2**30 / 224**2)
    path = os.path.join(folder, "large224.npz")
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in (("train", n * 8 // 10), ("val", n // 10), ("test", n // 10)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (count, 224, 224), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(count) % 2)[:, None].astype(np.uint8)
    np.savez(path, **arrays)
    del arrays
    prepare_custom(path, size=224)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nprocs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--dataset", default="synth-lesion")
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--data", default=None, help="train on this file/folder (focusnet train --data) instead of --dataset")
    p.add_argument("--epochs", type=int, default=2, help="the last epoch is timed (the first warms up)")
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3, help="rounds over --nprocs (alternating); the table gives medians")
    p.add_argument("--large-gib", type=float, default=0.0, help="instead: a generated 224-px npz of this many GiB (memory-mapped), --data")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as work:
        if args.large_gib:
            os.environ["FOCUSNET_CACHE_DIR"] = work  # the converted copy goes away with the folder
            args.data, args.size, args.dataset = large_npz(work, args.large_gib), 224, f"a generated {args.large_gib:g} GiB npz"
        rounds = [args.nprocs if i % 2 == 0 else args.nprocs[::-1] for i in range(args.repeats)]
        rows = summarise([run(n, work, args) for order in rounds for n in order])
    command = "python benchmarks/distributed.py " + " ".join(sys.argv[1:])
    name = "distributed_memory" if args.large_gib else "distributed"
    write_json(os.path.join(HERE, "results", f"{name}.json"), {"rows": rows, "command": command})
    lines = [
        "## Data-parallel scaling (torchrun, CPU, gloo)" + (": memory on a large memory-mapped file" if args.large_gib else ""),
        "",
        f"FocusNet on {args.dataset} ({args.size} px), global batch {args.batch_size}, {args.batches} batches per epoch, one thread per process, {os.cpu_count()} CPU cores. Command: `{command}`.",
        "",
        f"Images/s: median over {args.repeats} alternating rounds (range in brackets). With one process per core, DDP's per-step",
        "wait makes every rank as slow as the slowest, so any other busy process on the machine costs the group a whole",
        "core's worth while one process still has a spare core: 'other load' is the CPU (in cores, median over the rounds)",
        "that processes outside the benchmark used while it ran. Efficiency is only meaningful where that is near 0.",
        "",
        "Memory: the largest peak over the training processes (the launcher excluded) of private resident memory",
        "(RssAnon) and of all resident memory (VmRSS, which also counts touched pages of the memory-mapped file:",
        "shared, reclaimable page cache).",
        "",
        "| processes | images/s (training) | scaling efficiency | other load | peak private memory per process | peak resident memory per process |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['nproc']} | {r['images_per_s']:.0f} ({min(r['images_per_s_runs']):.0f}-{max(r['images_per_s_runs']):.0f}) | {r['efficiency']:.2f} | {r['other_cores']:.2f} cores | {r['peak_private_mib']:.0f} MiB | {r['peak_rss_mib']:.0f} MiB |" for r in rows]
    text = "\n".join(lines) + "\n"
    write_text(os.path.join(HERE, "results", f"{name}.md"), text)
    print(text)


if __name__ == "__main__":
    main()
