"""FocusNet core: shapes, gradients, batch independence, determinism, traces, learning."""

import math

import numpy as np

import pytest
import torch
import torch.nn.functional as F

from focusnet import (
    AdvancedMPKBlock2D,
    AdvancedMPKBlock3D,
    CrossNormalization,
    EnhancedFocusNet2D,
    EnhancedFocusNet3D,
    FocusNetConfig,
    PredictiveCodingGRU,
)
from focusnet.data.synthetic import striped_patch_task
from focusnet.models.glimpse import GlimpseSensor, ImagePyramid
from focusnet.models.layers import InputError

CASES_2D = [(1, 28), (3, 28), (1, 64), (3, 128), (1, 224)]
CASES_3D = [(1, 28), (3, 28), (1, 64)]


@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("channels,size", CASES_2D)
def test_forward_shapes_2d(batch, channels, size):
    model = EnhancedFocusNet2D(in_channels=channels, num_classes=7, num_saccades=2).eval()
    x = torch.randn(batch, channels, size, size)
    assert model(x).shape == (batch, 7)
    trace = model.forward_trace(x)
    assert trace.step_logits.shape == (batch, 3, 7)
    assert trace.fixations.shape == (batch, 3, 2)
    assert trace.boxes.shape == (batch, 3, 2, 4)
    assert trace.gates.shape == (batch, 3, 3)
    assert trace.prediction_errors.shape == (batch, 3)


@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("channels,size", CASES_3D)
def test_forward_shapes_3d(batch, channels, size):
    model = EnhancedFocusNet3D(in_channels=channels, num_classes=2, num_saccades=2).eval()
    x = torch.randn(batch, channels, size, size, size)
    assert model(x).shape == (batch, 2)
    trace = model.forward_trace(x)
    assert trace.fixations.shape == (batch, 3, 3)
    assert trace.boxes.shape == (batch, 3, 2, 6)


def test_non_square_input_and_glance_only():
    model = EnhancedFocusNet2D(1, 3, num_saccades=0).eval()
    trace = model.forward_trace(torch.randn(2, 1, 28, 40))
    assert trace.logits.shape == (2, 3) and trace.step_logits.shape == (2, 1, 3)
    assert torch.equal(trace.fixations, torch.zeros(2, 1, 2))  # the glance is centred


@pytest.mark.parametrize("model_cls,shape", [(EnhancedFocusNet2D, (4, 3, 32, 32)), (EnhancedFocusNet3D, (3, 1, 20, 20, 20))])
def test_every_parameter_gets_a_gradient(model_cls, shape):
    model = model_cls(in_channels=shape[1], num_classes=3, num_saccades=2)
    x = torch.randn(*shape)
    trace = model.forward_trace(x)
    loss = F.cross_entropy(trace.logits, torch.tensor([0, 1, 2, 0][: shape[0]])) + trace.prediction_loss
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []
    assert model.policy[-1].weight.grad.abs().sum() > 0  # the fixation policy learns through the sampler


@pytest.mark.parametrize(
    "options",
    [{"num_saccades": 0}, {"num_saccades": 1}, {"num_saccades": 4}, {"pathways": "m"}, {"suppression": False}, {"predictive_coding": False}, {"readout": "gated"}, {"saliency": 2.0}, {"learn_scale": False}],
)
def test_every_parameter_takes_part_in_the_graph(options):
    """DDP (torchrun) stops at the second step if a parameter gets no gradient: glance-only models
    held an unused suppression_strength, one-saccade models an unused inhibition."""
    model = EnhancedFocusNet2D(1, 3, width=8, feature_channels=16, hidden_size=32, **options)
    trace = model.forward_trace(torch.randn(2, 1, 28, 28))
    (F.cross_entropy(trace.logits, torch.tensor([0, 2])) + trace.prediction_loss).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_glance_only_checkpoints_with_the_old_unused_parameter_still_load():
    model = EnhancedFocusNet2D(1, 3, num_saccades=0)
    old = {**model.state_dict(), "suppression_strength": torch.tensor(-1.5)}
    model.load_state_dict(old)  # strict: only that one key is forgiven
    with pytest.raises(RuntimeError, match="inhibition"):
        model.load_state_dict({**old, "inhibition": torch.tensor(2.0)})
    unsuppressed = EnhancedFocusNet2D(1, 3, suppression=False)  # saccades without suppression: still strict
    with pytest.raises(RuntimeError, match="suppression_strength"):
        unsuppressed.load_state_dict({**unsuppressed.state_dict(), "suppression_strength": torch.tensor(-1.5)})


@pytest.mark.parametrize("sides", [(300, 300), (28, 224), (20, 36, 44)])
def test_glance_reads_every_level_where_the_image_is(sides):
    """A ramp (value = pixel column) read by a glance through a coarse level gives back the column
    of each sample: odd-sided levels (300, 150, 75, 38: the last pixel pools past the edge) were
    read up to ~3 px off, and non-square images took the short side's level for every axis."""
    d = len(sides)
    ramp = torch.arange(sides[-1], dtype=torch.float64).expand(1, 1, *sides).contiguous()
    sensor = GlimpseSensor(spatial_dims=d, glimpse_size=12, num_scales=1).double()
    pyramid = ImagePyramid(ramp)
    glance = sensor(pyramid, torch.zeros(1, d, dtype=torch.float64), torch.ones(1, dtype=torch.float64), 1.0)[0, 0]
    index = pyramid.level_for(1.0, 12)
    assert index == tuple(int(math.log2(n / 12)) for n in sides)  # per axis: the pitch of that axis
    expected = (torch.arange(12, dtype=torch.float64) + 0.5) * sides[-1] / 12 - 0.5  # pixel column of each sample
    inner = slice(1, -1)  # the edge samples read the zero padding beyond the image
    torch.testing.assert_close(glance[..., inner], expected[inner].expand_as(glance[..., inner]), rtol=0, atol=1e-4)


def test_glimpse_sampler_is_differentiable_in_location():
    image = torch.zeros(1, 1, 16, 16)
    image[..., 4:8, 10:14] = 1.0
    sensor = GlimpseSensor(spatial_dims=2, glimpse_size=8, num_scales=1)
    center = torch.zeros(1, 2, requires_grad=True)
    sensor(ImagePyramid(image), center, torch.full((1,), 0.5), 0.5).sum().backward()
    assert center.grad[0, 0] > 0  # moving right (x) brings more of the bright square into view
    assert center.grad[0, 1] < 0  # it lies above the centre (smaller y)


def test_eval_output_independent_of_batch():
    for model, x in [
        (EnhancedFocusNet2D(3, 4, 2), torch.randn(6, 3, 28, 28)),
        (EnhancedFocusNet3D(1, 2, 2), torch.randn(4, 1, 16, 16, 16)),
    ]:
        model.eval()
        with torch.no_grad():
            together = model(x)
            alone = torch.cat([model(x[i : i + 1]) for i in range(len(x))])
        torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


def test_same_seed_same_output_and_fixations_inside_image():
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = EnhancedFocusNet2D(1, 3, num_saccades=4).eval()
        with torch.no_grad():
            outs.append(model.forward_trace(torch.randn(3, 1, 64, 64, generator=torch.Generator().manual_seed(1))))
    assert torch.equal(outs[0].logits, outs[1].logits)
    assert torch.equal(outs[0].fixations, outs[1].fixations)
    assert outs[0].fixations.abs().max() < 1
    assert (outs[0].half_widths > 0).all()


def test_early_exit_matches_full_run_and_saves_steps():
    torch.manual_seed(0)
    model = EnhancedFocusNet2D(1, 3, num_saccades=3).eval()
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        full = model.forward_trace(x)
    logits, steps = model.forward_early_exit(x, threshold=1.1)  # never confident: every step
    torch.testing.assert_close(logits, full.logits, rtol=1e-4, atol=1e-5)
    assert (steps == 4).all()
    logits, steps = model.forward_early_exit(x, threshold=0.0)  # always confident: glance only
    torch.testing.assert_close(logits, full.step_logits[:, 0], rtol=1e-4, atol=1e-5)
    assert (steps == 1).all()
    with pytest.raises(InputError, match=r"for inference: call model.eval\(\) first"):
        model.train().forward_early_exit(x, threshold=0.5)


def test_early_exit_under_bf16_autocast():
    """Under autocast (on by default on CUDA) each step's logits are bf16; writing them into the
    float32 result failed with 'Index put requires the source and destination dtypes match'."""
    torch.manual_seed(0)
    model = EnhancedFocusNet2D(1, 3, num_saccades=2, width=8, feature_channels=16, hidden_size=32).eval()
    x = torch.randn(4, 1, 28, 28)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, steps = model.forward_early_exit(x, threshold=1.1)
        reference = model.forward_trace(x).logits
    assert logits.dtype == torch.float32 and (steps == 3).all()
    torch.testing.assert_close(logits, reference.float(), rtol=0, atol=0)


def test_fovea_in_pixels_keeps_its_pixel_footprint_on_larger_images():
    torch.manual_seed(0)
    for size, expected in ((28, 0.5), (64, 0.5 * 28 / 64), (128, 0.5 * 28 / 128)):
        image_scaled = EnhancedFocusNet2D(1, 2, learn_scale=False).eval()
        pixel_scaled = EnhancedFocusNet2D(1, 2, learn_scale=False, fovea_scaling="pixels").eval()
        x = torch.randn(2, 1, size, size)
        with torch.no_grad():
            assert torch.allclose(image_scaled.forward_trace(x).half_widths[:, 1:], torch.tensor(0.5))
            assert torch.allclose(pixel_scaled.forward_trace(x).half_widths[:, 1:], torch.tensor(expected))
    with pytest.raises(ValueError, match="fovea_scaling"):
        EnhancedFocusNet2D(1, 2, fovea_scaling="mm")
    with pytest.raises(ValueError, match="hidden_size must be >= 1"):  # trained into a non-finite loss before
        EnhancedFocusNet2D(1, 2, hidden_size=0)


def test_bottom_up_saliency_peaks_where_something_differs_from_its_surround():
    from focusnet.models.focusnet import bottom_up_saliency

    for dims in (2, 3):
        # a blob at samples 20..23 along x (the last tensor dim: cell 5) and 8..11 along y (and z): cell 2
        glance = torch.zeros((2, 1) + (28,) * dims)
        glance[(0, 0) + (slice(8, 12),) * (dims - 1) + (slice(20, 24),)] = 1.0
        saliency, peaks = bottom_up_saliency(glance, 7)
        assert saliency.shape == (2, 7**dims) and peaks.shape == (2, 7**dims, dims)
        cell = 5 + sum(2 * 7**k for k in range(1, dims))  # row-major over (z,) y, x
        assert int(saliency[0].argmax()) == cell
        # its edges carry the contrast energy, symmetric about the blob centre ((i + 0.5) / 28 * 2 - 1
        # at i = 21.5 along x, 9.5 along y and z); peaks are ordered (x, y[, z]) like fixations
        expected = torch.tensor([22 / 28 * 2 - 1] + [10 / 28 * 2 - 1] * (dims - 1))
        torch.testing.assert_close(peaks[0, cell], expected, atol=0.02, rtol=0)
        assert torch.isfinite(saliency[1]).all() and torch.isfinite(peaks[1]).all()  # a flat glance: no NaN


def test_inhibition_of_return_never_raises_a_visited_place():
    """Standardised saliency is negative in dull cells: visiting one must not lift it toward 0.
    Inhibition is measured where saccades land (the in-cell peaks), not at the cell centres."""
    model = EnhancedFocusNet2D(1, 2, saliency=2.0).eval()
    h, keys = torch.zeros(1, model.config.hidden_size), torch.zeros(1, 4, model.saliency_keys.out_channels)
    saliency = torch.tensor([[-1.5, 0.5, 0.5, 0.5]])
    landing = torch.tensor([[[-0.9, -0.1], [0.5, -0.5], [-0.5, 0.5], [0.5, 0.5]]])  # cell 0's peak far from its centre
    with torch.no_grad():
        before = model._saccade_scores(h, keys, saliency, landing, torch.zeros(1, 0, 2), 0.1)
        after = model._saccade_scores(h, keys, saliency, landing, landing[:, :1], 0.1)
    inhibition = torch.nn.functional.softplus(model.inhibition).item()
    assert (after <= before + 1e-6).all()
    assert after[0, 0] < before[0, 0] - 0.5 * inhibition and after[0, 0] < after[0, 1:].min()
    # through _fixate: a saliency peak far from its cell's centre, once visited, stops drawing the saccade
    saliency = torch.tensor([[1.5, -0.5, -0.5, -0.5]])
    with torch.no_grad():
        first, _ = model._fixate(h, keys, saliency, landing, torch.zeros(1, 0, 2), 0.1)
        second, _ = model._fixate(h, keys, saliency, landing, landing[:, :1], 0.1)
    assert (second - landing[:, 0]).norm() > (first - landing[:, 0]).norm() + 0.3


def test_saliency_sends_an_untrained_model_to_the_patch_then_elsewhere():
    """Parameter-free saliency: before any training the first saccade lands on the patch, and
    inhibition of return moves the second one on."""
    from focusnet.viz import hit_rate

    torch.manual_seed(0)
    model = EnhancedFocusNet2D(1, 2, saliency=2.0).eval()
    x, _, boxes = striped_patch_task(200, 28, seed=5)
    with torch.no_grad():
        fixations = model.forward_trace(x).fixations
    result = hit_rate(fixations.numpy(), boxes)
    assert result["per_step"][0] > 0.9 and result["per_step"][1] < 0.3, result
    assert (fixations[:, 2] - fixations[:, 1]).norm(dim=1).mean() > 0.2


@pytest.mark.parametrize("options", [dict(saliency=2.0), dict(readout="gated")])  # state carried to later steps: saliency maps, the glance's state
def test_early_exit_read_off_the_trace_equals_the_real_early_exit(options):
    from focusnet.engine.early_exit import exit_at

    torch.manual_seed(0)
    model = EnhancedFocusNet2D(1, 3, num_saccades=3, **options).eval()
    if hasattr(model, "readout_gate"):
        model.readout_gate.data.fill_(0.7)  # at its start (0) every step would give the glance's logits
    x = torch.randn(16, 1, 28, 28)
    with torch.no_grad():
        step_logits, mixed = model.forward_trace(x).step_logits, False
        for threshold in (0.34, 0.36, 0.38, 0.5):
            expected, expected_steps = model.forward_early_exit(x, threshold)
            logits, steps = exit_at(step_logits, threshold, multi_label=False)
            torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)
            assert torch.equal(steps, expected_steps)
            mixed = mixed or 1 < float(expected_steps.float().mean()) < 4
    assert mixed  # at some threshold some images stop early and the rest look on: the carried state is used


def test_calibrated_threshold_is_the_lowest_that_keeps_validation_accuracy():
    from focusnet.engine.early_exit import calibrate_threshold

    # 4 images, 2 steps, 2 classes; all labels 0. The last step is right on every image.
    # Glance confidences in class 0: 0.6 (right), 0.3 (wrong: 0.7 sure of class 1), 0.95, 0.55.
    glance = torch.tensor([0.6, 0.3, 0.95, 0.55])
    last = torch.tensor([0.9, 0.9, 0.9, 0.9])
    to_logits = lambda p: torch.stack([p.log(), (1 - p).log()], dim=1)
    step_logits = torch.stack([to_logits(glance), to_logits(last)], dim=1)
    labels = np.zeros((4, 1), dtype=np.int64)
    result = calibrate_threshold(step_logits, labels, "multi-class", tolerance=0.005)
    assert result["acc_all"] == 1.0 and result["acc"] == 1.0
    assert result["threshold"] == 0.71  # just above image 2's wrong 0.7: it must keep looking
    assert result["mean_steps"] == 1.75  # only image 3 (0.95) stops at the glance


def test_input_errors_are_clear():
    model = EnhancedFocusNet2D(1, 2)
    with pytest.raises(ValueError, match=r"1 channel\(s\)"):
        model(torch.randn(2, 3, 28, 28))
    with pytest.raises(ValueError, match="2D batch"):
        model(torch.randn(2, 28, 28))
    with pytest.raises(ValueError, match="floating-point"):
        model(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match="unknown FocusNet option"):
        FocusNetConfig.from_dict({"saccades": 3})
    with pytest.raises(ValueError, match="multiple of 4"):
        EnhancedFocusNet2D(1, 2, glimpse_size=10)


def test_public_building_blocks():
    block2d, block3d = AdvancedMPKBlock2D(3, 16, num_scales=2), AdvancedMPKBlock3D(1, 8)
    out, gates = block2d.forward_with_gates(torch.randn(2, 6, 16, 16))
    assert out.shape == (2, 16, 8, 8)
    torch.testing.assert_close(gates.sum(1), torch.ones(2))
    assert block3d(torch.randn(2, 1, 8, 8, 8)).shape == (2, 8, 4, 4, 4)
    streams = [torch.ones(2, 4, 3, 3), 3 * torch.ones(2, 4, 3, 3)]
    norm = CrossNormalization(2, init_coupling=0.5)
    normed = norm(streams)
    # energies 1 and 9: each stream divided by sqrt(1 + 0.5 * (1 + 9)) = sqrt(6)
    torch.testing.assert_close(normed[0], streams[0] / 6**0.5)
    gru = PredictiveCodingGRU(feature_size=8, hidden_size=12, location_size=4)
    state, error = gru(gru.init_state(3), torch.randn(3, 8), torch.randn(3, 4))
    assert state.shape == (3, 12) and error.shape == (3, 8)


def test_single_pathway_and_ablation_switches():
    for options in [dict(pathways="p"), dict(predictive_coding=False), dict(suppression=False), dict(learn_scale=False)]:
        model = EnhancedFocusNet2D(1, 2, 2, **options)
        trace = model.forward_trace(torch.randn(2, 1, 28, 28))
        assert trace.logits.shape == (2, 2)
    assert EnhancedFocusNet2D(1, 2, 2, pathways="p").forward_trace(torch.randn(2, 1, 28, 28)).gates.shape == (2, 3, 1)


def test_gated_readout_starts_as_the_glance_and_learns_the_saccades_share():
    torch.manual_seed(0)
    gated = EnhancedFocusNet2D(1, 3, num_saccades=2, readout="gated").eval()
    x = torch.randn(6, 1, 28, 28)
    trace = gated.forward_trace(x)
    for t in (1, 2):  # g = 0: every step reads the glance's state, so the saccades cannot slow learning
        torch.testing.assert_close(trace.step_logits[:, t], trace.step_logits[:, 0])
    F.cross_entropy(trace.logits, torch.tensor([0, 1, 2, 0, 1, 2])).backward()
    assert gated.readout_gate.grad.abs() > 0  # the share the saccades get is learned
    mean = EnhancedFocusNet2D(1, 3, num_saccades=2).eval()
    assert mean.load_state_dict(gated.state_dict(), strict=False).unexpected_keys == ["readout_gate"]
    with torch.no_grad():
        gated.readout_gate.fill_(1.0)  # g = 1: exactly the mean readout
        torch.testing.assert_close(gated(x), mean(x))
    assert not hasattr(EnhancedFocusNet2D(1, 3, num_saccades=0, readout="gated"), "readout_gate")  # nothing to gate
    with pytest.raises(ValueError, match="readout must be one of"):
        FocusNetConfig(readout="last")


@pytest.fixture(scope="module")
def patch_model():
    """FocusNet trained for 2 epochs on the patch task (~40 s on 2 cores), and its test split."""
    torch.manual_seed(0)
    x, y, _ = striped_patch_task(2000, 28, seed=1)
    model = EnhancedFocusNet2D(1, 2, num_saccades=2)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(2):
        model.train()
        for idx in torch.randperm(len(x)).split(50):
            trace = model.forward_trace(x[idx])
            loss = F.cross_entropy(trace.logits, y[idx]) + 0.1 * trace.prediction_loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval(), striped_patch_task(500, 28, seed=2)


def test_learns_a_patch_at_a_random_position(patch_model):
    """A real learning check: the class is decided only by a small patch placed anywhere."""
    model, (x_test, y_test, _) = patch_model
    with torch.no_grad():
        acc = (model(x_test).argmax(1) == y_test).float().mean().item()
    assert acc > 0.9, f"accuracy {acc:.3f} on a 2-class task (chance 0.5)"


def test_trained_saccades_land_on_the_patch_far_more_often_than_random(patch_model):
    """Nothing tells the policy where the patch is: only the class loss trains it."""
    from focusnet.viz import hit_rate

    model, (x_test, _, boxes) = patch_model
    with torch.no_grad():
        result = hit_rate(model.forward_trace(x_test).fixations.numpy(), boxes)
    assert result["random_hit_rate"] < 0.15  # a 6-px patch in a 28-px image, 2 saccades
    assert result["hit_rate"] > 3 * result["random_hit_rate"], result
    assert max(result["per_step"]) > 3 * max(result["random_per_step"]), result


def test_compute_is_a_tenth_of_resnet18_and_flat_in_image_size():
    from focusnet.flops import count_flops
    from focusnet.models.resnet import resnet18

    model = EnhancedFocusNet2D(1, 2, num_saccades=2)
    at_28, at_224 = count_flops(model, (1, 1, 28, 28)), count_flops(model, (1, 1, 224, 224))
    assert at_28 * 10 <= count_flops(resnet18(1, 2), (1, 1, 28, 28))
    assert at_224 < 1.05 * at_28  # only the box-filter pyramid grows with the pixel count
