"""Data-parallel scaling on CPU: `torchrun` with 1 and 2 processes (gloo), one thread each.

Trains FocusNet on the synthetic lesion data for a fixed number of batches per epoch with the
same global batch, reads the training throughput (images/s of the last epoch) from each run's
log.csv, and reports the scaling efficiency rate(N) / (N x rate(1)). Also reports the peak
resident memory of the largest process (getrusage of the finished children).

    python benchmarks/distributed.py --nprocs 1 2
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile

from focusnet.fileio import write_json, write_text

HERE = os.path.dirname(os.path.abspath(__file__))


def run(nproc: int, workdir: str, args: argparse.Namespace) -> dict:
    out = os.path.join(workdir, f"n{nproc}")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    cmd = [*launch, "-m", "focusnet", "train", "--dataset", args.dataset, "--size", str(args.size), "--epochs", str(args.epochs), "--max-batches", str(args.batches), "--batch-size", str(args.batch_size), "--n-boot", "10", "--no-report", "--output-dir", out, "--num-threads", "1"]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    # A fresh wrapper process per run, so its children's peak RSS belongs to this run only.
    wrapper = "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    done = subprocess.run([sys.executable, "-c", wrapper, *cmd], check=True, env=env, capture_output=True, text=True)
    peak_kib = int(done.stdout.split()[-1])
    with open(os.path.join(out, f"{args.dataset}_latest", "log.csv")) as f:
        rows = list(csv.DictReader(f))
    return {"nproc": nproc, "images_per_s": float(rows[-1]["images_per_s"]), "peak_rss_mib_max_process": peak_kib / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nprocs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--dataset", default="synth-lesion")
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=2, help="the last epoch is timed (the first warms up)")
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as work:
        rows = [run(n, work, args) for n in args.nprocs]
    base = rows[0]["images_per_s"] / rows[0]["nproc"]
    for r in rows:
        r["efficiency"] = r["images_per_s"] / (r["nproc"] * base)
    command = "python benchmarks/distributed.py " + " ".join(sys.argv[1:])
    write_json(os.path.join(HERE, "results", "distributed.json"), {"rows": rows, "command": command})
    lines = [
        "## Data-parallel scaling (torchrun, CPU, gloo)",
        "",
        f"FocusNet on {args.dataset} ({args.size} px), global batch {args.batch_size}, {args.batches} batches per epoch, one thread per process, {os.cpu_count()} CPU cores. Command: `{command}`.",
        "",
        "| processes | images/s (training) | scaling efficiency | peak RSS of the largest process |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['nproc']} | {r['images_per_s']:.0f} | {r['efficiency']:.2f} | {r['peak_rss_mib_max_process']:.0f} MiB |" for r in rows]
    text = "\n".join(lines) + "\n"
    write_text(os.path.join(HERE, "results", "distributed.md"), text)
    print(text)


if __name__ == "__main__":
    main()
