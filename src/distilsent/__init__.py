"""distilsent: DistilBERT text classification, from training to serving.

>>> import distilsent
>>> distilsent.load().predict("Hello, my dog is cute")
Prediction(label='POSITIVE', score=0.99..., scores={...})
"""

from __future__ import annotations

from ._exceptions import (
    DataError,
    DistilsentError,
    MissingExtraError,
    ModelFormatError,
    ModelNotFoundError,
    UnsafeCheckpointError,
)
from ._version import __version__
from .api import Classifier, LoadConfig, Prediction, load
from .convert import convert_bert_to_distilbert
from .models import resolve_model
from .train import TrainConfig, TrainResult, train

__all__ = [
    "Classifier",
    "DataError",
    "DistilsentError",
    "LoadConfig",
    "MissingExtraError",
    "ModelFormatError",
    "ModelNotFoundError",
    "Prediction",
    "TrainConfig",
    "TrainResult",
    "UnsafeCheckpointError",
    "__version__",
    "convert_bert_to_distilbert",
    "load",
    "resolve_model",
    "train",
]
