"""Issue 9: a trained model on new images (predict, overlays) and exported (ONNX, TorchScript).

Models are tiny and untrained (saved with `save_model`, as a run folder): what is tested is that
every file format reaches the model as the training images did, and that every output equals
the model called directly.
"""

import csv
import json
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import focusnet
from focusnet.cli import main
from focusnet.engine import save_model
from focusnet.errors import FocusNetError
from focusnet.inference import Preprocess, export_model, find_inputs, load, read_image
from focusnet.inference.export import read_metadata
from focusnet.inference.preprocess import to_grey_levels
from focusnet.metrics import probabilities
from focusnet.models.factory import build_model, model_config
from focusnet.tasks import MULTI_CLASS, MULTI_LABEL

TINY = {"width": 8, "feature_channels": 16, "hidden_size": 32}
SIZE = 28


def make_run(folder, name="focusnet", dims=2, channels=1, k=3, task=MULTI_CLASS, options=None) -> str:
    options = dict(TINY, **(options or {})) if name == "focusnet" else {}
    cfg = model_config(name, channels, k, dims, options)
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():  # untrained weights give near-uniform outputs; spread them so classes differ
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(3)
    data = {"flag": "synth", "task": task, "num_classes": k, "label_names": {str(i): f"class {i}" for i in range(k)}, "in_channels": channels, "spatial_dims": dims, "size": SIZE, "as_rgb": False, "mean": 0.5, "std": 0.5}
    os.makedirs(folder, exist_ok=True)
    save_model(str(folder), model, cfg, data, epoch=1)
    return str(folder)


@pytest.fixture(scope="module")
def run2d(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("run2d"))


@pytest.fixture(scope="module")
def run3d(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("run3d"), dims=3)


def image2d(h=SIZE, w=SIZE, seed=0) -> np.ndarray:
    """uint8 (h, w): a bright blob on a gradient, plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = 40 + 100 * xx / w + 110 * np.exp(-((xx - 0.7 * w) ** 2 + (yy - 0.3 * h) ** 2) / (0.02 * h * w)) + rng.normal(0, 5, (h, w))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def volume(d=6, h=24, w=SIZE, seed=0) -> np.ndarray:
    """uint16 (d, h, w) CT-like values."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[0:d, 0:h, 0:w]
    v = 900 + 300 * xx / w + 1200 * np.exp(-((xx - 0.6 * w) ** 2 / w**2 + (yy - 0.4 * h) ** 2 / h**2 + (zz - 0.5 * d) ** 2 / d**2) * 20) + rng.normal(0, 20, (d, h, w))
    return np.clip(np.rint(v), 0, 4095).astype(np.uint16)


def direct_probs(predictor, path) -> np.ndarray:
    """The model called by hand on the predictor's preprocessed tensor."""
    x = predictor.preprocess(path)[None]
    with torch.no_grad():
        return probabilities(predictor.model(x), predictor.task).numpy()[0]


def probs_of(prediction) -> np.ndarray:
    return np.array(list(prediction.probabilities.values()))


# ----------------------------------------------------------------------------- formats


def test_every_2d_format_reaches_the_model_as_training_images_did(run2d, tmp_path):
    img = image2d()
    files = {ext: tmp_path / f"img.{ext}" for ext in ("png", "bmp", "tif", "jpg")}
    for path in files.values():
        Image.fromarray(img).save(path)
    np.save(tmp_path / "img.npy", img)
    files["npy"] = tmp_path / "img.npy"
    predictor = focusnet.load(run2d)
    results = predictor.predict([str(p) for p in files.values()], batch_size=2)
    assert [r.source for r in results] == [str(p) for p in files.values()]
    expected = torch.from_numpy((img / 255.0 - 0.5) / 0.5).float()[None]  # a MedMNIST-size uint8 image is used unchanged
    for (ext, path), r in zip(files.items(), results):
        x = predictor.preprocess(path)
        if ext != "jpg":  # lossless
            torch.testing.assert_close(x, expected, rtol=0, atol=1e-6)
        else:
            assert (x - expected).abs().mean() < 0.05
        np.testing.assert_allclose(probs_of(r), direct_probs(predictor, path), atol=1e-5)
        assert r.predicted == [predictor.class_names[int(probs_of(r).argmax())]] and r.shape == (SIZE, SIZE)
        assert r.fixations.shape == (3, 2) and np.abs(r.fixations).max() <= 1


def test_conversion_to_grey_levels_channels_and_size():
    pre = Preprocess(spatial_dims=2, in_channels=1, size=SIZE)
    u16 = np.array([[1000, 3000], [2000, 5000]], dtype=np.uint16)
    np.testing.assert_allclose(to_grey_levels(u16), [[0, 127.5], [63.75, 255]])  # min-max per image
    np.testing.assert_array_equal(to_grey_levels(np.full((3, 3), 7.5)), np.zeros((3, 3)))  # constant -> 0
    np.testing.assert_array_equal(to_grey_levels(np.array([[True, False]])), [[255, 0]])
    np.testing.assert_array_equal(to_grey_levels(np.array([[np.nan, 1000.0, 3000.0]])), [[0, 0, 255]])
    # 8-bit grey levels in another dtype are kept (they were stretched), floats in [0, 1] scaled by 255
    u8 = np.random.default_rng(4).integers(10, 200, (SIZE, SIZE), dtype=np.uint8)
    for dtype in (np.float32, np.float64, np.int64, np.uint16):
        np.testing.assert_array_equal(to_grey_levels(u8.astype(dtype)), u8)
    np.testing.assert_allclose(to_grey_levels(np.array([[0.0, 0.2, 1.0]], np.float32)), [[0, 51, 255]], rtol=1e-6)
    np.testing.assert_allclose(to_grey_levels(np.array([[0.5, 100.5]])), [[0, 255]])  # not whole numbers: stretched
    rgb = np.random.default_rng(1).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    luma = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.float32)
    assert np.abs(pre.grey_levels(rgb)[..., 0] - luma).max() <= 1  # as Pillow's "L" (it rounds)
    assert pre(np.random.default_rng(2).integers(0, 60000, (90, 50), dtype=np.uint16)).shape == (1, SIZE, SIZE)
    rgb_pre = Preprocess(spatial_dims=2, in_channels=3, size=SIZE)
    grey = image2d()
    torch.testing.assert_close(rgb_pre(grey), rgb_pre(np.repeat(grey[..., None], 3, -1)))  # grey -> repeated RGB
    # layouts of arrays: channels last, channels first and RGBA give the same input
    torch.testing.assert_close(rgb_pre(rgb), rgb_pre(np.moveaxis(rgb, -1, 0)))
    torch.testing.assert_close(rgb_pre(rgb), rgb_pre(np.concatenate([rgb, np.full((SIZE, SIZE, 1), 9, np.uint8)], -1)))
    with pytest.raises(FocusNetError, match=r"not an image \(H, W\)"):
        pre(np.zeros((5, 28, 28, 28)))


def test_jpeg_exif_orientation_is_applied(tmp_path):
    """A camera JPEG is read upright, as viewers show it (EXIF Orientation 6: rotate 90 degrees clockwise)."""
    a = np.zeros((20, 40), np.uint8)
    a[:, :5] = 255  # a bright band on the left
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    upright = read_image(str(tmp_path / "rot.jpg"), 2)[..., 0]
    assert upright.shape == (40, 20) and upright[:5].mean() > 200 and upright[-5:].mean() < 50  # the band is now on top


def test_as_rgb_model_on_grey_data_is_fed_grey():
    """A model trained with --as-rgb on a grey dataset saw R = G = B: colour becomes grey first.
    Checkpoints before `source_channels` find the dataset's channels in the registry."""
    tinted = np.zeros((SIZE, SIZE, 3), np.uint8) + np.array([200, 128, 128], np.uint8)
    desc = {"spatial_dims": 2, "in_channels": 3, "size": SIZE, "mean": 0.5, "std": 0.5, "as_rgb": True, "flag": "breastmnist"}
    for data in ({**desc, "source_channels": 1}, desc):
        x = Preprocess.from_data(data)(tinted)
        assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
        torch.testing.assert_close(x[0], Preprocess(2, 1, SIZE)(tinted)[0])
    colour = Preprocess.from_data({**desc, "flag": "dermamnist", "source_channels": 3})(tinted)  # an RGB dataset stays RGB
    assert not torch.equal(colour[0], colour[1])


def test_3d_shrinking_counts_every_voxel():
    """Axes that are not a multiple of the box: the last voxels still reach the model."""
    pre = Preprocess(spatial_dims=3, in_channels=1, size=SIZE)
    v = np.zeros((SIZE, SIZE, 3 * SIZE - 1), np.uint8)
    v[:, :, -1] = 255
    assert pre.resize(torch.from_numpy(v[None]).float())[0, :, :, -1].min() > 0
    even = np.random.default_rng(3).integers(0, 256, (1, 2 * SIZE, 2 * SIZE, 2 * SIZE)).astype(np.float32)
    boxed = torch.nn.functional.avg_pool3d(torch.from_numpy(even)[None], 2)[0]  # a multiple of the box: plain 2x2x2 means, as before
    torch.testing.assert_close(pre.resize(torch.from_numpy(even)), torch.nn.functional.interpolate(boxed[None], size=(SIZE,) * 3, mode="trilinear", align_corners=False)[0])


def write_dicom(path, pixels, z=0.0, instance=1, series="1.2.3.4", slope=1.0, intercept=0.0):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = "1.2.3", series, "CT"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [0.0, 0.0, z], [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.InstanceNumber, ds.RescaleSlope, ds.RescaleIntercept = instance, slope, intercept
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(path, enforce_file_format=True)
    else:
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(path, write_like_original=False)


def write_volume(kind: str, vol: np.ndarray, folder) -> str:
    if kind == "npy":
        np.save(folder / "vol.npy", vol)
        return str(folder / "vol.npy")
    if kind == "tiff":
        frames = [Image.fromarray(s) for s in vol]
        frames[0].save(folder / "vol.tif", save_all=True, append_images=frames[1:])
        return str(folder / "vol.tif")
    if kind == "nifti":
        nib = pytest.importorskip("nibabel")
        nib.Nifti1Image(vol.transpose(2, 1, 0), np.eye(4)).to_filename(folder / "vol.nii.gz")  # (x, y, z) voxels
        return str(folder / "vol.nii.gz")
    series = folder / "series"
    series.mkdir()
    # file names run against the slice positions, and InstanceNumber is scrambled: only the position orders them
    for k, s in enumerate(vol):
        write_dicom(series / f"slice{len(vol) - k:02d}.dcm", s, z=2.5 * k - 10, instance=(k * 7) % len(vol) + 1, intercept=-1024.0)
    return str(series)


@pytest.mark.parametrize("kind", ["npy", "tiff", "nifti", "dicom-series"])
def test_3d_formats_reach_the_model_alike(run3d, tmp_path, kind):
    vol = volume()
    path = write_volume(kind, vol, tmp_path)
    predictor = load(run3d)
    assert read_image(path, 3)[..., 0].shape == vol.shape
    raw = read_image(path, 3)[..., 0]
    if kind == "dicom-series":
        np.testing.assert_allclose(raw, vol.astype(np.float64) - 1024)  # sorted by position, rescaled
    else:
        np.testing.assert_array_equal(raw, vol)
    [r] = predictor.predict([path])
    assert r.source == path and r.shape == vol.shape and r.fixations.shape == (3, 3)
    np.testing.assert_allclose(probs_of(r), direct_probs(predictor, path), atol=1e-5)
    reference = predictor.preprocess(vol)  # the same volume as an array
    assert (predictor.preprocess(path) - reference).abs().max() <= 2 / 255 + 1e-6  # at most one grey level apart


def test_single_dicom_file_is_a_2d_image(run2d, tmp_path):
    img = image2d().astype(np.uint16) * 10
    write_dicom(tmp_path / "one.dcm", img, slope=2.0, intercept=-100.0)
    os.rename(tmp_path / "one.dcm", tmp_path / "noext")  # found by its DICM signature
    predictor = load(run2d)
    [r] = predictor.predict(str(tmp_path))
    assert r.source.endswith("noext")
    torch.testing.assert_close(predictor.preprocess(r.source), predictor.preprocess(img), rtol=0, atol=2 / 255 + 1e-6)


def test_inputs_as_arrays_tensors_and_folders(run2d, tmp_path):
    img = image2d()
    Image.fromarray(img).save(tmp_path / "a.png")
    (tmp_path / "sub").mkdir()
    Image.fromarray(image2d(seed=1)).save(tmp_path / "sub" / "b.png")
    (tmp_path / ".hidden.png").write_bytes(b"ignored")
    predictor = focusnet.load(os.path.join(run2d, "best_model.safetensors"))
    out = predictor.predict([img, torch.from_numpy(img), str(tmp_path)])
    assert [r.source for r in out] == ["array[0]", "array[1]", str(tmp_path / "a.png"), str(tmp_path / "sub" / "b.png")]
    np.testing.assert_allclose(probs_of(out[0]), probs_of(out[2]), atol=1e-6)
    assert isinstance(predictor, focusnet.Predictor) and predictor.model.training is False
    # copies of the pixels in other dtypes predict as the pixels do (float ones were contrast-stretched)
    copies = [img.astype(np.float32), img.astype(np.int64), img / 255.0, torch.from_numpy(img).bfloat16()]
    for r in predictor.predict(copies):
        np.testing.assert_allclose(probs_of(r), probs_of(out[0]), atol=1e-6)
    with pytest.raises(FocusNetError, match=r"input 1 is a NoneType; give image paths"):
        predictor.predict([img, None])
    # a few images stacked into one array are refused, not blended into one image
    with pytest.raises(FocusNetError, match=r"\(2, 28, 28\) is ambiguous: for 2 images give one array or file per image"):
        predictor.predict(np.stack([img, img]))


# ----------------------------------------------------------------------------- the command


def test_cli_csv_json_overlays_and_one_line_per_bad_file(run2d, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for i, size in enumerate([(SIZE, SIZE), (64, 48), (100, 100)]):
        Image.fromarray(image2d(*size, seed=i)).save(images / f"good{i}.png")
    (images / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (images / "notes.txt").write_text("not an image")
    np.save(images / "cube.npy", np.zeros((8, 8, 8, 8)))  # 4D: not an image for a 2D model
    out_csv, overlays = tmp_path / "p.csv", tmp_path / "overlays"
    code = main(["predict", "--checkpoint", os.path.join(run2d, "best_model.pth"), str(images), "--output", str(out_csv), "--overlay", str(overlays), "--batch-size", "2"])
    err = capsys.readouterr().err.splitlines()
    assert code == 1  # some inputs failed, the rest were predicted
    errors = [line for line in err if "error:" in line]
    assert len(errors) == 3 and all(line.startswith("focusnet predict: error: ") for line in errors)
    assert sorted(os.path.basename(line.split(": ")[2]) for line in errors) == ["corrupt.png", "cube.npy", "notes.txt"]
    assert not any("Traceback" in line for line in err)

    rows = list(csv.DictReader(out_csv.open()))
    assert [os.path.basename(r["file"]) for r in rows] == ["good0.png", "good1.png", "good2.png"]
    predictor = load(run2d)
    for row in rows:
        want = direct_probs(predictor, row["file"])
        got = [float(row[f"prob_{n}"]) for n in predictor.class_names]
        np.testing.assert_allclose(got, want, atol=1e-6)
        assert row["class"] == predictor.class_names[int(np.argmax(want))]
        w, h = Image.open(row["file"]).size
        for t in range(3):  # pixel coordinates of the original image from the normalised ones
            assert float(row[f"fix{t}_x"]) == pytest.approx(((float(row[f"fix{t}_x_norm"]) + 1) * w - 1) / 2, abs=0.01)
            assert float(row[f"fix{t}_y"]) == pytest.approx(((float(row[f"fix{t}_y_norm"]) + 1) * h - 1) / 2, abs=0.01)

    pictures = sorted(os.listdir(overlays))
    assert pictures == ["good0_fixations.png", "good1_fixations.png", "good2_fixations.png"]
    for name in pictures:
        pic = np.asarray(Image.open(overlays / name).convert("RGB")).astype(int)
        assert pic.std() > 10  # the image, not a blank canvas
        assert (np.abs(pic[..., 0] - pic[..., 2]) > 100).sum() > 20  # coloured fixation marks on a grey image

    out_json = tmp_path / "p.json"
    assert main(["predict", "--checkpoint", run2d, str(images / "good1.png"), str(images / "notes.txt"), "--output", str(out_json)]) == 1
    value = json.loads(out_json.read_text())
    assert value["task"] == MULTI_CLASS and value["classes"] == predictor.class_names
    [p] = value["predictions"]
    assert p["shape"] == [64, 48] and len(p["fixations"]) == 3 and len(p["fixations_normalised"][0]) == 2
    assert value["failures"][0]["file"].endswith("notes.txt") and "unsupported file type .txt" in value["failures"][0]["error"]


def test_cli_all_bad_writes_nothing_and_stdout_table(run2d, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"junk")
    out = tmp_path / "p.csv"
    assert main(["predict", "--checkpoint", run2d, str(bad), str(tmp_path / "missing.png"), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "bad.png: cannot read image" in err and "missing.png: no such file or folder" in err and "none of the 2 inputs" in err
    assert not out.exists() and os.listdir(tmp_path) == ["bad.png"]
    Image.fromarray(image2d()).save(tmp_path / "ok.png")
    assert main(["predict", "--checkpoint", run2d, str(tmp_path / "ok.png"), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["predictions"][0]["file"].endswith("ok.png")


def test_an_output_in_a_missing_folder_fails_before_any_work(run2d, tmp_path, capsys, monkeypatch):
    """predict and export say so in one line up front: no overlays drawn, no export traced."""
    Image.fromarray(image2d()).save(tmp_path / "ok.png")
    missing = tmp_path / "nowhere"
    args = ["predict", "--checkpoint", run2d, str(tmp_path / "ok.png"), "--overlay", str(tmp_path / "ov"), "--output", str(missing / "p.csv")]
    assert main(args) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"the folder {missing} does not exist" in line and not (tmp_path / "ov").exists()
    monkeypatch.setattr(torch.jit, "trace", lambda *a, **k: pytest.fail("traced although the output cannot be written"))
    assert main(["export", "--checkpoint", run2d, "--format", "torchscript", "--output", str(missing / "m.pt")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"the folder {missing} does not exist" in line and not missing.exists()


def test_cli_a_lone_bad_input_is_one_error_line(run2d, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"junk")
    assert main(["predict", "--checkpoint", run2d, str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.png: cannot read image" in err[0], err


def test_cli_a_lone_input_whose_overlay_fails_is_still_reported(run2d, tmp_path, capsys, monkeypatch):
    import focusnet.inference.output as output

    Image.fromarray(image2d()).save(tmp_path / "ok.png")

    def changed(*_):
        raise FocusNetError("ok.png: changed since it was predicted")

    monkeypatch.setattr(output, "read_image", changed)  # the overlay's second read only
    assert main(["predict", "--checkpoint", run2d, str(tmp_path / "ok.png"), "--overlay", str(tmp_path / "ov")]) == 1
    captured = capsys.readouterr()
    assert "ok.png" in captured.out  # the prediction itself
    assert "changed since it was predicted" in captured.err


def test_3d_overlay_shows_three_slices(run3d, tmp_path, capsys):
    path = write_volume("npy", volume(d=20, h=24, w=32), tmp_path)
    assert main(["predict", "--checkpoint", run3d, path, "--overlay", str(tmp_path / "ov")]) == 0
    pic = np.asarray(Image.open(tmp_path / "ov" / "vol_fixations.png").convert("RGB")).astype(int)
    assert pic.shape[1] > 2.5 * pic.shape[0] and pic.std() > 10
    assert (np.abs(pic[..., 0] - pic[..., 2]) > 100).sum() > 20


def test_resnet_predicts_without_fixations(tmp_path, capsys):
    run = make_run(tmp_path / "res", name="resnet18")
    Image.fromarray(image2d()).save(tmp_path / "a.png")
    [r] = load(run).predict(str(tmp_path / "a.png"))
    assert r.fixations is None and r.fixations_px is None and "fixations" not in r.to_dict()
    assert main(["predict", "--checkpoint", run, str(tmp_path / "a.png")]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "file,class,prob_class 0,prob_class 1,prob_class 2"
    assert main(["predict", "--checkpoint", run, str(tmp_path / "a.png"), "--overlay", str(tmp_path / "ov")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "resnet18 model, which makes none" in err[0]


def test_multilabel_uses_sigmoid_and_names_every_positive_label(tmp_path):
    run = make_run(tmp_path / "ml", k=4, task=MULTI_LABEL)
    predictor = load(run)
    [r] = predictor.predict(image2d())
    p = probs_of(r)
    with torch.no_grad():
        np.testing.assert_allclose(p, torch.sigmoid(predictor.model(predictor.preprocess(image2d())[None]))[0].numpy(), atol=1e-6)
    assert r.predicted == [n for n, v in zip(predictor.class_names, p) if v >= 0.5] and r.class_name == "; ".join(r.predicted)


@pytest.mark.parametrize("module, extra, suffix", [("nibabel", "io3d", ".nii.gz"), ("pydicom", "io3d", ".dcm")])
def test_missing_reader_says_which_extra_to_install(run3d, tmp_path, monkeypatch, module, extra, suffix):
    path = tmp_path / f"vol{suffix}"
    path.write_bytes(b"\0" * 200)
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(FocusNetError, match=rf"install with pip install 'focusnet\[{extra}\]'"):
        read_image(str(path), 3)
    [failure] = list(load(run3d).predict_iter(find_inputs([str(path)], 3)))
    assert "focusnet[io3d]" in failure.message and "\n" not in failure.message


def test_missing_exporter_says_which_extra_to_install(run2d, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert main(["export", "--checkpoint", run2d, "--format", "onnx", "--output", str(tmp_path / "m.onnx")]) == 2
    assert "install with pip install 'focusnet[export]'" in capsys.readouterr().err
    assert not os.listdir(tmp_path)


# ----------------------------------------------------------------------------- export


@pytest.mark.filterwarnings("ignore:`torch.jit")  # deprecated in favour of torch.export, still what users ask for
def test_torchscript_export_matches_pytorch(run2d, run3d, tmp_path, capsys):
    for run, dims in ((run2d, 2), (run3d, 3)):
        out = tmp_path / f"m{dims}.torchscript.pt"
        assert main(["export", "--checkpoint", run, "--format", "torchscript", "--output", str(out)]) == 0
        assert str(out) in capsys.readouterr().out
        predictor = load(run)
        x = torch.stack([predictor.preprocess(img) for img in ([image2d(seed=s) for s in range(3)] if dims == 2 else [volume(seed=s) for s in range(3)])])
        exported = torch.jit.load(str(out))
        for batch in (x[:1], x):  # the batch size is free
            with torch.no_grad():
                got, want = probabilities(exported(batch), MULTI_CLASS), probabilities(predictor.model(batch), MULTI_CLASS)
            assert (got - want).abs().max() <= 1e-4
        assert read_metadata(str(out))["classes"] == predictor.class_names


def test_failed_check_leaves_no_file(run2d, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: (lambda x: torch.zeros(len(x), 3) + torch.tensor([9.0, 0, 0])))
    with pytest.raises(FocusNetError, match="differs from PyTorch"):
        export_model(run2d, "torchscript", str(tmp_path / "m.pt"))
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("dims", [2, pytest.param(3, marks=pytest.mark.slow)])
def test_onnx_export_matches_pytorch(tmp_path, dims):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    # torch.export takes ~10 s per saccade step on 2 CPU cores: one saccade and one pathway keep the
    # glimpse sensor (grid_sample), the integrator and, in 3D, both hand-written translations.
    run = make_run(tmp_path / "run", dims=dims, options={"num_saccades": 1, "pathways": "p"})
    result = export_model(run, "onnx", str(tmp_path / "m.onnx"))
    assert result.opset == (18 if dims == 2 else 20) and result.max_difference <= 1e-4
    predictor = load(run)
    images = [image2d(seed=s) for s in range(4)] if dims == 2 else [volume(seed=s) for s in range(4)]
    x = torch.stack([predictor.preprocess(img) for img in images])
    session = ort.InferenceSession(result.path, providers=["CPUExecutionProvider"])
    for batch in (x[:1], x):
        logits = session.run(["logits"], {"input": batch.numpy()})[0]
        with torch.no_grad():
            want = probabilities(predictor.model(batch), MULTI_CLASS)
        assert (probabilities(torch.from_numpy(logits), MULTI_CLASS) - want).abs().max() <= 1e-4
    meta = json.loads(session.get_modelmeta().custom_metadata_map["focusnet"])
    assert meta["activation"] == "softmax" and meta["data"]["size"] == SIZE


def test_overlay_marker_sits_on_the_pixel_the_fixation_names():
    """Independent of the formula's code: a fixation written by hand for pixel (col 7, row 12) of a
    30 x 20 image (u = (2p + 1) / n - 1, align_corners=False) is drawn with its disc centred on
    that pixel of the scaled-up overlay."""
    from focusnet.inference.output import STEP_COLOURS, render_overlay
    from focusnet.inference.predictor import Prediction

    col, row, w, h = 7, 12, 30, 20
    fix = np.array([[0.0, 0.0], [(2 * col + 1) / w - 1, (2 * row + 1) / h - 1]])
    pred = Prediction("array[0]", (h, w), {"a": 1.0}, ["a"], [0], fixations=fix, half_widths=None)
    picture = np.asarray(render_overlay(np.zeros((h, w, 1), np.uint8), pred))  # (H, W, C) as read
    scale = picture.shape[0] // h
    assert picture.shape[:2] == (h * scale, w * scale)
    mask = (picture == np.array(STEP_COLOURS[1], np.uint8)).all(-1)
    inner = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]  # the filled disc, not the label's strokes
    ys, xs = np.nonzero(inner)
    assert len(xs) > 20
    assert (np.median(xs) + 1) / scale - 0.5 == pytest.approx(col, abs=0.25)
    assert (np.median(ys) + 1) / scale - 0.5 == pytest.approx(row, abs=0.25)
