"""focusnet.tasks: task specs, criteria on loader-format labels, focal loss."""

import math

import pytest
import torch
import torch.nn.functional as F
from medmnist import INFO
from torchvision.ops import sigmoid_focal_loss

from focusnet.errors import FocusNetError
from focusnet.tasks import (
    BINARY,
    MULTI_CLASS,
    MULTI_LABEL,
    ORDINAL,
    FocalLoss,
    TaskSpec,
    make_criterion,
)

LN2 = math.log(2)


@pytest.mark.parametrize(
    "flag, task, k, multi_label, activation, columns",
    [
        ("chestmnist", MULTI_LABEL, 14, True, "sigmoid", 14),
        ("pneumoniamnist", BINARY, 2, False, "softmax", 1),
        ("pathmnist", MULTI_CLASS, 9, False, "softmax", 1),
        ("retinamnist", ORDINAL, 5, False, "softmax", 1),
        ("adrenalmnist3d", BINARY, 2, False, "softmax", 1),
    ],
)
def test_spec_from_medmnist_info(flag, task, k, multi_label, activation, columns):
    spec = TaskSpec.from_info(INFO[flag])
    assert spec == TaskSpec(task, k, multi_label)
    assert (spec.activation, spec.label_columns) == (activation, columns)


def test_spec_rejects_inconsistent_values():
    with pytest.raises(FocusNetError, match="unknown task"):
        TaskSpec.from_task("segmentation", 3)
    with pytest.raises(FocusNetError, match="2 logits"):
        TaskSpec.from_task(BINARY, 1)
    with pytest.raises(FocusNetError, match="contradicts"):
        TaskSpec(MULTI_CLASS, 3, True)


def batch(task: str, b: int = 6, k: int = 4, seed: int = 0):
    """Logits (B, K) and labels (B, L) int64 as the data loader yields them."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, k, generator=g, dtype=torch.float64)
    if task == MULTI_LABEL:
        return logits, torch.randint(0, 2, (b, k), generator=g)
    return logits, torch.randint(0, k, (b, 1), generator=g)


def test_ce_criterion_on_loader_labels():
    logits, labels = batch(MULTI_CLASS)
    crit = make_criterion(MULTI_CLASS, 4)
    torch.testing.assert_close(crit(logits, labels), F.cross_entropy(logits, labels[:, 0]), rtol=0, atol=0)
    torch.testing.assert_close(crit(logits, labels[:, 0]), crit(logits, labels))  # (B,) tolerated
    w = [1.0, 2.0, 0.5, 3.0]
    weighted = make_criterion(ORDINAL, 4, class_weights=w)(logits, labels)
    expected = F.cross_entropy(logits, labels[:, 0], weight=torch.tensor(w, dtype=torch.float64))
    torch.testing.assert_close(weighted, expected)


def test_bce_criterion_for_multi_label():
    logits, labels = batch(MULTI_LABEL)
    crit = make_criterion(MULTI_LABEL, 4)
    torch.testing.assert_close(crit(logits, labels), F.binary_cross_entropy_with_logits(logits, labels.double()))
    w = torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64)
    weighted = make_criterion(MULTI_LABEL, 4, class_weights=w)(logits, labels)
    torch.testing.assert_close(weighted, F.binary_cross_entropy_with_logits(logits, labels.double(), weight=w))


def test_pos_weight_for_multi_label_as_bce_and_focal():
    logits, labels = batch(MULTI_LABEL)
    pw = torch.tensor([1.0, 4.0, 0.5, 9.0], dtype=torch.float64)
    expected = F.binary_cross_entropy_with_logits(logits, labels.double(), pos_weight=pw)
    torch.testing.assert_close(make_criterion(MULTI_LABEL, 4, pos_weight=pw)(logits, labels), expected)
    focal = make_criterion(MULTI_LABEL, 4, loss="focal", focal_gamma=0.0, pos_weight=pw)(logits, labels)
    torch.testing.assert_close(focal, expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(FocusNetError, match="pos_weight is for multi-label"):
        make_criterion(MULTI_CLASS, 4, pos_weight=pw)


def test_criterion_rejects_bad_shapes_and_options():
    logits, labels = batch(MULTI_CLASS)
    with pytest.raises(FocusNetError, match=r"logits must be \(B, 3\)"):
        make_criterion(MULTI_CLASS, 3)(logits, labels)
    with pytest.raises(FocusNetError, match="labels must be"):
        make_criterion(MULTI_LABEL, 4)(logits, labels)
    with pytest.raises(FocusNetError, match="unknown loss"):
        make_criterion(MULTI_CLASS, 4, loss="hinge")
    with pytest.raises(FocusNetError, match="one per class"):
        make_criterion(MULTI_CLASS, 4, class_weights=[1.0, 2.0])


@pytest.mark.parametrize("task", [BINARY, MULTI_CLASS, ORDINAL, MULTI_LABEL])
def test_focal_gamma_zero_equals_ce(task):
    k = 2 if task == BINARY else 4
    logits, labels = batch(task, k=k)
    ce = make_criterion(task, k, loss="ce")(logits, labels)
    focal = make_criterion(task, k, loss="focal", focal_gamma=0.0)(logits, labels)
    torch.testing.assert_close(focal, ce, rtol=0, atol=1e-15)
    # with per-class weights as well
    w = torch.linspace(0.5, 2.0, k)
    ce_w = make_criterion(task, k, loss="ce", class_weights=w)(logits, labels)
    focal_w = make_criterion(task, k, loss="focal", class_weights=w, focal_gamma=0.0)(logits, labels)
    torch.testing.assert_close(focal_w, ce_w, rtol=1e-12, atol=1e-12)


def test_focal_hand_values():
    # two equal logits: p_t = 1/2, CE = ln 2, focal = (1 - 1/2)^2 ln 2
    loss = FocalLoss(gamma=2.0)(torch.zeros(1, 2), torch.tensor([0]))
    assert loss.item() == pytest.approx(0.25 * LN2)
    # multi-label, logit 0, positive target, alpha 0.25 for positives
    loss = FocalLoss(gamma=2.0, alpha=0.25, multi_label=True)(torch.zeros(1, 1), torch.ones(1, 1))
    assert loss.item() == pytest.approx(0.25 * 0.25 * LN2)


def test_focal_matches_torchvision_sigmoid_focal_loss():
    logits, labels = batch(MULTI_LABEL, b=16, seed=3)
    ours = FocalLoss(gamma=2.0, alpha=0.25, multi_label=True)(logits, labels)
    ref = sigmoid_focal_loss(logits, labels.double(), alpha=0.25, gamma=2.0, reduction="mean")
    torch.testing.assert_close(ours, ref)


def test_focal_down_weights_easy_examples_and_has_finite_gradients():
    logits = torch.tensor([[8.0, -8.0], [0.1, 0.0]], requires_grad=True)
    target = torch.tensor([0, 1])
    per_sample_ratio = (FocalLoss(2.0)(logits[:1], target[:1]) / F.cross_entropy(logits[:1], target[:1])).item()
    assert per_sample_ratio < 1e-6  # (1 - p_t)^2 with p_t ~ 1 - 1e-7
    FocalLoss(2.0)(logits, target).backward()
    assert torch.isfinite(logits.grad).all()


def test_focal_rejects_scalar_alpha_for_single_label_and_negative_gamma():
    with pytest.raises(FocusNetError, match="multi-label"):
        FocalLoss(alpha=0.25)
    with pytest.raises(FocusNetError, match="gamma"):
        FocalLoss(gamma=-1.0)


def test_criterion_moves_with_module_to():
    crit = make_criterion(MULTI_CLASS, 3, loss="focal", class_weights=[1.0, 2.0, 3.0]).to(torch.float64)
    assert crit.loss.alpha.dtype == torch.float64
