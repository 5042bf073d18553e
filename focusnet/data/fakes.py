"""Tiny MedMNIST-format files for tests: any task type, 2D or 3D, grey or RGB.

    info = fake_info("fake-ml", task="multi-label, binary-class", num_classes=5)
    path = write_fake_npz(tmp_path, info, size=28)   # random images/labels that pass validation
"""

from __future__ import annotations

import os

import numpy as np

from .download import md5sum
from .registry import MULTI_LABEL, SPLITS, DatasetInfo


def fake_info(
    flag: str,
    task: str = "multi-class",
    num_classes: int = 3,
    spatial_dims: int = 2,
    n_channels: int = 1,
    n_samples: tuple[int, int, int] = (20, 6, 8),
    sizes: tuple[int, ...] = (28, 64),
    md5s: dict[int, str] | None = None,
) -> DatasetInfo:
    """A DatasetInfo for a made-up dataset (register it with `register_dataset`)."""
    return DatasetInfo(
        flag=flag,
        task=task,
        label_names={str(i): f"class {i}" for i in range(num_classes)},
        n_channels=n_channels,
        spatial_dims=spatial_dims,
        n_samples=dict(zip(SPLITS, n_samples)),
        num_classes=num_classes,
        sizes=sizes,
        license="test",
        md5s=dict(md5s or {}),
    )


def fake_arrays(info: DatasetInfo, size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random arrays in the exact MedMNIST layout for `info` (images uint8, labels uint8)."""
    rng = np.random.default_rng(seed)
    spatial = (size,) * info.spatial_dims
    out = {}
    for split, n in info.split_sizes(size).items():
        shape = (n, *spatial) if info.n_channels == 1 else (n, *spatial, info.n_channels)
        out[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        if info.task == MULTI_LABEL:
            out[f"{split}_labels"] = rng.integers(0, 2, (n, info.num_classes), dtype=np.uint8)
        else:
            out[f"{split}_labels"] = rng.integers(0, info.num_classes, (n, 1), dtype=np.uint8)
    return out


def write_fake_npz(folder: str | os.PathLike, info: DatasetInfo, size: int = 28, seed: int = 0, arrays: dict[str, np.ndarray] | None = None) -> str:
    """Write `info.filename(size)` into `folder` (compressed, like the official files); return its path."""
    path = os.path.join(os.fspath(folder), info.filename(size))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez_compressed(path, **(arrays if arrays is not None else fake_arrays(info, size, seed)))
    return path


def with_md5(info: DatasetInfo, size: int, path: str) -> DatasetInfo:
    """Copy of `info` whose registry MD5 for `size` is that of the file at `path`."""
    from dataclasses import replace

    return replace(info, md5s={**info.md5s, size: md5sum(path)})
