"""Load MedMNIST-format `.npz` files straight into uint8 tensors.

File layout (MedMNIST): keys `{train,val,test}_{images,labels}`; images uint8 (N, H, W) for grey
2D, (N, H, W, C) for RGB 2D, (N, D, H, W) for 3D; labels (N, 1) or (N, K) for multi-label.
Returned tensors are channel-first views: images (N, C, H, W) or (N, C, D, H, W) uint8,
labels (N, L) int64.

Memory mapping: `np.load(mmap_mode=...)` cannot map arrays inside a (compressed) zip, so for
large files the image arrays are extracted once, streamed in chunks, into an uncompressed
`.npy` cache beside the npz (`<name>_npy/`, or `$FOCUSNET_CACHE_DIR` / `~/.cache/focusnet/npy`
when that folder is read-only) and mapped from there copy-on-write: opening a 224-pixel file
costs page cache, not process memory. The cache is rebuilt when the npz changes (size/mtime).

Integrity: a registered file's MD5 is checked whenever its bytes are read in full (download,
each in-memory load, building the mmap cache); its keys, shapes, dtypes, split sizes and label
range are always checked against the registry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import FocusNetError
from ..fileio import write_text
from .custom import PREFIX as CUSTOM_PREFIX
from .custom import cache_folder, data_version
from .download import check_md5, download_file
from .registry import SPLITS, DatasetInfo, default_data_dir, get_dataset_info
from .synthetic import boxes_path, ensure_synthetic

MMAP_AUTO_BYTES = 256 << 20  # mmap=None maps files whose images exceed this (all 128/224 files but the smallest)
CACHE_ENV = "FOCUSNET_CACHE_DIR"
_CACHE_VERSION = 1
_VERIFIED: set[tuple[str, int, int]] = set()  # (realpath, size, mtime_ns) whose MD5 matched this process


@dataclass
class SplitArrays:
    """One split as tensors (shared memory with the file arrays; treat as read-only)."""

    images: torch.Tensor  # uint8 (N, C, H, W) or (N, C, D, H, W); may view a numpy memmap
    labels: torch.Tensor  # int64 (N, L): L = 1 for single-label tasks, number of labels for multi-label
    # Synthetic only: float32 (N, 2*dims) lesion box [lo..., hi...] in grid_sample coordinates
    # (-1..1, x = width first); multi-label: (N, K, 2*dims), NaN rows for absent lesions.
    boxes: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.images.shape[0]


@dataclass
class MedMNISTData:
    info: DatasetInfo
    size: int
    splits: dict[str, SplitArrays]  # "train", "val", "test"
    path: str  # the npz that was read


# ----------------------------------------------------------------------------- public


def load_dataset(flag: str, size: int = 28, data_dir: str | None = None, download: bool = True, as_rgb: bool = False, mmap: bool | None = None) -> MedMNISTData:
    """Load a registered dataset, downloading (MedMNIST) or generating (synthetic) it if missing.

    Looks for `flag.npz` (size 28) or `flag_<size>.npz` in `data_dir` (default:
    `default_data_dir()`). `as_rgb` repeats a grey channel to 3 (a view, no copy). `mmap`:
    True/False forces memory mapping on/off; None maps files with more than 256 MiB of images.
    """
    info = get_dataset_info(flag, data_dir)
    if size not in info.sizes:
        raise FocusNetError(f"{info.flag} has no size {size}; available sizes: {', '.join(map(str, info.sizes))}.")
    if data_dir is None and info.flag.lower().startswith(CUSTOM_PREFIX):  # a prepared --data source lives in its cache folder
        data_dir = cache_folder(info.flag)
    data_dir = os.path.abspath(os.path.expanduser(data_dir or default_data_dir()))
    path = os.path.join(data_dir, info.filename(size))
    if info.synthetic:
        _generate(info, size, path)
    elif not os.path.exists(path):
        _fetch(info, size, path, download)
    return load_npz(path, info, size, as_rgb=as_rgb, mmap=mmap)


def load_run_data(desc: dict, data_dir: str | None, train: dict) -> MedMNISTData:
    """The data a run trained on (`desc`: its checkpoint's data record, `train`: its config.json
    training options), to score it or draw figures: from the run's data folder unless `data_dir`
    is given, and downloaded only if the run allowed downloads (a --no-download run stays offline)."""
    data = load_dataset(desc["flag"], desc["size"], data_dir or train.get("data_dir"), download=train.get("download", True), as_rgb=desc["as_rgb"])
    recorded, folder = desc.get("data_version"), os.path.dirname(data.path)
    if recorded and data_version(folder) != recorded:  # the custom cache was rebuilt from other files or options
        raise FocusNetError(f"{desc['flag']}: the prepared data in {folder} changed since this run trained (rebuilt from other files or "
                            f"options); prepare the run's data again (`focusnet train --data` with its source and its --task/--on-bad-image, see config.json) or train a new run")
    return data


def load_npz(path: str, info: DatasetInfo, size: int, as_rgb: bool = False, mmap: bool | None = None) -> MedMNISTData:
    """Validate a MedMNIST-format npz against `info` and return its splits as tensors."""
    headers = read_headers(path)
    validate_headers(headers, info, size, path)
    image_bytes = sum(int(np.prod(headers[f"{s}_images"][0])) for s in SPLITS)
    use_mmap = image_bytes > MMAP_AUTO_BYTES if mmap is None else mmap
    md5 = None if info.synthetic else info.md5s.get(size)
    if use_mmap:
        images = _mapped_images(path, md5)
    else:
        _verify_once(path, md5)
        images = _read_arrays(path, [f"{s}_images" for s in SPLITS])
    labels = _read_arrays(path, [f"{s}_labels" for s in SPLITS])
    boxes = _read_boxes(path)
    splits = {}
    for s in SPLITS:
        lab = _check_labels(labels[f"{s}_labels"], info, f"{s}_labels", path)
        img = _to_channel_first(images[f"{s}_images"], info.spatial_dims, as_rgb)
        box = torch.from_numpy(boxes[f"{s}_boxes"]) if boxes is not None else None
        splits[s] = SplitArrays(img, lab, box)
    return MedMNISTData(info=info, size=size, splits=splits, path=path)


# ----------------------------------------------------------------------------- obtaining files


def _fetch(info: DatasetInfo, size: int, path: str, download: bool) -> None:
    url, md5 = info.url(size), info.md5s.get(size)
    folder = os.path.dirname(path)
    if url is None:  # a prepared custom dataset (or one registered without a source): nothing to download
        raise FocusNetError(f"{path} not found and {info.flag} has no download source: pass --data-dir with the folder that holds it, or prepare it again with `focusnet train --data SOURCE`")
    if not download:
        raise FocusNetError(f"{path} not found: download {url} (MD5 {md5}) and put it in {folder}/, or allow downloading.")
    download_file(url, path, md5)
    _mark_verified(path)


def _generate(info: DatasetInfo, size: int, path: str) -> None:
    try:
        ensure_synthetic(info, size, path)
    except OSError as e:
        raise FocusNetError(
            f"Cannot write the synthetic dataset to {os.path.dirname(path)} ({e.strerror}); pass a writable --data-dir."
        ) from None


# ----------------------------------------------------------------------------- reading


Header = tuple[tuple[int, ...], np.dtype, bool]  # shape, dtype, fortran_order


def read_headers(path: str) -> dict[str, Header]:
    """Shapes and dtypes of every array in an npz, read without decompressing the data."""
    try:
        with zipfile.ZipFile(path) as zf:
            return {name[: -len(".npy")]: _npy_header(zf, name) for name in zf.namelist() if name.endswith(".npy")}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise FocusNetError(
            f"{path} is not a readable .npz ({type(e).__name__}: corrupt or truncated download?); delete it and run again."
        ) from None


def _npy_header(zf: zipfile.ZipFile, name: str) -> Header:
    with zf.open(name) as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read(f)
        return shape, dtype, fortran_order


def _read_arrays(path: str, keys: list[str]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in keys}
    except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError) as e:
        raise FocusNetError(f"Cannot read {path} ({type(e).__name__}: {e}); delete it and run again.") from None


def _read_boxes(path: str) -> dict[str, np.ndarray] | None:
    side = boxes_path(path)
    if not os.path.exists(side):
        return None
    return _read_arrays(side, [f"{s}_boxes" for s in SPLITS])


def _to_channel_first(arr: np.ndarray, dims: int, as_rgb: bool) -> torch.Tensor:
    """(N, *S) or (N, *S, C) uint8 -> (N, C, *S) tensor view (no copy)."""
    t = torch.from_numpy(arr)
    t = t.unsqueeze(1) if t.dim() == dims + 1 else t.movedim(-1, 1)
    if as_rgb and t.shape[1] == 1:
        t = t.expand(-1, 3, *t.shape[2:])
    return t


# ----------------------------------------------------------------------------- validation


def validate_headers(headers: dict[str, Header], info: DatasetInfo, size: int, path: str) -> None:
    """Keys, dtypes and shapes of a file against the registry; FocusNetError says what differs."""
    missing = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels") if f"{s}_{k}" not in headers]
    if missing:
        raise FocusNetError(f"{path} lacks keys {', '.join(missing)}: not a MedMNIST-format file; delete or replace it.")
    expected_n = info.split_sizes(size)
    spatial = (size,) * info.spatial_dims
    for s in SPLITS:
        shape, dtype, _ = headers[f"{s}_images"]
        n = expected_n[s]
        ok_shapes = {(n, *spatial, info.n_channels)} | ({(n, *spatial)} if info.n_channels == 1 else set())
        if shape not in ok_shapes or dtype != np.uint8:
            want = " or ".join(str(x) for x in sorted(ok_shapes, key=len))
            raise FocusNetError(
                f"{path}: {s}_images is {dtype} {shape}, expected uint8 {want} for {info.flag} at size {size}; "
                f"wrong or damaged file: delete it so it is fetched again."
            )
        lshape = headers[f"{s}_labels"][0]
        if lshape not in {(n, info.num_label_columns)} | ({(n,)} if not info.multi_label else set()):
            raise FocusNetError(
                f"{path}: {s}_labels has shape {lshape}, expected ({n}, {info.num_label_columns}) for {info.flag}; "
                f"wrong or damaged file: delete it so it is fetched again."
            )


def _check_labels(lab: np.ndarray, info: DatasetInfo, key: str, path: str) -> torch.Tensor:
    """Range check; returns int64 (N, L)."""
    if not np.issubdtype(lab.dtype, np.integer):
        raise FocusNetError(f"{path}: {key} has dtype {lab.dtype}, expected integers; delete or replace the file.")
    hi = 1 if info.multi_label else info.num_classes - 1
    if lab.size and (lab.min() < 0 or lab.max() > hi):
        raise FocusNetError(
            f"{path}: {key} has values in [{lab.min()}, {lab.max()}], expected [0, {hi}] for {info.flag} ({info.task}); "
            f"delete or replace the file."
        )
    return torch.from_numpy(lab.astype(np.int64).reshape(len(lab), info.num_label_columns))


def _stat_key(path: str) -> tuple[str, int, int]:
    st = os.stat(path)
    return os.path.realpath(path), st.st_size, st.st_mtime_ns


def _mark_verified(path: str) -> None:
    _VERIFIED.add(_stat_key(path))


def _verify_once(path: str, md5: str | None) -> None:
    """Check the MD5 unless this exact file (path, size, mtime) already passed in this process."""
    if md5 is None or _stat_key(path) in _VERIFIED:
        return
    check_md5(path, md5)
    _mark_verified(path)


# ----------------------------------------------------------------------------- mmap cache


def _mapped_images(path: str, md5: str | None) -> dict[str, np.ndarray]:
    """Memory-mapped image arrays from the .npy cache, building it first if stale."""
    keys = [f"{s}_images" for s in SPLITS]
    cache = cache_dir_for(path)
    if not _cache_valid(cache, path, keys):
        _verify_once(path, md5)
        _build_cache(path, cache, keys)
    # Copy-on-write: writable for torch.from_numpy, never written back to the file.
    return {k: np.load(os.path.join(cache, f"{k}.npy"), mmap_mode="c") for k in keys}


def cache_dir_for(path: str) -> str:
    """`<name>_npy/` beside the npz if that folder is writable, else a per-user cache."""
    folder, name = os.path.split(os.path.abspath(path))
    stem = name.removesuffix(".npz")
    if _writable(folder):
        return os.path.join(folder, f"{stem}_npy")
    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "focusnet", "npy")
    tag = hashlib.sha1(os.path.realpath(path).encode()).hexdigest()[:10]
    return os.path.join(root, f"{stem}-{tag}")


def _writable(folder: str) -> bool:
    """Writable and not marked read-only (root passes os.access even on r-x folders)."""
    return os.access(folder, os.W_OK) and bool(os.stat(folder).st_mode & 0o222)


def _source_stamp(path: str) -> dict:
    st = os.stat(path)
    return {"version": _CACHE_VERSION, "npz_size": st.st_size, "npz_mtime_ns": st.st_mtime_ns}


def _cache_valid(cache: str, path: str, keys: list[str]) -> bool:
    try:
        with open(os.path.join(cache, "source.json")) as f:
            stamp = json.load(f)
    except (OSError, ValueError):
        return False
    return stamp == _source_stamp(path) and all(os.path.exists(os.path.join(cache, f"{k}.npy")) for k in keys)


def _build_cache(path: str, cache: str, keys: list[str]) -> None:
    """Stream each array out of the zip into `<key>.npy` (1 MiB chunks: bounded memory); stamp written last."""
    try:
        os.makedirs(cache, exist_ok=True)
        with zipfile.ZipFile(path) as zf:
            for k in keys:
                dest = os.path.join(cache, f"{k}.npy")
                tmp = f"{dest}.{os.getpid()}.tmp"
                try:
                    with zf.open(f"{k}.npy") as src, open(tmp, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)  # the member is already a complete .npy file
                    os.replace(tmp, dest)
                finally:
                    if os.path.exists(tmp):
                        os.remove(tmp)
        write_text(os.path.join(cache, "source.json"), json.dumps(_source_stamp(path)))
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise FocusNetError(
            f"Cannot build the memory-map cache {cache} for {path} ({type(e).__name__}: {e}); "
            f"free disk space, set {CACHE_ENV}, or pass mmap=False."
        ) from None
