"""Trainer, run folder, checkpoints, evaluate, seeds, resume and the train/evaluate CLI."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from focusnet.cli import main
from focusnet.data import get_dataset_info, list_datasets, registry
from focusnet.data.fakes import fake_arrays, write_fake_npz
from focusnet.engine import (
    TrainConfig,
    TrainingStopped,
    evaluate_checkpoint,
    load_checkpoint,
    train,
    train_seeds,
)
from focusnet.engine import trainer as trainer_module
from focusnet.errors import FocusNetError
from focusnet.metrics import get_acc, get_auc, load_official_csv

TINY = dict(report=False, epochs=2, batch_size=32, max_batches=3, n_boot=20, progress=False, model_options={"width": 8, "feature_channels": 16, "hidden_size": 32})


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("data"))


def tiny(data_dir, tmp_path, **overrides) -> TrainConfig:
    return TrainConfig(**{**TINY, "data_dir": data_dir, "output_dir": str(tmp_path / "results"), **overrides})


@pytest.fixture(scope="module")
def run(data_dir, tmp_path_factory):
    """One tiny training run shared by the run-folder tests."""
    return train(tiny(data_dir, tmp_path_factory.mktemp("run")))


def test_config_presets_resolve():
    official = TrainConfig().resolved()
    assert (official.optimizer, official.lr, official.scheduler, official.augment, official.weight_decay) == ("adam", 1e-3, "multistep", False, 0.0)
    strong = TrainConfig(preset="strong", lr=5e-4).resolved()
    assert (strong.optimizer, strong.lr, strong.scheduler, strong.augment) == ("adamw", 5e-4, "cosine", True)
    assert TrainConfig.from_dict(strong.to_dict()) == strong
    relative = TrainConfig(data_dir="rel/data", data="skin/").resolved()  # config.json works from any folder
    assert (relative.data_dir, relative.data) == (os.path.abspath("rel/data"), os.path.abspath("skin"))
    for name in ("num_threads", "max_batches"):
        with pytest.raises(FocusNetError, match=f"{name.replace('_', '-')} must be >= 0"):  # was a traceback from torch
            TrainConfig(**{name: -1}).resolved()


@pytest.mark.parametrize("bad", [{"preset": "fast"}, {"epochs": 0}, {"optimizer": "lion"}, {"milestones": (0.5, 1.5)}, {"device": "tpu"}])
def test_config_rejects_bad_values(bad):
    with pytest.raises(FocusNetError):
        TrainConfig(**bad).resolved()


def test_official_schedule_drops_lr_at_half_and_three_quarters():
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = trainer_module._scheduler(opt, TrainConfig(epochs=100).resolved())
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[49] == pytest.approx(1e-3) and lrs[50] == pytest.approx(1e-4) and lrs[74] == pytest.approx(1e-4) and lrs[75] == pytest.approx(1e-5)


def test_run_folder_contents(run):
    d = run.run_dir
    for name in ("config.json", "log.csv", "best_model.pth", "best_model.safetensors", "last.pth", "metrics.json"):
        assert os.path.getsize(os.path.join(d, name)) > 0, name
    with open(os.path.join(d, "log.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    metrics = json.load(open(os.path.join(d, "metrics.json")))
    assert set(metrics["test"]) >= {"acc", "auc", "acc_ci", "auc_ci", "ece", "n"}
    assert metrics["test"]["acc_ci"][0] <= metrics["test"]["acc"] <= metrics["test"]["acc_ci"][1]
    latest = os.path.join(os.path.dirname(d), "synth-lesion_latest")
    assert os.path.realpath(latest) == os.path.realpath(d)
    assert not [f for f in os.listdir(d) if f.endswith(".tmp")]


def test_metrics_hold_early_exit_at_the_validation_calibrated_threshold(run):
    from focusnet.engine.early_exit import GRID, exit_at
    from focusnet.engine.evaluator import eval_loader, predict_logits
    from focusnet.engine.distributed import DistContext
    from focusnet.data import load_dataset

    e = json.load(open(os.path.join(run.run_dir, "metrics.json")))["early_exit"]
    assert e["max_steps"] == 3 and 1 <= e["test"]["mean_steps"] <= 3
    assert e["val"]["acc"] >= e["val"]["acc_all"] - e["tolerance"] - 1e-9
    assert e["threshold"] is None or e["threshold"] in GRID
    if e["threshold"] is not None:  # the test figures follow from the threshold
        model = load_checkpoint(os.path.join(run.run_dir, "best_model.pth")).build()
        test = load_dataset("synth-lesion", 28, run.config.data_dir).splits["test"]
        logits, labels = predict_logits(model, eval_loader(test, 64, DistContext()), DistContext(), steps=True)
        picked, steps = exit_at(logits, e["threshold"], multi_label=False)
        assert float(steps.float().mean()) == pytest.approx(e["test"]["mean_steps"])
        assert get_acc(labels.numpy(), torch.softmax(picked, 1).numpy(), "multi-class") == pytest.approx(e["test"]["acc"])


def test_best_epoch_has_best_validation_auc(run):
    with open(os.path.join(run.run_dir, "log.csv")) as f:
        rows = list(csv.DictReader(f))
    best = max(rows, key=lambda r: float(r["val_auc"]))  # first of ties, like the trainer
    assert run.metrics["best_epoch"] == int(best["epoch"])
    assert run.metrics["val"]["auc"] == pytest.approx(float(best["val_auc"]), abs=1e-12)


def test_checkpoint_loads_without_unpickling_code(run):
    obj = torch.load(os.path.join(run.run_dir, "best_model.pth"), weights_only=True)
    assert obj["format"] == "focusnet" and obj["data"]["flag"] == "synth-lesion"
    tensors = load_file(os.path.join(run.run_dir, "best_model.safetensors"))
    assert tensors.keys() == obj["state_dict"].keys()
    assert all(torch.equal(tensors[k], obj["state_dict"][k]) for k in tensors)
    a = load_checkpoint(run.run_dir).build()
    b = load_checkpoint(os.path.join(run.run_dir, "best_model.safetensors")).build()
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(a(x), b(x))


def test_official_csv_reproduces_metrics(run):
    data = get_dataset_info("synth-lesion")
    for split in ("val", "test"):
        (name,) = [f for f in os.listdir(run.run_dir) if f.startswith(f"synth-lesion_{split}_[AUC]")]
        scores = load_official_csv(os.path.join(run.run_dir, name))
        labels = _labels(run, split)
        assert scores.shape == (len(labels), data.num_classes)
        assert get_auc(labels, scores, data.task) == pytest.approx(run.metrics[split]["auc"], abs=1e-12)
        assert get_acc(labels, scores, data.task) == pytest.approx(run.metrics[split]["acc"], abs=1e-12)


def _labels(run, split):
    from focusnet.data import load_dataset

    return load_dataset("synth-lesion", data_dir=run.config.data_dir).splits[split].labels.numpy()


def test_evaluate_reproduces_metrics_json(run):
    saved = json.load(open(os.path.join(run.run_dir, "metrics.json")))
    for split in ("val", "test"):
        assert evaluate_checkpoint(run.run_dir, split) == saved[split]


def test_cli_evaluate_says_it_matches(run, capsys):
    assert main(["evaluate", "--checkpoint", os.path.join(run.run_dir, "best_model.pth")]) == 0
    out = capsys.readouterr().out
    assert "matches" in out and "AUC" in out


def test_evaluate_comparison_with_the_saved_metrics(tmp_path):
    from focusnet.cli import _compared_with_saved

    saved = tmp_path / "metrics.json"
    saved.write_text(json.dumps({"test": {"acc": 0.75, "auc": 0.5225020}}))
    assert _compared_with_saved({"acc": 0.75, "auc": 0.5225020}, str(saved), "test") == f"matches {saved}"
    assert "up to float rounding" in _compared_with_saved({"acc": 0.75, "auc": 0.5225}, str(saved), "test")  # a torchrun run's sums
    assert _compared_with_saved({"acc": 0.70, "auc": 0.5225}, str(saved), "test").startswith("DIFFERS FROM")


def test_cli_evaluate_with_a_damaged_metrics_json_or_an_unwritable_output(run, tmp_path, capsys, monkeypatch):
    import shutil

    folder = shutil.copytree(run.run_dir, tmp_path / "run")
    for damaged in ('{"test": ', "[1, 2]", '{"test": {"acc": null, "auc": 0.5}}'):
        (folder / "metrics.json").write_text(damaged)
        assert main(["evaluate", "--checkpoint", str(folder), "--output", str(tmp_path / "m.json")]) == 0
        assert "cannot compare with" in capsys.readouterr().out and json.loads((tmp_path / "m.json").read_text())["n"] > 0
    monkeypatch.setattr("focusnet.engine.evaluate_checkpoint", lambda *a, **k: pytest.fail("evaluated although the output cannot be written"))
    for bad, says in ((tmp_path / "nowhere" / "m.json", "does not exist"), (tmp_path, "it is a folder")):
        assert main(["evaluate", "--checkpoint", str(folder), "--output", str(bad)]) == 2
        assert says in capsys.readouterr().err


@pytest.mark.parametrize("flag,model", [("synth-lesion-binary", "focusnet"), ("synth-lesion-multilabel", "focusnet"), ("synth-lesion3d", "focusnet"), ("synth-lesion", "smallcnn")])
def test_every_task_type_and_baseline_trains(data_dir, tmp_path, flag, model):
    options = TINY["model_options"] if model == "focusnet" else {}
    r = train(tiny(data_dir, tmp_path, dataset=flag, model=model, epochs=1, max_batches=2, batch_size=8, model_options=options))
    assert 0 <= r.metrics["test"]["auc"] <= 1 and r.metrics["test"]["n"] == get_dataset_info(flag).n_samples["test"]


def test_gated_readout_reports_the_saccades_learned_share(data_dir, tmp_path, run, capsys):
    r = train(tiny(data_dir, tmp_path, epochs=1, max_batches=2, batch_size=8, model_options={**TINY["model_options"], "readout": "gated"}))
    assert r.metrics["readout_gate"] != 0.0  # learned: two steps move it off its start at 0
    assert "saccades' learned share g = " in capsys.readouterr().out
    assert "readout_gate" not in run.metrics  # the mean readout has no gate


def small_copy(info, n: int):
    """`info` with n samples per split, and arrays in which every split holds every class."""
    small = replace(info, n_samples=dict.fromkeys(("train", "val", "test"), n), samples_by_size={}, md5s={})
    arrays = fake_arrays(small, 28)
    k = small.num_classes
    for split in ("train", "val", "test"):
        if small.multi_label:
            arrays[f"{split}_labels"] = (np.arange(n)[:, None] + np.arange(k)[None]) % 2
        else:
            arrays[f"{split}_labels"] = (np.arange(n) % k)[:, None]
        arrays[f"{split}_labels"] = arrays[f"{split}_labels"].astype(np.uint8)
    return small, arrays


@pytest.fixture
def every_flag_small(monkeypatch, tmp_path):
    """Every MedMNIST flag registered with tiny split sizes, and a generated file for each."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._registry()))
    folder = tmp_path / "fake"
    flags = []
    for info in list_datasets():
        if info.synthetic:
            continue
        small, arrays = small_copy(info, 2 * info.num_classes)
        registry.register_dataset(small, overwrite=True)
        write_fake_npz(folder, small, 28, arrays=arrays)
        flags.append(info.flag)
    return str(folder), flags


@pytest.mark.parametrize("flag,split,change,expected", [
    ("organamnist", "val", lambda y: np.where(y == 3, 4, y), "in the val split there are no images of class 'heart'"),
    ("breastmnist", "test", lambda y: np.zeros_like(y), "in the test split there are no images of class 'normal, benign'"),
    ("chestmnist", "test", lambda y: np.concatenate([y[:, :2], np.ones_like(y[:, 2:3]), y[:, 3:]], 1), "label 'effusion' is on in every image"),
])
def test_a_split_without_every_class_is_refused_before_training(flag, split, change, expected, monkeypatch, tmp_path, capsys):
    """AUC is undefined there (val picks the best epoch, test is reported): one line before epoch 1."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._registry()))
    small, arrays = small_copy(get_dataset_info(flag), 2 * get_dataset_info(flag).num_classes)
    arrays[f"{split}_labels"] = change(arrays[f"{split}_labels"]).astype(np.uint8)
    registry.register_dataset(small, overwrite=True)
    write_fake_npz(tmp_path / "fake", small, 28, arrays=arrays)
    with pytest.raises(FocusNetError, match=re.escape(expected) + ".*so AUC is undefined there; give " + split):
        train(tiny(str(tmp_path / "fake"), tmp_path, dataset=flag, epochs=1, download=False))
    assert not (tmp_path / "results").exists() or not list((tmp_path / "results").iterdir())  # nothing written
    assert "epoch" not in capsys.readouterr().out


def test_every_medmnist_flag_trains_on_generated_files(every_flag_small, tmp_path):
    folder, flags = every_flag_small
    assert len(flags) == 18
    for flag in flags:
        info = get_dataset_info(flag)
        r = train(tiny(folder, tmp_path, dataset=flag, epochs=1, batch_size=4, max_batches=1, download=False))
        assert r.metrics["test"]["n"] == info.n_samples["test"], flag
    # The ResNet baselines (0.9 GFLOPs per 28-px image, 35 GFLOPs per 28^3 volume: a few images on CPU).
    for flag, expected in (("breastmnist", "resnet18"), ("adrenalmnist3d", "resnet18_3d")):
        r = train(tiny(folder, tmp_path, dataset=flag, model="resnet18", epochs=1, batch_size=2, max_batches=1, download=False, model_options={}))
        assert r.metrics["model"] == expected


def test_resume_gives_identical_weights_and_metrics(data_dir, tmp_path, monkeypatch):
    cfg = tiny(data_dir, tmp_path, epochs=3, dataset="synth-lesion-binary")
    full = train(cfg)
    original = trainer_module._Run._train_epoch

    def stop_after_two(self, epoch, stop):
        if epoch == 2:
            raise TrainingStopped("simulated stop")
        original(self, epoch, stop)

    monkeypatch.setattr(trainer_module._Run, "_train_epoch", stop_after_two)
    with pytest.raises(TrainingStopped):
        train(cfg)
    (partial,) = [p for p in os.listdir(cfg.output_dir) if p.startswith("synth-lesion-binary_2") and os.path.join(cfg.output_dir, p) != full.run_dir]
    monkeypatch.setattr(trainer_module._Run, "_train_epoch", original)
    resumed = train(TrainConfig(progress=False), resume=os.path.join(cfg.output_dir, partial))
    a, b = (torch.load(os.path.join(r.run_dir, "last.pth"), weights_only=True)["model"] for r in (full, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)
    for split in ("val", "test"):
        assert resumed.metrics[split] == full.metrics[split]


def test_signal_during_the_last_validation_stops_before_the_test_phase(data_dir, tmp_path, monkeypatch):
    """A SIGTERM that lands while the last epoch validates stops there (it used to go on through
    the test split, the bootstrap and the report); the resumed run just scores the saved model."""
    import signal

    cfg = tiny(data_dir, tmp_path, epochs=2, dataset="synth-lesion-binary")
    original, calls = trainer_module.quick_metrics, []

    def signalled(*args, **kwargs):
        calls.append(1)
        if len(calls) == cfg.epochs:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "quick_metrics", signalled)
    with pytest.raises(TrainingStopped, match="stopped by SIGTERM after epoch 2; progress saved .*last.pth") as stopped:
        train(cfg)
    run_dir = str(stopped.value).rsplit("--resume ", 1)[1]
    assert not os.path.exists(os.path.join(run_dir, "metrics.json"))
    before = torch.load(os.path.join(run_dir, "last.pth"), weights_only=True)["train_time_s"]
    resumed = train(TrainConfig(progress=False), resume=run_dir)
    assert resumed.metrics["epochs"] == 2 and os.path.isfile(os.path.join(run_dir, "metrics.json"))
    assert 0 < before <= resumed.metrics["train_time_s"]  # counts the 2 epochs trained before the resume (it counted from the resume)


@pytest.mark.parametrize("rank", [0, 1])
def test_restore_rng_reads_per_rank_and_older_checkpoints(rank):
    """Each rank takes its own saved stream; a checkpoint from before per-rank states holds rank
    0's alone, and a rank without a saved stream keeps the fresh one it was seeded with."""
    from types import SimpleNamespace

    from focusnet.engine.distributed import DistContext

    run = SimpleNamespace(ctx=DistContext(rank, 2))
    states = [torch.manual_seed(s).get_state() for s in (11, 12)]
    trainer_module._Run._restore_rng(run, {"ranks": [{"torch": s} for s in states]})
    assert torch.equal(torch.get_rng_state(), states[rank])
    fresh = torch.manual_seed(trainer_module.dropout_seed(0, rank)).get_state()
    trainer_module._Run._restore_rng(run, {"torch": states[0]})
    assert torch.equal(torch.get_rng_state(), states[0] if rank == 0 else fresh)


def test_balanced_loss_weights_per_task():
    """Single-label: inverse class frequency; multi-label: negatives / positives per label
    (BCE pos_weight); a label never or always present is refused in one line."""
    from types import SimpleNamespace

    def data(labels, multi_label):
        info = SimpleNamespace(multi_label=multi_label, num_classes=labels.shape[1] if multi_label else int(labels.max()) + 1, label_names={})
        return SimpleNamespace(info=info, splits={"train": SimpleNamespace(labels=labels)})

    balanced = TrainConfig(class_weights="balanced")
    single = trainer_module._loss_weights(data(torch.tensor([[0], [0], [0], [1]]), False), balanced)
    torch.testing.assert_close(single["class_weights"], torch.tensor([4 / 6, 4 / 2]))
    multi = torch.tensor([[1, 0], [0, 0], [0, 1], [0, 1]])
    torch.testing.assert_close(trainer_module._loss_weights(data(multi, True), balanced)["pos_weight"], torch.tensor([3.0, 1.0]))
    assert trainer_module._loss_weights(data(multi, True), TrainConfig()) == {}
    with pytest.raises(FocusNetError, match="every image has"):
        trainer_module._loss_weights(data(torch.tensor([[1, 0], [1, 1]]), True), balanced)


def test_seeds_summary(data_dir, tmp_path):
    parent, summary = train_seeds(tiny(data_dir, tmp_path, epochs=1, max_batches=2), [0, 1])
    aucs = [json.load(open(os.path.join(parent, f"seed_{s}", "metrics.json")))["test"]["auc"] for s in (0, 1)]
    assert summary["test"]["auc"]["mean"] == pytest.approx(np.mean(aucs))
    assert summary["test"]["auc"]["std"] == pytest.approx(np.std(aucs, ddof=1))
    assert json.load(open(os.path.join(parent, "summary.json")))["seeds"] == [0, 1]


def test_an_interrupted_seeds_set_resumes_to_the_same_summary(data_dir, tmp_path, monkeypatch, capsys):
    """A stop during seed 1 of 0 1 2 is resumed from the seeds folder: seed 0 is kept, seed 1
    resumed, seed 2 trained, and the summary is that of an uninterrupted set (resuming seed 1's
    folder alone left seed 2 untrained, no summary, and a stray link among the seeds)."""
    import signal

    cfg = tiny(data_dir, tmp_path, epochs=2, max_batches=2, dataset="synth-lesion-binary")
    _, full = train_seeds(cfg, [0, 1, 2])
    original, calls = trainer_module.quick_metrics, []

    def signalled(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # seed 1, epoch 1
            os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "quick_metrics", signalled)
    with pytest.raises(TrainingStopped, match=r"^seed 1: stopped by SIGTERM after epoch 1; progress saved .*seed_1/last.pth \(after epoch 1\); resume every seed with: focusnet train --resume ") as stopped:
        train_seeds(cfg, [0, 1, 2])
    parent = str(stopped.value).rsplit("--resume ", 1)[1]
    assert sorted(os.listdir(parent)) == ["seed_0", "seed_1", "seeds.json"]
    monkeypatch.setattr(trainer_module, "quick_metrics", original)
    assert main(["train", "--resume", parent]) == 0
    summary = json.load(open(os.path.join(parent, "summary.json")))
    assert summary["seeds"] == [0, 1, 2] and summary["test"] == full["test"] and summary["val"] == full["val"]
    assert sorted(os.listdir(parent)) == ["seed_0", "seed_1", "seed_2", "seeds.json", "summary.json"]
    assert "3 seeds, test" in capsys.readouterr().out
    # a seed folder holding another run (here seed 0's, as seed 2) is refused, not summarised
    shutil.rmtree(os.path.join(parent, "seed_2"))
    shutil.copytree(os.path.join(parent, "seed_0"), os.path.join(parent, "seed_2"))
    assert main(["train", "--resume", parent]) == 2
    assert "seed_2 holds a run whose settings differ from seeds.json's (seed)" in capsys.readouterr().err


@pytest.mark.parametrize(
    "seeds,says",
    [(["0", "0"], "lists a seed twice"), (["0", "-1"], "--seeds must be >= 0"), (["1", "--seed", "3"], "not both")],
)
def test_a_bad_seed_list_is_refused_before_any_training(seeds, says, tmp_path, capsys):
    assert main(["train", "--dataset", "synth-lesion", "--output-dir", str(tmp_path), "--seeds", *seeds]) == 2
    assert says in capsys.readouterr().err and os.listdir(tmp_path) == []


def test_seeds_that_fail_on_missing_data_leave_nothing_behind(tmp_path, capsys):
    empty = tmp_path / "data"
    empty.mkdir()
    args = ["train", "--dataset", "breastmnist", "--no-download", "--data-dir", str(empty), "--output-dir", str(tmp_path / "results"), "--seeds", "0", "1"]
    assert main(args) == 2 and "breastmnist.npz not found" in capsys.readouterr().err
    assert os.listdir(tmp_path / "results") == []  # was results/breastmnist_<timestamp>/seed_0/, empty


def test_seeds_in_parallel_processes_match_sequential_runs(data_dir, tmp_path):
    cfg = tiny(data_dir, tmp_path, epochs=1, max_batches=2)
    _, sequential = train_seeds(cfg, [0, 1])
    _, parallel = train_seeds(cfg, [0, 1], workers=2)
    for split in ("val", "test"):
        for key in ("acc", "auc"):
            # float rounding only: with OMP_NUM_THREADS=1 the AUCs differ by ~3e-6 (kernel choice), a wrong seed by far more
            assert parallel[split][key]["values"] == pytest.approx(sequential[split][key]["values"], abs=1e-5)


def test_cli_train_and_script_spelling(data_dir, tmp_path, capsys):
    args = ["train", "--dataset", "synth-lesion", "--data_dir", data_dir, "--epochs", "1", "--max-batches", "1", "--batch-size", "16", "--n-boot", "10", "--output-dir", str(tmp_path), "--width", "8", "--option", "feature_channels=16", "--hidden-size", "32", "--no-report"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "test  ACC" in out and "run folder" in out
    cfg = json.load(open(tmp_path / "synth-lesion_latest" / "config.json"))
    assert cfg["model"]["width"] == 8 and cfg["model"]["feature_channels"] == 16 and cfg["train"]["epochs"] == 1


@pytest.mark.parametrize(
    "args,expect",
    [
        (["train", "--dataset", "pneumonia"], "unknown dataset"),
        (["train", "--dataset", "synth-lesion", "--model", "vgg"], "unknown model"),
        (["train", "--dataset", "synth-lesion", "--option", "colour=1"], "unknown focusnet option"),
        (["train", "--resume", "/nonexistent/run"], "nothing to resume"),
        (["train", "--resume", "/nonexistent/run", "--output-dir", "elsewhere"], "--output-dir cannot be given"),  # was accepted and ignored
        (["train", "--dataset", "synth-lesion", "--seeds", "0", "1", "--seed-workers", "0"], "--seed-workers must be at least 1"),
        (["train", "--dataset", "synth-lesion", "--seed-workers", "2"], "--seed-workers needs several seeds"),
        (["evaluate", "--checkpoint", "/nonexistent/best_model.pth"], "not found"),
    ],
)
def test_cli_errors_are_one_line(args, expect, capsys, tmp_path):
    code = main([*args, "--output-dir", str(tmp_path)] if args[0] == "train" and "--resume" not in args else args)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and expect in err.lower(), err


def test_unwritable_output_dir(data_dir, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("x")
    with pytest.raises(FocusNetError, match="cannot"):
        train(tiny(data_dir, tmp_path, output_dir=str(blocked / "results")))


def test_step_loss_adds_the_mean_loss_of_the_earlier_steps():
    from focusnet.engine.trainer import LossModel
    from focusnet.models import EnhancedFocusNet2D

    torch.manual_seed(0)
    model, criterion = EnhancedFocusNet2D(1, 3, num_saccades=2).eval(), torch.nn.CrossEntropyLoss()
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 1])
    with torch.no_grad():
        trace = model.forward_trace(x)
        loss, logits = LossModel(model, criterion, 0.1, step_loss_weight=0.5)(x, y)
        plain, _ = LossModel(model, criterion, 0.1)(x, y)
    earlier = sum(criterion(trace.step_logits[:, t], y) for t in range(2)) / 2  # the glance and the first saccade
    torch.testing.assert_close(plain, criterion(trace.logits, y) + 0.1 * trace.prediction_loss)
    torch.testing.assert_close(loss, plain + 0.5 * earlier)
    torch.testing.assert_close(logits, trace.logits)
    glance_only = EnhancedFocusNet2D(1, 3, num_saccades=0).eval()  # one step: nothing earlier to supervise
    assert LossModel(glance_only, criterion, 0.1, step_loss_weight=0.5).steps == 0.0
    for bad in (-1.0, float("nan")):
        with pytest.raises(FocusNetError, match="loss weights must be finite and >= 0"):
            TrainConfig(dataset="synth-lesion", step_loss_weight=bad).resolved()
        with pytest.raises(FocusNetError, match="grad-clip must be a finite number >= 0"):  # a negative norm flips the gradients
            TrainConfig(dataset="synth-lesion", grad_clip=bad).resolved()
        with pytest.raises(FocusNetError, match="weight-decay must be a finite number >= 0"):
            TrainConfig(dataset="synth-lesion", weight_decay=bad).resolved()
    for bad in (float("nan"), float("inf"), -1e-3):
        with pytest.raises(FocusNetError, match="learning rate must be a finite number > 0"):
            TrainConfig(dataset="synth-lesion", lr=bad).resolved()
    with pytest.raises(FocusNetError, match="n-boot .* must be >= 1"):  # checked before training, not after the last epoch
        TrainConfig(dataset="synth-lesion", n_boot=0).resolved()
    with pytest.raises(FocusNetError, match="seed must be >= 0"):  # the bootstrap's generator would refuse it after training
        TrainConfig(dataset="synth-lesion", seed=-1).resolved()
    # the earlier steps' loss reaches the weights (no detached step logits), and the flag reaches the config
    model.train()
    (LossModel(model, criterion, 0.1, step_loss_weight=0.5)(x, y)[0] - LossModel(model, criterion, 0.1)(x, y)[0]).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    from focusnet.cli import build_parser, config_from_args

    assert config_from_args(build_parser().parse_args(["train", "--step-loss-weight", "0.5"])).step_loss_weight == 0.5


def test_config_file_with_a_new_preset_or_new_data(tmp_path):
    """A run's config.json holds its preset's resolved recipe and its data: --preset took only the
    name (an official recipe recorded as strong), and --dataset lost to a stored --data path."""
    from focusnet.cli import build_parser, config_from_args
    from focusnet.engine.config import PRESETS

    stored = tmp_path / "config.json"
    custom = {"data": "/my/images.npz", "task": "binary", "data_dir": "/cache/custom/custom-images", "size": "native"}
    stored.write_text(json.dumps({"train": {**TrainConfig(dataset="breastmnist", epochs=7, lr=5e-4).resolved().to_dict(), **custom}}))

    def config(*flags):
        return config_from_args(build_parser().parse_args(["train", "--config", str(stored), *flags])).resolved()

    strong = config("--preset", "strong", "--dataset", "pathmnist")
    recipe = {k: getattr(strong, k) for k in PRESETS["strong"]}
    assert recipe == PRESETS["strong"] and strong.preset == "strong" and strong.epochs == 7
    assert strong.dataset == "pathmnist" and strong.data is None and strong.task is None
    assert strong.data_dir is None and strong.size == 28  # not the custom data's cache folder and native size
    assert config("--preset", "strong", "--lr", "0.01").lr == 0.01  # a flag still wins
    assert config().lr == 5e-4 and config().data == "/my/images.npz"  # without flags the stored run is repeated
    assert config("--data", "/other.npz").dataset == TrainConfig().dataset


def test_an_old_glance_only_run_says_why_it_cannot_be_resumed(data_dir, tmp_path):
    run = train(tiny(data_dir, tmp_path, epochs=1, max_batches=1, model_options={**TINY["model_options"], "num_saccades": 0}))
    path = os.path.join(run.run_dir, "last.pth")
    state = torch.load(path, weights_only=True)
    state["model"]["suppression_strength"] = torch.tensor(-1.5)  # as glance-only runs saved before 2026-11-27
    torch.save(state, path)
    with pytest.raises(FocusNetError, match="saved before 2026-11-27, when glance-only models held an unused parameter"):
        train(TrainConfig(progress=False), resume=run.run_dir)


def _first_epoch(data_dir, folder, **options):
    """One epoch of 2 steps without dropout (a compiled graph draws its random numbers differently)
    -> (run result, train loss, val loss)."""
    no_dropout = {**TINY["model_options"], "dropout": 0.0}
    result = train(tiny(data_dir, folder, epochs=1, max_batches=2, model_options=no_dropout, **options))
    with open(os.path.join(result.run_dir, "log.csv")) as f:
        row = next(csv.DictReader(f))
    return result, float(row["train_loss"]), float(row["val_loss"])


@pytest.fixture(scope="module")
def eager_first_epoch(data_dir, tmp_path_factory):
    return _first_epoch(data_dir, tmp_path_factory.mktemp("eager"))


@pytest.mark.parametrize("options,tolerance", [({"channels_last": True}, 1e-4), ({"compile": "aot_eager"}, 1e-4), ({"amp_cpu": True}, 0.05)])
def test_speed_options_train_like_the_default(data_dir, tmp_path, eager_first_epoch, options, tolerance):
    """Each opt-in speed option trains the same model: the same first-epoch losses as eager float32
    (bf16 within its rounding), it really takes effect, and the run records it."""
    from torch._dynamo.utils import counters

    graphs = counters["stats"]["unique_graphs"]
    _, base_train, base_val = eager_first_epoch
    result, fast_train, fast_val = _first_epoch(data_dir, tmp_path, **options)
    assert fast_train == pytest.approx(base_train, abs=tolerance) and fast_val == pytest.approx(base_val, abs=tolerance)
    stored = json.load(open(os.path.join(result.run_dir, "config.json")))["train"]
    assert all(stored[k] == v for k, v in options.items())
    if "amp_cpu" in options:  # bf16 rounding shows: it did run in bf16
        assert fast_train != base_train
    if "compile" in options:
        assert counters["stats"]["unique_graphs"] > graphs
    if "channels_last" in options:  # the saved weights keep the layout they were trained in
        weights = torch.load(os.path.join(result.run_dir, "best_model.pth"), weights_only=True)["state_dict"]
        convs = [w for w in weights.values() if w.dim() == 4 and w.shape[1] > 1 and w.shape[2] > 1]  # else both layouts coincide
        assert convs and all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in convs)


def test_unknown_compile_backend_is_one_clear_error():
    with pytest.raises(FocusNetError, match="unknown torch.compile backend 'nope'"):
        TrainConfig(dataset="synth-lesion", compile="nope").resolved()


def test_resume_can_turn_a_speed_option_off(run, tmp_path):
    """On --resume a given flag replaces the run's setting even when it is the default (--no-channels-last)."""
    from focusnet.engine import checkpoint as ckpt
    from focusnet.engine.trainer import _resume_state

    state = ckpt.load_train_state(os.path.join(run.run_dir, ckpt.LAST))
    state["config"] = {**state["config"], "channels_last": True, "amp_cpu": True}
    ckpt.save_torch(state, str(tmp_path / ckpt.LAST))
    _, _, kept = _resume_state(str(tmp_path), TrainConfig(), given=set())
    assert kept.channels_last and kept.amp_cpu
    _, _, off = _resume_state(str(tmp_path), TrainConfig(channels_last=False, amp_cpu=False), given={"channels_last", "amp_cpu"})
    assert not off.channels_last and not off.amp_cpu
