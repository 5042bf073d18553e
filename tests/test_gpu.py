"""The CUDA path, on a machine with a GPU (skipped elsewhere, CI included): training with bf16
autocast (the CUDA default), channels-last and torch.compile, 2D and 3D, then scoring the saved
checkpoint again, which must reproduce the metrics the run wrote."""

from __future__ import annotations

import math

import pytest
import torch

from focusnet.engine import TrainConfig, evaluate_checkpoint, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

TINY = {"epochs": 2, "max_batches": 3, "n_boot": 20, "report": False, "progress": False, "device": "cuda"}


@pytest.mark.parametrize("dataset", ["synth-lesion", "synth-lesion3d"])
@pytest.mark.parametrize("speed", [{}, {"channels_last": True}, {"compile": "inductor"}], ids=["bf16", "bf16+channels_last", "bf16+compile"])
def test_training_on_cuda_and_scoring_the_checkpoint_again(tmp_path, dataset, speed):
    torch.cuda.reset_peak_memory_stats()
    result = train(TrainConfig(dataset=dataset, data_dir=str(tmp_path / "data"), output_dir=str(tmp_path / "runs"), **TINY, **speed))
    assert torch.cuda.max_memory_allocated() > 0  # it ran on the GPU
    test = result.metrics["test"]
    assert all(math.isfinite(test[k]) for k in ("acc", "auc"))
    again = evaluate_checkpoint(result.run_dir, "test", device="cuda")
    assert again["acc"] == pytest.approx(test["acc"], abs=1e-6) and again["auc"] == pytest.approx(test["auc"], abs=1e-4)
