"""``ServeConfig``: how ``distilsent serve`` listens, batches and limits (no web dependencies)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from distilsent.core.config import Config
from distilsent.core.errors import InvalidInputError

__all__ = ["API_KEYS_ENV", "ServeConfig"]

API_KEYS_ENV = "DISTILSENT_API_KEYS"


@dataclass
class ServeConfig(Config):
    """How ``distilsent serve`` listens, batches and limits; every field is also a CLI flag."""

    host: str = "127.0.0.1"
    """Address to listen on; 0.0.0.0 exposes the server to the network."""
    port: int = 8080
    """TCP port to listen on."""
    api_keys: tuple[str, ...] = ()
    """Accepted API keys (``Authorization: Bearer KEY`` or ``X-API-Key: KEY``); none = no authentication."""
    api_key_file: str | None = None
    """File with one accepted API key per line (added to ``api_keys`` and $DISTILSENT_API_KEYS)."""
    max_batch_requests: int = 64
    """Most requests packed into one model call."""
    max_wait_ms: float = 2.0
    """How long a request may wait for others to share its model call."""
    max_concurrent: int = 512
    """Most requests waiting at once; more are answered 429 with Retry-After."""
    max_queue_seconds: float = 0.5
    """Admit a request only if the tokens already queued and its own would be through the model
    within this many seconds at its measured rate; else 429 with the estimated drain time as
    Retry-After. Bounds what an admitted request waits however many clients there are."""
    request_timeout: float = 30.0
    """A request not answered within this many seconds gets 503 with Retry-After, and its remaining
    work is dropped."""
    max_input_chars: int = 100_000
    """Longest text accepted, in characters; longer ones are answered 422."""
    max_inputs: int = 1024
    """Most texts in one request."""
    max_body_bytes: int = 8 * 1024 * 1024
    """Largest request body; larger ones are answered 413."""
    workers: int = 1
    """Server processes, each with its own copy of the model and its own share of the CPU threads."""
    access_log: bool = True
    """Write one JSON line per request to stderr (never headers or keys)."""
    graceful_timeout: float = 30.0
    """On SIGTERM, seconds to let in-flight requests finish before closing."""
    wait_for_model: bool = False
    """When the model fails to load, keep serving (503 with the reason) instead of exiting with status
    2 so that a supervisor restarts the server (with workers > 1, each worker keeps serving 503)."""

    def __post_init__(self) -> None:
        self.api_keys = tuple(self.api_keys)
        if not 0 <= self.port <= 65535:
            raise InvalidInputError(f"port must be between 0 and 65535, got {self.port}")
        for name in ("max_batch_requests", "max_concurrent", "max_input_chars", "max_inputs", "workers"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_body_bytes < 1024:
            raise InvalidInputError(f"max_body_bytes must be at least 1024, got {self.max_body_bytes}")
        if self.max_wait_ms < 0:
            raise InvalidInputError(f"max_wait_ms must be 0 or more, got {self.max_wait_ms}")
        if self.max_queue_seconds <= 0 or self.request_timeout <= 0:
            raise InvalidInputError("max_queue_seconds and request_timeout must be more than 0 seconds")
        if self.graceful_timeout < 0:
            raise InvalidInputError(f"graceful_timeout must be 0 or more, got {self.graceful_timeout}")
        if any(not k.strip() for k in self.api_keys):
            raise InvalidInputError("an API key is empty")

    def keys(self) -> list[bytes]:
        """Every accepted key: flags, key file and environment."""
        keys = list(self.api_keys)
        if self.api_key_file is not None:
            try:
                lines = Path(self.api_key_file).read_text().splitlines()
            except OSError as e:
                raise InvalidInputError(
                    f"cannot read api_key_file {self.api_key_file}: {e.strerror}"
                ) from None
            keys += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
            if not keys:
                raise InvalidInputError(f"api_key_file {self.api_key_file} holds no key")
        keys += [k.strip() for k in os.environ.get(API_KEYS_ENV, "").split(",") if k.strip()]
        return [k.encode() for k in keys]
