"""Reliability and security (issue 8): nothing lost on a crash, nothing executed from a file,
every bad input answered with one clear line.

    crash safety      SIGKILL a real training process and --resume it: identical weights and
                      metrics; SIGTERM/SIGINT stop at a safe point (exit 130, "--resume ...")
    safe loading      pickles that would create a file are refused before anything runs
    numerical faults  NaN/Inf loss stops (or skips, counted) with the last good checkpoint intact
    bad input         one line on stderr, exit code 2, no traceback, nothing half-written
    property test     random shapes/dtypes/values into the input check and the model: a result
                      or a FocusNetError, never another exception

Every training run here is tiny (3 batches of 32 per epoch, width 8) and runs on one CPU thread.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_data_download import server  # noqa: F401  (the local HTTP server fixture on 127.0.0.1)
from test_data_loading import register  # noqa: F401  (registers made-up datasets for one test)

from focusnet.cli import main
from focusnet.data import get_dataset_info, load_dataset
from focusnet.data.fakes import fake_arrays, fake_info, write_fake_npz
from focusnet.engine import TrainConfig, evaluate_checkpoint, load_checkpoint, train
from focusnet.engine import checkpoint as ckpt_module
from focusnet.engine import trainer as trainer_module
from focusnet.errors import FocusNetError
from focusnet.fileio import atomic_path, write_json
from focusnet.models.factory import build_model, model_config
from focusnet.models.layers import check_input

ROOT = Path(__file__).resolve().parents[1]
FLAG = "synth-lesion-binary"
EPOCHS = 3
OPTIONS = {"width": 8, "feature_channels": 16, "hidden_size": 32}
# The CLI spelling of `tiny_config`: the two must describe the same run.
TINY_ARGS = ["--dataset", FLAG, "--epochs", str(EPOCHS), "--batch-size", "32", "--max-batches", "3", "--n-boot", "20", "--width", "8", "--option", "feature_channels=16", "--hidden-size", "32", "--no-report", "--no-progress", "--device", "cpu", "--num-threads", "1"]
TIMING = ("epoch_s", "images_per_s")  # log.csv columns that measure the clock, not the run


def tiny_config(data_dir: str, output_dir: str, **overrides) -> TrainConfig:
    values = {"dataset": FLAG, "epochs": EPOCHS, "batch_size": 32, "max_batches": 3, "n_boot": 20, "model_options": dict(OPTIONS), "report": False, "progress": False, "device": "cpu", "num_threads": 1, "data_dir": data_dir, "output_dir": output_dir}
    return TrainConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    folder = str(tmp_path_factory.mktemp("data"))
    load_dataset(FLAG, data_dir=folder)  # generate once, before any subprocess reads it
    return folder


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
    """The uninterrupted run every interrupted-and-resumed run must reproduce exactly."""
    return train(tiny_config(data_dir, str(tmp_path_factory.mktemp("reference"))))


# ----------------------------------------------------------------------------- helpers


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run the CLI in this process: (exit code, stdout, stderr). Any exception other than the
    FocusNetError the CLI turns into one line escapes and fails the test (= a traceback)."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *expected: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("focusnet ") and ": error: " in lines[0], err
    assert "Traceback" not in err
    for part in expected:
        assert part.lower() in lines[0].lower(), (part, lines[0])


def files_under(folder) -> dict[str, bytes]:
    """Every file below `folder` with its bytes: a snapshot to prove nothing changed."""
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                out[os.path.relpath(path, folder)] = Path(path).read_bytes()
    return out


def temporaries(folder) -> list[str]:
    return [name for name in files_under(folder) if name.endswith((".tmp", ".part"))]


def read_log(run_dir: str) -> list[dict]:
    with open(os.path.join(run_dir, "log.csv")) as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def assert_same_run(run_dir: str, ref_dir: str) -> None:
    """Bit-identical final weights, identical val/test metrics and per-epoch log."""
    a = torch.load(os.path.join(run_dir, "last.pth"), weights_only=True)
    b = torch.load(os.path.join(ref_dir, "last.pth"), weights_only=True)
    assert a["epoch"] == b["epoch"] == EPOCHS
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), "final weights differ"
    best_a = load_checkpoint(run_dir).state_dict
    best_b = load_checkpoint(ref_dir).state_dict
    assert all(torch.equal(best_a[k], best_b[k]) for k in best_a), "best_model.pth weights differ"
    ma, mb = (json.loads(Path(d, "metrics.json").read_text()) for d in (run_dir, ref_dir))
    assert ma["best_epoch"] == mb["best_epoch"]
    for split in ("val", "test"):
        assert ma[split] == mb[split], split
    assert read_log(run_dir) == read_log(ref_dir)


def start_training(output_dir: str, data_dir: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "focusnet", "train", *TINY_ARGS, "--data-dir", data_dir, "--output-dir", output_dir]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished_epochs(output_dir: str, epochs: int) -> str | None:
    """The run folder in `output_dir` once its log.csv lists `epochs` finished epochs, else None."""
    for name in os.listdir(output_dir) if os.path.isdir(output_dir) else ():
        log = os.path.join(output_dir, name, "log.csv")
        if os.path.isfile(log) and len(Path(log).read_text().strip().splitlines()) > epochs:
            return os.path.join(output_dir, name)
    return None


def wait_for_epochs(proc: subprocess.Popen, output_dir: str, epochs: int, timeout: float = 240) -> str:
    """Poll until the run folder's log.csv lists `epochs` finished epochs; return the run folder.
    log.csv is written after last.pth, so last.pth then holds at least that epoch."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run_dir = finished_epochs(output_dir, epochs)
        if run_dir:
            return run_dir
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"training ended (exit {proc.returncode}) before epoch {epochs}:\n{out}\n{err}")
        time.sleep(0.02)
    proc.kill()
    proc.communicate()
    pytest.fail(f"no epoch {epochs} within {timeout}s")


# ----------------------------------------------------------------------------- crash safety


def test_sigkill_at_a_random_moment_then_resume_is_identical(data_dir, reference, tmp_path, capsys):
    out_dir = str(tmp_path / "results")
    proc = start_training(out_dir, data_dir)
    run_dir = wait_for_epochs(proc, out_dir, 2)
    delay = random.uniform(0.0, 0.4)  # somewhere inside epoch 3 (the last): mid-batch, mid-validation or mid-write
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the process ended on its own before the kill ({delay:.2f}s)"
    assert not os.path.exists(os.path.join(run_dir, "metrics.json"))
    state = torch.load(os.path.join(run_dir, "last.pth"), weights_only=True)
    assert 2 <= state["epoch"] <= EPOCHS
    stale = Path(run_dir, "last.pth.999999.tmp")  # what a kill during a checkpoint write leaves behind
    stale.write_bytes(b"half a checkpoint")

    code, out, _ = cli(capsys, "train", "--resume", run_dir)  # the stored settings (threads, data dir...) are reused
    assert code == 0 and f"after epoch {state['epoch']}" in out
    assert not stale.exists() and temporaries(run_dir) == []
    assert_same_run(run_dir, reference.run_dir)


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_signal_stops_at_a_safe_point_and_says_how_to_resume(signame, data_dir, reference, tmp_path, capsys):
    out_dir = str(tmp_path / "results")
    proc = start_training(out_dir, data_dir)
    run_dir = wait_for_epochs(proc, out_dir, 1)
    proc.send_signal(getattr(signal, signame))  # during epoch 2
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    (line,) = err.strip().splitlines()
    assert f"stopped by {signame}" in line and f"focusnet train --resume {run_dir}" in line and "Traceback" not in err
    assert temporaries(run_dir) == [] and not os.path.exists(os.path.join(run_dir, "metrics.json"))

    code, _, _ = cli(capsys, "train", "--resume", run_dir)
    assert code == 0
    assert_same_run(run_dir, reference.run_dir)


def test_a_stop_reaches_seeds_training_in_parallel(data_dir, tmp_path, capsys):
    """SIGTERM to `--seeds 0 1 2 --seed-workers 2`: the running seeds stop at a safe point, seed 2
    never starts, and one line names the folder to resume (the parent died silently and its worker
    processes trained on, seed 2 included); resuming the folder finishes every seed."""
    out_dir = tmp_path / "results"
    args = [*TINY_ARGS, "--epochs", "4", "--max-batches", "8", "--seeds", "0", "1", "2", "--seed-workers", "2"]  # the later flags win
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "focusnet", "train", *args, "--data-dir", data_dir, "--output-dir", str(out_dir)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not list(out_dir.glob("*/seed_0/log.csv")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # to the parent alone
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    (parent,) = out_dir.iterdir()
    (line,) = [line for line in err.splitlines() if "focusnet train: error" in line]
    assert "seed 0: stopped by SIGTERM" in line and f"resume every seed with: focusnet train --resume {parent}" in line
    time.sleep(2)  # no worker trains on
    assert not (parent / "seed_2").exists() and not list(parent.glob("seed_*/metrics.json"))
    code, _, _ = cli(capsys, "train", "--resume", str(parent))
    assert code == 0 and json.loads((parent / "summary.json").read_text())["seeds"] == [0, 1, 2]


def test_resume_refuses_flags_that_would_change_the_run(reference, tmp_path, capsys):
    run_dir = shutil.copytree(reference.run_dir, tmp_path / "run")
    before = files_under(run_dir)
    code, _, err = cli(capsys, "train", "--resume", str(run_dir), "--epochs", "10", "--lr", "0.1")
    assert_one_line_error(code, err, "--epochs, --lr cannot be given", "--num-threads")
    assert files_under(run_dir) == before


def test_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "metrics.json"
    write_json(path, {"auc": 0.9})
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        Path(tmp).write_text('{"auc": 0.')  # half written, then the process fails
        raise RuntimeError("crash while writing")
    assert json.loads(path.read_text()) == {"auc": 0.9} and os.listdir(tmp_path) == ["metrics.json"]


# ----------------------------------------------------------------------------- safe loading


class Payload:
    """Unpickling this calls `call(*args)`: a stand-in for any code an attacker wants run."""

    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def evil_file(path: Path, target: Path, kind: str) -> Path:
    """A checkpoint-looking file whose unpickling would create `target`."""
    how = {"open": (open, str(target), "w"), "os.system": (os.system, f"touch {target}")}
    call, *args = how["os.system" if kind.endswith("system") else "open"]
    obj = {"format": "focusnet", "version": 1, "model": {"name": "focusnet"}, "data": {}, "state_dict": Payload(call, *args)}
    if kind.startswith("zip"):
        torch.save(obj, path)
    elif kind.startswith("legacy"):
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    else:
        path.write_bytes(pickle.dumps(obj, protocol=2))
    return path


EVIL_KINDS = ["zip-open", "zip-system", "legacy-open", "raw-pickle-system"]


def test_the_payload_is_live(tmp_path):
    """Control: an unrestricted torch.load of such a file does create the target."""
    target = tmp_path / "created"
    torch.load(evil_file(tmp_path / "evil.pth", target, "zip-open"), weights_only=False)
    assert target.exists()


@pytest.mark.parametrize("kind", EVIL_KINDS)
def test_malicious_checkpoint_is_refused_and_nothing_runs(kind, tmp_path, capsys):
    target = tmp_path / "pwned"
    evil = evil_file(tmp_path / "evil.pth", target, kind)
    with pytest.raises(FocusNetError, match="refusing to load .*nothing from it was run"):
        load_checkpoint(str(evil))
    with pytest.raises(FocusNetError, match="refusing to load"):
        evaluate_checkpoint(str(evil))
    code, _, err = cli(capsys, "evaluate", "--checkpoint", str(evil))
    assert_one_line_error(code, err, "refusing to load", "could run code")
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(evil, run / "last.pth")
    code, _, err = cli(capsys, "train", "--resume", str(run))
    assert_one_line_error(code, err, "refusing to load")
    assert not target.exists()
    assert sorted(os.listdir(run)) == ["last.pth"]


def test_malicious_npz_is_refused_and_nothing_runs(tmp_path, capsys):
    """A data file with a pickled object array: np.load(allow_pickle=False) never unpickles it."""
    target = tmp_path / "pwned"
    arrays = fake_arrays(get_dataset_info("breastmnist"), 28)
    payload = np.empty(1, dtype=object)
    payload[0] = Payload(open, str(target), "w")
    arrays["train_labels"] = payload
    data = tmp_path / "data"
    data.mkdir()
    np.savez(data / "breastmnist.npz", **arrays)
    code, _, err = cli(capsys, "train", "--dataset", "breastmnist", "--data-dir", str(data), "--no-download", "--output-dir", str(tmp_path / "out"))
    assert_one_line_error(code, err, "breastmnist.npz")
    assert not target.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "config,expect",
    [
        ({"train": {"dataset": FLAG, "__reduce__": "os.system", "__class__": "subprocess.Popen"}}, "unknown training option"),
        ({"dataset": FLAG, "epochs": "rm -rf /"}, "wrong type for training option(s) epochs"),
        ({"dataset": FLAG, "model_options": ["touch", "x"]}, "model_options"),
        ({"dataset": "$(touch pwned)"}, "unknown dataset"),
        ([1, 2], "must hold a json object"),
    ],
)
def test_config_file_is_plain_data(config, expect, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    code, _, err = cli(capsys, "train", "--config", str(path), "--output-dir", str(tmp_path / "out"))
    assert_one_line_error(code, err, expect)
    assert sorted(os.listdir(tmp_path)) == ["config.json"]


def test_pickle_given_as_config_is_not_json(tmp_path, capsys):
    target = tmp_path / "pwned"
    evil = evil_file(tmp_path / "config.json", target, "raw-pickle-system")
    code, _, err = cli(capsys, "train", "--config", str(evil), "--output-dir", str(tmp_path / "out"))
    assert_one_line_error(code, err, "not valid json")
    assert not target.exists()


# ----------------------------------------------------------------------------- numerical faults


def inject(monkeypatch, bad: dict[tuple[int, int], float]) -> None:
    """Make the training loss `bad[(epoch, batch)]` (NaN or Inf) at those steps (0-based)."""
    original = trainer_module._Run._step

    def step(self, x, y, epoch, b):
        if (epoch, b) in bad:
            forward = self.loss_model.forward
            self.loss_model.forward = lambda *a: (forward(*a)[0] * bad[(epoch, b)], None)
            try:
                return original(self, x, y, epoch, b)
            finally:
                del self.loss_model.forward
        return original(self, x, y, epoch, b)

    monkeypatch.setattr(trainer_module._Run, "_step", step)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(value, data_dir, tmp_path, capsys, monkeypatch):
    snapshots = []
    original_step = trainer_module._Run._step

    def watch(self, x, y, epoch, b):  # the run folder just before the fault
        if (epoch, b) == (1, 1):
            snapshots.append(files_under(self.run_dir))
        return original_step(self, x, y, epoch, b)

    monkeypatch.setattr(trainer_module._Run, "_step", watch)
    inject(monkeypatch, {(1, 1): value})
    out_dir = tmp_path / "results"
    code, _, err = cli(capsys, "train", *TINY_ARGS, "--epochs", "2", "--data-dir", data_dir, "--output-dir", str(out_dir))
    assert_one_line_error(code, err, f"non-finite loss ({value})", "epoch 2, batch 2", "--nan-policy skip", "last good checkpoint is kept")
    (run_dir,) = out_dir.iterdir()
    after = files_under(run_dir)
    assert after == snapshots[0], "the run folder changed after the fault"
    assert {"best_model.pth", "best_model.safetensors", "last.pth"} <= after.keys() and "metrics.json" not in after
    assert load_checkpoint(str(run_dir)).epoch == 1 and [r["epoch"] for r in read_log(str(run_dir))] == ["1"]


def test_non_finite_loss_in_the_first_epoch_says_no_checkpoint_exists(data_dir, tmp_path, capsys, monkeypatch):
    inject(monkeypatch, {(0, 1): float("nan")})
    out_dir = tmp_path / "results"
    code, _, err = cli(capsys, "train", *TINY_ARGS, "--data-dir", data_dir, "--output-dir", str(out_dir))
    assert_one_line_error(code, err, "non-finite loss (nan)", "epoch 1, batch 2", "no epoch finished, so no checkpoint was written")
    assert "last good checkpoint" not in err


def test_nan_policy_skip_counts_skipped_steps(data_dir, tmp_path, capsys, monkeypatch):
    inject(monkeypatch, {(0, 1): float("nan"), (1, 0): float("inf")})
    out_dir = tmp_path / "results"
    code, _, _ = cli(capsys, "train", *TINY_ARGS, "--epochs", "2", "--nan-policy", "skip", "--data-dir", data_dir, "--output-dir", str(out_dir))
    assert code == 0
    (run_dir,) = [p for p in out_dir.iterdir() if not p.is_symlink()]
    assert [int(r["skipped_steps"]) for r in read_log(str(run_dir))] == [1, 1]
    assert all(torch.isfinite(v).all() for v in load_checkpoint(str(run_dir)).state_dict.values())


def test_nan_policy_skip_gives_up_when_most_steps_fail(data_dir, tmp_path, capsys, monkeypatch):
    inject(monkeypatch, {(0, 0): float("nan"), (0, 2): float("nan")})
    code, _, err = cli(capsys, "train", *TINY_ARGS, "--nan-policy", "skip", "--data-dir", data_dir, "--output-dir", str(tmp_path / "results"))
    assert_one_line_error(code, err, "2 of 3 steps had a non-finite loss", "lower --lr")


def test_non_finite_weights_are_never_saved(data_dir, tmp_path, capsys, monkeypatch):
    """A finite loss whose update still blows the weights up: caught before anything is saved."""
    original = trainer_module._Run._step

    def step(self, x, y, epoch, b):
        loss = original(self, x, y, epoch, b)
        if b == 2:  # the epoch's last step (--max-batches 3)
            with torch.no_grad():
                next(self.model.parameters()).fill_(float("inf"))
        return loss

    monkeypatch.setattr(trainer_module._Run, "_step", step)
    out_dir = tmp_path / "results"
    code, _, err = cli(capsys, "train", *TINY_ARGS, "--data-dir", data_dir, "--output-dir", str(out_dir))
    assert_one_line_error(code, err, "weights became non-finite")
    (run_dir,) = out_dir.iterdir()
    assert sorted(os.listdir(run_dir)) == ["config.json"]


# ----------------------------------------------------------------------------- bad data


def breast_file(folder: Path, **changes) -> Path:
    """breastmnist.npz in the official layout (random content), with `changes` applied to its arrays."""
    arrays = fake_arrays(get_dataset_info("breastmnist"), 28)
    arrays.update(changes)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    folder.mkdir(exist_ok=True)
    np.savez_compressed(folder / "breastmnist.npz", **arrays)
    return folder / "breastmnist.npz"


def assert_train_fails_cleanly(capsys, tmp_path, data: Path, *expected: str, flag: str = "breastmnist", download: bool = False) -> None:
    before = files_under(data) if data.exists() else {}
    out_dir = tmp_path / "out"
    args = ["train", "--dataset", flag, "--data-dir", str(data), "--output-dir", str(out_dir), *([] if download else ["--no-download"])]
    code, _, err = cli(capsys, *args)
    assert_one_line_error(code, err, *expected)
    assert not out_dir.exists() or list(out_dir.iterdir()) == []  # no run folder
    if data.exists():  # the data folder as it was: no partial download, no cache
        assert files_under(data) == before


def test_unknown_dataset_flag(tmp_path, capsys):
    assert_train_fails_cleanly(capsys, tmp_path, tmp_path / "data", "unknown dataset", "focusnet datasets", flag="breastmnsit")


@pytest.mark.parametrize("args, expected", [
    (["train", "--epochs", "abc"], ["focusnet train: error", "invalid int value: 'abc'", "focusnet train --help"]),
    (["train", "--bogus"], ["focusnet train: error", "unrecognized arguments: --bogus"]),  # the subcommand's, not the top level's usage
    (["train", "--option", "glance_size=abc"], ["glance_size must be an integer, got 'abc'"]),
    (["train", "--option", "predictive_coding=1"], ["predictive_coding must be true or false"]),
    (["predict", "--checkpoint", "CONFIG", "x.png"], ["config.json is not a checkpoint", "best_model.pth"]),
    (["predict", "--checkpoint", "EMPTY", "x.png"], ["the file is empty"]),
])
def test_mistyped_flags_and_values_get_one_line(args, expected, tmp_path, capsys):
    write_json(str(tmp_path / "config.json"), {"epochs": 1})
    (tmp_path / "empty.pth").write_bytes(b"")
    args = [{"CONFIG": str(tmp_path / "config.json"), "EMPTY": str(tmp_path / "empty.pth")}.get(a, a) for a in args]
    try:
        code = main([*args, *(["--data-dir", str(tmp_path / "data"), "--output-dir", str(tmp_path / "out")] if args[0] == "train" else [])])
    except SystemExit as e:  # argparse's own errors exit from inside parse
        code = e.code
    assert_one_line_error(code, capsys.readouterr().err, *expected)
    assert not (tmp_path / "out").exists()


def test_switches_take_the_underscore_spellings_too():
    from focusnet.cli import build_parser

    args = build_parser().parse_args(["train", "--as_rgb", "--no_download", "--no_predictive_coding", "--balanced_sampling"])
    assert (args.as_rgb, args.download, args.predictive_coding, args.balanced_sampling) == (True, False, False, True)
    assert build_parser().parse_args(["train"]).as_rgb is None  # unset: the config's default applies


def test_missing_npz_without_download(tmp_path, capsys):
    assert_train_fails_cleanly(capsys, tmp_path, tmp_path / "data", "breastmnist.npz not found", "allow downloading")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_npz(damage, tmp_path, capsys):
    path = breast_file(tmp_path / "data")
    raw = path.read_bytes()
    path.write_bytes({"garbage": os.urandom(4096), "truncated": raw[: len(raw) // 2], "empty": b""}[damage])
    assert_train_fails_cleanly(capsys, tmp_path, tmp_path / "data", "breastmnist.npz", "delete it")


def test_local_file_with_wrong_md5(tmp_path, capsys):
    """Right keys, shapes and labels, but not the official bytes."""
    breast_file(tmp_path / "data")
    assert_train_fails_cleanly(capsys, tmp_path, tmp_path / "data", "has MD5", get_dataset_info("breastmnist").md5s[28], "not the official release")


@pytest.mark.parametrize("kind", ["corrupt", "good"])
def test_download_with_wrong_md5(kind, server, tmp_path, capsys, monkeypatch):  # noqa: F811
    """Through the download path: a local server sends a damaged or different file."""
    monkeypatch.setenv("FOCUSNET_MEDMNIST_URL", f"{server}/{kind}")
    data = tmp_path / "data"
    data.mkdir()
    assert_train_fails_cleanly(capsys, tmp_path, data, "its MD5 is", "nothing was saved", download=True)
    assert os.listdir(data) == []


@pytest.mark.parametrize(
    "changes,expect",
    [
        ({"train_images": None}, "lacks keys train_images"),
        ({"val_labels": None, "val_lbls": np.zeros((78, 1), np.uint8)}, "lacks keys val_labels"),
        ({"test_images": np.zeros((156, 32, 32), np.uint8)}, "test_images is uint8 (156, 32, 32)"),
        ({"train_images": np.zeros((546, 28, 28), np.float32)}, "train_images is float32"),
        ({"val_labels": np.zeros((78, 2), np.uint8)}, "val_labels has shape (78, 2)"),
    ],
)
def test_wrong_keys_or_shapes(changes, expect, tmp_path, capsys):
    breast_file(tmp_path / "data", **changes)
    assert_train_fails_cleanly(capsys, tmp_path, tmp_path / "data", expect)


@pytest.mark.parametrize("task,labels,expect", [("multi-class", [0, 1, 3], "values in [0, 3], expected [0, 2]"), ("multi-class", [0, -1, 2], "values in [-1, 2]"), ("multi-label, binary-class", [0, 2, 1], "expected [0, 1]")])
def test_labels_out_of_range(task, labels, expect, register, tmp_path, capsys):
    info = register(fake_info("fake-bad", task=task, num_classes=3, n_samples=(12, 4, 4), sizes=(28,)))
    arrays = fake_arrays(info, 28)
    column = np.resize(np.array(labels, dtype=np.int16), 12)
    arrays["train_labels"] = np.repeat(column[:, None], arrays["train_labels"].shape[1], axis=1)
    write_fake_npz(tmp_path / "data", info, 28, arrays=arrays)
    assert_train_fails_cleanly(capsys, tmp_path, tmp_path / "data", expect, flag="fake-bad")


# ----------------------------------------------------------------------------- bad checkpoints


def relabel(reference, tmp_path: Path, edit) -> str:
    """A copy of the reference run's best_model.pth, edited by `edit(checkpoint dict)`."""
    obj = torch.load(os.path.join(reference.run_dir, "best_model.pth"), weights_only=True)
    edit(obj)
    folder = tmp_path / "ckpt"
    folder.mkdir(exist_ok=True)
    torch.save(obj, folder / "best_model.pth")
    return str(folder / "best_model.pth")


def _retrained_for(classes: int):
    """A complete, self-consistent checkpoint for `classes` classes, claiming the binary data."""

    def edit(obj):
        obj["model"]["num_classes"] = obj["data"]["num_classes"] = classes
        obj["state_dict"] = build_model(obj["model"]).state_dict()

    return edit


CHECKPOINT_CASES = {
    "other architecture": (lambda c: c["model"].update(name="resnet18"), "weights do not fit a resnet18 model"),
    "other width": (lambda c: c["model"].update(width=16), "weights do not fit a focusnet model"),
    "other channel count": (lambda c: c["model"].update(in_channels=3), "model has in_channels=3 but its data description says 1"),
    "other class count": (lambda c: c["model"].update(num_classes=4), "model has num_classes=4"),
    "class count of the data": (_retrained_for(4), "the model has num_classes=4 but synth-lesion-binary has 2"),
    "other dataset": (lambda c: c["data"].update(flag="synth-lesion3d"), "this checkpoint was not trained on synth-lesion3d"),
    "option of the wrong type": (lambda c: c["model"].update(width="wide"), "cannot build a model"),
    "no model name": (lambda c: c["model"].pop("name"), "lacks model.name"),
    "no weights": (lambda c: c.pop("state_dict"), "holds no weights"),
    "newer format": (lambda c: c.update(version=99), "newer focusnet"),
    "training state": (lambda c: c.update(format="focusnet-train-state"), "not a focusnet model checkpoint"),
}


@pytest.mark.parametrize("case", CHECKPOINT_CASES)
def test_evaluate_checkpoint_that_does_not_fit(case, reference, tmp_path, capsys):
    edit, expect = CHECKPOINT_CASES[case]
    path = relabel(reference, tmp_path, edit)
    code, out, err = cli(capsys, "evaluate", "--checkpoint", path, "--output", str(tmp_path / "metrics.json"))
    assert_one_line_error(code, err, expect)
    assert out == "" and not (tmp_path / "metrics.json").exists()


@pytest.mark.parametrize(
    "case,expect",
    [
        ("other width", "weights do not fit the run's focusnet model"),
        ("other class count", "weights do not fit"),
        ("optimizer of another model", "optimizer, schedule or progress do not fit"),
        ("epoch beyond the run", f"says epoch 9 of {EPOCHS}"),
        ("unknown option", "unknown training option"),
    ],
)
def test_resume_with_a_checkpoint_that_does_not_fit(case, expect, reference, tmp_path, capsys):
    run_dir = shutil.copytree(reference.run_dir, tmp_path / "run")
    state = torch.load(run_dir / "last.pth", weights_only=True)
    if case == "other width":
        state["config"]["model_options"]["width"] = 16
    elif case == "other class count":
        state["model"]["head.2.weight"] = state["model"]["head.2.weight"].repeat(2, 1)
    elif case == "optimizer of another model":
        state["optimizer"]["param_groups"][0]["params"] = [0, 1]
    elif case == "epoch beyond the run":
        state["epoch"] = 9
    else:
        state["config"]["evil"] = "__import__('os').system('touch pwned')"
    torch.save(state, run_dir / "last.pth")
    before = files_under(run_dir)
    code, _, err = cli(capsys, "train", "--resume", str(run_dir))
    assert_one_line_error(code, err, expect)
    assert files_under(run_dir) == before


# ----------------------------------------------------------------------------- output folder, full disk


def test_output_dir_under_a_file(data_dir, tmp_path, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    code, _, err = cli(capsys, "train", *TINY_ARGS, "--data-dir", data_dir, "--output-dir", str(blocker / "results"))
    assert_one_line_error(code, err, "cannot write", "not-a-folder")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write into read-only folders")
def test_read_only_output_dir(data_dir, tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        code, _, err = cli(capsys, "train", *TINY_ARGS, "--data-dir", data_dir, "--output-dir", str(folder))
    finally:
        folder.chmod(0o700)
    assert_one_line_error(code, err, "not writable")


class FullDisk(io.FileIO):
    """A file on a disk that fills up after `room` bytes, as the OS reports it: OSError(ENOSPC)."""

    room = 4096

    def write(self, b) -> int:
        if self.tell() + len(b) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(b)


def full_disk_open(name, mode="r", *args, **kwargs):
    if "w" in mode and "b" in mode:
        return FullDisk(name, mode.replace("b", ""))
    return open(name, mode, *args, **kwargs)


@pytest.mark.parametrize("where", ["checkpoint write", "fsync", "rename"])
def test_full_disk(where, data_dir, tmp_path, capsys, monkeypatch):
    """The disk fills while the first checkpoint is saved: one line, and no checkpoint file
    (complete or partial) under any name."""
    from focusnet import fileio

    if where == "checkpoint write":
        monkeypatch.setattr(ckpt_module, "open", full_disk_open, raising=False)
    else:
        name = "_fsync" if where == "fsync" else "replace"
        real = fileio._fsync if where == "fsync" else os.replace

        def fail_for_checkpoints(src, *rest):
            if ".pth" in os.fspath(src):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(src, *rest)

        monkeypatch.setattr(fileio if where == "fsync" else fileio.os, name, fail_for_checkpoints)
    out_dir = tmp_path / "results"
    code, _, err = cli(capsys, "train", *TINY_ARGS, "--data-dir", data_dir, "--output-dir", str(out_dir))
    assert_one_line_error(code, err, "no space left on device", "the disk is full", "best_model.pth")
    (run_dir,) = out_dir.iterdir()
    assert sorted(os.listdir(run_dir)) == ["config.json"]
    json.loads((run_dir / "config.json").read_text())  # what was written before is complete


# ----------------------------------------------------------------------------- images at prediction time


@pytest.fixture(scope="module")
def trained(reference):
    return load_checkpoint(reference.run_dir).build()


@pytest.mark.parametrize(
    "x,expect",
    [
        (torch.rand(2, 3, 28, 28), "1 channel(s)"),
        (torch.rand(2, 28, 28), "2D batch"),
        (torch.rand(2, 1, 28, 28, 28), "2D batch"),
        (torch.rand(2, 1, 1, 28), "spatial sides >= 2"),
        (torch.rand(0, 1, 28, 28), "non-empty batch"),
        (torch.randint(0, 255, (2, 1, 28, 28), dtype=torch.uint8), "floating-point"),
        (torch.rand(2, 1, 28, 28, dtype=torch.float64), "expects float32 input"),
        (np.zeros((2, 1, 28, 28), np.float32), "floating-point tensor"),
    ],
)
def test_wrong_images_at_prediction_time(trained, x, expect):
    with pytest.raises(FocusNetError) as e:
        trained(x)
    assert expect in str(e.value) and "\n" not in str(e.value)


def test_other_image_sizes_work_at_prediction_time(trained):
    """FocusNet looks through fixed-size glimpses, so any size >= 2 pixels per side is valid input."""
    for shape in ((1, 1, 2, 2), (3, 1, 17, 40), (1, 1, 224, 224)):
        assert trained(torch.rand(shape)).shape == (shape[0], 2)


# ----------------------------------------------------------------------------- property-based


DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.uint8, torch.int64, torch.bool, torch.complex64]
VALUES = st.sampled_from([0.0, 1.0, -1.0, 1e-30, 1e6, -1e6, 3e38, float("nan"), float("inf"), float("-inf")])


@settings(max_examples=150, deadline=None)
@given(shape=st.lists(st.integers(0, 5), min_size=0, max_size=6), dtype=st.sampled_from(DTYPES), spatial_dims=st.sampled_from([2, 3]), channels=st.integers(1, 3))
def test_check_input_raises_only_focusnet_errors(shape, dtype, spatial_dims, channels):
    x = torch.zeros(shape, dtype=dtype)
    try:
        check_input(x, spatial_dims, channels, "FocusNet")
    except FocusNetError as e:
        assert "\n" not in str(e)
        return
    assert x.dtype == torch.float32 and x.dim() == spatial_dims + 2 and x.shape[1] == channels and x.shape[0] > 0 and min(x.shape[2:]) >= 2


@pytest.fixture(scope="module")
def tiny_models():
    torch.manual_seed(0)
    return {d: build_model(model_config("focusnet", 2, 3, d, OPTIONS)).eval() for d in (2, 3)}


@st.composite
def batches(draw):
    """(spatial dims, input batch, fill value): mostly the right rank, channels and dtype, so that
    about half the examples reach the network; every part can also be wrong."""
    dims = draw(st.sampled_from([2, 3]))
    batch = draw(st.sampled_from([1, 2, 3, 1, 2, 3, 0]))
    channels = draw(st.sampled_from([2] * 9 + [0, 1, 3]))
    n_sides = draw(st.sampled_from([dims] * 12 + [0, 1, dims - 1, dims + 1]))
    sides = draw(st.lists(st.integers(1, 40 if dims == 2 else 12), min_size=n_sides, max_size=n_sides))
    dtype = draw(st.sampled_from([torch.float32] * 21 + DTYPES[1:]))
    fill = draw(st.one_of(st.just(None), VALUES))
    x = torch.randn(batch, channels, *sides) if fill is None else torch.full((batch, channels, *sides), fill)
    x = x.to(dtype)
    layout = draw(st.sampled_from(["contiguous", "transposed", "channels_last", "strided"]))
    if layout == "transposed" and x.dim() >= 4:
        x = x.transpose(-1, -2)
    elif layout == "channels_last" and x.dim() == 4:
        x = x.to(memory_format=torch.channels_last)
    elif layout == "strided" and x.dim() >= 3:
        x = x[..., ::2]
    return dims, x, fill


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=batches())
def test_model_forward_gives_logits_or_a_focusnet_error(tiny_models, case):
    dims, x, fill = case
    model = tiny_models[dims]
    try:
        with torch.no_grad():
            logits = model(x)
    except FocusNetError as e:
        assert "\n" not in str(e)
        event("refused with a FocusNetError")
        return
    event("logits")
    assert logits.shape == (x.shape[0], 3) and logits.dtype == torch.float32
    if fill is None or abs(fill) <= 1e6:  # sensible input: sensible output
        assert torch.isfinite(logits).all()
