"""Your own data (`--data`): every layout (npz, image folder, CSV), 2D and 3D, single- and
multi-label, trained end to end (a few steps), re-evaluated and predicted; and one clear message
for each kind of bad data."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import focusnet
from focusnet.cli import main
from focusnet.data import (
    BalancedTensorLoader,
    SplitArrays,
    balanced_weights,
    get_dataset_info,
    load_dataset,
    prepare_custom,
    registry,
)
from focusnet.data.registry import BINARY, MULTI_CLASS, MULTI_LABEL
from focusnet.engine import TrainConfig, evaluate_checkpoint, train
from focusnet.errors import FocusNetError

TINY = {"epochs": 1, "batch_size": 16, "max_batches": 2, "n_boot": 20, "report": False, "progress": False, "model_options": {"width": 8, "feature_channels": 16, "hidden_size": 32}}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """A fresh cache per test; custom flags registered here do not leak into other tests."""
    monkeypatch.setenv("FOCUSNET_CACHE_DIR", str(tmp_path / "cache"))
    before = dict(registry._registry())
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(before)


def _image(rng, label: int, shape, rgb: bool = False) -> np.ndarray:
    """uint8 noise whose brightness says the class."""
    base = 40 + 60 * label
    a = rng.integers(0, 40, size=(*shape, 3) if rgb else shape) + base
    return a.clip(0, 255).astype(np.uint8)


def make_folder(root, classes=("benign", "malignant"), splits=("train", "test"), n=10, dims=2, side=32, rgb=False, suffix=".png", seed=0):
    rng = np.random.default_rng(seed)
    for split in splits:
        for k, cls in enumerate(classes):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(n if split == "train" else max(n // 2, 2)):
                a = _image(rng, k, (side,) * dims, rgb)
                path = folder / f"{cls}_{i}{suffix}"
                if suffix == ".npy":
                    np.save(path, a)
                elif suffix == ".nii.gz":
                    import nibabel as nib

                    nib.save(nib.Nifti1Image(a.T.astype(np.int16), np.eye(4)), str(path))
                else:
                    Image.fromarray(a).save(path)
    return root


def make_npz(path, dims=2, side=28, n=(24, 8, 12), k=3, multi_label=False, rgb=False, with_val=True, sidecar=None, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n):
        if split == "val" and not with_val:
            continue
        if multi_label:
            labels = np.stack([np.arange(count) % 2, (np.arange(count) // 2) % 2, (np.arange(count) + 1) % 2] [:k], 1)
            images = np.stack([_image(rng, int(r[0]), (side,) * dims, rgb) for r in labels])
        else:
            labels = (np.arange(count) % k)[:, None]
            images = np.stack([_image(rng, int(c), (side,) * dims, rgb) for c in labels[:, 0]])
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels.astype(np.int64)
    np.savez(path, **arrays)
    if sidecar is not None:
        path.with_suffix(".json").write_text(json.dumps(sidecar))
    return path


def make_csv(root, rows_per_split=(12, 4, 6), multi="field", seed=0):
    """Multi-label CSV: 'field' = one label column with ';' between labels; 'columns' = 0/1 columns."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True)
    names = ("effusion", "nodule")
    lines = ["path,split," + ("labels" if multi == "field" else ",".join(names))]
    for split, count in zip(("train", "val", "test"), rows_per_split):
        for i in range(count):
            pos = [i % 2, (i // 2) % 2]
            file = f"img/{split}_{i}.png"
            Image.fromarray(_image(rng, pos[0], (30, 30))).save(root / file)
            if multi == "field":
                lines.append(f"{file},{split},{';'.join(n for n, p in zip(names, pos) if p)}")
            else:
                lines.append(f"{file},{split},{pos[0]},{pos[1]}")
    csv = root / "labels.csv"
    csv.write_text("\n".join(lines) + "\n")
    return csv


def run_end_to_end(tmp_path, data, predict_file, **overrides):
    """Train a few steps, re-evaluate from the run folder, predict one file."""
    result = train(TrainConfig(data=str(data), output_dir=str(tmp_path / "results"), **{**TINY, **overrides}))
    run_dir = result.run_dir
    again = evaluate_checkpoint(run_dir, "test")
    assert again["acc"] == pytest.approx(result.metrics["test"]["acc"])
    assert again["auc"] == pytest.approx(result.metrics["test"]["auc"])
    (pred,) = focusnet.load(run_dir, device="cpu").predict(str(predict_file))
    if not get_dataset_info(result.config.dataset).multi_label:  # softmax over the classes
        assert sum(pred.probabilities.values()) == pytest.approx(1, abs=1e-4)
    return result, pred


# ----------------------------------------------------------------------------- layouts end to end


def test_folder_2d_binary_splits_val_off_train(tmp_path):
    data = make_folder(tmp_path / "skin")
    result, pred = run_end_to_end(tmp_path, data, data / "test" / "benign" / "benign_0.png")
    info = get_dataset_info(result.config.dataset)
    assert info.flag == "custom-skin" and info.task == BINARY and info.label_names == {"0": "benign", "1": "malignant"}
    split = _json(result.run_dir, "split.json")
    assert split["val_split_off"] and len(split["splits"]["val"]) == 2  # one of each class (10% of 10, at least 1)
    assert {e["file"] for e in split["splits"]["val"]}.isdisjoint(e["file"] for e in split["splits"]["train"])
    assert set(pred.probabilities) == {"benign", "malignant"}
    # reproducible: a second preparation is a cache hit with the same split
    again = prepare_custom(str(data))
    assert again.record["splits"]["val"] == split["splits"]["val"]
    # a new process knows the flag from the cache (evaluate, report, visualize load it by flag)
    registry._REGISTRY.pop(info.flag)
    assert evaluate_checkpoint(result.run_dir, "val")["n"] == 2 and get_dataset_info(info.flag) == info


def test_folder_2d_rgb_multiclass_with_val_native_size(tmp_path):
    data = make_folder(tmp_path / "derm", classes=("a", "b", "c"), splits=("train", "val", "test"), n=6, rgb=True, side=32, suffix=".jpg")
    result, _ = run_end_to_end(tmp_path, data, data / "test" / "c" / "c_0.jpg", size="native")
    info = get_dataset_info(result.config.dataset)
    assert info.task == MULTI_CLASS and info.n_channels == 3 and result.config.size == 32
    cfg = _json(result.run_dir, "config.json")
    assert cfg["data"]["in_channels"] == 3 and cfg["data"]["size"] == 32


def test_folder_3d_nifti_and_npy(tmp_path):
    pytest.importorskip("nibabel")
    nii = make_folder(tmp_path / "ct", dims=3, side=20, n=6, suffix=".nii.gz")
    result, _ = run_end_to_end(tmp_path, nii, nii / "test" / "benign" / "benign_0.nii.gz")
    assert get_dataset_info(result.config.dataset).spatial_dims == 3
    npy = make_folder(tmp_path / "mri", dims=3, side=28, n=6, suffix=".npy")
    prep = prepare_custom(str(npy))
    data = load_dataset(prep.flag, prep.size, prep.data_dir)
    assert tuple(data.splits["train"].images.shape[1:]) == (1, 28, 28, 28)


def test_npz_2d_multilabel_with_sidecar_and_resize(tmp_path):
    names = ["effusion", "nodule", "mass"]
    path = make_npz(tmp_path / "chest.npz", multi_label=True, sidecar={"labels": names})
    Image.fromarray(np.zeros((50, 40), np.uint8)).save(tmp_path / "one.png")  # any size: predict resizes
    result, pred = run_end_to_end(tmp_path, path, tmp_path / "one.png", size=32)
    info = get_dataset_info(result.config.dataset)
    assert info.task == MULTI_LABEL and info.num_classes == 3 and list(pred.probabilities) == names
    data = load_dataset(result.config.dataset, 32, result.config.data_dir)
    assert tuple(data.splits["test"].images.shape) == (12, 1, 32, 32)


def test_npz_3d_single_label_without_val_and_task_override(tmp_path):
    path = make_npz(tmp_path / "organ.npz", dims=3, n=(24, 0, 12), k=2, with_val=False)
    np.save(tmp_path / "vol.npy", np.zeros((28, 28, 28), np.uint8))
    result, _ = run_end_to_end(tmp_path, path, tmp_path / "vol.npy", task="multi-class")
    info = get_dataset_info(result.config.dataset)
    assert info.task == MULTI_CLASS and info.spatial_dims == 3 and info.n_samples["val"] > 0
    assert _json(result.run_dir, "split.json")["splits"]["val"]["train_indices"]


@pytest.mark.parametrize("multi", ["field", "columns"])
def test_csv_multilabel(tmp_path, multi):
    csv = make_csv(tmp_path / "csvdata", multi=multi)
    result, _ = run_end_to_end(tmp_path, csv, csv.parent / "img" / "test_0.png", balanced_sampling=True, class_weights="balanced")
    info = get_dataset_info(result.config.dataset)
    assert info.task == MULTI_LABEL and info.label_names == {"0": "effusion", "1": "nodule"}


def test_cli_train_with_data_and_native(tmp_path, capsys):
    data = make_folder(tmp_path / "cli", n=6)
    out = tmp_path / "results"
    code = main(["train", "--data", str(data), "--size", "native", "--epochs", "1", "--max-batches", "1", "--batch-size", "16", "--n-boot", "10", "--no-report", "--width", "8", "--hidden-size", "32", "--option", "feature_channels=16", "--output-dir", str(out)])
    assert code == 0 and (out / "custom-cli_latest" / "split.json").exists()
    assert main(["train", "--data", str(data), "--dataset", "pathmnist"]) == 2
    assert "not both" in capsys.readouterr().err


# ----------------------------------------------------------------------------- balanced sampling


def test_balanced_sampling_evens_out_classes_and_shards_like_distributed():
    labels = torch.tensor([0] * 90 + [1] * 10)[:, None]
    split = SplitArrays(torch.zeros(100, 1, 4, 4, dtype=torch.uint8), labels)
    w = balanced_weights(labels, False, 2)
    loader = BalancedTensorLoader(split, 10, w, seed=3)
    drawn = labels[loader.indices(), 0]
    assert 30 < int((drawn == 1).sum()) < 70  # about half, not 10%
    shards = [BalancedTensorLoader(split, 10, w, seed=3, rank=r, world_size=2).indices() for r in range(2)]
    assert torch.equal(torch.stack(shards, 1).reshape(-1), loader.indices())


# ----------------------------------------------------------------------------- bad data: one clear message each


def _json(folder, name) -> dict:
    with open(os.path.join(folder, name), encoding="utf-8") as f:
        return json.load(f)


def _error(data, **kw) -> str:
    with pytest.raises(FocusNetError) as e:
        prepare_custom(str(data), **kw)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_empty_class_folder(tmp_path):
    data = make_folder(tmp_path / "d")
    for f in (data / "test" / "malignant").iterdir():
        f.unlink()
    assert "class folder test/malignant/ is empty" in _error(data)


def test_unreadable_image_fails_or_is_skipped(tmp_path):
    data = make_folder(tmp_path / "d")
    (data / "train" / "benign" / "broken.png").write_bytes(b"not a png")
    msg = _error(data)
    assert "1 unreadable image(s)" in msg and "broken.png" in msg and "--on-bad-image skip" in msg
    prep = prepare_custom(str(data), on_bad_image="skip")
    assert len(prep.record["skipped"]) == 1 and "broken.png" in prep.record["skipped"][0]


def test_mixed_sizes_with_native(tmp_path):
    data = make_folder(tmp_path / "d")
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(data / "train" / "benign" / "big.png")
    assert "--size native needs one image size" in _error(data, size="native")
    assert prepare_custom(str(data), size=28).size == 28  # resizing is fine


def test_csv_label_not_in_class_list(tmp_path):
    csv = make_csv(tmp_path / "c")
    csv.write_text(csv.read_text() + "img/test_0.png,test,tumour\n")
    msg = _error(csv)
    assert "'tumour'" in msg and "not in the class list" in msg


def test_split_without_a_class(tmp_path):
    data = make_folder(tmp_path / "d")
    for f in (data / "test" / "malignant").iterdir():
        f.unlink()
    (data / "test" / "malignant").rmdir()
    assert "the test split has no example of class 'malignant'" in _error(data)


def test_other_layout_errors(tmp_path):
    (tmp_path / "flat").mkdir()
    assert "expected train/ and test/" in _error(tmp_path / "flat")
    assert "no such file" in _error(tmp_path / "nothing")
    three = make_folder(tmp_path / "e", classes=("a", "b", "c"))
    assert "--task binary needs exactly 2 classes" in _error(three, task="binary")
    assert "resized to 28..224" in _error(three, size=300)
    (three / "train" / "a" / "notes.txt").write_text("x")
    assert "unsupported file type .txt" in _error(three)


def test_npz_layouts_channel_last_one_is_2d_channel_first_is_refused_and_truncated_is_one_line(tmp_path):
    """(N, H, W, 1) is 2D grey (it was read as a stack of thin volumes); (N, 1, H, W) is refused
    with the fix; a truncated file is one FocusNetError line, not a BadZipFile traceback."""
    path = make_npz(tmp_path / "grey.npz")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(tmp_path / "hw1.npz", **{k: v[..., None] if k.endswith("images") else v for k, v in arrays.items()})
    prep = prepare_custom(str(tmp_path / "hw1.npz"), 28)
    info = get_dataset_info(prep.flag)
    assert info.spatial_dims == 2 and info.n_channels == 1
    np.savez(tmp_path / "chw.npz", **{k: v[:, None] if k.endswith("images") else v for k, v in arrays.items()})
    with pytest.raises(FocusNetError, match=r"looks channels-first.*np.moveaxis\(images, 1, -1\)"):
        prepare_custom(str(tmp_path / "chw.npz"), 28)
    (tmp_path / "cut.npz").write_bytes(path.read_bytes()[:300])
    with pytest.raises(FocusNetError, match="not a readable .npz"):
        prepare_custom(str(tmp_path / "cut.npz"), 28)


def test_a_custom_dataset_is_found_in_its_recorded_folder_after_the_cache_moved(tmp_path, monkeypatch):
    """evaluate/visualize pass the run's recorded data folder: it is enough, whatever
    FOCUSNET_CACHE_DIR says now; without it the error names where it looked and the fixes."""
    prep = prepare_custom(str(make_npz(tmp_path / "skin.npz")), 28)
    monkeypatch.setenv("FOCUSNET_CACHE_DIR", str(tmp_path / "another_cache"))
    registry._registry().pop(prep.flag)
    with pytest.raises(FocusNetError, match=r"is not in .*another_cache.*pass --data-dir"):
        load_dataset(prep.flag, 28)
    data = load_dataset(prep.flag, 28, prep.data_dir)
    assert data.info.flag == prep.flag and len(data.splits["test"]) == 12


def test_a_run_is_not_scored_on_a_custom_cache_rebuilt_from_other_data(tmp_path):
    """The cache folder of a --data source is rebuilt in place when the source or its options
    change; a run trained before must then refuse to be scored, not score on other splits."""
    source = make_npz(tmp_path / "skin.npz", with_val=False)
    result = train(TrainConfig(data=str(source), output_dir=str(tmp_path / "results"), **TINY))
    assert evaluate_checkpoint(result.run_dir, "test")["acc"] == pytest.approx(result.metrics["test"]["acc"])
    prepare_custom(str(source), 28, val_fraction=0.3)  # same flag and folder, other train/val split
    with pytest.raises(FocusNetError, match=r"changed since this run trained") as e:
        evaluate_checkpoint(result.run_dir, "test")
    assert "\n" not in str(e.value)
    prepare_custom(str(source), 28)  # prepared as the run was: scored again, identically
    assert evaluate_checkpoint(result.run_dir, "test")["acc"] == pytest.approx(result.metrics["test"]["acc"])


def test_csv_label_columns_and_sidecar_labels_must_name_the_same_labels(tmp_path):
    csv = make_csv(tmp_path / "c", multi="columns")
    (tmp_path / "c" / "labels.json").write_text(json.dumps({"labels": ["nodule", "effusion"]}))
    prep = prepare_custom(str(csv))  # the sidecar may reorder the columns' labels
    assert get_dataset_info(prep.flag).label_names == {"0": "nodule", "1": "effusion"}
    (tmp_path / "c" / "labels.json").write_text(json.dumps({"labels": ["Effusion", "Nodule"]}))  # was a KeyError traceback
    msg = _error(csv)
    assert "are not the CSV's 0/1 label columns ['effusion', 'nodule']" in msg and "leave 'labels' out" in msg


def test_npz_splits_of_other_sizes_need_a_size_to_share(tmp_path):
    path = make_npz(tmp_path / "mix.npz", side=32)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["test_images"] = np.zeros((len(arrays["test_labels"]), 40, 40), np.uint8)
    np.savez(tmp_path / "mix.npz", **arrays)
    msg = _error(tmp_path / "mix.npz", size="native")  # was prepared, then its cached file refused when read
    assert "differ in channels or size (channels x size: train 1x32x32, val 1x32x32, test 1x40x40)" in msg and "--size N" in msg
    prep = prepare_custom(str(tmp_path / "mix.npz"), 28)  # resized to one size: fine
    assert load_dataset(prep.flag, 28, prep.data_dir).splits["test"].images.shape[1:] == (1, 28, 28)


def test_a_prepared_custom_flag_loads_from_its_cache_folder_and_a_lost_file_says_how_to_rebuild(tmp_path):
    prep = prepare_custom(str(make_npz(tmp_path / "derm.npz")), 28)
    assert len(load_dataset(prep.flag, 28).splits["test"]) == 12  # no --data-dir: its cache folder, not the MedMNIST one
    os.remove(os.path.join(prep.data_dir, f"{prep.flag}.npz"))
    with pytest.raises(FocusNetError, match=r"has no download source: pass --data-dir .*`focusnet train --data SOURCE`") as e:
        load_dataset(prep.flag, 28)  # said "allow downloading", with nothing to download
    assert "\n" not in str(e.value)
