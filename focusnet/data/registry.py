"""Dataset registry: the 18 MedMNIST datasets (from `medmnist.INFO`) plus FocusNet's synthetic ones.

Every loader, CLI command and test asks this module what a flag means: task type, labels,
channels, split sizes, which image sizes exist, and where the official file lives (URL + MD5).
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field

from medmnist.info import INFO

from ..errors import FocusNetError

MEDMNIST_SIZES_2D = (28, 64, 128, 224)
MEDMNIST_SIZES_3D = (28, 64)
SPLITS = ("train", "val", "test")

# Env overrides: where data lives, and a mirror for the official files (tests point it at 127.0.0.1).
DATA_DIR_ENV = "FOCUSNET_DATA_DIR"
URL_ENV = "FOCUSNET_MEDMNIST_URL"

MULTI_CLASS = "multi-class"
BINARY = "binary-class"
MULTI_LABEL = "multi-label, binary-class"
ORDINAL = "ordinal-regression"
TASKS = (MULTI_CLASS, BINARY, MULTI_LABEL, ORDINAL)


@dataclass(frozen=True)
class DatasetInfo:
    """What one dataset flag means. Fields mirror `medmnist.INFO[flag]`."""

    flag: str  # e.g. "pneumoniamnist", "synth-lesion"
    task: str  # one of TASKS (medmnist task strings)
    label_names: dict[str, str]  # {"0": "normal", ...} as medmnist INFO['label']
    n_channels: int
    spatial_dims: int  # 2 or 3
    n_samples: dict[str, int]  # {"train": .., "val": .., "test": ..} (at size 28)
    num_classes: int  # outputs of the model; for multi-label, the number of labels
    sizes: tuple[int, ...]  # available image sizes
    license: str
    synthetic: bool = False
    urls: dict[int, str] = field(default_factory=dict, compare=False)  # size -> official URL
    md5s: dict[int, str] = field(default_factory=dict, compare=False)  # size -> MD5 of the npz
    # Per-size split sizes where they differ from n_samples (synthetic data is smaller at 224).
    samples_by_size: dict[int, dict[str, int]] = field(default_factory=dict, compare=False)

    @property
    def multi_label(self) -> bool:
        return self.task == MULTI_LABEL

    @property
    def num_label_columns(self) -> int:
        """Columns of the label array: num_classes for multi-label, else 1."""
        return self.num_classes if self.multi_label else 1

    def split_sizes(self, size: int) -> dict[str, int]:
        """Number of samples per split in the file of this image size."""
        return dict(self.samples_by_size.get(size, self.n_samples))

    def filename(self, size: int) -> str:
        """MedMNIST naming: `flag.npz` at 28 pixels, `flag_<size>.npz` otherwise."""
        return f"{self.flag}.npz" if size == 28 else f"{self.flag}_{size}.npz"

    def url(self, size: int) -> str | None:
        """Download URL; `FOCUSNET_MEDMNIST_URL` replaces the official host (a mirror or a test server)."""
        base = os.environ.get(URL_ENV)
        if base and not self.synthetic:
            return f"{base.rstrip('/')}/{self.filename(size)}"
        return self.urls.get(size)


def _medmnist_info(flag: str, meta: dict) -> DatasetInfo:
    spatial_dims = 3 if flag.endswith("3d") else 2
    sizes = tuple(s for s in (28, 64, 128, 224) if s == 28 or f"url_{s}" in meta)

    def key(prefix: str, s: int) -> str:
        return prefix if s == 28 else f"{prefix}_{s}"

    return DatasetInfo(
        flag=flag,
        task=meta["task"],
        label_names=dict(meta["label"]),
        n_channels=int(meta["n_channels"]),
        spatial_dims=spatial_dims,
        n_samples={s: int(meta["n_samples"][s]) for s in SPLITS},
        num_classes=len(meta["label"]),
        sizes=sizes,
        license=meta.get("license", "unknown"),
        urls={s: meta[key("url", s)] for s in sizes},
        md5s={s: meta[key("MD5", s)] for s in sizes},
    )


def _synthetic_infos() -> list[DatasetInfo]:
    from .synthetic import SYNTHETIC_SPECS  # noqa: I001 - local import: synthetic imports this module

    return [spec.info() for spec in SYNTHETIC_SPECS.values()]


def _build_registry() -> dict[str, DatasetInfo]:
    infos = [_medmnist_info(flag, meta) for flag, meta in INFO.items()]
    return {info.flag: info for info in infos + _synthetic_infos()}


_REGISTRY: dict[str, DatasetInfo] = {}


def _registry() -> dict[str, DatasetInfo]:
    if not _REGISTRY:
        _REGISTRY.update(_build_registry())
    return _REGISTRY


def register_dataset(info: DatasetInfo, overwrite: bool = False) -> None:
    """Add a dataset in MedMNIST npz format (custom data, or fakes in tests)."""
    if info.flag in _registry() and not overwrite:
        raise FocusNetError(f"Dataset flag '{info.flag}' is already registered; pick another name.")
    if info.task not in TASKS:
        raise FocusNetError(f"Unknown task '{info.task}' for '{info.flag}'; use one of {', '.join(TASKS)}.")
    _registry()[info.flag] = info


def list_datasets() -> list[DatasetInfo]:
    """All registered datasets: the 18 MedMNIST flags, then the synthetic ones."""
    return list(_registry().values())


def get_dataset_info(flag: str, data_dir: str | None = None) -> DatasetInfo:
    """Look a flag up (case-insensitive); an unknown flag raises FocusNetError listing close matches.
    A custom flag is also found in `data_dir`, its own cache folder (a run's recorded data folder),
    when the cache root it was built under is not the current one."""
    reg = _registry()
    key = flag.strip().lower()
    if key in reg:
        return reg[key]
    if key.startswith("custom-"):  # a user's dataset prepared earlier, perhaps in another process
        from .custom import cache_folder, lookup_info  # local import: custom imports this module

        info = lookup_info(key) or (lookup_info(key, os.path.abspath(os.path.expanduser(data_dir))) if data_dir else None)
        if info is not None:
            reg[key] = info
            return info
        raise FocusNetError(f"Custom dataset '{flag}' is not in {cache_folder(key)}: pass --data-dir with the folder the run's config.json names, set FOCUSNET_CACHE_DIR as when it was trained, or train again with --data PATH.")
    close = difflib.get_close_matches(key, list(reg), n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise FocusNetError(f"Unknown dataset '{flag}'.{hint} Run `focusnet datasets` to list all flags.")


def default_data_dir() -> str:
    """`$FOCUSNET_DATA_DIR` if set, else medmnist's default root (`~/.medmnist`)."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return os.path.expanduser(env)
    return os.path.join(os.path.expanduser("~"), ".medmnist")


def format_dataset_table() -> str:
    """One row per dataset, as printed by `focusnet datasets`."""
    header = ("flag", "dims", "task", "classes", "ch", "train/val/test", "sizes", "license")
    rows = [header]
    for info in list_datasets():
        n = info.n_samples
        rows.append((
            info.flag,
            f"{info.spatial_dims}D",
            info.task,
            str(info.num_classes),
            str(info.n_channels),
            f"{n['train']}/{n['val']}/{n['test']}",
            ",".join(str(s) for s in info.sizes),
            info.license,
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
