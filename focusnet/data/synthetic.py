"""Synthetic "find the lesion" datasets, written in MedMNIST npz format.

Each image is a cluttered, tissue-like background (band-pass filtered noise) with one small lesion
(several in the multi-label variant) whose *shape* decides the class, plus distractor objects of
the same brightness and mass but a shape that never decides anything. All objects draw their
integrated intensity from one distribution and cover about the same area, so global statistics
(mean, std, histogram) do not reveal the class: a model has to find the lesion and look at it.
Ground-truth lesion boxes are saved in a sidecar `<name>_boxes.npz` (fixation accuracy).

Lesion types (radius R = 2.5 px at 28, growing as size**0.25 so they stay small at 224):
  0 solid   filled disk / ball
  1 ring    annulus / hollow shell
  2 cross   plus sign / three orthogonal bars, randomly rotated
  3 stripes two parallel bars / slabs, randomly rotated
Distractors: soft Gaussian blobs and single bars (a cross missing an arm, a stripe pair missing a
stripe). Registered variants: "synth-lesion" (4 classes; the default data of the demo and the
tests), "synth-lesion-binary" (solid vs ring), "synth-lesion-multilabel" (solid/ring/cross each
present or not; an absent type's slot holds a blob, so the object count says nothing) and
"synth-lesion3d" (4 classes in volumes).

Everything is vectorised over images (numpy; objects are rendered patch-wise and scattered), in
chunks of ~4M pixels, and deterministic: one `numpy.random.default_rng(seed)` drives all draws
and files are written with fixed zip timestamps, so the same seed gives the same bytes.
Generation time on 2 CPU cores: synth-lesion at 28 px (5500 images) ~1 s; 224 px ~3 s;
synth-lesion3d at 28 (1800 volumes) ~5 s.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field

import numpy as np
import scipy.fft
import torch

from .registry import BINARY, MULTI_CLASS, MULTI_LABEL, SPLITS, DatasetInfo

GENERATOR_VERSION = 1  # bump when the images change, so cached files are regenerated
LESION_TYPES = ("solid", "ring", "cross", "stripes")
_DISTRACTOR_BLOB, _DISTRACTOR_BAR = 10, 11  # object codes beyond the lesion types


@dataclass(frozen=True)
class SyntheticSpec:
    """A registered synthetic flag: task, dims, lesion types, and per-size split sizes."""

    flag: str
    spatial_dims: int
    task: str
    lesion_types: tuple[int, ...]  # indices into LESION_TYPES used as classes / labels
    split_sizes: dict[int, tuple[int, int, int]] = field(compare=False)  # size -> (train, val, test)
    seed: int = 0

    def info(self) -> DatasetInfo:
        sizes = tuple(self.split_sizes)
        by_size = {s: dict(zip(SPLITS, n)) for s, n in self.split_sizes.items()}
        names = {str(i): f"{LESION_TYPES[t]} lesion" for i, t in enumerate(self.lesion_types)}
        return DatasetInfo(
            flag=self.flag,
            task=self.task,
            label_names=names,
            n_channels=1,
            spatial_dims=self.spatial_dims,
            n_samples=by_size[sizes[0]],
            num_classes=len(self.lesion_types),
            sizes=sizes,
            license="CC0 1.0 (generated)",
            synthetic=True,
            samples_by_size=by_size,
        )

    def seed_for(self, size: int) -> int:
        """Fixed per flag and size, so each file is reproducible on its own."""
        return self.seed + 1000 * size + sum(ord(c) for c in self.flag)


# Split sizes shrink with the image size so that every file is generated in seconds.
_SIZES_2D = {28: (4000, 500, 1000), 64: (3000, 500, 1000), 128: (1200, 200, 400), 224: (600, 100, 200)}
_SIZES_3D = {28: (1200, 200, 400), 64: (200, 50, 100)}

SYNTHETIC_SPECS: dict[str, SyntheticSpec] = {
    s.flag: s
    for s in (
        SyntheticSpec("synth-lesion", 2, MULTI_CLASS, (0, 1, 2, 3), _SIZES_2D),
        SyntheticSpec("synth-lesion-binary", 2, BINARY, (0, 1), _SIZES_2D),
        SyntheticSpec("synth-lesion-multilabel", 2, MULTI_LABEL, (0, 1, 2), _SIZES_2D),
        SyntheticSpec("synth-lesion3d", 3, MULTI_CLASS, (0, 1, 2, 3), _SIZES_3D),
    )
}


# ----------------------------------------------------------------------------- geometry


def lesion_radius(size: int) -> float:
    """Lesion radius in pixels: 2.5 at 28 px, ~4 at 224 px (small relative to the image)."""
    return 2.5 * (size / 28) ** 0.25


def _random_rotations(rng: np.random.Generator, n: int, dims: int) -> np.ndarray:
    """(n, dims, dims) uniformly random rotation matrices."""
    if dims == 2:
        a = rng.uniform(0, 2 * np.pi, n)
        c, s = np.cos(a), np.sin(a)
        return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)
    q, r = np.linalg.qr(rng.standard_normal((n, 3, 3)))
    q = q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]  # Haar-uniform
    q[np.linalg.det(q) < 0, :, 0] *= -1  # proper rotations only
    return q


def _profile(kind: np.ndarray, u: np.ndarray, radius: np.ndarray, dims: int) -> np.ndarray:
    """Intensity profile in [0, 1] of each object at rotated local coordinates.

    kind: (M,) object codes; u: (M, P, dims) float32 coordinates in object radii; radius: (M,)
    pixels. Returns (M, P) float32. Shapes have soft (anti-aliased, ~0.25 px) edges; parameters
    are chosen so every type covers about the same area / volume, so that equal mass means
    equal peak brightness.
    """
    out = np.zeros(u.shape[:2], dtype=np.float32)
    for code in np.unique(kind):
        sel = kind == code
        out[sel] = _shape_profile(int(code), u[sel], radius[sel], dims)
    return out


def _shape_profile(code: int, u: np.ndarray, radius: np.ndarray, dims: int) -> np.ndarray:
    """Profile of objects that all have type `code`: u (m, P, dims) -> (m, P)."""
    r = np.sqrt((u * u).sum(-1))
    if code == _DISTRACTOR_BLOB:  # Gaussian with the lesions' mass at peak 1
        vol = 0.64 * np.pi if dims == 2 else 0.784 * 4 / 3 * np.pi
        sigma = (vol / (2 * np.pi) ** (dims / 2)) ** (1 / dims)
        return np.exp(-0.5 * (r / sigma) ** 2)
    a = np.abs(u)
    ring_in = 0.6
    if code == 0:  # solid: same area/volume as the ring
        sdf = r - (1 - ring_in**dims) ** (1 / dims)
    elif code == 1:  # ring / shell
        sdf = np.abs(r - (1 + ring_in) / 2) - (1 - ring_in) / 2
    elif code == 2:  # cross: one bar per axis
        w = 0.3 if dims == 2 else 0.42
        sdf = np.min(np.stack([_bar_sdf(a, j, 1.0, w) for j in range(dims)], -1), -1)
    elif code == 3:  # two parallel stripes / slabs
        sdf = np.maximum(np.abs(a[..., 0] - 0.55) - 0.3, r - (1.0 if dims == 2 else 1.1))
    elif code == _DISTRACTOR_BAR:
        sdf = _bar_sdf(a, 0, 1.25, 0.4 if dims == 2 else 0.57)
    else:
        raise ValueError(f"unknown object code {code}")
    soft = (0.25 / radius)[:, None].astype(np.float32)
    return 1 / (1 + np.exp(np.clip(sdf / soft, -30, 30)))


def _bar_sdf(a: np.ndarray, axis: int, half_len: float, half_w: float) -> np.ndarray:
    """Box distance for |u| coordinates `a`: long along `axis`, square cross-section."""
    others = np.max(np.delete(a, axis, axis=-1), -1)
    return np.maximum(a[..., axis] - half_len, others - half_w)


@dataclass
class _Objects:
    """M objects across a batch of images. centers in pixel coordinates (continuous, axis order
    of the array: (y, x) or (z, y, x)); radius in pixels; mass = integrated intensity."""

    image: np.ndarray  # (M,) index of the image each object is drawn into
    kind: np.ndarray  # (M,) object code
    center: np.ndarray  # (M, dims)
    radius: np.ndarray  # (M,)
    mass: np.ndarray  # (M,)


def render_objects(objs: _Objects, n_images: int, size: int, dims: int, rng: np.random.Generator) -> np.ndarray:
    """Draw objects additively into (n_images, *[size]*dims) float32 canvases.

    Each object is rendered on a small patch around its centre (soft, anti-aliased edges),
    scaled to its mass, and scatter-added into the canvas with one `bincount`.
    """
    if len(objs.kind) == 0:
        return np.zeros((n_images,) + (size,) * dims, dtype=np.float32)
    pad = int(np.ceil(1.5 * objs.radius.max() + 0.5))  # patch reaches >= 1.5 radii: bars, blob tails
    full = size + 2 * pad
    offs = np.stack(np.meshgrid(*[np.arange(-pad, pad + 1)] * dims, indexing="ij"), -1).reshape(-1, dims)
    base = np.floor(objs.center).astype(np.int64)  # (M, dims)
    frac = (base + 0.5 - objs.center).astype(np.float32)  # pixel-centre offset of the patch origin
    rel = (offs[None].astype(np.float32) + frac[:, None, :]) / objs.radius.astype(np.float32)[:, None, None]
    rot = _random_rotations(rng, len(objs.kind), dims)
    u = np.matmul(rel, rot.astype(np.float32))  # (M, P, dims) rotated, in radii
    val = _profile(objs.kind, u, objs.radius, dims)  # (M, P)
    val *= (objs.mass / np.maximum(val.sum(1), 1e-6)).astype(np.float32)[:, None]
    strides = full ** np.arange(dims - 1, -1, -1)  # C order in the padded canvas
    flat = ((base + pad) @ strides + objs.image * full**dims)[:, None] + (offs @ strides)[None]  # (M, P)
    canvas = np.bincount(flat.ravel(), weights=val.ravel(), minlength=n_images * full**dims)
    canvas = canvas.astype(np.float32).reshape((n_images,) + (full,) * dims)
    return canvas[(slice(None),) + (slice(pad, pad + size),) * dims]


# ----------------------------------------------------------------------------- background


def tissue_background(rng: np.random.Generator, n: int, size: int, dims: int) -> np.ndarray:
    """(n, *[size]*dims) float32 clutter with zero mean and unit std per image.

    Band-pass filtered noise (Gaussian filters in Fourier space): a coarse component (tissue
    regions) plus a component at the lesion scale (texture that competes with the lesion).
    """
    R = lesion_radius(size)
    freqs = [np.fft.fftfreq(size)] * (dims - 1) + [np.fft.rfftfreq(size)]
    k2 = sum(np.meshgrid(*[f**2 for f in freqs], indexing="ij", sparse=True))
    # A Gaussian blur of std s px is exp(-2 pi^2 s^2 k^2) in frequency.
    coarse = _unit_power(np.exp(-2 * np.pi**2 * (size / 8) ** 2 * k2))
    fine = _unit_power(np.exp(-2 * np.pi**2 * (0.6 * R) ** 2 * k2) - np.exp(-2 * np.pi**2 * (2.0 * R) ** 2 * k2))
    axes = tuple(range(1, dims + 1))
    spec = scipy.fft.rfftn(rng.standard_normal((n,) + (size,) * dims, dtype=np.float32), axes=axes, workers=-1)
    w = rng.uniform(0.3, 1.0, (n,) + (1,) * dims).astype(np.float32)  # coarse/fine mix per image
    spec *= w * coarse + (1 - w) * fine + 0.15  # + a little white (sensor) noise
    img = scipy.fft.irfftn(spec, s=(size,) * dims, axes=axes, workers=-1)
    img -= img.mean(axis=axes, keepdims=True)
    img /= img.std(axis=axes, keepdims=True) + 1e-6
    return img


def _unit_power(filt: np.ndarray) -> np.ndarray:
    """Scale a frequency filter so filtered white noise has unit variance (approx.)."""
    return (filt / np.sqrt((filt**2).mean())).astype(np.float32)


# ----------------------------------------------------------------------------- sampling


def _sample_positions(rng: np.random.Generator, n: int, k: int, size: int, dims: int, margin: float, min_dist: float) -> np.ndarray:
    """(n, k, dims) continuous centres inside [margin, size - margin], pairwise >= min_dist apart."""
    pos = rng.uniform(margin, size - margin, (n, k, dims))
    for _ in range(200):  # rejection: redraw only the later member of each clashing pair
        if k < 2:
            break
        d = np.linalg.norm(pos[:, :, None] - pos[:, None, :], axis=-1)
        clash = np.triu(d < min_dist, 1).any(1)  # (n, k): too close to an earlier object
        if not clash.any():
            break
        pos[clash] = rng.uniform(margin, size - margin, (int(clash.sum()), dims))
    return pos


def _labels(rng: np.random.Generator, n: int, n_types: int, multi_label: bool) -> np.ndarray:
    """Balanced labels: (n, 1) class ids, or (n, n_types) presence bits for multi-label."""
    if multi_label:
        return (rng.random((n, n_types)) < 0.5).astype(np.uint8)
    return rng.permutation(np.arange(n) % n_types).astype(np.uint8)[:, None]


def generate_split(rng: np.random.Generator, n: int, size: int, dims: int, lesion_types: tuple[int, ...], multi_label: bool, clutter: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One split of lesion images, generated in chunks of ~4M pixels (bounded memory).

    clutter=False draws the lesions alone on black (no background, no distractors): for
    checking boxes and for figures.

    Returns images (n, *[size]*dims) uint8, labels (n, 1) or (n, K) uint8, and boxes
    (n, 2*dims) float32 -- or (n, K, 2*dims) with NaN rows for absent lesions in multi-label --
    as [lo..., hi...] in grid_sample coordinates (x = width first, range -1..1).
    """
    labels = _labels(rng, n, len(lesion_types), multi_label)
    chunk = max(1, 2**22 // size**dims)
    parts = [_generate_chunk(rng, labels[i : i + chunk], size, dims, lesion_types, multi_label, clutter)
             for i in range(0, n, chunk)]
    images = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0,) + (size,) * dims, np.uint8)
    boxes = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, 2 * dims), np.float32)
    return images, labels, boxes


def _generate_chunk(rng: np.random.Generator, labels: np.ndarray, size: int, dims: int, lesion_types: tuple[int, ...], multi_label: bool, clutter: bool) -> tuple[np.ndarray, np.ndarray]:
    """Images and boxes for the given labels (see generate_split)."""
    n = len(labels)
    R = lesion_radius(size)
    n_slots = len(lesion_types) if multi_label else 1
    # Lesion slots: the class type, or (multi-label, absent) a distractor of the same mass.
    types = np.asarray(lesion_types)
    if multi_label:
        kind_slots = np.where(labels.astype(bool), types[None, :], _DISTRACTOR_BLOB)
    else:
        kind_slots = types[labels[:, 0]][:, None]
    centers = _sample_positions(rng, n, n_slots, size, dims, margin=R + 1, min_dist=2.4 * R + 1)
    radius = R * rng.uniform(0.9, 1.1, (n, n_slots))

    # Distractors: count grows as the square root of the image area/volume (sub-linearly, to stay readable).
    scale = (size / 28) ** (dims / 2)
    n_dis = rng.integers(int(2 * scale), int(4 * scale) + 1, n) * clutter
    d_img = np.repeat(np.arange(n), n_dis)
    m = len(d_img)
    objs = _Objects(
        image=np.concatenate([np.repeat(np.arange(n), n_slots), d_img]),
        kind=np.concatenate([kind_slots.ravel(), np.where(rng.random(m) < 0.5, _DISTRACTOR_BLOB, _DISTRACTOR_BAR)]),
        center=np.concatenate([centers.reshape(-1, dims), rng.uniform(0, size, (m, dims))]),
        radius=np.concatenate([radius.ravel(), R * rng.uniform(0.8, 1.2, m)]),
        mass=np.zeros(0),
    )
    # Same nominal area for every shape (see _profile), so equal mass -> equal peak ~1.
    area = 0.64 * np.pi * objs.radius**2 if dims == 2 else 0.784 * 4 / 3 * np.pi * objs.radius**3
    objs.mass = area * rng.uniform(0.8, 1.2, len(objs.image))

    if not clutter:
        objs.mass[~np.isin(objs.kind, types)] = 0  # lesions only (drops absent multi-label slots)
    fg = render_objects(objs, n, size, dims, rng)
    bg = tissue_background(rng, n, size, dims) if clutter else np.zeros_like(fg)
    images = _compose(rng, bg, fg, dims, base_level=clutter)
    return images, _boxes(centers, radius, size, dims, labels if multi_label else None)


def _compose(rng: np.random.Generator, bg: np.ndarray, fg: np.ndarray, dims: int, base_level: bool = True) -> np.ndarray:
    """Mix background and objects with random per-image brightness/contrast, quantise to uint8."""
    shape = (len(bg),) + (1,) * dims
    base = rng.uniform(80, 150, shape) * base_level
    tissue = rng.uniform(15, 25, shape)  # background std in grey levels
    contrast = rng.uniform(2.2, 3.0, shape)  # object peak in background stds
    img = (tissue * (bg + contrast * fg) + base).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _boxes(centers: np.ndarray, radius: np.ndarray, size: int, dims: int, present: np.ndarray | None) -> np.ndarray:
    """Lesion boxes [lo..., hi...] in normalised coordinates (align_corners=False), x first."""
    extent = 1.05 if dims == 2 else 1.17  # farthest shape point (cross corner), in radii
    half = extent * radius[..., None] + 0.5  # + soft edge
    lo = 2 * (centers - half) / size - 1
    hi = 2 * (centers + half) / size - 1
    box = np.concatenate([lo[..., ::-1], hi[..., ::-1]], -1).clip(-1, 1).astype(np.float32)  # (y,x)->(x,y)
    if present is None:
        return box[:, 0]
    return np.where(present.astype(bool)[..., None], box, np.nan).astype(np.float32)


# ----------------------------------------------------------------------------- files


def make_lesion_dataset(path: str, spatial_dims: int, size: int, task: str, n_train: int, n_val: int, n_test: int, seed: int, lesion_types: tuple[int, ...] | None = None) -> tuple[str, str]:
    """Generate a lesion dataset into `path` (MedMNIST npz) and `<path stem>_boxes.npz`.

    task: "multi-class" (4 lesion types), "binary-class" (solid vs ring) or
    "multi-label, binary-class" (solid, ring, cross present or not). Files are written atomically.
    Returns (npz path, boxes path).
    """
    if lesion_types is None:
        lesion_types = {MULTI_CLASS: (0, 1, 2, 3), BINARY: (0, 1), MULTI_LABEL: (0, 1, 2)}[task]
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    boxes: dict[str, np.ndarray] = {}
    for split, n in zip(SPLITS, (n_train, n_val, n_test)):
        img, lab, box = generate_split(rng, n, size, spatial_dims, tuple(lesion_types), task == MULTI_LABEL)
        arrays[f"{split}_images"], arrays[f"{split}_labels"], boxes[f"{split}_boxes"] = img, lab, box
    boxes["generator_version"] = np.array(GENERATOR_VERSION)
    boxes["seed"] = np.array(seed)
    box_path = boxes_path(path)
    _atomic_savez(path, arrays)
    _atomic_savez(box_path, boxes)  # written last: its presence marks a complete dataset
    return path, box_path


def boxes_path(npz_path: str) -> str:
    """Sidecar with lesion boxes: `name.npz` -> `name_boxes.npz`."""
    return npz_path[: -len(".npz")] + "_boxes.npz" if npz_path.endswith(".npz") else npz_path + "_boxes.npz"


def _atomic_savez(path: str, arrays: dict[str, np.ndarray]) -> None:
    """Like np.savez_compressed, but byte-reproducible (fixed zip timestamps) and atomic."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for key, arr in arrays.items():
                entry = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                entry.compress_type = zipfile.ZIP_DEFLATED
                with zf.open(entry, "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.asarray(arr), allow_pickle=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def is_current(info: DatasetInfo, size: int, path: str) -> bool:
    """True when `path` holds this generator version's data for (flag, size)."""
    spec = SYNTHETIC_SPECS.get(info.flag)
    side = boxes_path(path)
    if spec is None or not (os.path.exists(path) and os.path.exists(side)):
        return False
    try:
        with np.load(side) as z:
            return int(z["generator_version"]) == GENERATOR_VERSION and int(z["seed"]) == spec.seed_for(size)
    except Exception:  # unreadable sidecar: regenerate
        return False


def ensure_synthetic(info: DatasetInfo, size: int, path: str) -> None:
    """Generate the registered synthetic dataset at `path` unless an up-to-date copy exists."""
    if is_current(info, size, path):
        return
    spec = SYNTHETIC_SPECS[info.flag]
    n_train, n_val, n_test = spec.split_sizes[size]
    make_lesion_dataset(path, spec.spatial_dims, size, spec.task, n_train, n_val, n_test,
                        spec.seed_for(size), spec.lesion_types)


# ----------------------------------------------------------------------------- a minimal saccade probe


def striped_patch_task(n: int, size: int, seed: int, patch: int = 6) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """The smallest "find it, then look closely" task: a bright patch of 1-px stripes at a random
    position in Gaussian noise; the stripes' orientation (rows or columns) is the class. At 28 px
    a glance resolves the stripes; on larger images its coarse samples blur them into a plain
    bright blob, so only a fixation at full resolution can tell the class.

    -> images float (n, 1, size, size) (already normalised), labels int64 (n,), patch boxes
    (n, 4) [x lo, y lo, x hi, y hi] in grid_sample coordinates, the format of the lesion boxes."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, size, size, generator=g) * 0.3
    y = torch.randint(0, 2, (n,), generator=g)
    stripes = torch.zeros(2, patch, patch)
    stripes[0, ::2, :] = 1.0
    stripes[1, :, ::2] = 1.0
    pos = torch.randint(0, size - patch, (n, 2), generator=g)  # (row, col) of the top-left pixel
    for i in range(n):
        r, c = pos[i].tolist()
        x[i, 0, r : r + patch, c : c + patch] += 2 * stripes[y[i]]
    lo, hi = 2 * pos.float() / size - 1, 2 * (pos.float() + patch) / size - 1
    return x, y, torch.cat([lo.flip(1), hi.flip(1)], dim=1).numpy()
