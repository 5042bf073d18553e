"""A trained model on new images: read, preprocess as in training, predict, draw, export.

    import focusnet
    predictor = focusnet.load("results/pneumoniamnist_latest")     # run folder or best_model.pth
    for p in predictor.predict(["scan.png", "folder/", volume_array]):
        print(p.source, p.class_name, p.probabilities, p.fixations_px)

Readers (2D PNG/JPEG/TIFF/BMP and .npy need nothing extra; NIfTI and DICOM need
`pip install 'focusnet[io3d]'`) live in `readers`, the conversion to the model's input in
`preprocess`, batching and results in `predictor`, CSV/JSON/overlays in `output`, ONNX and
TorchScript in `export` (`pip install 'focusnet[export]'` for ONNX).
"""

from .export import EXPORT_FORMATS, export_model
from .predictor import Failure, Prediction, Predictor, load
from .preprocess import Preprocess
from .readers import SUPPORTED_SUFFIXES, Source, find_inputs, read_image

__all__ = [
    "EXPORT_FORMATS",
    "SUPPORTED_SUFFIXES",
    "Failure",
    "Prediction",
    "Predictor",
    "Preprocess",
    "Source",
    "export_model",
    "find_inputs",
    "load",
    "read_image",
]
