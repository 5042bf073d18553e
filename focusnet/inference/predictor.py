"""`focusnet.load(path)` -> a Predictor: the trained model, its preprocessing, and `predict`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..engine.checkpoint import Checkpoint, load_checkpoint
from ..engine.distributed import pick_device
from ..errors import FocusNetError
from ..metrics import probabilities
from ..tasks import MULTI_LABEL
from .preprocess import Preprocess
from .readers import Source, find_inputs


@dataclass
class Prediction:
    """What the model says about one image. T = number of saccades, d = 2 or 3."""

    source: str  # the file, series folder, or "array[i]"
    shape: tuple[int, ...]  # spatial shape of the original image: (H, W) or (D, H, W)
    probabilities: dict[str, float]  # class name -> probability (softmax; sigmoid per label for multi-label)
    predicted: list[str]  # single-label: [the most likely class]; multi-label: every label with p >= 0.5
    indices: list[int]  # class indices of `predicted`
    fixations: np.ndarray | None = None  # (T+1, d) normalised (x, y[, z]) in [-1, 1]; row 0 is the glance
    half_widths: np.ndarray | None = None  # (T+1,) foveal half-width, normalised; None without fixations

    @property
    def class_name(self) -> str:
        """The predicted class; for multi-label the positive labels joined by '; ' ('' when none)."""
        return "; ".join(self.predicted)

    @property
    def fixations_px(self) -> np.ndarray | None:
        """(T+1, d) fixations in pixels of the original image: x = column, y = row, z = slice
        (for NIfTI: voxel indices i, j, k), pixel centres at whole numbers."""
        if self.fixations is None:
            return None
        sides = np.array(self.shape[::-1], dtype=np.float64)  # (W, H[, D]) matches (x, y[, z])
        return ((self.fixations.astype(np.float64) + 1) * sides - 1) / 2

    def to_dict(self) -> dict:
        """Plain values for JSON."""
        out = {"file": self.source, "class": self.class_name, "predicted": self.predicted, "probabilities": self.probabilities, "shape": list(self.shape)}
        if self.fixations is not None:
            out["fixations"] = np.round(self.fixations_px, 3).tolist()
            out["fixations_normalised"] = np.round(self.fixations.astype(np.float64), 6).tolist()
        return out


@dataclass
class Failure:
    """An input that could not be predicted; `message` is one line that names it."""

    source: str
    message: str


class Predictor:
    """A trained model with the preprocessing of its training data.

    predictor.predict(images) -> list[Prediction]: images are paths (files, or folders searched
    recursively), numpy arrays or tensors ((H, W), (H, W, C) or (C, H, W); 3D: (D, H, W), ...),
    one or a list. `predictor.model` is the eval-mode torch model, `predictor.preprocess` turns
    one image into its input tensor.
    """

    def __init__(self, checkpoint: Checkpoint, device: str | torch.device = "auto"):
        self.checkpoint = checkpoint
        self.device = pick_device(device) if device in ("auto", "cpu", "cuda") else torch.device(device)
        self.model = checkpoint.build(self.device)
        data = checkpoint.data
        self.preprocess = Preprocess.from_data(data)
        self.task: str = data["task"]
        k = int(data["num_classes"])
        names = [str(data.get("label_names", {}).get(str(i), i)) for i in range(k)]
        self.class_names = names if len(set(names)) == k else [f"{i}: {n}" for i, n in enumerate(names)]

    @property
    def spatial_dims(self) -> int:
        return self.preprocess.spatial_dims

    @property
    def has_fixations(self) -> bool:
        return hasattr(self.model, "forward_trace")

    def predict(self, images, batch_size: int = 32) -> list[Prediction]:
        """Predictions in input order (folders expanded); raises FocusNetError at the first bad input."""
        out = []
        for result in self.predict_iter(images, batch_size):
            if isinstance(result, Failure):
                raise FocusNetError(result.message)
            out.append(result)
        return out

    def predict_iter(self, images, batch_size: int = 32) -> Iterator[Prediction | Failure]:
        """One Prediction or Failure per input; a bad input does not stop the others. Failures
        come out as soon as they are found, predictions once their batch has run."""
        if batch_size < 1:
            raise FocusNetError(f"batch size must be >= 1, got {batch_size}")
        sources = images if _all_sources(images) else find_inputs(images, self.spatial_dims)
        batch: list[tuple[Source, torch.Tensor, tuple[int, ...]]] = []
        for source in sources:
            try:
                x, shape = self.preprocess.prepare(source)
            except FocusNetError as e:
                yield Failure(source.name, str(e))
                continue
            batch.append((source, x, shape))
            if len(batch) == batch_size:
                yield from self._run(batch)
                batch = []
        if batch:
            yield from self._run(batch)

    @torch.no_grad()
    def run_model(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Preprocessed (B, C, *S) -> (probabilities (B, K), fixations (B, T+1, d) | None, half-widths (B, T+1) | None)."""
        x = x.to(self.device, torch.float32)
        if self.has_fixations:
            trace = self.model.forward_trace(x)
            logits, fix, hw = trace.logits, trace.fixations.float().cpu().numpy(), trace.half_widths.float().cpu().numpy()
        else:
            logits, fix, hw = self.model(x), None, None
        return probabilities(logits.float(), self.task).cpu().numpy(), fix, hw

    def _run(self, batch: list[tuple[Source, torch.Tensor, tuple[int, ...]]]) -> Iterator[Prediction]:
        probs, fix, hw = self.run_model(torch.stack([x for _, x, _ in batch]))
        for i, (source, _, shape) in enumerate(batch):
            p = probs[i]
            indices = [int(j) for j in np.flatnonzero(p >= 0.5)] if self.task == MULTI_LABEL else [int(p.argmax())]
            yield Prediction(
                source=source.name,
                shape=shape,
                probabilities={name: float(v) for name, v in zip(self.class_names, p)},
                predicted=[self.class_names[j] for j in indices],
                indices=indices,
                fixations=None if fix is None else fix[i],
                half_widths=None if hw is None else hw[i],
            )


def _all_sources(images) -> bool:
    return isinstance(images, (list, tuple)) and all(isinstance(s, Source) for s in images)


def load(path: str | os.PathLike, device: str | torch.device = "auto") -> Predictor:
    """A run folder, best_model.pth or best_model.safetensors -> a ready Predictor."""
    return Predictor(load_checkpoint(os.fspath(path)), device)

