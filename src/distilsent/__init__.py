"""distilsent: DistilBERT text classification, from training to serving.

>>> import distilsent
>>> distilsent.load().predict("Hello, my dog is cute")
Prediction(label='POSITIVE', score=0.99..., scores={...})

Importing the package is light: torch and transformers load with the first model, and the training
API (``train``, ``distill``, ``convert_bert_to_distilbert``) is imported when first used.
"""

from __future__ import annotations

import importlib
import typing

from distilsent import _compat
from distilsent._version import __version__
from distilsent.core.classifier import Classifier, LoadConfig, load
from distilsent.core.errors import (
    DataError,
    DistilsentError,
    InvalidInputError,
    InvalidTypeError,
    MissingExtraError,
    ModelFormatError,
    ModelNotFoundError,
    UnsafeCheckpointError,
)
from distilsent.core.models import resolve_model
from distilsent.core.postprocess import Prediction

if typing.TYPE_CHECKING:
    from distilsent.training.convert import convert_bert_to_distilbert
    from distilsent.training.distill import DistillConfig, distill
    from distilsent.training.train import TrainConfig, TrainResult, train

__all__ = [
    "Classifier",
    "DataError",
    "DistillConfig",
    "DistilsentError",
    "InvalidInputError",
    "InvalidTypeError",
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
    "distill",
    "load",
    "resolve_model",
    "train",
]

_LAZY = {
    "TrainConfig": "distilsent.training.train",
    "TrainResult": "distilsent.training.train",
    "train": "distilsent.training.train",
    "DistillConfig": "distilsent.training.distill",
    "distill": "distilsent.training.distill",
    "convert_bert_to_distilbert": "distilsent.training.convert",
}

_compat.install()


def __getattr__(name: str) -> typing.Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'distilsent' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
