"""Command line: a thin layer over importable functions.

    focusnet datasets                         list every dataset flag
    focusnet train --dataset pneumoniamnist   official protocol, results/<flag>_<timestamp>/
    focusnet evaluate --checkpoint results/pneumoniamnist_latest
    focusnet demo                             a short run on the built-in synthetic data
    focusnet visualize --model-path results/synth-lesion_latest/best_model.pth   figures (PNG)
    focusnet report results/synth-lesion_latest                                   report.html
    focusnet hit-rate --checkpoint results/synth-lesion_latest   fixations on the lesion
    focusnet predict --checkpoint results/synth-lesion_latest scans/ --output predictions.csv
    focusnet export --checkpoint results/synth-lesion_latest --format onnx

Errors the user can fix print one line and exit with code 2 (130 when stopped by a signal).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence

from .errors import FocusNetError

# FocusNet options with their own flags; any other FocusNetConfig field goes through --option k=v.
MODEL_FLAGS = {"num_saccades": int, "glimpse_size": int, "glance_size": int, "num_scales": int, "fovea": float, "fovea_scaling": str, "saliency": float, "width": int, "hidden_size": int, "pathways": str, "dropout": float, "readout": str}
MODEL_FLAG_VALUES = {"fovea_scaling": "image (default) or pixels", "readout": "mean (default) or gated", "pathways": "a subset of mpk (default mpk)"}  # checked by FocusNetConfig
MODEL_SWITCHES = ("predictive_coding", "suppression", "learn_scale")


def _add(parser: argparse.ArgumentParser, name: str, **kwargs) -> None:
    """Accept both --batch-size and --batch_size (the description's scripts use underscores)."""
    names = [name] + (["--" + name[2:].replace("-", "_")] if "-" in name[2:] else [])
    parser.add_argument(*names, **kwargs)


def _switch(parser: argparse.ArgumentParser, name: str, help: str) -> None:
    """--as-rgb / --no-as-rgb, and the underscore spellings --as_rgb / --no_as_rgb."""
    dest = name.replace("-", "_")
    parser.add_argument(f"--{name}", dest=dest, action=argparse.BooleanOptionalAction, default=None, help=help)
    if dest != name:
        parser.add_argument(f"--{dest}", dest=dest, action="store_true", default=None, help=argparse.SUPPRESS)
    parser.add_argument(f"--no_{dest}", dest=dest, action="store_false", default=None, help=argparse.SUPPRESS)


class OneLineErrors(argparse.ArgumentParser):
    """A mistyped flag or value prints one line saying what is wrong and where to look, not the usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ----------------------------------------------------------------------------- train


def add_train_args(p: argparse.ArgumentParser) -> None:
    d = p.add_argument_group("data")
    _add(d, "--dataset", default=None, help="dataset flag (see `focusnet datasets`); default synth-lesion")
    _add(d, "--data", default=None, metavar="PATH", help="your own data instead of --dataset: a MedMNIST-format .npz, a folder with train/ val/ test/ class folders, or a CSV (README.md, 'Your own data')")
    _add(d, "--size", type=_size, default=None, help="image size: 28 (default), 64, 128, 224; with --data any of 28..224, or 'native'")
    _add(d, "--task", default=None, choices=("binary", "multi-class", "multi-label"), help="with --data: the task type (default: inferred)")
    _add(d, "--on-bad-image", default=None, choices=("fail", "skip"), help="with --data: stop at unreadable images (default) or leave them out")
    _add(d, "--data-dir", default=None, help="folder with the .npz files (default $FOCUSNET_DATA_DIR or ~/.medmnist)")
    _switch(d, "as-rgb", "repeat grey images to 3 channels")
    _switch(d, "download", "download missing MedMNIST files (default on)")
    m = p.add_argument_group("model")
    _add(m, "--model", default=None, help="focusnet (default), smallcnn (plain CNN of similar FLOPs), resnet18, resnet50 (CIFAR-style, 28 px), resnet18_224, resnet50_224, resnet18_3d")
    for name, kind in MODEL_FLAGS.items():
        _add(m, "--" + name.replace("_", "-"), type=kind, default=None, help=f"FocusNet {name}" + (f": {MODEL_FLAG_VALUES[name]}" if name in MODEL_FLAG_VALUES else ""))
    for name in MODEL_SWITCHES:
        _switch(m, name.replace("_", "-"), f"FocusNet {name}")
    _add(m, "--option", action="append", default=[], metavar="KEY=VALUE", help="any other FocusNet option, e.g. --option feature_channels=96")
    t = p.add_argument_group("training")
    _add(t, "--config", default=None, help="JSON file of training options (a run's config.json works); flags override it, --preset replaces its recipe")
    _add(t, "--preset", default=None, choices=("official", "strong"), help="official MedMNIST protocol (default) or our stronger recipe")
    _add(t, "--epochs", type=int, default=None)
    _add(t, "--batch-size", type=int, default=None, help="global batch (default 128 in 2D, 32 in 3D)")
    _add(t, "--lr", type=float, default=None)
    _add(t, "--optimizer", default=None, choices=("adam", "adamw", "sgd"))
    _add(t, "--weight-decay", type=float, default=None)
    _add(t, "--scheduler", default=None, choices=("multistep", "cosine", "constant"))
    _switch(t, "augment", "batched flips/shifts/scales/intensity jitter")
    _add(t, "--grad-clip", type=float, default=None)
    _add(t, "--loss", default=None, choices=("ce", "focal"))
    _add(t, "--focal-gamma", type=float, default=None)
    _add(t, "--class-weights", default=None, choices=("none", "balanced"), help="balanced: loss weighted by inverse class frequency (multi-label: positives by negatives / positives per label)")
    _switch(t, "balanced-sampling", "draw training images with probability 1 / class frequency")
    _add(t, "--prediction-loss-weight", type=float, default=None, help="weight of FocusNet's predictive-coding loss (default 0.1)")
    _add(t, "--step-loss-weight", type=float, default=None, help="FocusNet: also train the glance and each earlier saccade to classify, with this weight (default 0)")
    _add(t, "--seed", type=int, default=None)
    _add(t, "--seeds", type=int, nargs="+", default=None, help="one run per seed and a mean +/- std summary")
    _add(t, "--seed-workers", type=int, default=None, help="with --seeds: train this many seeds at once, one process each (for a GPU)")
    _add(t, "--nan-policy", default=None, choices=("stop", "skip"))
    _add(t, "--n-boot", type=int, default=None, help="bootstrap resamples for the test CIs (default 1000)")
    _add(t, "--max-batches", type=int, default=None, help="cap batches per epoch (smoke tests; 0: no cap)")
    r = p.add_argument_group("running")
    _add(r, "--device", default=None, choices=("auto", "cpu", "cuda"))
    _switch(r, "amp", "bfloat16 autocast on CUDA (default on)")
    _switch(r, "amp-cpu", "bfloat16 autocast on the CPU too (default off)")
    _switch(r, "channels-last", "channels-last memory layout for the model and training batches")
    _add(r, "--compile", nargs="?", const="inductor", default=None, metavar="BACKEND", help="torch.compile the training step (default backend inductor)")
    _add(r, "--num-threads", type=int, default=None, help="CPU threads per process (0: torch's default)")
    _add(r, "--output-dir", default=None, help="parent of the run folders (default results)")
    _add(r, "--resume", default=None, metavar="RUN_DIR", help="continue a run folder after its last complete epoch (a --seeds folder: finish all its seeds)")
    _switch(r, "report", "write report.html at the end (default on)")
    _switch(r, "progress", "progress bars (default: when stderr is a terminal)")


TRAIN_OPTIONS = ("dataset", "data", "task", "on_bad_image", "balanced_sampling", "size", "data_dir", "as_rgb", "download", "model", "preset", "epochs", "batch_size", "lr", "optimizer", "weight_decay", "scheduler", "augment", "grad_clip", "loss", "focal_gamma", "class_weights", "prediction_loss_weight", "step_loss_weight", "seed", "nan_policy", "n_boot", "max_batches", "device", "amp", "amp_cpu", "channels_last", "compile", "num_threads", "output_dir", "report", "progress")


def _size(value: str) -> int | str:
    return "native" if value.strip().lower() == "native" else int(value)


def check_resume_flags(args: argparse.Namespace) -> None:
    """--resume continues a run with its stored settings; a flag that would change what it computes is an error, not silently ignored."""
    from .engine.trainer import RESUME_FREE

    given = [n for n in (*TRAIN_OPTIONS, *MODEL_FLAGS, *MODEL_SWITCHES) if getattr(args, n) is not None and n not in RESUME_FREE]
    given += ["option"] * bool(args.option) + ["config"] * bool(args.config) + ["seeds"] * bool(args.seeds)
    if given:
        flags = ", ".join("--" + n.replace("_", "-") for n in given)
        allowed = ", ".join("--" + n.replace("_", "-") for n in RESUME_FREE)
        raise FocusNetError(f"--resume continues {args.resume} with its stored settings, so {flags} cannot be given; only {allowed} may change")


def config_from_args(args: argparse.Namespace):
    from .engine import TrainConfig

    stored = _read_json(args.config) if args.config else {}
    values = dict(stored.get("train") or stored)  # a run's config.json keeps the options under "train"
    if args.preset is not None:  # a run's config.json holds its preset's resolved recipe: the new preset fills it anew
        from .engine.config import PRESETS

        for name in {k for recipe in PRESETS.values() for k in recipe}:
            values.pop(name, None)
    if args.dataset is not None and values.get("data"):  # the given data replaces the stored files and their folder
        for name in ("data", "task", "data_dir", "on_bad_image"):
            values.pop(name, None)
        if values.get("size") == "native":
            values.pop("size")
    if args.data is not None:
        values.pop("dataset", None)
    for name in TRAIN_OPTIONS:
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    options = values.get("model_options", {})
    if not isinstance(options, dict):
        raise FocusNetError(f"model_options in {args.config} must be a JSON object of FocusNet options, got {type(options).__name__}")
    options = dict(options)
    options.update({k: getattr(args, k) for k in (*MODEL_FLAGS, *MODEL_SWITCHES) if getattr(args, k) is not None})
    options.update(parse_options(args.option))
    values["model_options"] = options
    return TrainConfig.from_dict(values)


def parse_options(items: list[str]) -> dict:
    """["saliency=2", "pathways=mp"] -> {"saliency": 2, "pathways": "mp"} (values read as JSON when they parse)."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise FocusNetError(f"--option expects KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw  # plain strings need no quotes: --option pathways=mp
    return out


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except OSError as e:
        raise FocusNetError(f"cannot read config {path}: {e.strerror}") from None
    except ValueError as e:
        raise FocusNetError(f"config {path} is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise FocusNetError(f"config {path} must hold a JSON object of training options")
    return value


def check_seeds(args: argparse.Namespace) -> None:
    if args.seed is not None:  # --seed was silently ignored
        raise FocusNetError("give --seed (one run) or --seeds (one run per seed), not both")


def cmd_train(args: argparse.Namespace) -> int:
    from .engine import resume_seeds, train, train_seeds
    from .engine.trainer import RESUME_FREE, is_seeds_folder

    if args.seeds and args.resume:
        raise FocusNetError("--seeds and --resume cannot be combined: resuming a --seeds folder continues its own seeds")
    several = bool(args.seeds) or bool(args.resume and is_seeds_folder(args.resume))
    if args.seed_workers is not None and not several:
        raise FocusNetError("--seed-workers needs several seeds: --seeds (e.g. --seeds 0 1 2), or --resume of a --seeds folder")
    workers = 1 if args.seed_workers is None else args.seed_workers
    if args.seeds:
        check_seeds(args)
    if args.resume:
        check_resume_flags(args)
    if args.data and args.dataset:
        raise FocusNetError("give --dataset (a registered flag) or --data (your own files), not both")
    config = config_from_args(args)
    given = {n for n in RESUME_FREE if getattr(args, n) is not None}  # on --resume these replace the run's own settings
    if args.seeds:
        train_seeds(config, args.seeds, workers)
    elif several:
        resume_seeds(args.resume, config, given, workers)
    else:
        train(config, resume=args.resume, given=given if args.resume else None)
    return 0


# ----------------------------------------------------------------------------- evaluate, datasets, demo


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .engine import evaluate_checkpoint
    from .engine.checkpoint import resolve_checkpoint_path
    from .fileio import check_writable_parent, write_json

    if args.output:
        check_writable_parent(args.output)
    metrics = evaluate_checkpoint(args.checkpoint, args.split, args.data_dir, args.device, args.batch_size)
    print(f"{args.split}: ACC {metrics['acc']:.4f} [{metrics['acc_ci'][0]:.3f}, {metrics['acc_ci'][1]:.3f}]  AUC {metrics['auc']:.4f} [{metrics['auc_ci'][0]:.3f}, {metrics['auc_ci'][1]:.3f}]  ECE {metrics['ece']:.4f}  (n={metrics['n']})")
    saved = os.path.join(os.path.dirname(os.path.abspath(resolve_checkpoint_path(args.checkpoint))), "metrics.json")
    if os.path.isfile(saved) and args.split in ("val", "test"):
        print(_compared_with_saved(metrics, saved, args.split))
    if args.output:
        write_json(args.output, metrics)
    return 0


def _compared_with_saved(metrics: dict, saved: str, split: str) -> str:
    """Whether the fresh ACC and AUC equal those the run saved in its metrics.json: exactly, or
    up to float rounding (a torchrun run scored its batches on several processes: other sums)."""
    try:
        with open(saved, encoding="utf-8") as f:
            ref = json.load(f)[split]
        diff = max(abs(float(ref[k]) - metrics[k]) for k in ("acc", "auc"))
    except (OSError, ValueError, KeyError, TypeError) as e:  # damaged or edited: say so, keep the fresh result
        return f"cannot compare with {saved} ({type(e).__name__}: it is unreadable or lacks {split} acc/auc)"
    if diff <= 1e-9:
        return f"matches {saved}"
    if diff <= 1e-4:
        return f"matches {saved} up to float rounding (largest difference {diff:.1g})"
    return f"DIFFERS FROM {saved} (largest difference in ACC / AUC: {diff:.4f})"


def cmd_datasets(args: argparse.Namespace) -> int:
    from .data import format_dataset_table

    print(format_dataset_table())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """A few minutes on a laptop CPU: FocusNet on the synthetic lesion data, then the run's summary.
    Batch 64 rather than the protocol's 128: the model sits on a plateau for its first few hundred
    steps on this task, and twice the steps per epoch get past it within the demo's epochs."""
    from .engine import TrainConfig, train

    cfg = TrainConfig(dataset="synth-lesion", epochs=args.epochs, batch_size=64, output_dir=args.output_dir, preset="official", n_boot=200)
    train(cfg)
    return 0


# ----------------------------------------------------------------------------- visualize, report, hit-rate


def cmd_visualize(args: argparse.Namespace) -> int:
    from .viz import visualize

    paths = visualize(args.model_path, args.dataset, args.out, args.n, args.data_dir, args.split, args.seed, args.device, args.pool, args.indices)
    for name, path in paths.items():
        print(f"{name:<17} {path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .viz import write_report

    print(write_report(args.run_dir, args.out, args.n, args.data_dir, args.device))
    return 0


def cmd_hit_rate(args: argparse.Namespace) -> int:
    from .fileio import check_writable_parent, write_json
    from .viz import checkpoint_hit_rate, format_hit_rate

    if args.output:
        check_writable_parent(args.output)
    result = checkpoint_hit_rate(args.checkpoint, args.split, args.data_dir, args.n, args.device, args.seed)
    print(format_hit_rate(result))
    if args.output:
        write_json(args.output, result)
    return 0


def add_viz_args(parsers: dict[str, argparse.ArgumentParser]) -> None:
    v = parsers["visualize"]
    _add(v, "--model-path", required=True, help="best_model.pth (or a run folder)")
    _add(v, "--dataset", default=None, help="the model's dataset flag (default: from the checkpoint)")
    _add(v, "--out", default=None, help="folder for the PNG files (default <run folder>/viz)")
    _add(v, "--n", type=int, default=8, help="images in the fixation gallery (half correct, half wrong)")
    _add(v, "--indices", type=int, nargs="+", default=None, help="show these split images instead of random ones")
    _add(v, "--pool", type=int, default=256, help="random images run to choose from and to average gates over")
    r = parsers["report"]
    r.add_argument("run_dir", help="a run folder (results/<flag>_<time> or <flag>_latest)")
    _add(r, "--out", default=None, help="write here instead of <run dir>/report.html")
    _add(r, "--n", type=int, default=8, help="images in the fixation gallery")
    h = parsers["hit-rate"]
    _add(h, "--checkpoint", required=True, help="best_model.pth of a run on synthetic lesion data, or its run folder")
    _add(h, "--n", type=int, default=None, help="a random subset of this many images (default: the whole split)")
    _add(h, "--output", default=None, help="also write the result to this JSON file")
    for p in (v, h):
        _add(p, "--split", default="test", choices=("train", "val", "test"))
        _add(p, "--seed", type=int, default=0)
    for p in (v, r, h):
        _add(p, "--data-dir", default=None, help="default: the run's data folder")
        _add(p, "--device", default="auto", choices=("auto", "cpu", "cuda"))


# ----------------------------------------------------------------------------- predict, export


def cmd_predict(args: argparse.Namespace) -> int:
    """Exit 0 when every input was predicted, 1 when some failed (one stderr line each)."""
    from tqdm import tqdm

    from .inference.output import predict_files

    fmt = args.format or ("json" if (args.output or "").lower().endswith(".json") else "csv")

    def failed(failure) -> None:
        tqdm.write(f"focusnet predict: error: {failure.message}", file=sys.stderr)

    run = predict_files(args.checkpoint, args.inputs, fmt, args.output, args.overlay, args.batch_size, args.device, args.progress, failed)
    if args.output:
        print(f"{len(run.predictions)} predicted, {len(run.failures)} failed -> {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(run.text)
    if run.overlays:
        print(f"{len(run.overlays)} overlays -> {args.overlay}", file=sys.stderr)
    return 1 if run.failures else 0


def cmd_export(args: argparse.Namespace) -> int:
    from .inference import export_model

    result = export_model(args.checkpoint, args.format, args.output)
    opset = f", opset {result.opset}" if result.opset else ""
    print(f"{result.path} ({result.format}{opset}; outputs logits; max probability difference to PyTorch {result.max_difference:.1e})")
    return 0


def add_inference_args(parsers: dict[str, argparse.ArgumentParser]) -> None:
    p, x = parsers["predict"], parsers["export"]
    for q in (p, x):
        _add(q, "--checkpoint", required=True, help="best_model.pth, its .safetensors, or a run folder")
    p.add_argument("inputs", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, TIFF, BMP, .npy, .nii, .nii.gz, .dcm) or folders (searched recursively; for a 3D model a folder of DICOM slices is one volume)")
    _add(p, "--format", default=None, choices=("csv", "json"), help="output format (default: json when --output ends in .json, else csv)")
    _add(p, "--output", default=None, help="write the table here (default: standard output)")
    _add(p, "--overlay", default=None, metavar="DIR", help="also write each image with its fixations drawn (PNG) to this folder")
    _add(p, "--batch-size", type=int, default=32)
    _switch(p, "progress", "progress bar (default: when stderr is a terminal)")
    _add(x, "--format", required=True, choices=("onnx", "torchscript"), help="onnx needs pip install 'focusnet[export]'")
    _add(x, "--output", default=None, help="default: beside the checkpoint, best_model.onnx or best_model.torchscript.pt")
    _add(p, "--device", default="auto", choices=("auto", "cpu", "cuda"))


# ----------------------------------------------------------------------------- entry point

COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {
    "train": (cmd_train, "train a model (official MedMNIST protocol by default)"),
    "evaluate": (cmd_evaluate, "re-score a saved model on a split"),
    "datasets": (cmd_datasets, "list the dataset flags"),
    "demo": (cmd_demo, "train FocusNet briefly on the built-in synthetic data"),
    "visualize": (cmd_visualize, "figures of where a trained FocusNet looks (PNG files)"),
    "report": (cmd_report, "rebuild a run folder's self-contained report.html"),
    "hit-rate": (cmd_hit_rate, "share of synthetic-lesion images where a saccade lands on the lesion"),
    "predict": (cmd_predict, "run a trained model on image files and folders (CSV/JSON, overlays)"),
    "export": (cmd_export, "export a trained model to ONNX or TorchScript"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrors(prog="focusnet", description="FocusNet: saccadic attention for 2D/3D medical image classification")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parsers = {name: sub.add_parser(name, help=help, description=help) for name, (_, help) in COMMANDS.items()}
    add_train_args(parsers["train"])
    e = parsers["evaluate"]
    _add(e, "--checkpoint", required=True, help="best_model.pth, its .safetensors, or a run folder")
    _add(e, "--split", default="test", choices=("train", "val", "test"))
    _add(e, "--data-dir", default=None)
    _add(e, "--device", default="auto", choices=("auto", "cpu", "cuda"))
    _add(e, "--batch-size", type=int, default=None)
    _add(e, "--output", default=None, help="also write the metrics to this JSON file")
    demo = parsers["demo"]
    _add(demo, "--epochs", type=int, default=12)
    _add(demo, "--output-dir", default="results")
    add_viz_args(parsers)
    add_inference_args(parsers)
    parser.commands = parsers
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # name the subcommand whose flags were mistyped, not the top level
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return COMMANDS[args.command][0](args)
    except FocusNetError as e:
        if not e.shared or os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
            print(f"focusnet {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"focusnet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
