import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # torch spins on busy 2-core machines otherwise

import os
from pathlib import Path

import pytest
import torch

SHARED_MEDMNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "medmnist"


@pytest.fixture(autouse=True)
def _deterministic_cpu():
    # Two cores on CI: keep torch from oversubscribing them, and make every test reproducible.
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    torch.manual_seed(0)


@pytest.fixture
def shared_medmnist() -> Path:
    """The real MedMNIST files beside the project; tests using it skip cleanly when absent."""
    if not SHARED_MEDMNIST.is_dir():
        pytest.skip(f"real MedMNIST files not found at {SHARED_MEDMNIST}")
    return SHARED_MEDMNIST
