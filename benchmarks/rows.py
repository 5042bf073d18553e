"""Shared by the resumable benchmark scripts: rows kept in a JSON file, mean +/- std over seeds,
and the command line that produced them (recorded beside every figure)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import sys

import numpy as np


# Rows trained since training seeds each epoch's order with focusnet.data.loader.order_seed carry
# {"sample_order": SAMPLE_ORDER}; older rows (seed + epoch: seed s replayed seed 0's orders s
# epochs late) lack it, and BENCHMARKS.md says how many there are.
SAMPLE_ORDER = "order_seed"


def shared_orders(row: dict) -> bool:
    """A multi-seed row trained before the seeds drew unrelated sample orders."""
    return len(row.get("seeds", ())) > 1 and row.get("sample_order") != SAMPLE_ORDER


def seeds_cell(row: dict) -> str:
    """The seed count for a table: '3', or '3*' for a row whose seeds shared their sample orders."""
    return f"{len(row['seeds'])}{'*' if shared_orders(row) else ''}"


def load_rows(path: str) -> list[dict]:
    """The rows of a results file ([] when there is none yet)."""
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return json.load(f)["rows"]


@contextlib.contextmanager
def locked(path: str):
    """Exclusive lock on `path`.lock, so rows appended by benchmark processes running side by side
    (e.g. several rows on one GPU) do not overwrite each other."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def append_row(path: str, row: dict, key, markdown_path: str, markdown) -> list[dict]:
    """Add `row` to the file's current rows (re-read under the lock, unless a row with the same
    `key(row)` is there already) and rewrite `markdown_path` from all of them, still under the
    lock so the last writer's markdown holds every row. Returns the rows."""
    from focusnet.fileio import write_json, write_text

    with locked(path):
        rows = load_rows(path)
        if key(row) in {key(r) for r in rows}:
            print(f"not added: a row with key {key(row)} is already in {path}")
        else:
            rows.append(row)
            write_json(path, {"rows": rows})
        write_text(markdown_path, markdown(rows))
    return rows


def mean_std(values) -> dict:
    """{"mean", "std" (ddof=1; 0 for one value), "values"}"""
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "values": a.tolist()}


def merge_seed_rows(parts: list[dict]) -> dict:
    """One row from rows of the same settings trained on disjoint seeds on the same machine (a row
    extended by more seeds): each metric's per-seed values are pooled, in seed order, and their mean
    and std recomputed; wall times add up and every command that trained a part is kept."""
    seeds = [s for part in parts for s in part["seeds"]]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"cannot merge rows that share seeds: {sorted(seeds)}")
    machines = {part["machine"] for part in parts}
    if len(machines) > 1:
        raise ValueError(f"cannot merge rows trained on different machines: {sorted(machines)}")
    order = np.argsort(seeds, kind="stable")

    def pooled(values: list) -> list:
        return [values[i] for i in order]

    merged = {**parts[0], "seeds": sorted(seeds), "wall_s": sum(part["wall_s"] for part in parts),
              "command": " && ".join(dict.fromkeys(part["command"] for part in parts)),
              "run_folder": ", ".join(dict.fromkeys(part["run_folder"] for part in parts))}
    for split in ("test", "val"):
        merged[split] = {m: mean_std(pooled([v for part in parts for v in part[split][m]["values"]])) for m in parts[0][split]}
    merged["best_epochs"] = pooled([e for part in parts for e in part["best_epochs"]])
    if not all(part.get("sample_order") == SAMPLE_ORDER for part in parts):  # one older part: the row is older
        merged.pop("sample_order", None)
    if "readout_gate" in parts[0]:
        merged["readout_gate"] = mean_std(pooled([g for part in parts for g in part["readout_gate"]["values"]]))
    return merged


# flags that change where a row's runs are written or how fast they train, not what the row holds
UNSCORED_FLAGS = {"--output-dir", "--seed-workers", "--extend"}


def _settings(tokens: list[str]) -> list[tuple[str, ...]]:
    """A protocol command's flags with their values, sorted, less --seeds and the UNSCORED_FLAGS."""
    groups = []
    for t in tokens:
        if t.startswith("--") or not groups:
            groups.append([t])
        else:
            groups[-1].append(t)
    return sorted(tuple(g) for g in groups if g[0] != "--seeds" and g[0] not in UNSCORED_FLAGS)


def reproducing_command(command: str) -> str:
    """The shortest command that rebuilds a row: for a row folded by --extend from runs that differ
    only in their seeds, the fold command alone (it trains every seed it lacks); otherwise `command`.
    The row keeps the whole chain in its JSON."""
    parts = _chained(command)
    last = parts[-1]
    if len(parts) > 1 and "--extend" in last and all(_settings(p) == _settings(last) for p in parts):
        return shlex.join(last)
    return command


def _chained(command: str) -> list[list[str]]:
    """'a --x 1 && b' -> [['a', '--x', '1'], ['b']]: the shell's split, so a quoted '&&' inside
    an argument stays in it."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars="&")
    lexer.whitespace_split = True
    parts = [[]]
    for token in lexer:
        if token == "&&":
            parts.append([])
        else:
            parts[-1].append(token)
    return parts


def replace_rows(path: str, old: list[dict], new: dict, key, markdown_path: str, markdown) -> list[dict]:
    """Swap the rows with the keys of `old` for `new` (under the lock, as append_row) and rewrite
    `markdown_path`. Returns the rows."""
    from focusnet.fileio import write_json, write_text

    gone = {key(r) for r in old}
    with locked(path):
        rows = [r for r in load_rows(path) if key(r) not in gone] + [new]
        write_json(path, {"rows": rows})
        write_text(markdown_path, markdown(rows))
    return rows


def mean_pm_std(stat: dict) -> str:
    """'0.854 +/- 0.012'; a single value has no spread to show, so it says so: '0.606 (1 seed)'."""
    if len(stat.get("values", ())) == 1:
        return f"{stat['mean']:.3f} (1 seed)"
    return f"{stat['mean']:.3f} +/- {stat['std']:.3f}"


def readout_gate_field(runs: list[dict]) -> dict:
    """{"readout_gate": mean/std/values} of a gated-readout model's seeds (metrics.json), else {}."""
    return {"readout_gate": mean_std([r["readout_gate"] for r in runs])} if "readout_gate" in runs[0] else {}


def readout_gate_note(rows: list[dict], name) -> list[str]:
    """Markdown lines listing the learned share g of each gated-readout row (`name(row)` says which), or []."""
    gated = [f"{name(r)}: g = {mean_pm_std(r['readout_gate'])}" for r in rows if "readout_gate" in r]
    if not gated:
        return []
    return ["", "Gated readout (`readout=gated`): the learned share g of the saccades in what the head reads (0: the glance alone,", "1: the mean of all steps): " + "; ".join(gated) + "."]


def shared_orders_note(rows: list[dict]) -> list[str]:
    """The legend of seeds_cell's '*', when a row has one."""
    if not any(shared_orders(r) for r in rows):
        return []
    return ["", "A * after the seed count: trained while seed s replayed seed 0's sample orders s epochs late (seed + epoch, until",
            "2026-11-27); the seeds now draw unrelated orders, so rerunning seeds 1 and 2 of such a row gives other values."]


CPU_MACHINE = "CPU only, 2 cores"  # rows written before the machine was recorded ran here


def short_machine(machine: str | None) -> str:
    """'NVIDIA H200, bf16 autocast, torch ...' -> 'NVIDIA H200, bf16 autocast';
    'CPU only, 2 cores, channels-last, torch ...' -> 'CPU, fp32, channels-last'; None -> 'CPU, fp32'."""
    parts = [p for p in (machine or CPU_MACHINE).split(", ") if not p.startswith("torch ")]
    if not parts[0].startswith("CPU"):
        return ", ".join(parts)
    notes = [p for p in parts[1:] if not p.endswith(" cores")]
    return ", ".join(["CPU"] + ([] if "bf16 autocast" in notes else ["fp32"]) + notes)


def command_line() -> str:
    """How this script was run, relative to the repository root."""
    return f"python benchmarks/{os.path.basename(sys.argv[0])} " + " ".join(shlex.quote(a) for a in sys.argv[1:])
