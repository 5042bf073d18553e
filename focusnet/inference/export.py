"""A checkpoint -> a standalone ONNX or TorchScript model, checked against PyTorch before it is kept.

The exported model is `forward`: input float32 (batch, C, *S) at the checkpoint's size,
normalised as (x / 255 - mean) / std (see `preprocess`), output logits (batch, K). Softmax (or a
sigmoid per label for multi-label tasks) is left to the caller, as in the library: logits keep
the choice of activation, thresholds and calibration open and avoid exporting two models. The
batch size is free. Everything needed to use it (task, class names, size, channels, mean, std,
activation) is stored inside the file as JSON: ONNX metadata_props["focusnet"]
(`onnxruntime.InferenceSession(path).get_modelmeta().custom_metadata_map["focusnet"]`), or the
TorchScript extra file "focusnet.json" (`torch.jit.load(path, _extra_files={"focusnet.json": ""})`).

Before the file takes its final name, its probabilities on random test images (a different
batch size than the export's) are compared with PyTorch's; above 1e-4 the export fails and
nothing is written.

ONNX uses the torch.export-based exporter (`torch.onnx.export(..., dynamo=True)`, which needs
onnxscript): opset 18 in 2D; opset 20 in 3D, where GridSample takes volumes. Two 3D ops have no
ONNX translation in torch's library, so they are given here: grid_sampler_3d (GridSample-20) and
adaptive average pooling to a size that does not divide the input (slices + ReduceMean).
TorchScript is torch.jit.trace: the control flow of FocusNet is fixed (num_saccades steps), so a
trace is the whole model.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from dataclasses import dataclass

import torch

from ..engine.checkpoint import load_checkpoint
from ..errors import FocusNetError
from ..fileio import atomic_path, check_writable_parent
from ..metrics import probabilities
from ..tasks import MULTI_LABEL
from .preprocess import Preprocess
from .readers import require

EXPORT_FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
TOLERANCE = 1e-4  # max |p_exported - p_torch| accepted
OPSET = {2: 18, 3: 20}
EXPORT_BATCH, CHECK_BATCH = 2, 3


@dataclass
class ExportResult:
    path: str
    format: str
    max_difference: float  # max |p| difference to PyTorch on the check images
    opset: int | None = None


def export_model(checkpoint: str, fmt: str = "onnx", output: str | None = None) -> ExportResult:
    """Export best_model.pth (or a run folder, or .safetensors) to `output`
    (default: beside the checkpoint, best_model.onnx / best_model.torchscript.pt)."""
    if fmt not in EXPORT_FORMATS:
        raise FocusNetError(f"unknown export format {fmt!r}; use onnx or torchscript")
    if fmt == "onnx":
        for module in ("onnx", "onnxscript", "onnxruntime"):
            require(module, "export", "ONNX export")
    ck = load_checkpoint(os.fspath(checkpoint))
    model = ck.build("cpu")
    pre = Preprocess.from_data(ck.data)
    output = output or os.path.join(os.path.dirname(os.path.abspath(ck.path)), "best_model" + SUFFIXES[fmt])
    check_writable_parent(output)
    meta = json.dumps(_metadata(ck))
    example, check = _images(pre, EXPORT_BATCH, seed=0), _images(pre, CHECK_BATCH, seed=1)
    opset = OPSET[pre.spatial_dims] if fmt == "onnx" else None
    with atomic_path(output) as tmp:
        if fmt == "onnx":
            _export_onnx(model, example, tmp, meta, opset, pre.spatial_dims)
            got = _run_onnx(tmp, check)
        else:
            _export_torchscript(model, example, tmp, meta)
            with _quiet(), torch.no_grad():
                got = torch.jit.load(tmp, map_location="cpu")(check)
        with torch.no_grad():
            want = probabilities(model(check), ck.data["task"])
        diff = float((probabilities(torch.as_tensor(got), ck.data["task"]) - want).abs().max())
        if not diff <= TOLERANCE:
            raise FocusNetError(f"the {fmt} export differs from PyTorch by {diff:.2g} in probability (> {TOLERANCE:g}); nothing written")
    return ExportResult(output, fmt, diff, opset)


def read_metadata(path: str) -> dict:
    """The focusnet JSON stored inside an exported .onnx or TorchScript file."""
    if path.endswith(".onnx"):
        ort = require("onnxruntime", "export", "reading ONNX files")
        return json.loads(ort.InferenceSession(path, providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map["focusnet"])
    extra = {"focusnet.json": ""}
    with _quiet():
        torch.jit.load(path, map_location="cpu", _extra_files=extra)
    return json.loads(extra["focusnet.json"])


def _metadata(ck) -> dict:
    d = ck.data
    k = int(d["num_classes"])
    return {
        "format": "focusnet-export",
        "version": 1,
        "model": ck.model_config["name"],
        "data": d,
        "classes": [str(d.get("label_names", {}).get(str(i), i)) for i in range(k)],
        "input": f"float32 (batch, {d['in_channels']}, {', '.join([str(d['size'])] * int(d['spatial_dims']))}) = (x / 255 - {d['mean']}) / {d['std']}, x in 0..255",
        "output": "logits (batch, K)",
        "activation": "sigmoid" if d["task"] == MULTI_LABEL else "softmax",
    }


def _images(pre: Preprocess, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, pre.in_channels, *[pre.size] * pre.spatial_dims), generator=g)
    return pre.normalise(x.float())


@contextlib.contextmanager
def _quiet():
    """The exporters print progress to stdout and warn about tracing; a user sees one result line."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _failure(fmt: str, e: Exception) -> FocusNetError:
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    reason = next((line for line in lines if "Error" in line and "Step" not in line), lines[0] if lines else type(e).__name__)
    other = "torchscript" if fmt == "onnx" else "onnx"
    return FocusNetError(f"{fmt} export failed ({type(e).__name__}: {reason[:200]}); try --format {other}")


# ----------------------------------------------------------------------------- ONNX


def _export_onnx(model: torch.nn.Module, example: torch.Tensor, path: str, meta: str, opset: int, spatial_dims: int) -> None:
    table = {torch.ops.aten.grid_sampler_3d.default: _grid_sample, torch.ops.aten._adaptive_avg_pool3d.default: _adaptive_avg_pool} if spatial_dims == 3 else {}
    batch = torch.export.Dim("batch", min=1, max=65536)
    try:
        with _quiet():
            program = torch.onnx.export(
                model, (example,), dynamo=True, opset_version=opset, input_names=["input"], output_names=["logits"],
                dynamic_shapes=({0: batch},), custom_translation_table=table, optimize=True, verbose=False,
            )
    except Exception as e:  # noqa: BLE001 - the exporter raises many types; all mean "this model does not export"
        raise _failure("onnx", e) from None
    program.model.metadata_props["focusnet"] = meta
    program.save(path, external_data=False)


def _run_onnx(path: str, x: torch.Tensor):
    ort = require("onnxruntime", "export", "checking the ONNX export")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input": x.numpy()})[0]


def _grid_sample(input, grid, interpolation_mode: int, padding_mode: int, align_corners: bool):
    """aten.grid_sampler_3d -> ONNX GridSample-20, which samples volumes."""
    from onnxscript import opset20 as op

    return op.GridSample(input, grid, align_corners=int(align_corners), mode=("linear", "nearest", "cubic")[interpolation_mode], padding_mode=("zeros", "border", "reflection")[padding_mode])


def _adaptive_avg_pool(x, output_size):
    """aten._adaptive_avg_pool3d with static sizes -> per axis, the mean of each adaptive window
    [floor(i n / o), ceil((i + 1) n / o)) (PyTorch's definition), concatenated."""
    from onnxscript import opset20 as op

    shape = [int(n) for n in x.shape[2:]]
    for k, (n, o) in enumerate(zip(shape, output_size)):
        if n == o:
            continue
        axis = op.Constant(value_ints=[2 + k])
        parts = []
        for i in range(o):
            start, end = (i * n) // o, -(-((i + 1) * n) // o)
            window = op.Slice(x, op.Constant(value_ints=[start]), op.Constant(value_ints=[end]), axis)
            parts.append(op.ReduceMean(window, axis, keepdims=1))
        x = op.Concat(*parts, axis=2 + k)
    return x


# ----------------------------------------------------------------------------- TorchScript


def _export_torchscript(model: torch.nn.Module, example: torch.Tensor, path: str, meta: str) -> None:
    try:
        with _quiet(), torch.no_grad():
            traced = torch.jit.trace(model, (example,), check_trace=False)
    except Exception as e:  # noqa: BLE001 - as above
        raise _failure("torchscript", e) from None
    try:
        with _quiet():  # torch.jit is deprecated in favour of torch.export; still the format asked for
            torch.jit.save(traced, path, _extra_files={"focusnet.json": meta})
    except RuntimeError as e:  # torch.jit reports a failed write (a full disk...) as RuntimeError, not OSError
        raise FocusNetError(f"cannot write {path}: {str(e).splitlines()[0][:200]}") from None
