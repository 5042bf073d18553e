"""Shared by the resumable benchmark scripts: rows kept in a JSON file, mean +/- std over seeds,
and the command line that produced them (recorded beside every figure)."""

from __future__ import annotations

import json
import os
import shlex
import sys

import numpy as np


def load_rows(path: str) -> list[dict]:
    """The rows of a results file ([] when there is none yet)."""
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return json.load(f)["rows"]


def mean_std(values) -> dict:
    """{"mean", "std" (ddof=1; 0 for one value), "values"}"""
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "values": a.tolist()}


def command_line() -> str:
    """How this script was run, relative to the repository root."""
    return f"python benchmarks/{os.path.basename(sys.argv[0])} " + " ".join(shlex.quote(a) for a in sys.argv[1:])
