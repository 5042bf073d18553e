"""Training engine: config and presets, the trainer, evaluation, checkpoints, torchrun support."""

from .checkpoint import Checkpoint, load_checkpoint, save_model
from .config import PRESETS, TrainConfig
from .evaluator import evaluate_checkpoint
from .trainer import RunResult, TrainingStopped, resume_seeds, train, train_seeds

__all__ = ["PRESETS", "Checkpoint", "RunResult", "TrainConfig", "TrainingStopped", "evaluate_checkpoint", "load_checkpoint", "save_model", "resume_seeds", "train", "train_seeds"]
