"""Old module paths (before the ``core/`` layout) keep importing, with a DeprecationWarning.

``import distilsent.api`` gives :mod:`distilsent.core.classifier`, and so on. ``distilsent.train`` and
``distilsent.distill`` are the package's functions now, so importing them as modules is an error that
names the new module.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

__all__ = ["MOVED", "install"]

MOVED = {
    "distilsent.api": "distilsent.core.classifier",
    "distilsent.models": "distilsent.core.models",
    "distilsent.tokenization": "distilsent.core.tokenization",
    "distilsent.engine": "distilsent.core.engine",
    "distilsent.engine.torch_engine": "distilsent.core.engine.torch_engine",
    "distilsent.engine.onnx_engine": "distilsent.core.engine.onnx_engine",
    "distilsent.explain": "distilsent.core.explain",
    "distilsent.data": "distilsent.formats",
    "distilsent.card": "distilsent.training.card",
    "distilsent.convert": "distilsent.training.convert",
    "distilsent.augment": "distilsent.training.augment",
    "distilsent.metrics": "distilsent.evaluation.metrics",
    "distilsent.evaluate": "distilsent.evaluation.evaluate",
    "distilsent.calibration": "distilsent.evaluation.calibration",
    "distilsent.audit": "distilsent.fairness.audit",
}
_NOW_FUNCTIONS = {
    "distilsent.train": "distilsent.training.train",
    "distilsent.distill": "distilsent.training.distill",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: object = None, target: object = None) -> object:
        if fullname in _NOW_FUNCTIONS:
            raise ModuleNotFoundError(
                f"{fullname} is a function now; its module is {_NOW_FUNCTIONS[fullname]}", name=fullname
            )
        if fullname in MOVED:
            return importlib.machinery.ModuleSpec(fullname, self)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(
            f"{spec.name} moved to {MOVED[spec.name]}; the old path will be removed",
            DeprecationWarning,
            stacklevel=2,
        )
        module = importlib.import_module(MOVED[spec.name])
        sys.modules[spec.name] = module
        return module

    def exec_module(self, module: ModuleType) -> None:
        pass  # already executed under its new name


def install() -> None:
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())
