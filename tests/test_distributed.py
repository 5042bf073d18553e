"""torchrun / DDP on CPU with gloo: evaluation deduplication, metrics equal to one process, resume
(bit for bit on the same world size, and across world sizes)."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from focusnet.data import SplitArrays
from focusnet.engine import TrainConfig, TrainingStopped, evaluate_checkpoint, train
from focusnet.engine import trainer as trainer_module
from focusnet.engine.distributed import DistContext
from focusnet.engine.evaluator import eval_loader, predict_logits
from focusnet.errors import FocusNetError
from focusnet.models import EnhancedFocusNet2D

TINY = ["--width", "8", "--option", "feature_channels=16", "--hidden-size", "32", "--no-report", "--n-boot", "20", "--batch-size", "32", "--max-batches", "3"]


def _eval_worker(rank: int, world: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    torch.manual_seed(0)
    model = EnhancedFocusNet2D(1, 3, width=8, feature_channels=16, hidden_size=32).eval()
    g = torch.Generator().manual_seed(1)
    split = SplitArrays(torch.randint(0, 256, (7, 1, 28, 28), generator=g, dtype=torch.uint8), torch.arange(7)[:, None] % 3)
    logits, labels = predict_logits(model, eval_loader(split, 2, DistContext(rank, world)), DistContext(rank, world))
    steps, _ = predict_logits(model, eval_loader(split, 2, DistContext(rank, world)), DistContext(rank, world), steps=True)
    if rank == 0:
        torch.save({"logits": logits, "labels": labels, "steps": steps}, out)
    dist.destroy_process_group()


def test_distributed_evaluation_drops_padding_duplicates(tmp_path):
    """7 samples over 2 ranks: the sampler pads one duplicate; gathered predictions (and every
    step's, for early exit) equal one process's."""
    out = str(tmp_path / "ddp.pt")
    mp.spawn(_eval_worker, args=(2, f"file://{tmp_path / 'init'}", out), nprocs=2, join=True)
    ddp = torch.load(out, weights_only=True)
    torch.manual_seed(0)
    model = EnhancedFocusNet2D(1, 3, width=8, feature_channels=16, hidden_size=32).eval()
    g = torch.Generator().manual_seed(1)
    split = SplitArrays(torch.randint(0, 256, (7, 1, 28, 28), generator=g, dtype=torch.uint8), torch.arange(7)[:, None] % 3)
    logits, labels = predict_logits(model, eval_loader(split, 2, DistContext()), DistContext())
    assert ddp["logits"].shape == (7, 3)
    assert torch.equal(ddp["labels"], labels)
    torch.testing.assert_close(ddp["logits"], logits, rtol=0, atol=1e-5)
    steps, _ = predict_logits(model, eval_loader(split, 2, DistContext()), DistContext(), steps=True)
    assert ddp["steps"].shape == (7, model.config.num_saccades + 1, 3)
    torch.testing.assert_close(ddp["steps"], steps, rtol=0, atol=1e-5)
    torch.testing.assert_close(steps[:, -1], logits, rtol=0, atol=0)


def _focusnet(args: list[str], nproc: int, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)] if nproc > 1 else [sys.executable]
    return subprocess.run([*launch, "-m", "focusnet", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _metrics(run_dir) -> dict:
    with open(os.path.join(run_dir, "metrics.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("data"))


def test_two_processes_match_one_process(tmp_path, data_dir):
    """Same global batch: the runs differ only by BatchNorm statistics computed per rank (16 images
    instead of 32) and per-rank dropout masks; metrics agree within 0.05 after 2 epochs of 3 steps."""
    common = ["train", "--dataset", "synth-lesion-binary", "--data-dir", data_dir, "--epochs", "2", *TINY]
    one = _focusnet([*common, "--output-dir", str(tmp_path / "one")], 1, tmp_path)
    two = _focusnet([*common, "--output-dir", str(tmp_path / "two")], 2, tmp_path)
    assert one.returncode == 0, one.stderr[-2000:]
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = _metrics(tmp_path / "one" / "synth-lesion-binary_latest"), _metrics(tmp_path / "two" / "synth-lesion-binary_latest")
    assert b["world_size"] == 2 and b["test"]["n"] == a["test"]["n"] == 1000
    for split in ("val", "test"):
        assert abs(a[split]["auc"] - b[split]["auc"]) < 0.05
        assert abs(a[split]["acc"] - b[split]["acc"]) < 0.05
    assert a["early_exit"]["max_steps"] == b["early_exit"]["max_steps"] == 3  # from the gathered step logits of both ranks
    assert abs(a["early_exit"]["test"]["acc_all"] - a["test"]["acc"]) < 1e-9 and abs(b["early_exit"]["test"]["acc_all"] - b["test"]["acc"]) < 1e-9


@pytest.mark.parametrize("saccades", ["0", "1"])
def test_glance_only_and_one_saccade_models_train_under_torchrun(tmp_path, data_dir, saccades):
    """DDP stops at the second step when a parameter gets no gradient, as the glance-only model's
    suppression_strength and the one-saccade model's inhibition did."""
    args = ["train", "--dataset", "synth-lesion-binary", "--data-dir", data_dir, "--epochs", "1", *TINY, "--num-saccades", saccades, "--output-dir", str(tmp_path)]
    run = _focusnet(args, 2, tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert _metrics(tmp_path / "synth-lesion-binary_latest")["world_size"] == 2


def test_seeds_under_torchrun_fill_one_folder(tmp_path, data_dir):
    """Each process made its own <flag>_<timestamp> folder (rank 1's with empty seed folders and a
    second summary); rank 0 now makes the one folder and writes the summary."""
    args = ["train", "--dataset", "synth-lesion-binary", "--data-dir", data_dir, "--epochs", "1", *TINY, "--seeds", "0", "1", "--output-dir", str(tmp_path / "out")]
    run = _focusnet(args, 2, tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    (parent,) = [p for p in (tmp_path / "out").iterdir() if not p.name.endswith("_latest")]
    assert sorted(os.listdir(parent)) == ["seed_0", "seed_1", "seeds.json", "summary.json"]
    assert run.stdout.count("2 seeds, test") == 1 and _metrics(parent / "seed_1")["world_size"] == 2


@pytest.mark.parametrize("first,then", [(2, 1), (1, 2)])
def test_resume_across_world_sizes(tmp_path, data_dir, first, then):
    common = ["--dataset", "synth-lesion-binary", "--data-dir", data_dir, *TINY, "--output-dir", str(tmp_path)]
    r = _focusnet(["train", *common, "--epochs", "2"], first, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    run_dir = os.path.realpath(tmp_path / "synth-lesion-binary_latest")
    state = torch.load(os.path.join(run_dir, "last.pth"), weights_only=True)
    # Extend the finished run by one epoch from another world size: rewrite the stored epoch budget.
    state["config"]["epochs"] = 3
    torch.save(state, os.path.join(run_dir, "last.pth"))
    latest = str(tmp_path / "synth-lesion-binary_latest")  # through the link: it must go on naming the run folder
    r = _focusnet(["train", "--resume", latest, "--no-report"], then, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming" in r.stdout
    assert os.path.realpath(latest) == run_dir and not any("_latest" in f for f in os.listdir(run_dir))
    m = _metrics(run_dir)
    assert m["epochs"] == 3 and m["world_size"] == then
    with open(os.path.join(run_dir, "log.csv")) as f:
        assert [line.split(",")[0] for line in f.read().splitlines()[1:]] == ["1", "2", "3"]


def _train_worker(rank: int, world: int, port: int, cfg: dict, run_dir: str, resume: bool, stop_at: int | None) -> None:
    """One rank of a data-parallel run, as torchrun would start it; `stop_at` simulates a stop
    before that epoch (all ranks at once, as a broadcast stop signal does)."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    if stop_at is not None:
        original = trainer_module._Run._train_epoch

        def stop_before(self, epoch, stop):
            if epoch == stop_at:
                raise TrainingStopped("simulated stop")
            original(self, epoch, stop)

        trainer_module._Run._train_epoch = stop_before
    try:
        train(TrainConfig(progress=False), resume=run_dir) if resume else train(TrainConfig.from_dict(cfg), run_dir=run_dir, link=False)
    except TrainingStopped:
        pass


def _spawn(worker, world: int, *args) -> None:
    """Run worker(rank, world, port, *args) in `world` processes, rendezvous on a free port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(world, port, *args), nprocs=world, join=True)


def _spawn_training(world: int, cfg: dict, run_dir: str, resume: bool = False, stop_at: int | None = None) -> None:
    _spawn(_train_worker, world, cfg, run_dir, resume, stop_at)


def test_resume_on_the_same_world_size_is_identical(tmp_path, data_dir):
    """Two ranks, stopped after epoch 1 of 2 and resumed: the same weights and metrics as the
    uninterrupted run, bit for bit. Each rank's dropout stream is saved and restored (it was rank
    0's alone, so after a resume rank 1 drew rank 0's masks)."""
    cfg = TrainConfig(
        dataset="synth-lesion-binary", data_dir=data_dir, epochs=2, batch_size=32, max_batches=3, n_boot=20, report=False, progress=False,
        model_options={"width": 8, "feature_channels": 16, "hidden_size": 32, "dropout": 0.5},
    ).to_dict()
    full, parted = str(tmp_path / "full"), str(tmp_path / "parted")
    os.makedirs(full), os.makedirs(parted)
    _spawn_training(2, cfg, full)
    _spawn_training(2, cfg, parted, stop_at=1)
    state = torch.load(os.path.join(parted, "last.pth"), weights_only=True)
    assert state["epoch"] == 1 and len(state["rng"]["ranks"]) == 2
    assert not torch.equal(state["rng"]["ranks"][0]["torch"], state["rng"]["ranks"][1]["torch"])
    _spawn_training(2, cfg, parted, resume=True)
    a, b = (torch.load(os.path.join(d, "last.pth"), weights_only=True)["model"] for d in (full, parted))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _metrics(parted)["test"] == _metrics(full)["test"]


def _nan_worker(rank: int, world: int, port: int, cfg: dict, run_dir: str, out: str) -> None:
    """A rank of a 2-process run whose rank 1 alone gets a NaN loss at epoch 1, batch 2; writes
    how this rank ended to out/<rank>.json."""
    original = trainer_module._Run._step

    def step(self, x, y, epoch, b):
        if rank == 1 and (epoch, b) == (0, 1):
            forward = self.loss_model.forward
            self.loss_model.forward = lambda *a: (forward(*a)[0] * float("nan"), None)
            try:
                return original(self, x, y, epoch, b)
            finally:
                del self.loss_model.forward
        return original(self, x, y, epoch, b)

    trainer_module._Run._step = step
    try:
        _train_worker(rank, world, port, cfg, run_dir, False, None)
        ended = {"error": None}
    except FocusNetError as e:
        ended = {"error": str(e), "shared": e.shared}
    with open(os.path.join(out, f"{rank}.json"), "w") as f:
        json.dump(ended, f)


def _no_shared_disk_worker(rank: int, world: int, port: int, cfg: dict, run_dir: str) -> None:
    """Rank 1 cannot read rank 0's files, as on a second machine without a shared file system; the
    validation AUC falls after epoch 1, so the best epoch (1) is not the last one (2)."""
    if rank:
        def unreadable(path, *args, **kwargs):
            raise FocusNetError(f"{path} not found")

        trainer_module.ckpt.load_checkpoint = unreadable
    original, epochs = trainer_module.quick_metrics, []

    def falling(*args, **kwargs):
        epochs.append(1)
        return {**original(*args, **kwargs), "auc": 1.0 / len(epochs)}

    trainer_module.quick_metrics = falling
    _train_worker(rank, world, port, cfg, run_dir, False, None)


def test_the_best_weights_reach_every_rank_without_a_shared_disk(tmp_path, data_dir):
    """Every rank read best_model.pth at the end, which only rank 0 writes: on two machines
    without a shared file system the second one failed with 'not found'. Rank 0 now sends the
    weights; both ranks score the best epoch's, as one process re-scoring best_model.pth does."""
    cfg = TrainConfig(
        dataset="synth-lesion-binary", data_dir=data_dir, epochs=2, batch_size=32, max_batches=3, n_boot=20, report=False, progress=False, channels_last=True,
        model_options={"width": 8, "feature_channels": 16, "hidden_size": 32},
    ).to_dict()
    _spawn(_no_shared_disk_worker, 2, cfg, str(tmp_path))
    metrics = _metrics(tmp_path)
    assert metrics["best_epoch"] == 1
    alone = evaluate_checkpoint(str(tmp_path / "best_model.pth"), device="cpu")
    for key in ("acc", "auc"):
        assert alone[key] == pytest.approx(metrics["test"][key], abs=1e-6)


@pytest.mark.parametrize("policy", ["skip", "stop"])
def test_a_nan_on_one_rank_is_handled_by_all_alike(tmp_path, data_dir, policy):
    """Each process decided alone: the one with the NaN skipped (or raised) while the other ran
    backward, and the gradient all-reduce fell out of step (a gloo collective mismatch)."""
    cfg = TrainConfig(
        dataset="synth-lesion-binary", data_dir=data_dir, epochs=1, batch_size=32, max_batches=3, n_boot=20, report=False, progress=False, nan_policy=policy,
        model_options={"width": 8, "feature_channels": 16, "hidden_size": 32},
    ).to_dict()
    _spawn(_nan_worker, 2, cfg, str(tmp_path), str(tmp_path))
    ended = [json.load(open(tmp_path / f"{rank}.json")) for rank in (0, 1)]
    if policy == "skip":
        assert ended == [{"error": None}] * 2
        with open(tmp_path / "log.csv") as f:
            assert next(csv.DictReader(f))["skipped_steps"] == "1"
    else:
        assert ended[0] == {"error": ended[0]["error"], "shared": True} and ended[1]["shared"]
        assert "non-finite loss (on another process) at epoch 1, batch 2" in ended[0]["error"]
        assert "non-finite loss (nan) at epoch 1, batch 2" in ended[1]["error"]


def test_a_data_error_under_torchrun_is_one_line_from_rank_0(tmp_path):
    """Rank 0 fails to load the data: the other rank stops quietly with it (it failed at the
    barrier with a connection-reset traceback of ours), and the error is printed once."""
    empty = tmp_path / "empty"
    empty.mkdir()
    r = _focusnet(["train", "--dataset", "breastmnist", "--no-download", "--data-dir", str(empty), "--device", "cpu", *TINY], 2, tmp_path)
    assert r.returncode != 0
    lines = [line for line in r.stderr.splitlines() if "focusnet train: error:" in line]
    assert len(lines) == 1 and "breastmnist" in lines[0], r.stderr[-2000:]
    assert "[rank1]" not in r.stderr and "focusnet/engine" not in r.stderr, r.stderr[-3000:]  # (torchrun itself still reports the exit codes)
