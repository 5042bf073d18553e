"""Seeing where the network looks: figures, report.html, fixation hit rate, official numbers.

Two tiny runs (2D and 3D, a few lesion images each, a small FocusNet, one short epoch) are trained
once per module through the real trainer, which writes report.html at the end; the tests then
check that every figure is there and not blank, that the commands work, and that the report
renders in a headless browser.
"""

import base64
import io
import json
import os
import re
import shutil
import subprocess
from dataclasses import replace

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from focusnet.cli import main
from focusnet.data import register_dataset
from focusnet.data.synthetic import SyntheticSpec, make_lesion_dataset
from focusnet.engine import TrainConfig, train
from focusnet.models.focusnet import FocusNet, FocusNetConfig
from focusnet.models.pathways import MPKBlock
from focusnet.official import MEDMNIST_PLUS, MEDMNIST_V2, official_numbers
from focusnet.viz import REPORT_FIGURES, fixation_hits, hit_rate, write_report_or_warn
from focusnet.viz.gradcam import map_geometry, to_image
from focusnet.viz.receptive_fields import FieldStats, radial_spectrum, verdict

TINY = {"width": 8, "feature_channels": 16, "hidden_size": 32, "glimpse_size": 8}
SPLITS = {2: (64, 24, 32), 3: (16, 8, 10)}  # train, val, test


def _register(dims: int, folder: str) -> str:
    flag = f"viz-lesion{dims}d"
    spec = SyntheticSpec(flag, dims, "multi-class", (0, 1, 2, 3), {28: SPLITS[dims]}, seed=dims)
    register_dataset(replace(spec.info(), synthetic=False), overwrite=True)  # a plain file in `folder`
    make_lesion_dataset(os.path.join(folder, f"{flag}.npz"), dims, 28, "multi-class", *SPLITS[dims], seed=dims)
    return flag


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{dims: run folder} of a one-epoch tiny FocusNet, trained (and reported) by `train`."""
    root = tmp_path_factory.mktemp("viz")
    out = {}
    for dims in (2, 3):
        flag = _register(dims, str(root))
        cfg = TrainConfig(dataset=flag, data_dir=str(root), epochs=1, batch_size=16, model_options=TINY, n_boot=20, device="cpu", output_dir=str(root / "results"), max_batches=2, progress=False)
        out[dims] = train(cfg, link=False).run_dir
    return out


def _pngs(page: str) -> dict[str, np.ndarray]:
    """{figure id: decoded RGB(A) image} of every embedded figure."""
    found = re.findall(r'<figure id="fig-([a-z_]+)"><img alt="[a-z_]+" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    return {name: imread(io.BytesIO(base64.b64decode(data)), format="png") for name, data in found}


# ----------------------------------------------------------------------------- report and figures


@pytest.mark.parametrize("dims", [2, 3])
def test_train_writes_a_complete_report(runs, dims):
    page = open(os.path.join(runs[dims], "report.html"), encoding="utf-8").read()
    images = _pngs(page)
    assert sorted(images) == sorted(REPORT_FIGURES)  # every figure referenced, each once
    for name, img in images.items():
        assert img.shape[0] > 100 and img.shape[1] > 100 and img[..., :3].std() > 0.02, name  # not blank
    assert "not available" not in page  # no section failed
    assert "http://" not in page and "https://" not in page  # opens offline
    rates = [float(v) for v in re.findall(r"<td>([01]\.\d{3})</td>", page.split("id='hit-rate'")[1])]
    assert rates and all(0 <= r <= 1 for r in rates)
    assert "No published MedMNIST numbers" in page and "ECE" in page


def test_visualize_command_writes_every_figure(runs, tmp_path):
    model = os.path.join(runs[2], "best_model.pth")
    assert main(["visualize", "--model_path", model, "--out", str(tmp_path), "--n", "4", "--pool", "16", "--device", "cpu"]) == 0
    names = {"fixations", "pathways", "gates_per_class", "receptive_fields", "gradcam"}
    assert {f[:-4] for f in os.listdir(tmp_path) if f.endswith(".png")} == names
    for name in names:
        assert imread(str(tmp_path / f"{name}.png"))[..., :3].std() > 0.02, name
    result = json.load(open(tmp_path / "hit_rate.json"))
    assert 0 <= result["hit_rate"] <= 1 and len(result["per_step"]) == 2


def test_report_and_hit_rate_commands(runs, tmp_path, capsys):
    out = tmp_path / "again.html"
    assert main(["report", runs[2], "--out", str(out), "--n", "2", "--device", "cpu"]) == 0
    assert sorted(_pngs(out.read_text())) == sorted(REPORT_FIGURES)
    assert main(["hit-rate", "--checkpoint", runs[3], "--device", "cpu", "--output", str(tmp_path / "h.json")]) == 0
    assert "fixation hit rate" in capsys.readouterr().out
    result = json.load(open(tmp_path / "h.json"))
    assert result["n"] == SPLITS[3][2] and 0 <= result["hit_rate"] <= 1
    # refused in one line before any work: no images, or an output that cannot be written
    for args, says in (
        (["report", runs[2], "--n", "0"], "--n >= 1"),
        (["hit-rate", "--checkpoint", runs[3], "--n", "-1"], "--n must be >= 1"),
        (["report", runs[2], "--out", str(tmp_path / "nowhere" / "r.html")], "does not exist"),
        (["hit-rate", "--checkpoint", runs[3], "--output", str(tmp_path / "nowhere" / "h.json")], "does not exist"),
    ):
        assert main([*args, "--device", "cpu"]) == 2, args
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert says in line, line


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without a GPU")
def test_report_on_a_missing_gpu_is_an_error(runs, tmp_path, capsys):
    out = tmp_path / "cuda.html"
    assert main(["report", runs[2], "--out", str(out), "--device", "cuda"]) == 2  # was exit 0, sections "not available"
    assert "no CUDA GPU" in capsys.readouterr().err and not out.exists()


def test_commands_keep_the_runs_no_download(runs, tmp_path, monkeypatch):
    """evaluate, report and visualize read a --no-download run's data without downloading (they
    loaded it with downloads on)."""
    import focusnet.data.dataset as dataset

    run = shutil.copytree(runs[2], tmp_path / "run")
    config = json.load(open(run / "config.json"))
    config["train"]["download"] = False
    (run / "config.json").write_text(json.dumps(config))
    asked, load = [], dataset.load_dataset
    monkeypatch.setattr(dataset, "load_dataset", lambda *a, **k: asked.append(k.get("download")) or load(*a, **k))
    for args in (["evaluate", "--checkpoint", str(run)], ["report", str(run), "--n", "2", "--out", str(tmp_path / "r.html")], ["visualize", "--model-path", str(run), "--n", "2", "--pool", "8", "--out", str(tmp_path / "viz")]):
        assert main([*args, "--device", "cpu"]) == 0, args
    assert asked == [False, False, False]


def _support_middle(out: torch.Tensor, inp: torch.Tensor, cell: int) -> list[float]:
    """Middle of the input region that the centre-row cell `cell` of `out` depends on (2D)."""
    (grad,) = torch.autograd.grad(out[:, :, cell, cell].sum(), inp, retain_graph=True)
    where = grad.abs().sum(dim=(0, 1)).nonzero().float()
    return ((where.min(0).values + where.max(0).values) / 2).tolist()


def test_gradcam_places_map_cells_where_their_receptive_fields_are():
    torch.manual_seed(0)
    model = FocusNet(FocusNetConfig(spatial_dims=2, in_channels=1, num_classes=3, **TINY)).eval()
    glimpse = model.glimpse_at(torch.rand(2, 1, 28, 28), torch.zeros(2, 2), torch.ones(2), 0).detach().requires_grad_(True)
    streams = {}
    for p in model.encoder.pathways:
        model.encoder.streams[p].register_forward_hook(lambda module, i, out, p=p: streams.setdefault(p, out))
    model.encoder.pathway_maps(glimpse)
    for p, out in streams.items():  # before the cross-normalisation, which mixes positions
        stride, offset = map_geometry(model, p)
        assert _support_middle(out, glimpse, 7) == [stride * 7 + offset] * 2, p
    fused = torch.rand(2, TINY["feature_channels"], 14, 14, requires_grad=True)
    assert _support_middle(model.trunk(fused), fused, 3) == [6.0, 6.0]  # trunk cell i on fused cell 2i
    cam = torch.zeros(1, 1, 14, 14)
    cam[0, 0, 5, 9] = 1
    peak = to_image(cam, 2, 0.0, (28, 28), 28)[0, 0]
    assert divmod(int(peak.argmax()), 28) == (10, 18) and peak.max() == 1  # cell (5, 9) on pixel (10, 18), not (10.5, 18.5)


def test_visualize_refuses_another_dataset(runs, capsys):
    assert main(["visualize", "--model-path", os.path.join(runs[2], "best_model.pth"), "--dataset", "pathmnist"]) == 2
    assert "was trained on viz-lesion2d" in capsys.readouterr().err


def test_report_failure_is_one_warning_line(tmp_path, capsys):
    assert write_report_or_warn(str(tmp_path / "missing")) is None
    err = capsys.readouterr().err
    assert err.startswith("warning: report.html not written") and err.count("\n") == 1


# ----------------------------------------------------------------------------- headless browser


def _browser() -> str | None:
    return next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable") if shutil.which(b)), None)


def test_report_renders_in_headless_chromium(runs, tmp_path):
    browser = _browser()
    if browser is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but no chromium/google-chrome found; .ci/run installs chromium")
        pytest.skip("no headless browser (chromium, chromium-browser, google-chrome) installed")
    shot = tmp_path / "shot.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2400", f"--screenshot={shot}", "file://" + os.path.join(runs[2], "report.html")]
    subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert shot.is_file(), "chromium wrote no screenshot"
    img = imread(str(shot))[..., :3]
    ink = (img.mean(axis=2) < 0.9).mean()  # share of pixels that are not (near) white
    assert img.std() > 0.05 and ink > 0.05, f"blank screenshot (std {img.std():.3f}, ink {ink:.3f})"


# ----------------------------------------------------------------------------- hand-computed values


def test_fixation_hits_hand_computed():
    box = [-0.5, -0.5, 0.0, 0.0]  # x in [-0.5, 0], y in [-0.5, 0]
    fixations = np.array(
        [
            [[-0.2, -0.2], [0.5, 0.5], [-0.25, -0.1]],  # glance inside (never counts), miss, hit
            [[0.0, 0.0], [0.0, 0.0], [0.9, 0.9]],  # hit on the corner (edges count), miss
            [[0.0, 0.0], [0.8, -0.9], [-0.6, -0.2]],  # miss, miss (x just outside)
        ]
    )
    hits = fixation_hits(fixations, np.array([box] * 3, dtype=np.float32))
    assert hits.tolist() == [[False, True], [True, False], [False, False]]
    r = hit_rate(fixations, np.array([box] * 3), n_random=4000)
    assert r["hit_rate"] == pytest.approx(2 / 3) and r["per_step"] == pytest.approx([1 / 3, 1 / 3])
    assert r["n"] == 3 and r["saccades"] == 2
    # Random fixations: the box holds 1/16 of the image, so 1 - (15/16)^2 of images get a hit.
    assert r["random_hit_rate"] == pytest.approx(1 - (15 / 16) ** 2, abs=0.01)


def test_fixation_hits_multi_label_ignores_absent_lesions():
    lesions = np.array([[[np.nan] * 4, [0.5, 0.5, 1.0, 1.0]]], dtype=np.float32)  # (1 image, 2 labels, 4)
    fixations = np.array([[[0, 0], [0.0, 0.0], [0.7, 0.6]]])
    assert fixation_hits(fixations, lesions).tolist() == [[False, True]]
    whole = np.array([[-1.0, -1.0, 1.0, 1.0]])
    assert hit_rate(fixations, whole)["random_hit_rate"] == 1.0


def test_radial_spectrum_of_constant_and_stripes():
    flat = np.ones((2, 8, 8))
    _, power, centroid, high = radial_spectrum(flat)
    assert centroid == 0 and high == 0 and power[0] == pytest.approx(1)
    stripes = np.broadcast_to((-1.0) ** np.arange(8), (3, 8, 8))  # along x: 0.5 cycles/sample
    freqs, power, centroid, high = radial_spectrum(stripes)
    assert centroid == pytest.approx(0.5) and high == pytest.approx(1) and freqs[power.argmax()] == pytest.approx(0.5)


@pytest.mark.parametrize(
    "m,p,start",
    [((0.1, 0.2), (0.3, 0.6), "As designed"), ((0.4, 0.7), (0.3, 0.6), "Not as designed"), ((0.1, 0.7), (0.3, 0.6), "Mixed")],
)
def test_receptive_field_verdict(m, p, start):
    def stats(name, centroid, high):
        return FieldStats(name, "glimpse", np.ones((4, 4)), np.zeros(1), np.ones(1), centroid, high)

    line = verdict([stats("M (magno)", *m), stats("P (parvo)", *p)])
    assert line.startswith(start) and "\n" not in line
    assert verdict([stats("P (parvo)", *p)]).startswith("M/P comparison not possible")


def test_pathway_maps_are_what_the_gate_mixes():
    block = MPKBlock(3, 16, spatial_dims=2, num_scales=2, width=8).eval()
    glimpse = torch.randn(2, 6, 8, 8)
    fused, gates = block.forward_with_gates(glimpse)
    maps = block.pathway_maps(glimpse)
    assert list(maps) == ["m", "p", "k"] and all(m.shape == (2, 16, 4, 4) for m in maps.values())
    mixed = sum(gates[:, i, None, None, None] * m for i, m in enumerate(maps.values())) * 3
    torch.testing.assert_close(fused, mixed)


@pytest.mark.parametrize("options,side", [({}, 28), ({"fovea_scaling": "pixels"}, 64)])
def test_figures_show_the_glimpses_the_model_took(options, side):
    """The pathway and receptive-field figures re-take each step's glimpse: the glance through the
    glance sensor (28 samples, not the 16 of a fixation), fixations at this image size's fovea."""
    from focusnet.models import EnhancedFocusNet2D
    from focusnet.viz.pathways import glimpse_at

    torch.manual_seed(0)
    model = EnhancedFocusNet2D(1, 3, width=8, feature_channels=16, hidden_size=32, **options).eval()
    taken, encode = [], model._encode
    model._encode = lambda glimpse, view: (taken.append(glimpse), encode(glimpse, view))[1]
    x = torch.randn(2, 1, side, side)
    with torch.no_grad():
        trace = model.forward_trace(x)
        for step, glimpse in enumerate(taken):
            torch.testing.assert_close(glimpse_at(model, x, trace.fixations, trace.half_widths, step), glimpse, rtol=0, atol=0)
    assert taken[0].shape[-1] == 28 and taken[1].shape[-1] == 16


def test_official_numbers_quoted_with_source():
    rows = official_numbers("pathmnist_64")
    first = rows[0]
    assert (first.method, first.acc, first.auc, first.source) == ("ResNet-18 (28)", 0.907, 0.983, MEDMNIST_V2)
    plus = rows[-1]
    assert plus.source == MEDMNIST_PLUS and (plus.acc, plus.auc) == pytest.approx((0.8893, 0.9857))
    three_d = official_numbers("nodulemnist3d")
    assert len(three_d) == 8 and three_d[2].method == "ResNet-18+ACS" and (three_d[2].acc, three_d[2].auc) == (0.847, 0.873)
    assert official_numbers("synth-lesion") == []


def test_gate_means_per_class_group_multi_label_images_without_a_label():
    """A ChestMNIST-like pool where no image carries a finding crashed visualize (np.stack of nothing)."""
    from types import SimpleNamespace

    from focusnet.tasks import MULTI_CLASS, MULTI_LABEL
    from focusnet.viz.common import Looked
    from focusnet.viz.pathways import mean_gates_per_class

    gates = np.arange(4 * 3 * 2, dtype=np.float32).reshape(4, 3, 2)  # (N, T+1, P)
    looked = Looked(index=np.arange(4), x=torch.zeros(4, 1, 8, 8), images=np.zeros((4, 1, 8, 8), np.float32), labels=np.array([[0, 0], [0, 0], [0, 0], [1, 0]]),
                    probs=np.full((4, 2), 0.5), correct=np.ones(4, bool), gates=gates)
    run = SimpleNamespace(task=MULTI_LABEL, class_name=lambda c, width: f"label{c}")
    names, means = mean_gates_per_class(run, looked)
    assert names == ["label0", "(no label)"] and np.allclose(means, [gates[3], gates[:3].mean(0)])
    run.task, looked.labels = MULTI_CLASS, np.array([[1], [1], [0], [1]])
    names, means = mean_gates_per_class(run, looked)
    assert names == ["label0", "label1"] and np.allclose(means[1], gates[[0, 1, 3]].mean(0))
