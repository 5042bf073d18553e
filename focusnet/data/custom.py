"""Your own data -> a registered MedMNIST-format dataset, so training, metrics, reports, predict
and export treat it like any of the 18 MedMNIST flags.

    prepared = prepare_custom("scans/", size=64)          # or "data.npz", "labels.csv"
    data = load_dataset(prepared.flag, prepared.size, prepared.data_dir)

Layouts (`path`):
- a MedMNIST-format `.npz`: `{train,val,test}_{images,labels}` (val optional); images uint8
  (N, H, W), (N, H, W, 3) or (N, D, H, W); labels (N,) / (N, 1) single-label or (N, K)
  multi-label. An optional sidecar `<name>.json` gives `labels` (a list, or {"0": name}),
  `task` and `spatial_dims`.
- an image folder: `train/<class>/*`, `test/<class>/*`, optional `val/<class>/*`; 2D PNG, JPEG,
  TIFF, BMP or `.npy`; 3D NIfTI or `.npy`. An optional `dataset.json` inside gives `task`.
- a CSV: a path column (`path`, `image`, `file` or `filename`; relative to the CSV's folder), a
  `split` column (train / val / test), and either one label column (class names; several
  separated by ';' make it multi-label) or several 0/1 label columns (multi-label). Optional
  sidecar `<name>.json` with `labels` (the class list) and `task`.

A missing validation split is split off train (stratified, seeded, VAL_FRACTION). Images are
read and converted exactly as `focusnet predict` converts new images (uint8 kept, other dtypes
min-max stretched, RGB kept when any image is RGB, resized to `size` or kept at their common
native size) and cached once as `<cache>/<flag>/<flag>_<size>.npz` beside `info.json` (the
DatasetInfo, how it was built) and `split.json` (which file went to which split); the cache is
rebuilt when the source files or options change. The flag is `custom-<name>`; names are safe in
file and folder names (run folders and prediction CSVs carry the flag).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import sys
import zipfile
import zlib
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import FocusNetError
from ..fileio import atomic_path, ensure_dir, write_json
from .registry import (
    BINARY,
    MULTI_CLASS,
    MULTI_LABEL,
    ORDINAL,
    SPLITS,
    DatasetInfo,
    register_dataset,
)

PREFIX = "custom-"
SIZE_RANGE = (28, 224)  # sizes an image may be resized to
NATIVE_RANGE = (16, 512)  # sizes a "native" dataset may have
VAL_FRACTION = 0.1
SPLIT_SEED = 0
BAD_IMAGE_POLICIES = ("fail", "skip")
TASK_NAMES = {"binary": BINARY, "binary-class": BINARY, "multi-class": MULTI_CLASS, "multiclass": MULTI_CLASS, "multi-label": MULTI_LABEL, MULTI_LABEL: MULTI_LABEL, "ordinal": ORDINAL, ORDINAL: ORDINAL}
IMAGE_2D = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
IMAGE_3D = (".nii", ".nii.gz")
PATH_COLUMNS = ("path", "image", "file", "filename")
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
_FORMAT = 3  # bump when the cached files change meaning (2: EXIF orientation applied; 3D shrinking counts every voxel; 3: grey levels kept in any dtype, [0, 1] floats scaled)


@dataclass
class Prepared:
    """A custom dataset ready for `load_dataset(flag, size, data_dir)`."""

    flag: str
    size: int  # the image size actually stored (resolves "native")
    data_dir: str  # the cache folder holding <flag>_<size>.npz
    record: dict  # split.json: source, classes, task, which file went where, skipped files


@dataclass
class _Split:
    images: list  # uint8 arrays (C, *S)  (or one (N, C, *S) array for npz input)
    labels: np.ndarray  # int64 (N,) class indices, or (N, K) 0/1 for multi-label
    files: list[str] = field(default_factory=list)  # source of each image (relative), when files
    split_off: bool = False  # val taken from train
    indices: list[int] | None = None  # for a split taken from train: its rows in the source train split


# ----------------------------------------------------------------------------- public


def is_custom(flag: str) -> bool:
    return flag.lower().startswith(PREFIX)


def flag_hint(path: str) -> str:
    """The flag a source gets when no other source claimed its name first: custom-<name>."""
    return PREFIX + _slug(os.path.abspath(os.path.expanduser(path)))


def custom_cache_root() -> str:
    """`$FOCUSNET_CACHE_DIR/custom`, else `~/.cache/focusnet/custom`."""
    root = os.environ.get("FOCUSNET_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "focusnet")
    return os.path.join(root, "custom")


def cache_folder(flag: str) -> str:
    """Where a prepared custom flag's npz files and info.json live, under the current cache root."""
    return os.path.join(custom_cache_root(), flag.lower())


def data_version(folder: str) -> str | None:
    """An id of the prepared custom data in `folder` (its source files' stamp and the options it
    was prepared with), or None where no custom data was prepared (MedMNIST, synthetic folders).
    A run records it, so scoring the run later on a cache rebuilt from other files is refused."""
    meta = _read_meta(folder)
    return hashlib.sha1(f"{meta.get('stamp')}|{meta.get('key')}".encode()).hexdigest()[:16] if meta else None


def lookup_info(flag: str, folder: str | None = None) -> DatasetInfo | None:
    """The DatasetInfo of a custom flag built earlier (in any process), or None. folder: its
    cache folder (a run's recorded data folder), default under the current cache root."""
    meta = _read_meta(folder or cache_folder(flag))
    return _info_from_meta(meta) if meta and str(meta["info"].get("flag", "")).lower() == flag.lower() else None


def prepare_custom(path: str, size: int | str = 28, task: str | None = None, on_bad_image: str = "fail", val_fraction: float = VAL_FRACTION, split_seed: int = SPLIT_SEED) -> Prepared:
    """Convert (or find in the cache) a user's npz, image folder or CSV; register its flag."""
    src = os.path.abspath(os.path.expanduser(path))
    layout = _layout(src)
    _check_options(size, task, on_bad_image, val_fraction)
    sidecar = _sidecar(src, layout)
    key = _options_key(task, on_bad_image, val_fraction, split_seed)
    flag = _flag_for(src)
    folder = cache_folder(flag)
    meta = _read_meta(folder)
    stamp = _stamp(src, layout, sidecar)
    cached = _cached_size(meta, stamp, key, size, folder, flag)
    if cached is not None:
        info = _info_from_meta(meta)
        register_dataset(info, overwrite=True)
        return Prepared(flag, cached, folder, _read_json(os.path.join(folder, "split.json")))
    splits, names, record = _collect(src, layout, sidecar, size, on_bad_image)
    task_name = _resolve_task(task or sidecar.get("task"), splits, names, record["declared_multi_label"])
    splits = _apply_task(splits, task_name, len(names), src)
    record["val_split_off"] = "val" not in splits
    if "val" not in splits:
        splits = _split_off_val(splits, task_name, names, val_fraction, split_seed, src)
    _check_every_class(splits, task_name, names, src)
    stored = _store(folder, flag, splits, names, task_name, meta if meta and meta.get("key") == key and meta.get("stamp") == stamp else None, src, stamp, key, size)
    record.update({"flag": flag, "task": task_name, "classes": names, "val_fraction": val_fraction, "split_seed": split_seed, "size": stored})
    record["splits"] = {s: _split_record(splits[s]) for s in SPLITS}
    write_json(os.path.join(folder, "split.json"), record)
    register_dataset(_info_from_meta(_read_meta(folder)), overwrite=True)
    return Prepared(flag, stored, folder, record)


def parse_size(value: int | str) -> int | str:
    """`--size`: an int, or "native"."""
    if isinstance(value, str) and value.strip().lower() == "native":
        return "native"
    try:
        return int(value)
    except (TypeError, ValueError):
        raise FocusNetError(f"--size must be a number of pixels or 'native', got {value!r}") from None


# ----------------------------------------------------------------------------- options, names, cache


def _layout(src: str) -> str:
    if os.path.isdir(src):
        return "folder"
    if not os.path.exists(src):
        raise FocusNetError(f"--data {src}: no such file or folder")
    low = src.lower()
    if low.endswith(".npz"):
        return "npz"
    if low.endswith(".csv"):
        return "csv"
    raise FocusNetError(f"--data {src}: expected a MedMNIST-format .npz, a .csv or a folder with train/ and test/")


def _check_options(size, task, on_bad_image: str, val_fraction: float) -> None:
    if size != "native" and not (isinstance(size, int) and SIZE_RANGE[0] <= size <= SIZE_RANGE[1]):
        raise FocusNetError(f"--size {size!r}: custom images are resized to {SIZE_RANGE[0]}..{SIZE_RANGE[1]} pixels, or kept with --size native")
    if task is not None and task not in TASK_NAMES:
        raise FocusNetError(f"unknown --task {task!r}; use binary, multi-class or multi-label")
    if on_bad_image not in BAD_IMAGE_POLICIES:
        raise FocusNetError(f"unknown --on-bad-image {on_bad_image!r}; use fail or skip")
    if not 0 < val_fraction < 1:
        raise FocusNetError(f"val_fraction must be in (0, 1), got {val_fraction}")


def _sidecar(src: str, layout: str) -> dict:
    """Optional JSON beside a file (`<name>.json`) or inside a folder (`dataset.json`)."""
    path = os.path.join(src, "dataset.json") if layout == "folder" else os.path.splitext(src)[0] + ".json"
    if not os.path.isfile(path):
        return {}
    value = _read_json(path, strict=True)
    labels = value.get("labels", value.get("label_names"))
    if isinstance(labels, dict):
        try:
            labels = [labels[str(i)] for i in range(len(labels))]
        except KeyError:
            raise FocusNetError(f"{path}: label names must be keyed \"0\", \"1\", ... without gaps") from None
    if labels is not None and not (isinstance(labels, list) and all(isinstance(x, (str, int)) for x in labels) and labels):
        raise FocusNetError(f"{path}: 'labels' must be a non-empty list of class names or {{\"0\": name, ...}}")
    out = {"path": path, "labels": [str(x) for x in labels] if labels else None, "task": value.get("task"), "spatial_dims": value.get("spatial_dims")}
    if out["task"] is not None and out["task"] not in TASK_NAMES:
        raise FocusNetError(f"{path}: unknown task {out['task']!r}; use binary, multi-class or multi-label")
    return out


def _read_json(path: str, strict: bool = False) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError) as e:
        if not strict:
            return {}
        raise FocusNetError(f"{path}: not readable JSON ({type(e).__name__}: {str(e)[:120]})") from None
    if not isinstance(value, dict):
        if strict:
            raise FocusNetError(f"{path}: must hold a JSON object")
        return {}
    return value


def _slug(src: str) -> str:
    name = os.path.basename(src.rstrip(os.sep)) or "data"
    for ext in (".npz", ".csv"):
        name = name[: -len(ext)] if name.lower().endswith(ext) else name
    return re.sub(r"[^a-z0-9_]+", "-", name.lower()).strip("-") or "data"


def _flag_for(src: str) -> str:
    """custom-<name>; custom-<name>-<hash> when another source already uses that name."""
    flag = PREFIX + _slug(src)
    meta = _read_meta(cache_folder(flag))
    if meta and meta.get("source") != os.path.realpath(src):
        flag = f"{flag}-{hashlib.sha1(os.path.realpath(src).encode()).hexdigest()[:6]}"
    return flag


def _options_key(task, on_bad_image, val_fraction, split_seed) -> str:
    return json.dumps({"format": _FORMAT, "task": task, "bad": on_bad_image, "val": val_fraction, "seed": split_seed}, sort_keys=True)


def _stamp(src: str, layout: str, sidecar: dict) -> str:
    """Changes whenever a source file changes: (path, size, mtime) of every file it reads."""
    paths = [src] if layout != "folder" else []
    if layout == "folder":
        for root, dirs, files in os.walk(src):
            dirs.sort()
            paths += [os.path.join(root, f) for f in sorted(files)]
    elif layout == "csv":
        paths += [p for p, *_ in _csv_rows(src)[1]]
    if sidecar:
        paths.append(sidecar["path"])
    h = hashlib.sha1()
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\0missing\n".encode())
    return h.hexdigest()


def _read_meta(folder: str) -> dict | None:
    meta = _read_json(os.path.join(folder, "info.json"))
    return meta if meta.get("format") == _FORMAT and "info" in meta else None


def _cached_size(meta: dict | None, stamp: str, key: str, size, folder: str, flag: str) -> int | None:
    if not meta or meta.get("stamp") != stamp or meta.get("key") != key:
        return None
    want = meta.get("native_size") if size == "native" else size
    if want not in meta["info"]["sizes"]:
        return None
    name = f"{flag}.npz" if want == 28 else f"{flag}_{want}.npz"
    return want if os.path.isfile(os.path.join(folder, name)) else None


def _info_from_meta(meta: dict) -> DatasetInfo:
    d = dict(meta["info"])
    d["sizes"] = tuple(d["sizes"])
    return DatasetInfo(**d)


# ----------------------------------------------------------------------------- collecting images


def _collect(src: str, layout: str, sidecar: dict, size, on_bad: str) -> tuple[dict[str, _Split], list[str], dict]:
    """-> (splits present in the source, class names, record)."""
    record = {"source": os.path.realpath(src), "layout": layout, "skipped": []}
    if layout == "npz":
        splits, names = _collect_npz(src, sidecar, size)
        record["declared_multi_label"] = any(s.labels.ndim == 2 for s in splits.values())
        return splits, names, record
    items, names, multi = _folder_items(src) + (False,) if layout == "folder" else _csv_items(src, sidecar)
    record["declared_multi_label"] = multi
    dims = sidecar.get("spatial_dims") or _spatial_dims([p for p, _, _ in items], src)
    base = src if layout == "folder" else os.path.dirname(src)
    splits, bad = _read_items(items, dims, size, base, src)
    if bad:
        listed = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        if on_bad == "fail":
            raise FocusNetError(f"{len(bad)} unreadable image(s): {listed} -- fix or remove them, or pass --on-bad-image skip")
        for line in bad:
            print(f"focusnet: skipping unreadable image: {line}", file=sys.stderr)
        record["skipped"] = bad
    return splits, names, record


def _natural(names) -> list[str]:
    """Numeric class names in numeric order ("2" before "10"), others alphabetically."""
    return sorted(names, key=lambda n: (0, int(n), "") if n.isdigit() else (1, 0, n))


def _folder_items(src: str) -> tuple[list[tuple[str, str, list[str]]], list[str]]:
    """-> ([(path, split, [class name])], class names) from train/ val/ test/ class folders."""
    present = [s for s in SPLITS if os.path.isdir(os.path.join(src, s))]
    if "train" not in present or "test" not in present:
        raise FocusNetError(f"{src}: expected train/ and test/ folders (val/ optional), each with one sub-folder per class; found {sorted(os.listdir(src))[:8]}")
    classes = _natural(_subfolders(os.path.join(src, "train")))
    if not classes:
        raise FocusNetError(f"{src}/train/ has no class folders; put each class's images in train/<class>/")
    items = []
    for split in present:
        folder = os.path.join(src, split)
        loose = [f for f in os.listdir(folder) if not f.startswith(".") and os.path.isfile(os.path.join(folder, f)) and f != "dataset.json"]
        if loose:
            raise FocusNetError(f"{folder}/{loose[0]} is not inside a class folder; move each image into {split}/<class>/")
        for cls in _natural(_subfolders(folder)):
            if cls not in classes:
                raise FocusNetError(f"{split}/{cls}/ is not in the class list from train/ ({', '.join(classes)}); rename it or add train/{cls}/")
            files = _files_under(os.path.join(folder, cls))
            if not files:
                raise FocusNetError(f"class folder {split}/{cls}/ is empty; add images or remove the folder")
            items += [(f, split, [cls]) for f in files]
    return items, classes


def _subfolders(folder: str) -> list[str]:
    return [d for d in os.listdir(folder) if not d.startswith(".") and os.path.isdir(os.path.join(folder, d))]


def _files_under(folder: str) -> list[str]:
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out += [os.path.join(root, f) for f in sorted(files) if not f.startswith(".")]
    return out


def _csv_rows(src: str) -> tuple[list[str], list[tuple[str, str, dict, int]]]:
    """-> (label columns, [(absolute path, split, row, line number)])."""
    try:
        with open(src, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = [h.strip() for h in reader.fieldnames or []]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise FocusNetError(f"{src}: cannot read the CSV ({type(e).__name__}: {str(e)[:120]})") from None
    lower = {h.lower(): h for h in header}
    path_col = next((lower[c] for c in PATH_COLUMNS if c in lower), None)
    if path_col is None or "split" not in lower:
        raise FocusNetError(f"{src}: needs a path column ({'/'.join(PATH_COLUMNS)}) and a split column; found columns {header}")
    label_cols = [h for h in header if h not in (path_col, lower["split"])]
    if not label_cols:
        raise FocusNetError(f"{src}: no label column; add 'label' (class names, ';' between several) or one 0/1 column per label")
    base, out = os.path.dirname(src), []
    for i, row in enumerate(rows, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        split = SPLIT_NAMES.get(row.get(lower["split"], "").lower())
        if split is None:
            raise FocusNetError(f"{src}, line {i}: split {row.get(lower['split'])!r} is not train, val or test")
        out.append((os.path.join(base, row[path_col]), split, row, i))
    return label_cols, out


def _csv_items(src: str, sidecar: dict) -> tuple[list[tuple[str, str, list[str]]], list[str], bool]:
    label_cols, rows = _csv_rows(src)
    if not rows:
        raise FocusNetError(f"{src}: no rows")
    if len(label_cols) > 1:  # one 0/1 column per label
        items = []
        for path, split, row, line in rows:
            values = [row[c] for c in label_cols]
            if any(v not in ("0", "1") for v in values):
                raise FocusNetError(f"{src}, line {line}: label columns {label_cols} must hold 0 or 1, got {values}")
            items.append((path, split, [c for c, v in zip(label_cols, values) if v == "1"]))
        names = sidecar.get("labels") or list(label_cols)
        if set(names) != set(label_cols):  # the columns name the labels; the sidecar may only reorder them
            raise FocusNetError(f"{src}: the sidecar JSON's labels {names} are not the CSV's 0/1 label columns {label_cols}; name the same labels in both, or leave 'labels' out of the sidecar")
        return items, names, True
    col = label_cols[0]
    items = [(path, split, [x.strip() for x in row[col].split(";") if x.strip()]) for path, split, row, _ in rows]
    names = sidecar.get("labels") or _natural({n for _, s, labels in items if s == "train" for n in labels})
    unknown = {}
    for (_, _, labels), (_, _, _, line) in zip(items, rows):
        for n in labels:
            if n not in names:
                unknown.setdefault(n, []).append(line)
    if unknown:
        where = "the sidecar JSON" if sidecar.get("labels") else "the train rows"
        shown = ", ".join(f"{n!r} (lines {', '.join(map(str, lines[:3]))})" for n, lines in list(unknown.items())[:5])
        raise FocusNetError(f"{src}: labels {shown} are not in the class list from {where} ({', '.join(names)}); fix the rows or the class list")
    if any(";" in row[col] for _, _, row, _ in rows):
        return items, names, True
    empty = next((line for (_, _, labels), (_, _, _, line) in zip(items, rows) if len(labels) != 1), None)
    if empty is not None:
        raise FocusNetError(f"{src}, line {empty}: empty label")
    return items, names, False


def _spatial_dims(paths: list[str], src: str) -> int:
    low = [p.lower() for p in paths]
    has3 = any(p.endswith(IMAGE_3D) for p in low)
    has2 = any(p.endswith(IMAGE_2D) for p in low)
    if has3 and has2:
        raise FocusNetError(f"{src}: mixes 2D images (PNG/JPEG/TIFF/BMP) and 3D volumes (NIfTI); use one kind")
    if has3:
        return 3
    if has2:
        return 2
    npy = next((p for p in paths if p.lower().endswith(".npy")), None)
    if npy is None:
        return 2
    try:
        shape = np.load(npy, mmap_mode="r", allow_pickle=False).shape
    except (OSError, ValueError) as e:
        raise FocusNetError(f"{npy}: cannot read .npy ({type(e).__name__}) to tell 2D from 3D; fix it or add \"spatial_dims\" to the sidecar JSON") from None
    return 3 if len(shape) == 4 or (len(shape) == 3 and shape[-1] > 4 and shape[0] > 4) else 2


def _read_items(items, dims: int, size, base: str, src: str) -> tuple[dict[str, _Split], list[str]]:
    """Read every image (as `focusnet predict` would) into uint8 (C, *S) at the target size."""
    import torch

    from ..inference.preprocess import Preprocess, to_grey_levels
    from ..inference.readers import read_image

    splits: dict[str, _Split] = {}
    bad, native = [], None
    for path, split, labels in items:
        try:
            a = read_image(path, dims)  # (*S, C) in the file's dtype
        except FocusNetError as e:
            bad.append(str(e))
            continue
        grey = to_grey_levels(a, path)
        channels = 3 if grey.shape[-1] >= 3 else 1
        pre = Preprocess(dims, channels, size if size != "native" else max(grey.shape[:-1]))
        if size == "native":
            native = native or (grey.shape[:-1], path)
            _check_native(grey.shape[:-1], native, path, src)
        t = pre.resize(_to_tensor(pre.channels(grey)))
        img = t.clamp(0, 255).round().to(torch.uint8).numpy()
        s = splits.setdefault(split, _Split([], [], []))
        s.images.append(img)
        s.files.append(os.path.relpath(path, base))
        s.labels.append(labels)
    return splits, bad


def _to_tensor(a: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(a, -1, 0)))


def _check_native(shape, first, path: str, src: str) -> None:
    if len(set(shape)) > 1:
        raise FocusNetError(f"--size native needs square (cubic) images; {path} is {'x'.join(map(str, shape))}: pass --size N to resize")
    if tuple(shape) != tuple(first[0]):
        raise FocusNetError(f"--size native needs one image size, but {src} mixes sizes ({'x'.join(map(str, first[0]))} in {first[1]}, {'x'.join(map(str, shape))} in {path}); pass --size N to resize")
    if not NATIVE_RANGE[0] <= shape[0] <= NATIVE_RANGE[1]:
        raise FocusNetError(f"--size native: images of {shape[0]} pixels are outside {NATIVE_RANGE[0]}..{NATIVE_RANGE[1]}; pass --size N to resize")


def _collect_npz(src: str, sidecar: dict, size) -> tuple[dict[str, _Split], list[str]]:
    try:
        with np.load(src, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:  # a truncated or damaged file
        raise FocusNetError(f"{src}: not a readable .npz ({type(e).__name__}: {str(e)[:120]})") from None
    missing = [f"{s}_{k}" for s in ("train", "test") for k in ("images", "labels") if f"{s}_{k}" not in arrays]
    if missing:
        raise FocusNetError(f"{src} lacks {', '.join(missing)}: a MedMNIST-format file has train_/val_/test_ images and labels (val optional)")
    present = [s for s in SPLITS if f"{s}_images" in arrays]
    dims = sidecar.get("spatial_dims") or _npz_spatial_dims(arrays["train_images"].shape, f"{src}: train_images")
    splits = {}
    for s in present:
        images, labels = arrays[f"{s}_images"], arrays.get(f"{s}_labels")
        splits[s] = _Split(_npz_images(images, dims, size, f"{src}: {s}_images"), _npz_labels(labels, len(images), f"{src}: {s}_labels"))
    shapes = {s: sp.images.shape[1:] for s, sp in splits.items()}  # (C, *S), after any resizing
    if len(set(shapes.values())) > 1:  # one stored file cannot hold them (it was written, then refused when read)
        shown = ", ".join(f"{s} {'x'.join(map(str, shape))}" for s, shape in shapes.items())
        raise FocusNetError(f"{src}: the splits' images differ in channels or size (channels x size: {shown}); every split needs the same channels, and pass --size N to resize them to one size")
    k_cols = {sp.labels.shape[1] if sp.labels.ndim == 2 else 1 for sp in splits.values()}
    if len(k_cols) > 1:
        raise FocusNetError(f"{src}: the label arrays differ in columns ({sorted(k_cols)}); every split needs the same labels")
    k = k_cols.pop() if k_cols else 1
    names = sidecar.get("labels")
    if names is None:
        names = [str(i) for i in range(k if k > 1 else int(max(sp.labels.max(initial=0) for sp in splits.values())) + 1)]
    return splits, names


def _npz_spatial_dims(shape: tuple[int, ...], where: str) -> int:
    """2 or 3 from an image array's shape: (N, H, W) and channels-last (N, H, W, 1 | 3) are 2D,
    (N, D, H, W) and (N, D, H, W, 1 | 3) 3D; a channels-first (N, 1 | 3, H, W) is refused rather
    than read as thin volumes (the sidecar's "spatial_dims" settles any other doubt)."""
    if len(shape) == 4 and shape[-1] not in (1, 3) and shape[1] in (1, 3):
        raise FocusNetError(f"{where} has shape {shape}, which looks channels-first; MedMNIST format is channels-last: save np.moveaxis(images, 1, -1) (or, for volumes of that depth, put \"spatial_dims\": 3 in the sidecar .json)")
    if len(shape) == 3 or (len(shape) == 4 and shape[-1] in (1, 3)):
        return 2
    return 3


def _npz_images(a: np.ndarray, dims: int, size, where: str) -> np.ndarray:
    """(N, *S) / (N, *S, 1 | 3) uint8 -> (N, C, *S') uint8 at the target size."""
    if a.dtype != np.uint8:
        raise FocusNetError(f"{where} is {a.dtype}; MedMNIST-format images are uint8 (0..255)")
    if a.ndim not in (dims + 1, dims + 2) or (a.ndim == dims + 2 and a.shape[-1] not in (1, 3)):
        raise FocusNetError(f"{where} has shape {a.shape}; expected (N, H, W), (N, H, W, 1 | 3), (N, D, H, W) or (N, D, H, W, 1 | 3)")
    a = a[:, None] if a.ndim == dims + 1 else np.moveaxis(a, -1, 1)
    spatial = a.shape[2:]
    if size == "native":
        if len(set(spatial)) > 1:
            raise FocusNetError(f"--size native needs square (cubic) images; {where} is {'x'.join(map(str, spatial))}: pass --size N to resize")
        return np.ascontiguousarray(a)
    if spatial == (size,) * dims:
        return np.ascontiguousarray(a)
    import torch

    from ..inference.preprocess import Preprocess

    pre = Preprocess(dims, a.shape[1], size)
    out = [pre.resize(torch.from_numpy(a[i]).float()).clamp(0, 255).round().to(torch.uint8).numpy() for i in range(len(a))]
    return np.stack(out) if out else np.zeros((0, a.shape[1], *(size,) * dims), np.uint8)


def _npz_labels(lab, n: int, where: str) -> np.ndarray:
    if lab is None or not np.issubdtype(lab.dtype, np.integer) or len(lab) != n or lab.ndim not in (1, 2):
        raise FocusNetError(f"{where}: expected integer labels of shape ({n},), ({n}, 1) or ({n}, K)")
    if lab.size and lab.min() < 0:
        raise FocusNetError(f"{where}: negative labels")
    lab = lab.astype(np.int64)
    return lab.reshape(n) if lab.ndim == 1 or lab.shape[1] == 1 else lab


# ----------------------------------------------------------------------------- task and labels


def _label_arrays(splits: dict[str, _Split], names: list[str]) -> None:
    """Folder/CSV splits hold lists of class names: -> (N, K) 0/1 int64 in place."""
    index = {n: i for i, n in enumerate(names)}
    for s in splits.values():
        if isinstance(s.labels, list):
            m = np.zeros((len(s.labels), len(names)), np.int64)
            for r, labels in enumerate(s.labels):
                m[r, [index[n] for n in labels]] = 1
            s.labels = m


def _resolve_task(task: str | None, splits: dict[str, _Split], names: list[str], declared_multi: bool) -> str:
    """--task (or the sidecar's), else multi-label when the layout says so (several label
    columns, ';' in the label field, (N, K) npz labels), else binary for 2 classes, else multi-class."""
    _label_arrays(splits, names)
    if task is not None:
        return TASK_NAMES[task]
    if declared_multi:
        return MULTI_LABEL
    return BINARY if len(names) == 2 else MULTI_CLASS


def _apply_task(splits: dict[str, _Split], task: str, k: int, src: str) -> dict[str, _Split]:
    """Labels -> int64 (N,) class indices, or (N, K) 0/1 for multi-label."""
    if task == BINARY and k != 2:
        raise FocusNetError(f"--task binary needs exactly 2 classes; {src} has {k}")
    for name, s in splits.items():
        lab = s.labels
        if lab.ndim == 1 and lab.size and lab.max() >= k:
            raise FocusNetError(f"{src}: {name} has label {int(lab.max())}, but the class list has {k} names")
        if lab.ndim == 2 and lab.shape[1] != k:
            raise FocusNetError(f"{src}: {name} labels have {lab.shape[1]} columns, but the class list has {k} names")
        if task == MULTI_LABEL:
            if lab.ndim == 1:
                lab = np.eye(k, dtype=np.int64)[lab]
            if lab.size and lab.max() > 1:
                raise FocusNetError(f"{src}: {name} multi-label labels must be 0 or 1")
        elif lab.ndim == 2:
            if (lab.sum(1) != 1).any():
                row = int(np.flatnonzero(lab.sum(1) != 1)[0])
                raise FocusNetError(f"{src}: {name} image {row} has {int(lab[row].sum())} labels; a {task} task needs exactly one (use --task multi-label)")
            lab = lab.argmax(1)
        s.labels = lab
    return splits


def _split_off_val(splits, task: str, names: list[str], fraction: float, seed: int, src: str) -> dict[str, _Split]:
    """Stratified: per class (multi-label: per rarest positive label) a `fraction` of train, at
    least one image when the class has two or more."""
    train = splits["train"]
    lab = train.labels
    if task == MULTI_LABEL:
        freq = lab.sum(0)
        groups = np.array([int(np.argmin(np.where(r > 0, freq, np.inf))) if r.any() else -1 for r in lab], dtype=np.int64)
    else:
        groups = lab
    rng = np.random.default_rng(seed)
    val_idx = []
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        members = members[rng.permutation(len(members))]
        n = round(fraction * len(members))
        n = min(max(n, 1), len(members) - 1) if len(members) > 1 else 0
        val_idx += members[:n].tolist()
    val_idx = np.array(sorted(val_idx), dtype=np.int64)
    keep = np.setdiff1d(np.arange(len(lab)), val_idx)
    splits["val"] = _take(train, val_idx)
    splits["train"] = _take(train, keep)
    splits["val"].split_off = True
    splits["val"].indices = val_idx.tolist()
    return splits


def _take(s: _Split, idx: np.ndarray) -> _Split:
    images = s.images[idx] if isinstance(s.images, np.ndarray) else [s.images[i] for i in idx]
    files = [s.files[i] for i in idx] if s.files else []
    return _Split(images, s.labels[idx], files)


def _check_every_class(splits, task: str, names: list[str], src: str) -> None:
    """Each split needs every class (AUC is undefined otherwise); multi-label: every label both
    present and absent."""
    for split in SPLITS:
        lab = splits[split].labels
        if len(lab) == 0:
            raise FocusNetError(f"{src}: the {split} split has no images")
        hint = "add val/ or more train images" if splits[split].split_off else f"add {split} images of it"
        if task == MULTI_LABEL:
            pos = lab.sum(0)
            for i, n in enumerate(names):
                if pos[i] == 0 or pos[i] == len(lab):
                    state = "no" if pos[i] == 0 else "only"
                    raise FocusNetError(f"{src}: the {split} split has {state} positive examples of label {n!r}; AUC needs both: {hint}")
        else:
            counts = np.bincount(lab, minlength=len(names))
            missing = [names[i] for i in np.flatnonzero(counts == 0)]
            if missing:
                raise FocusNetError(f"{src}: the {split} split has no example of class {', '.join(map(repr, missing))}; every split needs every class: {hint}")


# ----------------------------------------------------------------------------- writing


def _store(folder, flag, splits, names, task, meta, src, stamp, key, size) -> int:
    """Write <flag>_<size>.npz and info.json; -> the stored size."""
    ensure_dir(folder)
    arrays, dims, channels = {}, None, 1
    for s in SPLITS:
        imgs = splits[s].images
        channels = max(channels, max((int(i.shape[0]) for i in imgs), default=1) if isinstance(imgs, list) else int(imgs.shape[1]))
    for s in SPLITS:
        imgs = splits[s].images
        a = np.stack([np.repeat(i, channels // i.shape[0], axis=0) for i in imgs]) if isinstance(imgs, list) else imgs
        dims = a.ndim - 2
        a = a[:, 0] if channels == 1 else np.moveaxis(a, 1, -1)  # MedMNIST layout: (N, *S) or (N, *S, 3)
        arrays[f"{s}_images"] = np.ascontiguousarray(a)
        lab = splits[s].labels
        arrays[f"{s}_labels"] = lab.reshape(-1, 1) if lab.ndim == 1 else lab
    stored = int(arrays["train_images"].shape[1])
    name = f"{flag}.npz" if stored == 28 else f"{flag}_{stored}.npz"
    with atomic_path(os.path.join(folder, name)) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    sizes = sorted(set((meta or {}).get("info", {}).get("sizes", [])) | {stored})
    if meta is None:  # the source or options changed: older sizes are stale
        for old in os.listdir(folder):
            if old.endswith(".npz") and old != name:
                os.remove(os.path.join(folder, old))
        sizes = [stored]
    info = DatasetInfo(
        flag=flag, task=task, label_names={str(i): n for i, n in enumerate(names)}, n_channels=channels, spatial_dims=dims,
        n_samples={s: len(splits[s].labels) for s in SPLITS}, num_classes=len(names), sizes=tuple(sizes), license="user data",
    )
    info_d = {k: v for k, v in asdict(info).items() if k not in ("urls", "md5s", "samples_by_size")}
    native = stored if size == "native" else (meta or {}).get("native_size")
    write_json(os.path.join(folder, "info.json"), {"format": _FORMAT, "source": os.path.realpath(src), "stamp": stamp, "key": key, "native_size": native, "info": info_d})
    return stored


def _split_record(s: _Split) -> dict | list:
    labels = s.labels.tolist()
    if s.files:
        return [{"file": f, "label": lab} for f, lab in zip(s.files, labels)]
    out = {"n": len(labels)}
    if s.indices is not None:
        out["train_indices"] = s.indices
    return out

