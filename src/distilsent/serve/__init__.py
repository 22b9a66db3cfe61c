"""``distilsent serve``: an HTTP server with dynamic batching, limits, metrics and a web page.

This package's ``__init__`` holds only the configuration, so ``distilsent --help`` works without the
``serve`` extra; FastAPI, uvicorn and prometheus-client are imported by :func:`create_app` and
:func:`serve`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from distilsent.serve.config import API_KEYS_ENV, ServeConfig

if TYPE_CHECKING:
    from distilsent.core.classifier import Classifier, LoadConfig

__all__ = ["API_KEYS_ENV", "ServeConfig", "create_app", "serve"]


def create_app(
    serve: ServeConfig | None = None, load: LoadConfig | None = None, *, classifier: Classifier | None = None
) -> Any:
    """The FastAPI app; the model loads in the background at startup and ``/ready`` says when it is done.

    Pass ``classifier`` to serve one already loaded (tests, embedding in another program).
    """
    from distilsent.serve.app import create_app as _create

    return _create(serve, load, classifier=classifier)


def serve(serve: ServeConfig, load: LoadConfig) -> None:
    """Run the server until SIGINT/SIGTERM; in-flight requests get ``graceful_timeout`` to finish."""
    serve.keys()  # a bad key file fails now, not in a worker
    from distilsent.serve.run import run

    run(serve, load)
