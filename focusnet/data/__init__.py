"""FocusNet data layer: MedMNIST registry, npz -> tensor loading, batched loader and augmentation,
and the synthetic "find the lesion" datasets.

    from focusnet.data import load_dataset, TensorLoader, Augment
    data = load_dataset("synth-lesion", size=28)          # generated on first use (~1 s)
    loader = TensorLoader(data.splits["train"], batch_size=128, shuffle=True,
                          augment=Augment(data.info.spatial_dims))
    for x, y, idx in loader: ...                            # x (B, C, H, W) float32, y (B, L) int64
"""

from .augment import Augment
from .custom import Prepared, prepare_custom
from .dataset import MedMNISTData, SplitArrays, load_dataset, load_npz, load_run_data
from .download import check_md5, download_file, md5sum
from .loader import TensorLoader
from .registry import (
    DatasetInfo,
    default_data_dir,
    format_dataset_table,
    get_dataset_info,
    list_datasets,
    register_dataset,
)
from .sampling import BalancedTensorLoader, balanced_weights
from .synthetic import make_lesion_dataset

__all__ = [
    "Augment",
    "BalancedTensorLoader",
    "DatasetInfo",
    "MedMNISTData",
    "Prepared",
    "SplitArrays",
    "TensorLoader",
    "balanced_weights",
    "check_md5",
    "default_data_dir",
    "download_file",
    "format_dataset_table",
    "get_dataset_info",
    "list_datasets",
    "load_dataset",
    "load_run_data",
    "load_npz",
    "make_lesion_dataset",
    "md5sum",
    "prepare_custom",
    "register_dataset",
]
