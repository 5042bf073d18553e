"""Reduced probe: train a model for a few epochs on a subset of synth-lesion, print val ACC per epoch.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/lesion_probe.py --model focusnet --opts '{"glance_size": 16}'
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn

from focusnet.data import TensorLoader, load_dataset
from focusnet.flops import count_flops, count_params
from focusnet.models import FocusNet, FocusNetConfig
from focusnet.tasks import make_criterion


def small_cnn(in_ch: int, classes: int, w: int = 32) -> nn.Module:
    """Plain CNN of FocusNet-like FLOPs: 28 -> 14 -> 7, global max + avg pool."""
    def block(i, o, s=1):
        return nn.Sequential(nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(block(in_ch, w), block(w, w), block(w, 2 * w, 2), block(2 * w, 2 * w), block(2 * w, 4 * w, 2), block(4 * w, 4 * w))
            self.head = nn.Linear(4 * w, classes)
        def forward(self, x):
            return self.head(self.body(x).flatten(2).amax(2))
    return Net()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="focusnet", choices=["focusnet", "cnn"])
    ap.add_argument("--opts", default="{}", help="FocusNetConfig options as JSON")
    ap.add_argument("--dataset", default="synth-lesion")
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--aux", type=float, default=0.1, help="prediction-loss weight (trainer default 0.1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num-threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cnn-width", type=int, default=32)
    a = ap.parse_args()
    torch.set_num_threads(a.num_threads)
    torch.manual_seed(a.seed)
    data = load_dataset(a.dataset, size=28)
    info = data.info
    train = data.splits["train"]
    if a.n_train < len(train):
        train = type(train)(train.images[: a.n_train], train.labels[: a.n_train])
    if a.model == "cnn":
        model = small_cnn(info.n_channels, info.num_classes, a.cnn_width)
    else:
        model = FocusNet(FocusNetConfig.from_dict({**json.loads(a.opts), "in_channels": info.n_channels, "num_classes": info.num_classes, "spatial_dims": 2}))
    flops = count_flops(model.eval(), (1, info.n_channels, 28, 28))
    model = model.to(a.device)
    crit = make_criterion(info.task, info.num_classes)
    opt = torch.optim.Adam(model.parameters(), a.lr)
    tl = TensorLoader(train, a.batch_size, shuffle=True, seed=a.seed, drop_last=True, device=a.device)
    vl = TensorLoader(data.splits["val"], 250, shuffle=False, device=a.device)
    tag = f"{a.model} {a.opts} aux={a.aux} n={a.n_train}"
    print(f"{tag}: {flops / 1e6:.1f} MFLOPs, {count_params(model) / 1e3:.0f}k params", flush=True)
    t0 = time.time()
    best = 0.0
    for ep in range(a.epochs):
        model.train()
        tl.set_epoch(ep)
        tot = 0.0
        for x, y, _ in tl:
            if isinstance(model, FocusNet) and a.aux:
                tr = model.forward_trace(x)
                loss = crit(tr.logits, y) + a.aux * tr.prediction_loss
            else:
                loss = crit(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += loss.item()
        acc = evaluate(model, vl)
        best = max(best, acc)
        print(f"  ep {ep + 1}: train loss {tot / len(tl):.3f}  val ACC {acc:.3f}  ({time.time() - t0:.0f}s)", flush=True)
    test = evaluate(model, TensorLoader(data.splits["test"], 250, shuffle=False, device=a.device))
    print(f"RESULT {tag}: best val ACC {best:.3f} final {acc:.3f} test ACC {test:.3f} MFLOPs {flops / 1e6:.1f}", flush=True)


@torch.no_grad()
def evaluate(model: nn.Module, loader: TensorLoader) -> float:
    model.eval()
    correct = n = 0
    for x, y, _ in loader:
        correct += (model(x).argmax(1) == y[:, 0]).sum().item()
        n += len(y)
    return correct / n


if __name__ == "__main__":
    main()
