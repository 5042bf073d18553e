"""Image readers: files and folders -> arrays of shape (*S, C) in the file's own dtype.

S is (H, W) for a 2D model and (D, H, W) for a 3D one; C is the file's channel count (1 grey,
2 grey + alpha, 3 RGB, 4 RGBA). Intensities are left as stored (after a DICOM's rescale slope
and intercept); `preprocess` turns them into the model's input.

| kind         | suffixes                           | needs                         | axes                     |
|--------------|------------------------------------|-------------------------------|--------------------------|
| pil          | .png .jpg .jpeg .tif .tiff .bmp    | Pillow (with matplotlib)      | rows, cols; a multi-page TIFF is a (D, H, W) stack |
| npy          | .npy                               | numpy                         | (H, W), (H, W, C), (C, H, W); 3D: (D, H, W), (D, H, W, C), (C, D, H, W) |
| nifti        | .nii .nii.gz                       | nibabel (`focusnet[io3d]`)    | voxel (i, j, k) -> (k, j, i), so x = i, y = j, z = k |
| dicom        | .dcm .dicom, or the DICM signature | pydicom (`focusnet[io3d]`)    | rows, cols; multi-frame -> (frames, H, W) |
| dicom-series | a folder of DICOM slices (3D)      | pydicom                       | slices sorted along the slice normal by ImagePositionPatient, else InstanceNumber, else file name |

Folders are searched recursively. For a 3D model the DICOM files of one folder are one series;
for a 2D model each DICOM file is an image. Hidden files and DICOMDIR indexes are skipped;
any other file is an input, so an unsupported one is reported as a failure rather than ignored.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import FocusNetError

PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
DICOM_SUFFIXES = (".dcm", ".dicom")
SUPPORTED_SUFFIXES = (*PIL_SUFFIXES, ".npy", *NIFTI_SUFFIXES, *DICOM_SUFFIXES)
CHANNELS = (1, 2, 3, 4)
KIND_NAMES = {"pil": "image", "npy": ".npy array", "nifti": "NIfTI volume", "dicom": "DICOM file", "dicom-series": "DICOM series", "array": "array"}


def require(module: str, extra: str, what: str):
    """Import an optional dependency or raise one line that says which extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise FocusNetError(f"{what} needs the {module} package; install with pip install 'focusnet[{extra}]'") from None


# ----------------------------------------------------------------------------- finding inputs


@dataclass(frozen=True, eq=False)
class Source:
    """One input: a file, a DICOM series folder or an in-memory array."""

    name: str  # how results and error lines call it: the path, or "array[i]"
    kind: str  # pil | npy | nifti | dicom | dicom-series | array | unsupported | missing
    paths: tuple[str, ...] = ()  # the files to read (a series has several)
    array: np.ndarray | None = field(default=None, repr=False)


def find_inputs(items, spatial_dims: int) -> list[Source]:
    """Paths (files or folders, searched recursively) and arrays -> Sources, in the given order."""
    if isinstance(items, (str, os.PathLike, np.ndarray)) or _is_tensor(items):
        items = [items]
    sources: list[Source] = []
    for i, item in enumerate(items):
        if isinstance(item, np.ndarray) or _is_tensor(item):
            sources.append(Source(f"array[{i}]", "array", array=_to_numpy(item)))
            continue
        if not isinstance(item, (str, os.PathLike)):
            raise FocusNetError(f"input {i} is a {type(item).__name__}; give image paths (files or folders), numpy arrays or torch tensors")
        path = os.fspath(item)
        if os.path.isdir(path):
            sources.extend(_walk(path, spatial_dims))
        elif os.path.exists(path):
            sources.append(file_source(path))
        else:
            sources.append(Source(path, "missing", (path,)))
    return sources


def _to_numpy(item) -> np.ndarray:
    if not _is_tensor(item):
        return item
    t = item.detach().cpu()
    return (t.float() if t.is_floating_point() else t).numpy()  # numpy has no bfloat16


def file_source(path: str) -> Source:
    name = os.path.basename(path).lower()
    if name.endswith(PIL_SUFFIXES):
        kind = "pil"
    elif name.endswith(".npy"):
        kind = "npy"
    elif name.endswith(NIFTI_SUFFIXES):
        kind = "nifti"
    elif name.endswith(DICOM_SUFFIXES) or _has_dicom_signature(path):
        kind = "dicom"
    else:
        kind = "unsupported"
    return Source(path, kind, (path,))


def _walk(folder: str, spatial_dims: int) -> list[Source]:
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files = [os.path.join(root, f) for f in sorted(files) if not f.startswith(".") and f.upper() != "DICOMDIR"]
        sources = [file_source(f) for f in files]
        dicom = [s for s in sources if s.kind == "dicom"]
        if spatial_dims == 3 and len(dicom) > 1:
            out.append(Source(root, "dicom-series", tuple(s.paths[0] for s in dicom)))
            sources = [s for s in sources if s.kind != "dicom"]
        out.extend(sources)
    return out


def _has_dicom_signature(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _is_tensor(x) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


# ----------------------------------------------------------------------------- reading


def read_image(item, spatial_dims: int) -> np.ndarray:
    """A Source, path or array -> (*S, C) array with len(S) == spatial_dims, in its stored dtype.

    Any failure is a FocusNetError whose one line names the input and says what is wrong."""
    source = item if isinstance(item, Source) else _path_source(os.fspath(item)) if isinstance(item, (str, os.PathLike)) else find_inputs([item], spatial_dims)[0]
    if source.kind == "missing":
        raise FocusNetError(f"{source.name}: no such file or folder")
    if source.kind == "unsupported":
        suffix = os.path.splitext(source.name)[1] or "(no suffix)"
        raise FocusNetError(f"{source.name}: unsupported file type {suffix}; use {', '.join(SUPPORTED_SUFFIXES)} or a folder of DICOM slices")
    if source.kind == "array":
        return arrange(source.array, spatial_dims, source.name)
    readers = {"pil": _read_pil, "npy": _read_npy, "nifti": _read_nifti, "dicom": _read_dicom_file, "dicom-series": _read_dicom_series}
    try:
        array, has_channels = readers[source.kind](source)
    except FocusNetError:
        raise
    except Exception as e:  # noqa: BLE001 - decoders raise many types for damaged files; all mean "cannot read"
        raise FocusNetError(f"{source.name}: cannot read {KIND_NAMES[source.kind]} ({_reason(e)}); the file is damaged or not what its name says") from None
    if source.kind == "npy":
        return arrange(array, spatial_dims, source.name)
    return _with_channels(array, has_channels, spatial_dims, source)


def _path_source(path: str) -> Source:
    if os.path.isdir(path):
        found = _walk(path, 3)
        if len(found) == 1 and found[0].kind == "dicom-series":
            return found[0]
        raise FocusNetError(f"{path}: a folder of {len(found)} inputs; pass it to predict(), or pass one file")
    return file_source(path) if os.path.exists(path) else Source(path, "missing", (path,))


def _reason(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text[:160]}" if text else type(e).__name__


def arrange(a, spatial_dims: int, name: str) -> np.ndarray:
    """An array of unknown layout -> (*S, C): channels last if the last axis is 1-4 long,
    else first if the first is 1 or 3 (grey or RGB, as torch lays images out); a bare (H, W) /
    (D, H, W) is one grey channel. A leading 2 or 4 is refused: more often a few images stacked
    into one array (which would be blended into one image) than a 2- or 4-channel image."""
    a = np.asarray(a)
    d = spatial_dims
    if a.ndim == d:
        out = a[..., None]
    elif a.ndim == d + 1 and a.shape[-1] in CHANNELS:
        out = a
    elif a.ndim == d + 1 and a.shape[0] in (1, 3):
        out = np.moveaxis(a, 0, -1)
    elif a.ndim == d + 1 and a.shape[0] in CHANNELS:
        raise FocusNetError(f"{name}: array of shape {tuple(a.shape)} is ambiguous: for {a.shape[0]} images give one array or file per image; for one {a.shape[0]}-channel image put the channels last")
    else:
        want = "(H, W), (H, W, C) or (C, H, W)" if d == 2 else "(D, H, W), (D, H, W, C) or (C, D, H, W)"
        raise FocusNetError(f"{name}: array of shape {tuple(a.shape)} is not an image {want} with C = 1-4, as this {d}D model needs")
    if min(out.shape[:-1]) < 1:
        raise FocusNetError(f"{name}: empty array of shape {tuple(a.shape)}")
    return out


def _with_channels(a: np.ndarray, has_channels: bool, spatial_dims: int, source: Source) -> np.ndarray:
    a = a if has_channels else a[..., None]
    found = a.ndim - 1
    if found != spatial_dims:
        what = {2: "a 2D image", 3: "a 3D volume"}.get(found, f"{found}-dimensional data")
        want = "2D images" if spatial_dims == 2 else "3D volumes (NIfTI, a DICOM series folder, a multi-page TIFF or a 3D .npy)"
        raise FocusNetError(f"{source.name}: {what} of shape {a.shape[:-1]}, but this model takes {want}")
    if min(a.shape[:-1]) < 1:
        raise FocusNetError(f"{source.name}: empty image")
    return a


def _read_pil(source: Source) -> tuple[np.ndarray, bool]:
    from PIL import Image, ImageOps, ImageSequence

    with Image.open(source.paths[0]) as im:
        # upright as every viewer shows it (a camera's JPEG stores its pixels rotated, with an EXIF orientation tag)
        frames = [_pil_array(ImageOps.exif_transpose(frame)) for frame in ImageSequence.Iterator(im)]
    if len(frames) == 1:
        return frames[0]
    shapes = {f[0].shape for f in frames}
    if len(shapes) > 1:
        raise FocusNetError(f"{source.name}: its {len(frames)} pages differ in size ({sorted(shapes)}); a 3D stack needs equal pages")
    return np.stack([f[0] for f in frames]), frames[0][1]


def _pil_array(im) -> tuple[np.ndarray, bool]:
    """A Pillow image -> (array, has_channels); palette and exotic modes become RGB(A)."""
    im.load()
    if im.mode in ("1", "L", "I", "I;16", "I;16L", "I;16B", "F"):
        return np.array(im), False
    if im.mode in ("LA", "RGB", "RGBA"):
        return np.array(im), True
    if im.mode in ("P", "PA"):
        im = im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
    else:  # CMYK, YCbCr, LAB, HSV, ...
        im = im.convert("RGB")
    return np.array(im), True


def _read_npy(source: Source) -> tuple[np.ndarray, bool]:
    a = np.load(source.paths[0], allow_pickle=False)  # never unpickle objects from a file
    return a, False


def _read_nifti(source: Source) -> tuple[np.ndarray, bool]:
    nib = require("nibabel", "io3d", "reading NIfTI files")
    img = nib.load(source.paths[0])
    a = np.asanyarray(img.dataobj)  # applies scl_slope / scl_inter
    if a.dtype.fields is not None:
        raise FocusNetError(f"{source.name}: RGB NIfTI volumes are not supported; save one grey volume")
    while a.ndim > 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim > 3:
        raise FocusNetError(f"{source.name}: {a.ndim}D NIfTI of shape {a.shape} (a time series?); pass one 3D volume")
    if a.ndim == 3 and a.shape[2] == 1:  # a 2D image stored as (X, Y, 1)
        a = a[..., 0]
    return np.ascontiguousarray(a.T), False  # (X, Y[, Z]) -> (Z, Y, X): x stays the voxel index i


def _read_dicom_file(source: Source) -> tuple[np.ndarray, bool]:
    pydicom = require("pydicom", "io3d", "reading DICOM files")
    ds = pydicom.dcmread(source.paths[0])
    return _dicom_pixels(ds), int(getattr(ds, "SamplesPerPixel", 1)) > 1


def _read_dicom_series(source: Source) -> tuple[np.ndarray, bool]:
    pydicom = require("pydicom", "io3d", "reading DICOM files")
    slices = []
    for path in source.paths:
        try:
            slices.append(pydicom.dcmread(path))
        except Exception as e:  # noqa: BLE001 - as in read_image
            raise FocusNetError(f"{source.name}: cannot read slice {os.path.basename(path)} ({_reason(e)})") from None
    series = {str(getattr(ds, "SeriesInstanceUID", "")) for ds in slices}
    if len(series) > 1:
        raise FocusNetError(f"{source.name}: holds {len(series)} DICOM series; put each series in its own folder")
    slices = [slices[i] for i in _slice_order(slices)]
    pixels = [_dicom_pixels(ds) for ds in slices]
    shapes = {p.shape for p in pixels}
    if len(shapes) > 1 or pixels[0].ndim != 2:
        raise FocusNetError(f"{source.name}: slices differ in shape or are not single grey frames ({sorted(shapes)})")
    return np.stack(pixels), False


def _slice_order(slices) -> list[int]:
    """Indices sorting slices along the slice normal (ImagePositionPatient . normal), else by
    InstanceNumber, else in file-name order."""
    try:
        orient = np.array([float(v) for v in slices[0].ImageOrientationPatient])
        normal = np.cross(orient[:3], orient[3:])
        keys = [float(np.dot([float(v) for v in ds.ImagePositionPatient], normal)) for ds in slices]
    except (AttributeError, TypeError, ValueError):
        try:
            keys = [int(ds.InstanceNumber) for ds in slices]
        except (AttributeError, TypeError, ValueError):
            return list(range(len(slices)))
    return sorted(range(len(slices)), key=lambda i: keys[i])


def _dicom_pixels(ds) -> np.ndarray:
    """Stored values -> modality values (slope, intercept); MONOCHROME1 (white = low) negated so
    bright means high, as in every other format."""
    a = ds.pixel_array
    slope, intercept = float(getattr(ds, "RescaleSlope", 1) or 1), float(getattr(ds, "RescaleIntercept", 0) or 0)
    if slope != 1 or intercept != 0:
        a = a.astype(np.float64) * slope + intercept
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        a = -a.astype(np.float64)
    return a
