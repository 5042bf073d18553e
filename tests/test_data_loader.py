"""TensorLoader (shapes, normalisation, determinism, sharding) and Augment."""

import math

import pytest
import torch
from torch.utils.data import DistributedSampler

from focusnet.data import Augment, SplitArrays, TensorLoader
from focusnet.data.loader import order_seed
from focusnet.errors import FocusNetError


def make_split(n=10, dims=2, channels=1, labels=1, size=8) -> SplitArrays:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, channels) + (size,) * dims, generator=g, dtype=torch.uint8)
    # label column 0 = sample index, so batches can be traced back
    y = torch.arange(n).unsqueeze(1).repeat(1, labels)
    return SplitArrays(images, y)


def collect(loader):
    return [b for b in loader]


@pytest.mark.parametrize("dims,channels,labels", [(2, 1, 1), (2, 3, 4), (3, 1, 1)])
def test_shapes_dtypes_and_normalisation(dims, channels, labels):
    split = make_split(10, dims, channels, labels)
    loader = TensorLoader(split, batch_size=4, shuffle=False, mean=0.2, std=0.3)
    batches = collect(loader)
    assert len(batches) == len(loader) == 3
    x, y, idx = batches[0]
    assert x.dtype == torch.float32 and x.shape == (4, channels) + (8,) * dims
    assert y.dtype == torch.int64 and y.shape == (4, labels)
    assert idx.dtype == torch.int64 and idx.tolist() == [0, 1, 2, 3]
    expected = (split.images[:4].float() / 255 - 0.2) / 0.3
    torch.testing.assert_close(x, expected, rtol=0, atol=1e-5)
    assert batches[-1][0].shape[0] == 2  # last partial batch kept


def test_official_protocol_range():
    split = SplitArrays(torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1), torch.zeros(2, 1, dtype=torch.int64))
    x, _, _ = next(iter(TensorLoader(split, 2, shuffle=False)))
    torch.testing.assert_close(x.flatten(), torch.tensor([-1.0, 1.0]), rtol=0, atol=1e-6)


def test_labels_follow_indices():
    split = make_split(13)
    for x, y, idx in TensorLoader(split, 5, shuffle=True, seed=3):
        assert torch.equal(y[:, 0], idx)
        torch.testing.assert_close(x, split.images[idx].float() / 127.5 - 1, rtol=0, atol=1e-6)


def test_held_batches_are_not_overwritten():
    """The loader reuses float buffers only when the caller no longer holds the batch."""
    split = make_split(40)
    loader = TensorLoader(split, 8, shuffle=False)
    held = [x for x, _, _ in loader]
    views = [x[:, :, :2] for x, _, _ in loader]
    for b, (x, v) in enumerate(zip(held, views)):
        expected = split.images[8 * b : 8 * (b + 1)].float() / 127.5 - 1
        torch.testing.assert_close(x, expected, rtol=0, atol=1e-6)
        torch.testing.assert_close(v, expected[:, :, :2], rtol=0, atol=1e-6)
    assert len({x.data_ptr() for x in held}) == len(held)


def test_drop_last():
    loader = TensorLoader(make_split(10), 4, shuffle=False, drop_last=True)
    assert len(loader) == 2 and [len(b[2]) for b in loader] == [4, 4]


def test_shuffle_deterministic_per_epoch():
    split = make_split(50)
    a, b = TensorLoader(split, 7, shuffle=True, seed=1), TensorLoader(split, 7, shuffle=True, seed=1)
    order = lambda ld: torch.cat([i for _, _, i in ld]).tolist()
    first = order(a)
    assert first == order(b) == order(a)  # same seed and epoch -> same order, repeatable
    assert sorted(first) == list(range(50)) and first != list(range(50))
    a.set_epoch(1)
    assert order(a) != first and sorted(order(a)) == list(range(50))
    b.set_epoch(1)
    assert order(a) == order(b)


def test_seeds_do_not_share_their_epoch_orders():
    """DistributedSampler's seed + epoch would give seed 1 seed 0's orders one epoch late."""
    split = make_split(50)
    orders = {}
    for seed in range(3):
        loader = TensorLoader(split, 50, shuffle=True, seed=seed)
        for epoch in range(4):
            loader.set_epoch(epoch)
            orders[seed, epoch] = torch.cat([i for _, _, i in loader]).tolist()
    assert len({tuple(o) for o in orders.values()}) == len(orders)
    assert orders[0, 3] == torch.randperm(50, generator=torch.Generator().manual_seed(3)).tolist()  # seed 0: as before


@pytest.mark.parametrize("n,world", [(10, 3), (10, 2), (2, 4), (7, 7), (5, 1)])
@pytest.mark.parametrize("shuffle", [False, True])
def test_rank_sharding_matches_distributed_sampler(n, world, shuffle):
    split = make_split(n)
    seen = []
    for rank in range(world):
        loader = TensorLoader(split, 2, shuffle=shuffle, seed=5, rank=rank, world_size=world)
        loader.set_epoch(2)
        sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=shuffle, seed=order_seed(5, 2))  # its seed + epoch, at epoch 0
        idx = torch.cat([i for _, _, i in loader]).tolist()
        assert idx == list(sampler)
        assert len(idx) == math.ceil(n / world) and len(loader) == math.ceil(len(idx) / 2)
        seen += idx
    assert set(seen) == set(range(n)) and len(seen) == math.ceil(n / world) * world


def test_bad_arguments():
    split = make_split(4)
    with pytest.raises(FocusNetError, match="rank"):
        TensorLoader(split, 2, shuffle=False, rank=2, world_size=2)
    with pytest.raises(FocusNetError, match="batch_size"):
        TensorLoader(split, 0, shuffle=False)


def test_loader_with_augment_is_deterministic_and_differs_per_epoch():
    split = make_split(16, size=16)
    aug = Augment(2, max_rotate=10)
    run = lambda ld: torch.cat([x for x, _, _ in ld])
    a = TensorLoader(split, 8, shuffle=True, augment=aug)
    b = TensorLoader(split, 8, shuffle=True, augment=aug)
    xa = run(a)
    assert torch.equal(xa, run(b)) and xa.shape == (16, 1, 16, 16)
    assert xa.min() >= -1 and xa.max() <= 1
    a.set_epoch(1)
    assert not torch.equal(run(a), xa)


# ----------------------------------------------------------------------------- Augment


@pytest.mark.parametrize("dims", [2, 3])
def test_augment_shape_and_determinism(dims):
    x = torch.rand((4, 2) + (12,) * dims)
    aug = Augment(dims, max_rotate=15)
    out1 = aug(x.clone(), torch.Generator().manual_seed(0))
    out2 = aug(x.clone(), torch.Generator().manual_seed(0))
    out3 = aug(x.clone(), torch.Generator().manual_seed(1))
    assert out1.shape == x.shape and out1.dtype == x.dtype
    assert torch.equal(out1, out2) and not torch.equal(out1, out3)
    assert out1.min() >= 0 and out1.max() <= 1


@pytest.mark.parametrize("dims", [2, 3])
def test_flip_only_is_exact(dims):
    x = torch.rand((16, 1) + (6,) * dims)
    aug = Augment(dims, max_shift=0, max_scale=0, brightness=0, contrast=0)
    out = aug(x, torch.Generator().manual_seed(0))
    flips = 0
    for i in range(16):  # each image equals itself flipped along some subset of axes
        matches = [
            axes for axes in _subsets(tuple(range(1, dims + 1)))
            if torch.allclose(out[i], x[i].flip(axes) if axes else x[i], atol=1e-5)
        ]
        assert matches
        flips += bool(matches[0])
    assert 0 < flips < 16


def _subsets(axes):
    return [tuple(a for j, a in enumerate(axes) if m >> j & 1) for m in range(2 ** len(axes))]


def test_identity_when_everything_off():
    x = torch.rand(3, 1, 9, 9)
    aug = Augment(2, flip=False, max_shift=0, max_scale=0, brightness=0, contrast=0)
    assert torch.equal(aug(x.clone()), x)


def test_shift_moves_content():
    x = torch.zeros(1, 1, 20, 20)
    x[0, 0, 10, 10] = 1
    aug = Augment(2, flip=False, max_shift=0.25, max_scale=0, brightness=0, contrast=0)
    theta = aug.sample_affine(1, torch.Generator().manual_seed(0))
    out = aug(x, torch.Generator().manual_seed(0))
    ys, xs = torch.nonzero(out[0, 0] > 0.2, as_tuple=True)
    # output pixel p samples input at p + shift * size / 2: content moves by -shift * size / 2
    assert abs(xs.float().mean() - (10 - theta[0, 0, 2] * 10)) < 1
    assert abs(ys.float().mean() - (10 - theta[0, 1, 2] * 10)) < 1


def test_flip_axes_restricts_flips():
    x = torch.rand(32, 1, 5, 5)
    out = Augment(2, flip_axes=(-1,), max_shift=0, max_scale=0, brightness=0, contrast=0)(x, torch.Generator().manual_seed(0))
    for i in range(32):
        assert torch.allclose(out[i], x[i], atol=1e-5) or torch.allclose(out[i], x[i].flip(-1), atol=1e-5)


def test_augment_errors():
    with pytest.raises(FocusNetError, match="spatial_dims"):
        Augment(4)
    with pytest.raises(FocusNetError, match="expects a"):
        Augment(3)(torch.rand(2, 1, 8, 8))


@pytest.mark.parametrize("layout", ["channel_last_view", "as_rgb_expand"])
def test_loader_handles_strided_image_views(layout):
    """RGB files are (N, H, W, C) on disk and as_rgb expands grey: both are views, not copies."""
    base = torch.randint(0, 256, (10, 8, 8, 3), dtype=torch.uint8)
    images = base.movedim(-1, 1) if layout == "channel_last_view" else base[..., :1].movedim(-1, 1).expand(-1, 3, -1, -1)
    x, _, idx = next(iter(TensorLoader(SplitArrays(images, torch.zeros(10, 1, dtype=torch.int64)), 4, shuffle=True)))
    assert x.shape == (4, 3, 8, 8) and x.is_contiguous()
    torch.testing.assert_close(x, images[idx].float() / 127.5 - 1, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dims", [2, 3])
def test_augment_keeps_left_and_right_when_a_label_names_a_side(dims):
    """OrganMNIST's kidney-left / kidney-right: no flip along the width (left / right) axis; other
    datasets flip every axis."""
    from focusnet.data import get_dataset_info
    from focusnet.data.augment import label_preserving_flip_axes

    organ = get_dataset_info("organmnist3d" if dims == 3 else "organamnist").label_names
    assert label_preserving_flip_axes(organ, dims) == tuple(range(-dims, -1))
    assert label_preserving_flip_axes(get_dataset_info("pneumoniamnist").label_names, dims) == tuple(range(-dims, 0))
    x = torch.zeros((64, 1) + (16,) * dims)
    x[..., :3] = 1  # bright along the left edge
    out = Augment(dims, flip_axes=label_preserving_flip_axes(organ, dims))(x, torch.Generator().manual_seed(0))
    left, right = out[..., :8].flatten(1).sum(1), out[..., 8:].flatten(1).sum(1)
    assert (left > right).all()
    mirrored = Augment(dims)(x, torch.Generator().manual_seed(0))
    assert (mirrored[..., 8:].flatten(1).sum(1) > mirrored[..., :8].flatten(1).sum(1)).any()  # the default flips some
