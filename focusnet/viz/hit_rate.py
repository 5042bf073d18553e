"""Fixation hit rate on the synthetic "find the lesion" data.

A saccade hits when its fixation point lies inside a lesion box (edges included). The glance
(step 0, always the image centre) is not a saccade and never counts.

    hit rate        share of images where at least one saccade hits
    per-step rate   share of images whose saccade t hits, t = 1..T
    random          the same for fixations drawn uniformly over the image (same boxes, same T):
                    what a policy that ignores the image would score
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import FocusNetError
from .common import load_run_model, load_split, look, random_pool


def fixation_hits(fixations: np.ndarray, lesions: np.ndarray) -> np.ndarray:
    """fixations (N, T+1, d), lesions (N, 2d) or (N, K, 2d) [lo..., hi...] with NaN rows for
    absent lesions -> (N, T) bool: saccade t+1 lies inside some lesion box."""
    fixations, lesions = np.asarray(fixations, dtype=np.float64), np.asarray(lesions, dtype=np.float64)
    if lesions.ndim == 2:
        lesions = lesions[:, None]  # (N, 1, 2d)
    d = fixations.shape[-1]
    if lesions.shape[-1] != 2 * d or lesions.shape[0] != fixations.shape[0]:
        raise FocusNetError(f"lesion boxes {lesions.shape} do not fit fixations {fixations.shape}")
    p = fixations[:, 1:, None, :]  # (N, T, 1, d)
    lo, hi = lesions[:, None, :, :d], lesions[:, None, :, d:]  # (N, 1, K, d); NaN compares False
    return ((p >= lo) & (p <= hi)).all(axis=-1).any(axis=-1)


def hit_rate(fixations: np.ndarray, lesions: np.ndarray, n_random: int = 32, seed: int = 0) -> dict:
    """-> {"hit_rate", "per_step": [T], "random_hit_rate", "random_per_step": [T], "n", "saccades"}."""
    hits = fixation_hits(fixations, lesions)  # (N, T)
    n, t, d = hits.shape[0], hits.shape[1], fixations.shape[-1]
    if t == 0:
        raise FocusNetError("the model makes no saccades (num_saccades=0): there is no fixation hit rate")
    rng = np.random.default_rng(seed)
    fake = rng.uniform(-1, 1, size=(n * n_random, t + 1, d))
    random_hits = fixation_hits(fake, np.repeat(np.asarray(lesions), n_random, axis=0))
    return {
        "hit_rate": float(hits.any(axis=1).mean()),
        "per_step": hits.mean(axis=0).tolist(),
        "random_hit_rate": float(random_hits.any(axis=1).mean()),
        "random_per_step": random_hits.mean(axis=0).tolist(),
        "n": int(n),
        "saccades": int(t),
    }


def checkpoint_hit_rate(model_path: str, split: str = "test", data_dir: str | None = None, n: int | None = None, device: str | torch.device = "cpu", seed: int = 0) -> dict:
    """Hit rate of a trained model on a split of its (synthetic) dataset; n: a random subset."""
    if n is not None and n < 1:
        raise FocusNetError(f"--n must be >= 1 (or left out for the whole split), got {n}")
    run = load_run_model(model_path, device)
    if not run.require_focusnet("a fixation hit rate").config.num_saccades:
        raise FocusNetError("the model makes no saccades (num_saccades=0): there is no fixation hit rate")
    part = load_split(run, split, data_dir)
    if part.boxes is None:
        raise FocusNetError(f"{run.data['flag']} has no lesion boxes; the hit rate needs a synthetic lesion dataset (e.g. synth-lesion)")
    index = random_pool(len(part), n or len(part), seed)
    looked = look(run, part, index)
    return {"dataset": run.data["flag"], "split": split, **hit_rate(looked.fixations, looked.lesions, seed=seed)}


def format_hit_rate(result: dict) -> str:
    steps = ", ".join(f"{r:.3f}" for r in result["per_step"])
    rand = ", ".join(f"{r:.3f}" for r in result["random_per_step"])
    return (
        f"fixation hit rate {result['hit_rate']:.3f} (per saccade: {steps}) vs {result['random_hit_rate']:.3f} "
        f"for random fixations (per saccade: {rand}), {result['n']} images"
    )
