"""Every error distilsent raises on purpose, in one place.

    DistilsentError                  base class; the CLI prints its message and exits with code 2
    ├── ModelNotFoundError           a model name, path or hub id that cannot be resolved
    ├── ModelFormatError             a model directory without config, weights or tokenizer
    ├── UnsafeCheckpointError        a pickle checkpoint refused without ``allow_pickle=True``
    ├── DataError                    a malformed input or training file (names the file and line)
    ├── MissingExtraError            an optional dependency is missing (names the extra to install)
    ├── InvalidInputError            a bad argument or option value (also a ``ValueError``)
    └── InvalidTypeError             an argument of the wrong type (also a ``TypeError``)

Bad arguments raise :class:`InvalidInputError` / :class:`InvalidTypeError`, which are also the
built-in ``ValueError`` / ``TypeError``, so callers keep catching what they already catch; a plain
``ValueError`` from deeper down is a bug, and the CLI reports it as one.
"""

from __future__ import annotations

__all__ = [
    "DataError",
    "DistilsentError",
    "InvalidInputError",
    "InvalidTypeError",
    "MissingExtraError",
    "ModelFormatError",
    "ModelNotFoundError",
    "UnsafeCheckpointError",
]


class DistilsentError(Exception):
    """Base class for errors whose message is meant for the user, not for a traceback."""


class ModelNotFoundError(DistilsentError, FileNotFoundError):
    """A model could not be resolved to a local directory."""


class ModelFormatError(DistilsentError, ValueError):
    """A model directory exists but lacks what a classifier needs."""


class UnsafeCheckpointError(DistilsentError):
    """Loading the checkpoint would unpickle it, which can run arbitrary code."""


class DataError(DistilsentError, ValueError):
    """An input or training file cannot be read as asked."""


class MissingExtraError(DistilsentError, ImportError):
    """An optional feature's dependencies are not installed."""

    def __init__(self, feature: str, extra: str, package: str) -> None:
        super().__init__(f"{feature} needs the '{package}' package: pip install 'distilsent[{extra}]'")
        self.extra = extra


class InvalidInputError(DistilsentError, ValueError):
    """An argument, option or input text that cannot be used as given."""


class InvalidTypeError(DistilsentError, TypeError):
    """An argument of the wrong type (e.g. ``None`` where a text was expected)."""
