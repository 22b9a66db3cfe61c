"""The FastAPI application behind ``distilsent serve``.

Three request shapes are accepted so that existing clients work unchanged: distilsent's own
(``POST /v1/classify``), Text Embeddings Inference's (``POST /predict``) and the Hugging Face inference
API's (``POST /``, what ``huggingface_hub.InferenceClient.text_classification`` sends). Every error is
a JSON body ``{"error", "error_type"}``, never a stack trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ctypes
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any

import numpy as np

from distilsent._version import __version__
from distilsent.core.classifier import Classifier, LoadConfig, Prediction
from distilsent.core.errors import InvalidInputError, MissingExtraError
from distilsent.core.text import text_problem
from distilsent.core.tokenization import TextTokenizer, TokenBatch
from distilsent.serve.batching import Batcher, DeadlineError, QueueFullError
from distilsent.serve.config import ServeConfig
from distilsent.serve.middleware import (
    BodyLimitAndLog,
    KeyGate,
    Metrics,
    ServerError,
    error_response,
    validation_message,
)
from distilsent.serve.schemas import (
    ClassifyRequest,
    DecodeRequest,
    ErrorBody,
    ExplainRequest,
    HFParameters,
    HFRequest,
    PredictRequest,
    TokenizeRequest,
)

try:
    from fastapi import FastAPI, Request, Security
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from fastapi.routing import APIRoute
    from fastapi.security import APIKeyHeader, HTTPBearer
    from prometheus_client import generate_latest
    from prometheus_client.exposition import CONTENT_TYPE_LATEST
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as e:  # pragma: no cover - exercised by the missing-extra test
    raise MissingExtraError("distilsent serve", "serve", e.name or "fastapi") from e

__all__ = ["create_app"]

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("distilsent.access")

# A JSON body of English sentences holds about one token per four bytes (32 SST-2 sentences: 3.3 kB,
# 800 tokens): what a request refused before its body is read is taken to need.
_BYTES_PER_TOKEN = 4
# The estimated tokens a request admitted from its headers holds until its work reaches the batcher's
# queue (a one-item list, emptied when released); set in the request's own task.
_ARRIVING: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("arriving", default=None)
_INLINE_CHARS = 20_000  # requests up to this size are tokenized on the event loop: a thread hop costs more


class _State:
    """What the app holds: the classifier once loaded, its batcher, the metrics."""

    def __init__(self, serve: ServeConfig, load: LoadConfig) -> None:
        self.serve, self.load = serve, load
        self.keys = serve.keys()
        self.gate = KeyGate(self.keys)
        self.on_load_failure: Callable[[], None] | None = None
        """Called when the model fails to load and ``serve.wait_for_model`` is off (``run`` stops the
        server)."""
        self.metrics = Metrics()
        self.classifier: Classifier | None = None
        self.batcher: Batcher | None = None
        self.ready = False
        self.arriving_tokens = 0
        """Estimated tokens of requests admitted from their headers whose work is not yet queued: read,
        parsed and tokenized, they would join the queue, so admission counts them already."""
        self.initial_rate: float | None = None
        """Tokens/s of a warm-up batch, the batcher's rate until it has measured its own."""
        self.load_error: str | None = None
        self._tail_tokenizer: Any = None
        # Loading, warm-up and every model call run on this one thread: torch's OpenMP keeps a team of
        # worker threads per calling thread, and two teams would compete for the same cores.
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="distilsent-model")

    def shed(self, body_bytes: int = 0) -> JSONResponse | None:
        """A 429 from the headers when this request's work, estimated from ``body_bytes``, would not
        be through the model within ``max_queue_seconds`` at the measured rate, behind the queued
        work and the work admitted and still on its way to the queue — the batcher's own admission
        rule, applied before the body is read. Its Retry-After books a slot for that work. An
        admitted request's estimate counts as arriving until :meth:`arrived`.

        Checking only the work already queued let every request of a burst through once the queue
        was just under the limit: each was read, parsed and tokenized, then refused by the batcher,
        and the event loop spent seconds on them while the admitted requests waited (1,024 clients:
        13 admitted requests answered after 3.4 s).
        """
        batcher = self.batcher
        if batcher is None:
            return None
        tokens = body_bytes // _BYTES_PER_TOKEN
        ahead = batcher.queued_tokens + self.arriving_tokens
        wait = batcher.queue_seconds(self.arriving_tokens + tokens)
        # As in Batcher.submit: an empty queue takes any request, however large.
        if wait is None or not ahead or wait <= self.serve.max_queue_seconds:
            self.arriving_tokens += tokens
            _ARRIVING.set([tokens])
            return None
        return error_response(
            429,
            f"server busy: {wait:.1f} s of work with this request (the limit is "
            f"{self.serve.max_queue_seconds:g} s); retry later",
            "overloaded",
            {"Retry-After": str(batcher.retry_after(tokens))},
        )

    def arrived(self) -> None:
        """This request's work is queued (or will never be): it no longer counts as arriving."""
        box = _ARRIVING.get()
        if box:
            self.arriving_tokens -= box.pop()

    def begin_shutdown(self) -> None:
        """SIGTERM arrived: requests still waiting just before the grace period ends get a JSON 503,
        rather than uvicorn's plain-text 500 when it cuts them at the end."""
        margin = min(0.5, self.serve.graceful_timeout / 2)

        def cut() -> None:
            if self.batcher is not None:
                self.batcher.fail_pending(DeadlineError("the server is shutting down"))

        asyncio.get_running_loop().call_later(max(0.0, self.serve.graceful_timeout - margin), cut)

    def tokenizer(self, side: str) -> Any:
        clf = self.require()
        if side == clf.tokenizer.truncation_side:
            return clf.tokenizer
        if self._tail_tokenizer is None or self._tail_tokenizer.truncation_side != side:
            from distilsent.core.tokenization import TextTokenizer

            self._tail_tokenizer = TextTokenizer(clf.model_dir, clf.config.max_length, truncation_side=side)
        return self._tail_tokenizer

    def require(self) -> Classifier:
        if not self.ready or self.classifier is None:
            why = f"model failed to load: {self.load_error}" if self.load_error else "model is loading"
            raise ServerError(503, why, "unavailable", {"Retry-After": "5"})
        return self.classifier

    def batcher_for(self, clf: Classifier) -> Batcher:
        trim = _memory_trimmer()

        def infer(batch: list[list[int]]) -> np.ndarray:
            out = clf.run(batch)
            trim()
            return out

        budget = self.load.max_batch_tokens or clf.batch_size * clf.config.max_length
        return Batcher(
            infer,
            max_tokens=budget,
            max_requests=self.serve.max_batch_requests,
            max_wait_ms=self.serve.max_wait_ms,
            max_pending=self.serve.max_concurrent,
            on_batch=self.metrics.model_call,
            executor=self.executor,
            max_queue_seconds=self.serve.max_queue_seconds,
            deadline_seconds=self.serve.request_timeout,
        )


def _load(state: _State, classifier: Classifier | None) -> None:
    try:
        clf = classifier or Classifier(state.load)
        clf.predict(["warm up the model and the allocator"])
        # A first measure of the model's rate, so admission is bounded from the first request on
        # (a burst arriving before any model call would otherwise all be admitted).
        sequence = clf.tokenizer.encode(["a warm-up sentence of about the length of a review " * 2])[0]
        batch = [sequence] * min(clf.batch_size, 64)
        began = time.perf_counter()
        clf.run(batch)
        state.initial_rate = len(batch) * len(sequence) / max(time.perf_counter() - began, 1e-6)
        state.classifier = clf
    except Exception as e:
        state.load_error = str(e)
        logger.error("model failed to load: %s", e)


def create_app(
    serve: ServeConfig | None = None, load: LoadConfig | None = None, *, classifier: Classifier | None = None
) -> FastAPI:
    """The ASGI app. The model loads in the background at startup; ``/ready`` says when it is done.

    Pass ``classifier`` to serve one already loaded (tests, embedding in another program).
    """
    serve = serve or ServeConfig()
    load = load or (classifier.config if classifier is not None else LoadConfig())
    state = _State(serve, load)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        loader = loop.run_in_executor(state.executor, _load, state, classifier)
        watcher = asyncio.create_task(_become_ready(state, loader))
        restore = _on_shutdown_signal(lambda: loop.call_soon_threadsafe(state.begin_shutdown))
        try:
            yield
        finally:
            restore()
            watcher.cancel()
            if state.batcher is not None:
                await state.batcher.stop()
            state.executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="distilsent",
        version=__version__,
        description="DistilBERT text classification. Errors are JSON: {error, error_type}.",
        lifespan=lifespan,
    )
    app.state.distilsent = state

    @app.exception_handler(ServerError)
    async def _servererror_response(request: Request, exc: ServerError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.error_type, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, validation_message(exc), "validation")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and "parsing the body" in str(exc.detail):
            # FastAPI's answer to a body that is not UTF-8; every other malformed body is a 422.
            return error_response(422, "body: not valid JSON (not UTF-8 text)", "validation")
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http")
        return error_response(exc.status_code, str(exc.detail), kind, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("internal error on %s", request.url.path)
        return error_response(500, "internal server error", "internal")

    # Keys are checked by the middleware, before the body is read; these only describe the scheme
    # in the OpenAPI document.
    guarded = (
        [Security(HTTPBearer(auto_error=False)), Security(APIKeyHeader(name="X-API-Key", auto_error=False))]
        if state.keys
        else []
    )
    errors = {
        code: {"model": ErrorBody, "description": what}
        for code, what in (
            (401, "missing or invalid API key"),
            (413, "request body over the limit, or a text over max_length with truncate=false"),
            (422, "malformed request: the error names the field"),
            (429, "too busy, or too many failed API keys: see Retry-After"),
            (503, "model loading or failed to load: see Retry-After"),
        )
        if code != 401 or state.keys
    }

    @app.post("/v1/classify", dependencies=guarded, responses=errors, summary="Classify one text or a list")
    async def classify(body: ClassifyRequest, request: Request, response: Response) -> Any:
        texts, single = _texts(body.inputs, state.serve)
        request.scope["distilsent.texts"] = len(texts)
        band: Any = "config"
        if body.neutral_band is not None:
            try:
                band = state.require().band(body.neutral_band)
            except ValueError as e:
                raise ServerError(422, f"neutral_band: {e}", "validation") from None
        preds = await _timed_classify(
            state,
            response,
            texts,
            single,
            long=body.long,
            truncate=body.truncate,
            max_length=body.max_length,
            top_k=body.top_k,
            function=body.function_to_apply,
            band=band,
            scope_action=body.on_out_of_scope,
        )
        out = [p.to_dict() for p in preds]
        return out[0] if single else out

    @app.post(
        "/predict", dependencies=guarded, responses=errors, summary="Text Embeddings Inference: classify"
    )
    async def predict(body: PredictRequest, request: Request, response: Response) -> Any:
        items, single = _tei_inputs(body.inputs, state.serve)
        request.scope["distilsent.texts"] = len(items)
        side = "tail" if body.truncation_direction.lower() == "left" else "head"
        preds = await _timed_classify(
            state,
            response,
            items,  # type: ignore[arg-type]
            single,
            truncate=body.truncate is not False,
            function="none" if body.raw_scores else None,
            side=side,
            too_long=422,  # TEI's status for an over-long input with truncate=false
            backend_error=424,  # and for a failure of the model ("backend")
            scope_action=_without_warnings(state),
        )
        out = [_label_scores(p) for p in preds]
        return out[0] if single else out

    app.post("/invocations", dependencies=guarded, responses=errors, summary="SageMaker: as /predict")(
        predict
    )

    @app.post(
        "/tokenize", dependencies=guarded, responses=errors, summary="Text Embeddings Inference: tokenize"
    )
    async def tokenize(body: TokenizeRequest) -> list[list[dict[str, Any]]]:
        texts, _ = _texts(body.inputs, state.serve)
        return [state.require().tokenizer.token_spans(t, body.add_special_tokens) for t in texts]

    @app.post("/decode", dependencies=guarded, responses=errors, summary="Text Embeddings Inference: decode")
    async def decode(body: DecodeRequest) -> list[str]:
        batches: list[list[int]] = body.ids if body.ids and isinstance(body.ids[0], list) else [body.ids]  # type: ignore[assignment, list-item]
        tokenizer = state.require().tokenizer
        for i, ids in enumerate(batches):
            bad = [t for t in ids if not 0 <= t < tokenizer.vocab_size]
            if bad:
                raise ServerError(
                    422,
                    f"ids[{i}]: {bad[0]} is not a token id (vocabulary of {tokenizer.vocab_size})",
                    "validation",
                )
        return [tokenizer.decode(ids, skip_special_tokens=body.skip_special_tokens) for ids in batches]

    @app.post(
        "/", dependencies=guarded, responses=errors, summary="Hugging Face inference API: text classification"
    )
    async def hf_inference(body: HFRequest, request: Request, response: Response) -> Any:
        texts, single = _texts(body.inputs, state.serve)
        request.scope["distilsent.texts"] = len(texts)
        params = body.parameters or HFParameters()
        preds = await _timed_classify(
            state,
            response,
            texts,
            single,
            top_k=params.top_k,
            function=params.function_to_apply,
            scope_action=_without_warnings(state),
        )
        # The inference API answers a list of label lists, one per input, even for a single string.
        return [_label_scores(p) for p in preds]

    @app.post(
        "/v1/explain",
        dependencies=guarded,
        responses=errors,
        summary="Word attributions (Integrated Gradients)",
    )
    async def explain(body: ExplainRequest, request: Request) -> Any:
        clf = state.require()
        _texts(body.inputs, state.serve)
        request.scope["distilsent.texts"] = 1
        if body.target is not None and body.target not in clf.labels:
            raise ServerError(422, f"target: must be one of {clf.labels}", "validation")
        loop = asyncio.get_running_loop()
        try:
            # Gradients run on the model thread, between batches, like every other model call.
            result = await loop.run_in_executor(
                state.executor, lambda: clf.explain(body.inputs, target=body.target)
            )
        except MissingExtraError as e:
            raise ServerError(501, str(e), "unavailable") from None
        return result.to_dict()

    page_html = resources.files("distilsent.serve").joinpath("static/index.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(page_html)

    @app.get("/health", summary="Text Embeddings Inference: 200 once the model answers", responses=errors)
    async def health() -> dict[str, str]:
        state.require()
        return {"status": "ok"}

    app.get("/ping", summary="SageMaker: as /health", responses=errors)(health)

    @app.get("/live", summary="Liveness: the process answers, model loaded or not")
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", summary="Readiness: model loaded and warmed up", responses=errors)
    async def ready() -> dict[str, str]:
        state.require()
        return {"status": "ready"}

    @app.get(
        "/info",
        dependencies=guarded,
        summary="Model, backend, limits",
        responses=errors,
    )
    async def info() -> dict[str, Any]:
        clf = state.require()
        limits = {
            k: getattr(state.serve, k)
            for k in ("max_batch_requests", "max_wait_ms", "max_concurrent", "max_input_chars", "max_inputs")
        }
        details = clf.info()
        # TEI's /info fields, so a TEI client reads what it expects; distilsent's own under "distilsent".
        return {
            "model_id": str(state.load.model),
            "model_sha": None,
            "model_dtype": details["dtype"],
            "model_type": {
                "classifier": {
                    "id2label": {str(i): label for i, label in enumerate(clf.labels)},
                    "label2id": {label: i for i, label in enumerate(clf.labels)},
                }
            },
            "max_concurrent_requests": state.serve.max_concurrent,
            "max_input_length": clf.config.max_length,
            "max_batch_tokens": state.batcher.max_tokens if state.batcher else None,
            "max_batch_requests": state.serve.max_batch_requests,
            "max_client_batch_size": state.serve.max_inputs,
            "auto_truncate": True,
            "tokenization_workers": 1,
            "version": __version__,
            "sha": None,
            "docker_label": None,
            "distilsent": {
                **details,
                "limits": {**limits, "max_body_bytes": state.serve.max_body_bytes},
                "auth": bool(state.keys),
                "explain": _explain_available(),
            },
        }

    @app.get(
        "/metrics",
        dependencies=guarded,
        summary="Prometheus metrics",
        responses=errors,
    )
    async def metrics() -> Response:
        if state.batcher is not None:
            state.metrics.queue.set(state.batcher.pending)
            state.metrics.tei_queue.set(state.batcher.pending)
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # HEAD wherever GET is served (monitors and load balancers probe with it); kept out of the schema,
    # where each would repeat its GET operation.
    for route in list(app.routes):
        if isinstance(route, APIRoute) and "GET" in route.methods:
            app.add_api_route(
                route.path,
                route.endpoint,
                methods=["HEAD"],
                include_in_schema=False,
                dependencies=route.dependencies,
                response_class=route.response_class,
            )
    app.add_middleware(BodyLimitAndLog, state=state)
    return app


async def _become_ready(state: _State, loader: asyncio.Future[None]) -> None:
    await loader
    if state.classifier is None:
        if not state.serve.wait_for_model and state.on_load_failure is not None:
            logger.error(
                "stopping: the model cannot load (--wait-for-model keeps the server up, answering 503)"
            )
            state.on_load_failure()
        return
    state.batcher = state.batcher_for(state.classifier)
    state.batcher.tokens_per_second = state.initial_rate
    state.batcher.start()
    state.ready = True
    logger.info("ready: %r", state.classifier)


def _on_shutdown_signal(callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback`` on SIGTERM/SIGINT, then the handler that was there (uvicorn's, which starts its
    graceful shutdown); returns what puts the old handlers back. Only the main thread may set handlers:
    an app run elsewhere gets no callback."""
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        callback()
        old = previous.get(signum)
        if callable(old):
            old(signum, frame)

    try:
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.getsignal(signum)
            signal.signal(signum, handler)
    except ValueError:  # not the main thread
        pass

    def restore() -> None:
        for signum, old in previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signum, old)

    return restore


def _explain_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("captum") is not None


def _texts(inputs: str | list[str], serve: ServeConfig) -> tuple[list[str], bool]:
    single = isinstance(inputs, str)
    texts = [inputs] if single else list(inputs)
    if not texts:
        raise ServerError(422, "inputs: the list is empty", "validation")
    if len(texts) > serve.max_inputs:
        raise ServerError(
            422, f"inputs: {len(texts)} texts, more than the limit of {serve.max_inputs}", "validation"
        )
    for i, text in enumerate(texts):
        where = "inputs" if single else f"inputs[{i}]"
        problem = text_problem(text)
        if problem is not None:
            raise ServerError(422, f"{where}: text {problem}", "validation")
        if len(text) > serve.max_input_chars:
            raise ServerError(
                422,
                f"{where}: {len(text)} characters, more than the limit of {serve.max_input_chars}",
                "validation",
            )
    return texts, single


def _label_scores(pred: Prediction) -> list[dict[str, Any]]:
    return [{"label": label, "score": score} for label, score in pred.scores.items()]


def _without_warnings(state: _State) -> str:
    """The out-of-scope action of a route whose answer has no place for a warning: the server's
    'error' refuses there too, the other actions skip the check."""
    return "error" if state.require().config.on_out_of_scope == "error" else "keep"


async def _classify(
    state: _State,
    texts: list[str],
    *,
    long: str | None = None,
    truncate: bool = True,
    max_length: int | None = None,
    top_k: int | None = None,
    function: str | None = None,
    band: Any = "config",
    side: str | None = None,
    too_long: int = 413,
    backend_error: int = 500,
    scope_action: str | None = None,
    timing: dict[str, float] | None = None,
) -> list[Prediction]:
    """Predictions for ``texts``; an item that is a ``(text, text_pair)`` tuple is classified as a pair.

    ``scope_action`` is the request's ``on_out_of_scope``; None takes the server's, of which the TEI
    and inference-API routes, whose answers have no place for a warning, honour only 'error'.
    ``timing`` receives the request's phases in seconds and its size, for TEI's headers and metrics.
    """
    began = time.perf_counter()
    clf = state.require()
    assert state.batcher is not None
    try:
        clf.check_options(top_k, function)
        if max_length is not None and (long or clf.config.long) != "truncate":
            raise InvalidInputError("max_length: a per-request max_length needs long='truncate'")
        tokenizer = clf.tokenizer_for(max_length)
    except ValueError as e:
        raise ServerError(422, str(e), "validation") from None

    def single_sequences(chosen: list[str]) -> list[list[list[int]]]:
        if tokenizer is not clf.tokenizer:
            return [[ids] for ids in tokenizer.encode(chosen)]
        if (
            side is not None
            and side != clf.tokenizer.truncation_side
            and (long or clf.config.long) == "truncate"
        ):
            return [[ids] for ids in state.tokenizer(side).encode(chosen)]
        return clf.sequences(chosen, long)

    def prepare() -> tuple[list[list[list[int]]], Any]:
        if not truncate:
            _refuse_long(tokenizer, texts, too_long)
        sequences = tokenized()
        joined = [t if isinstance(t, str) else f"{t[0]} {t[1]}" for t in texts]
        try:
            scope = clf.scope(joined, lambda: TokenBatch.from_lists([s[0] for s in sequences]), scope_action)
        except InvalidInputError as e:
            raise ServerError(422, str(e), "validation") from None
        return sequences, scope

    def tokenized() -> list[list[list[int]]]:
        pair_rows = [i for i, t in enumerate(texts) if isinstance(t, tuple)]
        if not pair_rows:
            return single_sequences(texts)
        # Texts mixed with (text, text_pair) tuples: each kind tokenized its own way, kept in order.
        single_rows = [i for i, t in enumerate(texts) if not isinstance(t, tuple)]
        out: list[list[list[int]]] = [[] for _ in texts]
        for i, seqs in zip(single_rows, single_sequences([texts[i] for i in single_rows])):
            out[i] = seqs
        for i, ids in zip(pair_rows, tokenizer.encode_pairs([texts[i] for i in pair_rows])):  # type: ignore[misc]
            out[i] = [ids]
        return out

    chars = sum(len(t) if isinstance(t, str) else sum(map(len, t)) for t in texts)
    if chars <= _INLINE_CHARS:
        sequences, scope = prepare()
    else:
        sequences, scope = await asyncio.to_thread(prepare)
    flat = [seq for seqs in sequences for seq in seqs]
    phases: dict[str, float] = {} if timing is None else timing
    phases.update(
        began=began, tokenization=time.perf_counter() - began, chars=chars, tokens=sum(map(len, flat))
    )
    try:
        state.arrived()  # from here on the batcher counts this work itself
        logits = await state.batcher.submit(flat, phases)
    except QueueFullError as e:
        raise ServerError(
            429, f"server busy: {e}; retry later", "overloaded", {"Retry-After": str(e.retry_after)}
        ) from None
    except DeadlineError as e:
        retry = {"Retry-After": str(state.batcher.retry_after())}
        raise ServerError(503, f"request not answered: {e}", "unavailable", retry) from None
    except MemoryError as e:
        raise ServerError(
            backend_error, f"the model ran out of memory on this batch: {e}", "backend"
        ) from None
    except Exception as e:  # the model failed on this batch; the batcher carries on with the next
        logger.exception("model call failed")
        raise ServerError(
            backend_error, f"the model failed on this batch: {type(e).__name__}", "backend"
        ) from None
    state.metrics.classified(len(texts))
    return clf.from_logits(
        sequences, logits, top_k=top_k, function_to_apply=function, neutral_band=band, long=long, scope=scope
    )


async def _timed_classify(
    state: _State, response: Response, texts: list[Any], single: bool, **options: Any
) -> list[Prediction]:
    """:func:`_classify` as TEI accounts for a request: its counters, its phase histograms, and its
    ``x-*-time`` headers on ``response``."""
    counts = state.metrics.tei_counts
    method = "single" if single else "batch"
    counts.inc("te_request_count", method)
    timing: dict[str, float] = {}
    try:
        result = await _classify(state, texts, timing=timing, **options)
    except ServerError as e:
        counts.inc("te_request_failure", e.error_type)
        raise
    counts.inc("te_request_success", method)
    timing["total"] = time.perf_counter() - timing["began"]
    state.metrics.request_timed(timing)
    device = state.require().engine.device
    headers = {
        "x-compute-type": "cpu" if device == "cpu" else "gpu",
        "x-compute-time": timing["total"],
        "x-compute-characters": int(timing["chars"]),
        "x-compute-tokens": int(timing["tokens"]),
        "x-total-time": timing["total"],
        "x-tokenization-time": timing["tokenization"],
        "x-queue-time": timing["queue"],
        "x-inference-time": timing["inference"],
    }
    for name, value in headers.items():
        # Times in whole milliseconds, as TEI sends them.
        response.headers[name] = str(round(value * 1000) if isinstance(value, float) else value)
    return result


def _tei_inputs(inputs: Any, serve: ServeConfig) -> tuple[list[str | tuple[str, str]], bool]:
    """TEI's reading of ``inputs``: a string; a list of two strings is one pair; a list of lists is a
    batch whose members are one text (``["a"]``) or a pair (``["a", "b"]``)."""
    if isinstance(inputs, str) or (inputs and all(isinstance(x, str) for x in inputs)):
        if isinstance(inputs, str) or len(inputs) == 1:
            text = inputs if isinstance(inputs, str) else inputs[0]
            return [*_texts(text, serve)[0]], True
        if len(inputs) != 2:
            raise ServerError(
                422,
                f"inputs: a list of {len(inputs)} strings; as in TEI, a list of strings is one text pair "
                '(["a", "b"]); send a batch as a list of lists: [["a"], ["b"], ["c"]]',
                "validation",
            )
        first, second = _texts(list(inputs), serve)[0]
        return [(first, second)], True
    if not inputs:
        raise ServerError(400, "inputs: the batch is empty", "validation")  # TEI answers 400 here
    if len(inputs) > serve.max_inputs:
        raise ServerError(
            422, f"inputs: {len(inputs)} inputs, more than the limit of {serve.max_inputs}", "validation"
        )
    items: list[str | tuple[str, str]] = []
    for i, member in enumerate(inputs):
        if len(member) not in (1, 2):
            raise ServerError(
                422,
                f"inputs[{i}]: {len(member)} strings; a batch member is [text] or [text, text_pair]",
                "validation",
            )
        try:
            checked = _texts(list(member), serve)[0]
        except ServerError as e:
            raise ServerError(422, e.message.replace("inputs", f"inputs[{i}]", 1), "validation") from None
        items.append(checked[0] if len(checked) == 1 else (checked[0], checked[1]))
    return items, False


def _refuse_long(tokenizer: TextTokenizer, items: Sequence[str | tuple[str, str]], status: int = 413) -> None:
    """A ``status`` error for the first text or text pair longer than the tokenizer's ``max_length``
    tokens with its special tokens (``[CLS] a [SEP]``, ``[CLS] a [SEP] b [SEP]``)."""
    for i, item in enumerate(items):
        if not tokenizer.fits(item):
            raise ServerError(
                status,
                f"inputs[{i}] is longer than max_length ({tokenizer.max_length} tokens); "
                "send truncate=true to cut it",
                "validation",
            )


def _memory_trimmer() -> Callable[[], None]:
    """A call that hands freed heap memory back to the OS, at most once a second (glibc only).

    Activation tensors of ever-changing batch shapes fragment glibc's heap: measured under a 64-client
    load, the server's RSS grew 10-20 % in a minute without trimming, and stayed within a few percent
    with it. Forcing large blocks onto mmap instead kept RSS flat too but cost a quarter of the
    throughput in page faults.
    """
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim if sys.platform == "linux" else None
    except (OSError, AttributeError):  # musl and other libcs
        trim = None
    last = [0.0]

    def maybe_trim() -> None:
        now = time.monotonic()
        if trim is not None and now - last[0] >= 1.0:
            last[0] = now
            trim(0)

    return maybe_trim
