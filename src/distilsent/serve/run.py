"""Running the server: uvicorn in this process, or several worker processes built from the environment."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from distilsent.core.classifier import LoadConfig, available_threads
from distilsent.core.errors import DistilsentError, MissingExtraError
from distilsent.core.process import die_with_parent
from distilsent.serve.app import create_app
from distilsent.serve.config import ServeConfig
from distilsent.serve.middleware import access_logger

try:
    import uvicorn
except ImportError as e:  # pragma: no cover - exercised by the missing-extra test
    raise MissingExtraError("distilsent serve", "serve", e.name or "uvicorn") from e

__all__ = ["app_from_env", "run"]

_CONFIG_ENV = "DISTILSENT_SERVE_CONFIG"


class ModelLoadError(DistilsentError):
    """The server stopped because its model could not load (exit status 2 from the CLI)."""


def _uvicorn_kwargs(serve: ServeConfig) -> dict[str, Any]:
    return {
        "host": serve.host,
        "port": serve.port,
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": serve.graceful_timeout,
        "server_header": False,
    }


def app_from_env() -> Any:
    """App factory for multi-process serving: each worker reads the configs from the environment."""
    # uvicorn's supervisor is the parent; killed with -9 it would leave workers holding the port.
    die_with_parent()
    raw = json.loads(os.environ[_CONFIG_ENV])
    serve = ServeConfig.from_dict(raw["serve"])
    _configure_logging(serve)
    return create_app(serve, LoadConfig.from_dict(raw["load"]))


def _configure_logging(serve: ServeConfig) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    access_logger.addHandler(handler)
    access_logger.setLevel(logging.INFO if serve.access_log else logging.WARNING)
    access_logger.propagate = False
    logging.basicConfig(level=logging.INFO, format="distilsent: %(message)s")
    logging.getLogger("uvicorn.error").setLevel(logging.INFO)


def run(serve: ServeConfig, load: LoadConfig) -> None:
    """Run the server until SIGINT/SIGTERM; in-flight requests get ``graceful_timeout`` to finish."""
    _configure_logging(serve)
    if serve.workers == 1:
        app = create_app(serve, load)
        server = uvicorn.Server(uvicorn.Config(app, **_uvicorn_kwargs(serve)))
        state = app.state.distilsent

        def stop() -> None:
            server.should_exit = True

        state.on_load_failure = stop
        server.run()
        if state.load_error is not None and not serve.wait_for_model:
            raise ModelLoadError(f"the model failed to load: {state.load_error}")
        return
    if load.threads is None:
        load = LoadConfig.from_dict(
            {**load.to_dict(), "threads": max(1, available_threads() // serve.workers)}
        )
    os.environ[_CONFIG_ENV] = json.dumps({"serve": serve.to_dict(), "load": load.to_dict()})
    uvicorn.run(
        "distilsent.serve.run:app_from_env", factory=True, workers=serve.workers, **_uvicorn_kwargs(serve)
    )
