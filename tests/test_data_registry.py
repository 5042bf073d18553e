"""Dataset registry: all 18 MedMNIST flags from medmnist.INFO plus the synthetic ones."""

import pytest
from medmnist import INFO

from focusnet.data import (
    DatasetInfo,
    default_data_dir,
    format_dataset_table,
    get_dataset_info,
    list_datasets,
    register_dataset,
    registry,
)
from focusnet.data.fakes import fake_info
from focusnet.errors import FocusNetError

SYNTHETIC = {"synth-lesion", "synth-lesion-binary", "synth-lesion-multilabel", "synth-lesion3d"}


def test_all_medmnist_flags_and_synthetic_registered():
    flags = {d.flag for d in list_datasets()}
    assert set(INFO) <= flags and len(INFO) == 18
    assert flags - set(INFO) == SYNTHETIC
    dims = [get_dataset_info(f).spatial_dims for f in INFO]
    assert dims.count(2) == 12 and dims.count(3) == 6


@pytest.mark.parametrize("flag", sorted(INFO))
def test_medmnist_entry_matches_info(flag):
    meta, info = INFO[flag], get_dataset_info(flag)
    assert info.task == meta["task"] and info.label_names == meta["label"]
    assert info.n_channels == meta["n_channels"] and info.n_samples == meta["n_samples"]
    assert info.num_classes == len(meta["label"]) and info.license == meta["license"]
    assert info.sizes == ((28, 64) if flag.endswith("3d") else (28, 64, 128, 224))
    assert info.md5s[28] == meta["MD5"] and info.urls[64] == meta["url_64"] and info.md5s[64] == meta["MD5_64"]
    assert not info.synthetic


@pytest.mark.parametrize(
    "flag,task,classes,dims",
    [
        ("synth-lesion", "multi-class", 4, 2),
        ("synth-lesion-binary", "binary-class", 2, 2),
        ("synth-lesion-multilabel", "multi-label, binary-class", 3, 2),
        ("synth-lesion3d", "multi-class", 4, 3),
    ],
)
def test_synthetic_entries(flag, task, classes, dims):
    info = get_dataset_info(flag)
    assert (info.task, info.num_classes, info.spatial_dims, info.synthetic) == (task, classes, dims, True)
    assert info.sizes == ((28, 64, 128, 224) if dims == 2 else (28, 64))
    assert info.split_sizes(28) == info.n_samples
    assert sum(info.split_sizes(info.sizes[-1]).values()) < sum(info.n_samples.values())


def test_label_columns():
    assert get_dataset_info("chestmnist").num_label_columns == 14
    assert get_dataset_info("retinamnist").num_label_columns == 1


def test_filenames_and_url_override(monkeypatch):
    info = get_dataset_info("pneumoniamnist")
    assert info.filename(28) == "pneumoniamnist.npz" and info.filename(224) == "pneumoniamnist_224.npz"
    monkeypatch.delenv(registry.URL_ENV, raising=False)
    assert info.url(64) == INFO["pneumoniamnist"]["url_64"]
    monkeypatch.setenv(registry.URL_ENV, "http://127.0.0.1:9/mirror/")
    assert info.url(64) == "http://127.0.0.1:9/mirror/pneumoniamnist_64.npz"


def test_lookup_is_case_insensitive():
    assert get_dataset_info(" PneumoniaMNIST ").flag == "pneumoniamnist"


def test_unknown_flag_suggests_close_matches():
    with pytest.raises(FocusNetError, match="pnemoniamnist.*Did you mean: pneumoniamnist") as e:
        get_dataset_info("pnemoniamnist")
    assert "\n" not in str(e.value)
    with pytest.raises(FocusNetError, match="focusnet datasets"):
        get_dataset_info("zzzzzz")


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.delenv(registry.DATA_DIR_ENV, raising=False)
    assert default_data_dir().endswith(".medmnist")
    monkeypatch.setenv(registry.DATA_DIR_ENV, str(tmp_path))
    assert default_data_dir() == str(tmp_path)


def test_dataset_table_has_one_row_per_dataset():
    lines = format_dataset_table().splitlines()
    assert lines[0].split()[:3] == ["flag", "dims", "task"]
    assert len(lines) == 2 + len(list_datasets())
    row = next(line for line in lines if line.startswith("adrenalmnist3d "))
    assert "3D" in row and "1188/98/298" in row and "28,64" in row and "CC BY 4.0" in row


def test_register_dataset(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._registry()))
    info = fake_info("my-data")
    register_dataset(info)
    assert get_dataset_info("my-data") is info
    with pytest.raises(FocusNetError, match="already registered"):
        register_dataset(info)
    with pytest.raises(FocusNetError, match="Unknown task"):
        register_dataset(fake_info("bad-task", task="regression"))
    assert isinstance(info, DatasetInfo)
