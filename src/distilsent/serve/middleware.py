"""The server's plumbing around the routes: JSON errors, the body-size limit and access log, metrics."""

from __future__ import annotations

import collections
import contextlib
import hmac
import json
import logging
import math
import time
from collections.abc import MutableMapping
from typing import Any

from distilsent.core.errors import MissingExtraError

try:
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client.core import UnknownMetricFamily
except ImportError as e:  # pragma: no cover - exercised by the missing-extra test
    raise MissingExtraError("distilsent serve", "serve", e.name or "fastapi") from e

__all__ = [
    "OPEN_ROUTES",
    "BodyLimitAndLog",
    "KeyGate",
    "Metrics",
    "ServerError",
    "error_response",
    "validation_message",
]

OPEN_ROUTES = {
    ("GET", "/"),  # the web page (its requests carry the key the user types)
    ("GET", "/health"),
    ("GET", "/ping"),
    ("GET", "/live"),
    ("GET", "/ready"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
    ("GET", "/openapi.json"),
}
"""(method, path) pairs answered without an API key; HEAD is treated as GET."""

access_logger = logging.getLogger("distilsent.access")


class ServerError(Exception):
    """An error answered with ``status`` and a JSON body."""

    def __init__(self, status: int, message: str, error_type: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.error_type, self.headers = status, message, error_type, headers


class KeyGate:
    """API keys checked from the request headers alone, before any body is read or parsed, with the
    failures of each client address throttled: after ``max_failures`` wrong or missing keys within
    ``window`` seconds, that address gets 429 (with the seconds until its oldest failure expires as
    ``Retry-After``) without its keys being compared at all."""

    def __init__(self, keys: list[bytes], max_failures: int = 10, window: float = 10.0) -> None:
        self.keys, self.max_failures, self.window = keys, max_failures, window
        self._failures: collections.OrderedDict[str, collections.deque[float]] = collections.OrderedDict()

    def needed(self, method: str, path: str) -> bool:
        return bool(self.keys) and ("GET" if method == "HEAD" else method, path) not in OPEN_ROUTES

    def check(self, headers: dict[bytes, bytes], client: str) -> ServerError | None:
        """None when the request carries an accepted key, else the error to answer."""
        now = time.monotonic()
        failures = self._failures.get(client)
        if failures is not None:
            while failures and failures[0] < now - self.window:
                failures.popleft()
            if len(failures) >= self.max_failures:
                wait = max(1, math.ceil(failures[0] + self.window - now))
                return ServerError(
                    429,
                    f"too many requests without a valid API key from this address; retry in {wait} s",
                    "unauthorized",
                    {"Retry-After": str(wait)},
                )
        header = headers.get(b"authorization", b"")
        given = header[7:].strip() if header[:7].lower() == b"bearer " else headers.get(b"x-api-key", b"")
        if given:
            # Compare against every key, always, so the time taken says nothing about which nearly matched.
            matched = False
            for key in self.keys:
                matched |= hmac.compare_digest(given, key)
            if matched:
                return None
        self._fail(client, now)
        if not given:
            return ServerError(401, "missing API key: send 'Authorization: Bearer KEY'", "unauthorized")
        return ServerError(401, "invalid API key", "unauthorized")

    def _fail(self, client: str, now: float) -> None:
        failures = self._failures.pop(client, None) or collections.deque()
        failures.append(now)
        self._failures[client] = failures  # most recent last
        while len(self._failures) > 10_000:  # addresses seen once long ago go first
            self._failures.popitem(last=False)


# Sequences per model call: distilsent's series and TEI's te_batch_next_size count the same thing.
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    """The Prometheus series the server exports, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "distilsent_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "distilsent_request_seconds",
            "Request latency in seconds",
            ["route"],
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.batch = Histogram(
            "distilsent_batch_size",
            "Sequences per model call",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.model_seconds = Histogram(
            "distilsent_model_seconds",
            "Seconds per batcher cycle spent in the model",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.texts = Counter("distilsent_texts", "Texts classified", registry=r)
        self.queue = Gauge("distilsent_queue_depth", "Requests waiting for the model", registry=r)
        self.rate = Gauge("distilsent_texts_per_second", "Texts classified per second, last 10 s", registry=r)
        self._window: collections.deque[tuple[float, int]] = collections.deque()
        self._in_window = 0
        # Text Embeddings Inference's series, under its names, so that its dashboards work unchanged.
        # Its counters carry no "_total" suffix, which prometheus_client adds to every Counter: they
        # are exported by a collector of their own, untyped.
        self.tei_counts = _PlainCounters(
            {"te_request_count": "method", "te_request_success": "method", "te_request_failure": "err"}
        )
        r.register(self.tei_counts)
        seconds = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
        self.tei_durations = {
            part: Histogram(
                f"te_request_{part}duration",
                f"TEI: request {part or 'total '}time",
                buckets=seconds,
                registry=r,
            )
            for part in ("", "tokenization_", "queue_", "inference_")
        }
        self.tei_batch_size = Histogram(
            "te_batch_next_size",
            "TEI: sequences per model call",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.tei_batch_tokens = Histogram(
            "te_batch_next_tokens",
            "TEI: tokens per model call",
            buckets=(64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536),
            registry=r,
        )
        self.tei_queue = Gauge("te_queue_size", "TEI: requests waiting for the model", registry=r)

    def request_timed(self, timing: dict[str, float]) -> None:
        """One answered classification request's phases (seconds), as TEI records them."""
        self.tei_durations[""].observe(timing["total"])
        self.tei_durations["tokenization_"].observe(timing["tokenization"])
        self.tei_durations["queue_"].observe(timing["queue"])
        self.tei_durations["inference_"].observe(timing["inference"])

    def model_call(self, sequences: int, tokens: int, seconds: float) -> None:
        self.batch.observe(sequences)
        self.model_seconds.observe(seconds)
        self.tei_batch_size.observe(sequences)
        self.tei_batch_tokens.observe(tokens)

    def classified(self, n: int) -> None:
        self.texts.inc(n)
        now = time.monotonic()
        self._window.append((now, n))
        self._in_window += n
        while self._window[0][0] < now - 10:
            self._in_window -= self._window.popleft()[1]
        self.rate.set(self._in_window / max(now - self._window[0][0], 1.0))


class _PlainCounters:
    """Counters exported under their exact names (no "_total"), each with one label."""

    def __init__(self, names: dict[str, str]) -> None:
        self._label = names
        self._values: dict[str, collections.Counter[str]] = {name: collections.Counter() for name in names}

    def inc(self, name: str, label: str) -> None:
        self._values[name][label] += 1

    def value(self, name: str, label: str) -> int:
        return self._values[name][label]

    def collect(self) -> Any:
        for name, values in self._values.items():
            family = UnknownMetricFamily(
                name, f"TEI: {name.removeprefix('te_').replace('_', ' ')}", labels=[self._label[name]]
            )
            for label, count in sorted(values.items()):
                family.add_metric([label], count)
            yield family


def error_response(
    status: int, message: str, error_type: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": message, "error_type": error_type}, status_code=status, headers=headers)


def validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        where = ".".join(loc) if loc else "body"
        msg = "body is not valid JSON" if err.get("type") == "json_invalid" else err.get("msg", "invalid")
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


class BodyLimitAndLog:
    """ASGI middleware: check the API key from the headers, then refuse bodies over the cap, both
    before the app reads anything; time, count, log."""

    def __init__(self, app: Any, state: Any) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        limit = self.state.serve.max_body_bytes
        headers = dict(scope.get("headers") or [])
        early = self._answer_from_headers(scope, headers)
        if early is not None:
            try:
                await early(scope, receive, send_wrapper)
            finally:
                self._record(scope, status["code"], time.perf_counter() - began)
            return
        try:
            if scope["method"] == "POST" and headers.get(b"content-type", b"form").startswith(
                (b"form", b"application/x-www-form-urlencoded")
            ):
                # No type, or curl -d's default: every body this API takes is JSON, so read it as JSON.
                scope["headers"] = [
                    *((k, v) for k, v in scope["headers"] if k != b"content-type"),
                    (b"content-type", b"application/json"),
                ]
            too_big = False
            with contextlib.suppress(ValueError):
                too_big = int(headers.get(b"content-length", b"0")) > limit
            if not too_big and scope["method"] in ("POST", "PUT", "PATCH"):
                # Read the body here, up to the cap, then replay it to the app.
                chunks, size, more = [], 0, True
                while more:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        too_big = True
                        break
                    chunks.append(chunk)
                    more = message.get("more_body", False)
                if not too_big:
                    body = b"".join(chunks)
                    sent = False

                    async def replay() -> MutableMapping[str, Any]:
                        nonlocal sent
                        if not sent:
                            sent = True
                            return {"type": "http.request", "body": body, "more_body": False}
                        return await receive()

                    receive = replay
            try:
                if too_big:
                    response = error_response(
                        413, f"request body is larger than {limit} bytes", "payload_too_large"
                    )
                    await response(scope, receive, send_wrapper)
                else:
                    await self.app(scope, receive, send_wrapper)
            finally:
                self._record(scope, status["code"], time.perf_counter() - began)
        finally:
            self.state.arrived()  # refused, failed, gone or answered before its work was queued

    def _answer_from_headers(self, scope: MutableMapping[str, Any], headers: dict[bytes, bytes]) -> Any:
        """The response to send before the body is read, if any: a refused API key, or a 429 when the
        queue already holds more work than the wait allows (reading, parsing and tokenizing the body
        would take the CPU the model needs under overload)."""
        gate = self.state.gate
        if gate.needed(scope["method"], scope["path"]):
            refused = gate.check(headers, (scope.get("client") or ("",))[0])
            if refused is not None:
                return error_response(refused.status, refused.message, refused.error_type, refused.headers)
        if scope["method"] != "POST":
            return None
        try:
            size = int(headers.get(b"content-length", b"0"))
        except ValueError:
            size = 0
        return self.state.shed(size)

    def _record(self, scope: MutableMapping[str, Any], code: int, seconds: float) -> None:
        route = scope.get("route")
        path = getattr(route, "path", None) or "other"
        metrics = self.state.metrics
        metrics.requests.labels(path, str(code)).inc()
        metrics.latency.labels(path).observe(seconds)
        if self.state.serve.access_log:
            client = scope.get("client") or ("", 0)
            access_logger.info(
                json.dumps(
                    {
                        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        "client": client[0],
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": code,
                        "ms": round(1000 * seconds, 2),
                        "texts": scope.get("distilsent.texts"),
                    }
                )
            )
