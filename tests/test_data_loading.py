"""npz -> tensors: every task type, 2D/3D, grey/RGB, mmap cache, validation errors, real files."""

import os
import tracemalloc
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from focusnet.data import dataset as ds
from focusnet.data import get_dataset_info, load_dataset, registry
from focusnet.data.fakes import fake_arrays, fake_info, with_md5, write_fake_npz
from focusnet.errors import FocusNetError

REAL_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "medmnist"

CASES = [  # (task, num_classes, spatial_dims, n_channels)
    ("multi-class", 4, 2, 1),
    ("binary-class", 2, 2, 1),
    ("multi-label, binary-class", 5, 2, 1),
    ("ordinal-regression", 5, 2, 3),
    ("multi-class", 3, 3, 1),
    ("binary-class", 2, 3, 1),
]


@pytest.fixture
def register(monkeypatch):
    """Register DatasetInfos for one test only."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._registry()))

    def _register(info):
        registry.register_dataset(info, overwrite=True)
        return info

    return _register


def channel_first(arr: np.ndarray, dims: int) -> np.ndarray:
    return arr[:, None] if arr.ndim == dims + 1 else np.moveaxis(arr, -1, 1)


@pytest.mark.parametrize("mmap", [False, True])
@pytest.mark.parametrize("task,classes,dims,channels", CASES)
def test_load_every_task_type(tmp_path, register, task, classes, dims, channels, mmap):
    info = fake_info("fake", task=task, num_classes=classes, spatial_dims=dims, n_channels=channels)
    size = 28 if dims == 2 else 8
    info = register(replace(info, sizes=(size,)))
    path = write_fake_npz(tmp_path, info, size, seed=1)
    info = register(with_md5(info, size, path))
    arrays = fake_arrays(info, size, seed=1)

    data = load_dataset("fake", size, data_dir=str(tmp_path), download=False, mmap=mmap)
    assert data.path == path and data.size == size and data.info is info
    for split, n in info.n_samples.items():
        s = data.splits[split]
        assert s.images.dtype == torch.uint8 and s.images.shape == (n, channels) + (size,) * dims
        assert np.array_equal(s.images.numpy(), channel_first(arrays[f"{split}_images"], dims))
        assert s.labels.dtype == torch.int64 and s.labels.shape == (n, info.num_label_columns)
        assert np.array_equal(s.labels.numpy(), arrays[f"{split}_labels"])
        assert s.boxes is None and len(s) == n
    assert os.path.isdir(path[:-4] + "_npy") == mmap


def test_as_rgb_repeats_grey_channel(tmp_path, register):
    info = register(fake_info("fake", sizes=(64,)))
    write_fake_npz(tmp_path, info, 64)
    assert os.path.exists(tmp_path / "fake_64.npz")
    img = load_dataset("fake", 64, data_dir=str(tmp_path), as_rgb=True).splits["val"].images
    assert img.shape == (6, 3, 64, 64) and torch.equal(img[:, 0], img[:, 2])


def test_as_rgb_keeps_rgb(tmp_path, register):
    info = register(fake_info("fake", n_channels=3))
    write_fake_npz(tmp_path, info)
    assert load_dataset("fake", data_dir=str(tmp_path), as_rgb=True).splits["test"].images.shape == (8, 3, 28, 28)


# ----------------------------------------------------------------------------- errors


def load_bad(tmp_path, register, info, arrays=None, md5=None):
    info = register(info)
    write_fake_npz(tmp_path, info, arrays=arrays)
    if md5:
        register(replace(info, md5s={28: md5}))
    return lambda: load_dataset(info.flag, data_dir=str(tmp_path), download=False)


def one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and isinstance(excinfo.value, FocusNetError)
    return msg


def test_wrong_md5_of_existing_file(tmp_path, register):
    load = load_bad(tmp_path, register, fake_info("fake"), md5="0" * 32)
    with pytest.raises(FocusNetError) as e:
        load()
    msg = one_line(e)
    assert "expected " + "0" * 32 in msg and "has MD5" in msg and "delete it" in msg


def test_missing_keys(tmp_path, register):
    info = fake_info("fake")
    arrays = fake_arrays(info, 28)
    del arrays["val_labels"], arrays["test_images"]
    with pytest.raises(FocusNetError) as e:
        load_bad(tmp_path, register, info, arrays)()
    assert "lacks keys val_labels, test_images" in one_line(e)


@pytest.mark.parametrize(
    "key,bad,expect",
    [
        ("train_images", np.zeros((20, 28, 27), np.uint8), "train_images is uint8 (20, 28, 27)"),
        ("val_images", np.zeros((6, 28, 28), np.float32), "val_images is float32"),
        ("test_images", np.zeros((7, 28, 28), np.uint8), "test_images is uint8 (7, 28, 28), expected uint8 (8, 28, 28)"),
        ("train_labels", np.zeros((20, 2), np.uint8), "train_labels has shape (20, 2), expected (20, 1)"),
        ("train_labels", np.full((20, 1), 3, np.uint8), "train_labels has values in [3, 3], expected [0, 2]"),
        ("val_labels", np.full((6, 1), -1, np.int64), "val_labels has values in [-1, -1]"),
        ("val_labels", np.zeros((6, 1), np.float32), "dtype float32, expected integers"),
    ],
)
def test_wrong_shapes_dtypes_and_labels(tmp_path, register, key, bad, expect):
    info = fake_info("fake")
    arrays = {**fake_arrays(info, 28), key: bad}
    with pytest.raises(FocusNetError) as e:
        load_bad(tmp_path, register, info, arrays)()
    assert expect in one_line(e)


def test_multilabel_values_must_be_binary(tmp_path, register):
    info = fake_info("fake", task="multi-label, binary-class", num_classes=3)
    arrays = {**fake_arrays(info, 28), "test_labels": np.full((8, 3), 2, np.uint8)}
    with pytest.raises(FocusNetError, match=r"expected \[0, 1\]"):
        load_bad(tmp_path, register, info, arrays)()


def test_corrupt_file(tmp_path, register):
    info = register(fake_info("fake"))
    (tmp_path / "fake.npz").write_bytes(b"PK\x03\x04 not really a zip" * 10)
    with pytest.raises(FocusNetError) as e:
        load_dataset("fake", data_dir=str(tmp_path), download=False)
    assert "not a readable .npz" in one_line(e) and "delete it" in str(e.value)
    assert info.flag == "fake"


def test_missing_file_without_download(tmp_path):
    with pytest.raises(FocusNetError) as e:
        load_dataset("breastmnist", data_dir=str(tmp_path), download=False)
    msg = one_line(e)
    assert f"put it in {tmp_path}/" in msg and get_dataset_info("breastmnist").md5s[28] in msg and "zenodo" in msg


def test_unavailable_size():
    with pytest.raises(FocusNetError, match="no size 128; available sizes: 28, 64"):
        load_dataset("adrenalmnist3d", 128)


# ----------------------------------------------------------------------------- mmap cache


def test_mmap_cache_reused_and_rebuilt(tmp_path, register, monkeypatch):
    info = register(fake_info("fake"))
    write_fake_npz(tmp_path, info, seed=1)
    monkeypatch.setattr(ds, "MMAP_AUTO_BYTES", 0)  # auto mode maps everything
    first = load_dataset("fake", data_dir=str(tmp_path)).splits["train"].images
    cached = tmp_path / "fake_npy" / "train_images.npy"
    stamp = cached.stat().st_mtime_ns
    load_dataset("fake", data_dir=str(tmp_path))
    assert cached.stat().st_mtime_ns == stamp  # reused
    os.remove(tmp_path / "fake.npz")
    write_fake_npz(tmp_path, info, seed=2)  # the npz changes -> the cache is rebuilt
    second = load_dataset("fake", data_dir=str(tmp_path)).splits["train"].images
    assert not torch.equal(first, second)
    assert torch.equal(second, torch.from_numpy(fake_arrays(info, 28, seed=2)["train_images"]).unsqueeze(1))


def test_mmap_cache_falls_back_when_folder_read_only(tmp_path, register, monkeypatch):
    info = register(fake_info("fake"))
    data_dir, cache = tmp_path / "ro", tmp_path / "cache"
    write_fake_npz(data_dir, info)
    monkeypatch.setenv(ds.CACHE_ENV, str(cache))
    data_dir.chmod(0o555)
    try:
        load_dataset("fake", data_dir=str(data_dir), mmap=True)
    finally:
        data_dir.chmod(0o755)
    assert sorted(os.listdir(data_dir)) == ["fake.npz"]
    (sub,) = os.listdir(cache)
    assert sub.startswith("fake-") and "train_images.npy" in os.listdir(cache / sub)


def test_mmap_keeps_memory_bounded(tmp_path, register):
    """Opening a 72 MB file memory-mapped allocates almost nothing; in memory it allocates it all."""
    info = register(fake_info("big", n_samples=(16000, 1000, 1000), sizes=(64,)))
    arrays = {k: (np.zeros(v.shape, np.uint8) if k.endswith("images") else v) for k, v in fake_arrays(info, 64).items()}
    write_fake_npz(tmp_path, info, 64, arrays=arrays)
    image_bytes = 18000 * 64 * 64
    peaks = {}
    for mmap in (True, False):
        tracemalloc.start()
        data = load_dataset("big", 64, data_dir=str(tmp_path), mmap=mmap)
        batch = data.splits["train"].images.index_select(0, torch.arange(0, 16000, 100))
        peaks[mmap] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert batch.shape == (160, 1, 64, 64)
        del data
    assert peaks[True] < 8 << 20 < image_bytes < peaks[False]  # mmap: a few chunk buffers only


# ----------------------------------------------------------------------------- real files


REAL = [("pneumoniamnist", 28), ("breastmnist", 28), ("adrenalmnist3d", 28), ("adrenalmnist3d", 64)]


@pytest.mark.parametrize("flag,size", REAL)
def test_real_medmnist_files(flag, size):
    info = get_dataset_info(flag)
    path = REAL_DIR / info.filename(size)
    if not path.exists():
        pytest.skip(f"{path} not present")
    before = sorted(os.listdir(REAL_DIR))
    data = load_dataset(flag, size, data_dir=str(REAL_DIR), download=False, mmap=False)  # checks the MD5
    assert sorted(os.listdir(REAL_DIR)) == before  # nothing written into the shared folder
    for split, n in info.n_samples.items():
        s = data.splits[split]
        assert s.images.shape == (n, info.n_channels) + (size,) * info.spatial_dims
        assert s.labels.shape == (n, 1) and 0 <= int(s.labels.min()) and int(s.labels.max()) < info.num_classes
