"""Synthetic "find the lesion" data: determinism, shapes, boxes, balance, and that only the lesion
(not global image statistics) tells the class."""

import os
from dataclasses import replace

import numpy as np
import pytest
from scipy.stats import f_oneway
from sklearn.linear_model import LogisticRegression

from focusnet.data import (
    get_dataset_info,
    load_dataset,
    load_npz,
    make_lesion_dataset,
    md5sum,
)
from focusnet.data import synthetic as syn

MULTI, BINARY, MULTI_LABEL = "multi-class", "binary-class", "multi-label, binary-class"


def split(n, size=28, dims=2, types=(0, 1, 2, 3), multi_label=False, seed=0, clutter=True):
    return syn.generate_split(np.random.default_rng(seed), n, size, dims, types, multi_label, clutter)


def test_same_seed_same_bytes(tmp_path):
    a = make_lesion_dataset(str(tmp_path / "a.npz"), 2, 28, MULTI, 60, 10, 10, seed=7)
    b = make_lesion_dataset(str(tmp_path / "b.npz"), 2, 28, MULTI, 60, 10, 10, seed=7)
    c = make_lesion_dataset(str(tmp_path / "c.npz"), 2, 28, MULTI, 60, 10, 10, seed=8)
    assert md5sum(a[0]) == md5sum(b[0]) != md5sum(c[0])
    assert md5sum(a[1]) == md5sum(b[1]) and b[1] == str(tmp_path / "b_boxes.npz")


@pytest.mark.parametrize("size,dims", [(28, 2), (64, 2), (128, 2), (28, 3)])
@pytest.mark.parametrize("task", [MULTI, BINARY, MULTI_LABEL])
def test_files_in_medmnist_format(tmp_path, size, dims, task):
    path, box_path = make_lesion_dataset(str(tmp_path / "s.npz"), dims, size, task, 24, 8, 8, seed=1)
    k = {MULTI: 4, BINARY: 2, MULTI_LABEL: 3}[task]
    with np.load(path) as z, np.load(box_path) as zb:
        for s, n in [("train", 24), ("val", 8), ("test", 8)]:
            assert z[f"{s}_images"].shape == (n,) + (size,) * dims and z[f"{s}_images"].dtype == np.uint8
            assert z[f"{s}_labels"].shape == ((n, k) if task == MULTI_LABEL else (n, 1))
            box_shape = (n, k, 2 * dims) if task == MULTI_LABEL else (n, 2 * dims)
            assert zb[f"{s}_boxes"].shape == box_shape and zb[f"{s}_boxes"].dtype == np.float32
    # the same pipeline reads it, boxes included
    info = replace(get_dataset_info("synth-lesion3d" if dims == 3 else "synth-lesion"), task=task,
                   num_classes=k, samples_by_size={size: {"train": 24, "val": 8, "test": 8}})
    data = load_npz(path, info, size)
    assert data.splits["val"].images.shape == (8, 1) + (size,) * dims
    assert data.splits["val"].boxes.shape[0] == 8


@pytest.mark.parametrize("size,dims", [(28, 2), (64, 2), (224, 2), (28, 3), (64, 3)])
def test_boxes_inside_image_and_contain_the_lesion(size, dims):
    n = 40 if dims == 2 else 12
    img, lab, box = split(n, size, dims, clutter=False)  # lesions alone on black
    assert np.all(box >= -1) and np.all(box <= 1) and np.all(box[:, :dims] < box[:, dims:])
    # box width in pixels: small relative to the image, a few pixels in absolute terms
    width = (box[:, dims:] - box[:, :dims]) * size / 2
    assert np.all(width > 4) and np.all(width < 13)
    for i in range(n):
        bright = np.argwhere(img[i] > 0.05 * img[i].max())[:, ::-1] + 0.5  # pixel centres, x first
        assert len(bright) > 3
        coords = 2 * bright / size - 1
        half_pixel = 1 / size  # each lit pixel's square overlaps the box
        assert np.all(coords >= box[i, :dims] - half_pixel) and np.all(coords <= box[i, dims:] + half_pixel)


def test_multilabel_boxes_match_labels():
    img, lab, box = split(60, types=(0, 1, 2), multi_label=True)
    assert lab.shape == (60, 3) and box.shape == (60, 3, 4)
    assert np.array_equal(np.isfinite(box).all(-1), lab.astype(bool))
    assert 0.3 < lab.mean() < 0.7


def test_class_balance():
    _, lab, _ = split(403)
    counts = np.bincount(lab[:, 0], minlength=4)
    assert counts.max() - counts.min() <= 1


def test_global_statistics_do_not_reveal_the_class():
    img, lab, _ = split(2000)
    flat = img.reshape(len(img), -1).astype(np.float32)
    for stat in (flat.mean(1), flat.std(1), flat.max(1), np.percentile(flat, 99, axis=1)):
        groups = [stat[lab[:, 0] == c] for c in range(4)]
        assert f_oneway(*groups).pvalue > 1e-3


def test_lesion_appearance_reveals_the_class():
    """A linear model on the ground-truth lesion crop is far above chance; on the whole-image
    histogram it is at chance."""
    img, lab, box = split(3000, seed=3)
    y = lab[:, 0]
    centre = ((box[:, :2] + box[:, 2:]) / 2 + 1) / 2 * 28  # (x, y) in pixels
    cx, cy = np.clip(np.floor(centre).astype(int), 4, 23).T
    crops = np.stack([img[i, cy[i] - 4 : cy[i] + 5, cx[i] - 4 : cx[i] + 5] for i in range(len(img))])
    feats = crops.reshape(len(img), -1).astype(np.float32)
    feats = (feats - feats.mean(1, keepdims=True)) / (feats.std(1, keepdims=True) + 1e-3)
    hist = np.stack([np.histogram(im, bins=32, range=(0, 256))[0] for im in img]) / img[0].size

    def acc(x):
        model = LogisticRegression(max_iter=300).fit(x[:2000], y[:2000])
        return model.score(x[2000:], y[2000:])

    assert acc(feats) > 0.5  # chance is 0.25
    assert acc(hist) < 0.32


def test_load_registered_synthetic_generates_once(tmp_path):
    data = load_dataset("synth-lesion-binary", 28, data_dir=str(tmp_path))
    info = get_dataset_info("synth-lesion-binary")
    assert sorted(os.listdir(tmp_path)) == ["synth-lesion-binary.npz", "synth-lesion-binary_boxes.npz"]
    for s, n in info.n_samples.items():
        assert data.splits[s].images.shape == (n, 1, 28, 28) and data.splits[s].boxes.shape == (n, 4)
    stamp = os.stat(tmp_path / "synth-lesion-binary.npz").st_mtime_ns
    again = load_dataset("synth-lesion-binary", 28, data_dir=str(tmp_path))
    assert os.stat(tmp_path / "synth-lesion-binary.npz").st_mtime_ns == stamp  # cached
    assert (again.splits["test"].images == data.splits["test"].images).all()


def test_stale_synthetic_file_is_regenerated(tmp_path, monkeypatch):
    info = get_dataset_info("synth-lesion")
    path = str(tmp_path / info.filename(28))
    monkeypatch.setitem(syn.SYNTHETIC_SPECS, "synth-lesion", replace(syn.SYNTHETIC_SPECS["synth-lesion"], split_sizes={28: (8, 4, 4)}))
    syn.ensure_synthetic(info, 28, path)
    assert syn.is_current(info, 28, path)
    monkeypatch.setattr(syn, "GENERATOR_VERSION", syn.GENERATOR_VERSION + 1)
    assert not syn.is_current(info, 28, path)
    syn.ensure_synthetic(info, 28, path)
    assert syn.is_current(info, 28, path)
