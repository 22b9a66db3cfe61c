"""The Python API: ``load`` a model, ``predict`` texts, get ``Prediction`` objects.

>>> import distilsent
>>> clf = distilsent.load("default")
>>> clf.predict("Hello, my dog is cute")
Prediction(label='POSITIVE', score=0.995..., scores={'POSITIVE': 0.995..., 'NEGATIVE': 0.005...})
"""

from __future__ import annotations

import functools
import itertools
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

import numpy as np

from distilsent.core._gc import gc_paused
from distilsent.core.config import Config
from distilsent.core.engine import BACKENDS, DTYPES, create_engine, run_batches
from distilsent.core.errors import DistilsentError, InvalidInputError, InvalidTypeError
from distilsent.core.explain import Explanation, explain
from distilsent.core.models import DEFAULT_MODEL, label_names, read_model_config, resolve_model
from distilsent.core.postprocess import (
    AGGREGATES,
    FUNCTIONS,
    LONG_MODES,
    TEMPERATURE_KEY,
    TRUNCATION_SIDES,
    Prediction,
    apply_function,
    parse_band,
)
from distilsent.core.scope import ScopeGuard, check_scope_options
from distilsent.core.text import as_pairs, check_pairs, check_texts
from distilsent.core.tokenization import TextTokenizer, TokenBatch

if TYPE_CHECKING:
    from distilsent.core.engine.torch_engine import GradientForward

__all__ = ["Classifier", "LoadConfig", "Prediction", "load"]

# Texts tokenized per step of a long list: enough to sort into well-filled batches of 1,024, and a
# Rust call long enough to spread over every core.
_TOKENIZE_CHUNK = 16384
_GPU_BATCH_SIZE = 1024
_END = object()
T = TypeVar("T")
R = TypeVar("R")


def available_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity API
        return os.cpu_count() or 1


@dataclass
class LoadConfig(Config):
    """How to load a model and run it; every field is also a CLI flag."""

    model: str = DEFAULT_MODEL
    """'default' (the model bundled with distilsent), a model directory, or a hub id."""
    backend: str = "auto"
    """Inference backend: 'auto' (torch when the directory has torch weights, else onnx), 'torch', 'onnx'
    or 'onnx-int8'."""
    device: str = "auto"
    """'auto' (a GPU when there is one), 'cpu', 'cuda', 'cuda:N' or 'mps'."""
    dtype: str = "auto"
    """Torch backend's compute dtype: 'auto' (bf16 on a CPU with native bf16 matrix instructions,
    AMX-BF16 or AVX512-BF16, fp32 on other CPUs; bf16 on a GPU that has it, else fp16), 'fp32', 'bf16'
    (logits within a few hundredths of fp32's, >= 99.5 % equal labels) or 'fp16'. ``info`` says
    which ran and why."""
    batch_size: int | None = None
    """Texts per model call (default: 32 on a CPU, 1024 on a GPU, which needs many tokens per call
    to be busy); halved automatically when memory runs out."""
    max_length: int = 128
    """Longest input in tokens, [CLS] and [SEP] included; longer texts are truncated."""
    max_batch_tokens: int | None = None
    """Cap on padded tokens per model call, so batches of long texts stay small; default: no cap."""
    threads: int | None = None
    """CPU threads for inference; default: every core this process may use."""
    allow_pickle: bool = False
    """Allow loading a pickle checkpoint (pytorch_model.bin). Unpickling can run arbitrary code."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) when ``model`` is a hub id."""
    calibrated: bool = True
    """Apply the temperature stored by ``distilsent calibrate`` (never changes the predicted label)."""
    neutral_band: str | None = None
    """'LOW:HIGH', e.g. '0.35:0.65': two-label predictions whose P(second label) falls inside the band
    get the label ``neutral_label`` instead."""
    neutral_label: str = "NEUTRAL"
    """Label given to predictions inside ``neutral_band``."""
    long: str = "truncate"
    """Texts longer than max_length: 'truncate' (keep ``truncation_side``), or 'chunk' (classify every
    window and aggregate)."""
    truncation_side: str = "head"
    """With long='truncate': keep the 'head', the 'tail', or 'head+tail' (half of each) of a long text."""
    stride: int = 32
    """With long='chunk': tokens shared by consecutive windows."""
    aggregate: str = "mean"
    """With long='chunk': 'mean' of window probabilities, 'weighted' (by window length), or
    'max-confidence' (the most confident window decides)."""
    max_windows: int = 64
    """With long='chunk': at most this many windows per text (the rest of a huge text is ignored)."""
    on_out_of_scope: str = "flag"
    """Texts out of an English model's scope (not English, or no word the vocabulary knows): 'flag'
    (the result carries a ``warning``), 'keep' (no check), 'neutral' (the warning and
    ``neutral_label``) or 'error' (refused)."""
    language_detector: str = "auto"
    """The language check of ``on_out_of_scope``: 'auto' (py3langid when the ``guard`` extra is
    installed, else the script check), 'py3langid', 'script' (non-Latin letters only) or 'none'."""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise InvalidInputError(f"unknown backend {self.backend!r}; choose one of: {', '.join(BACKENDS)}")
        if self.dtype not in DTYPES:
            raise InvalidInputError(f"unknown dtype {self.dtype!r}; choose one of: {', '.join(DTYPES)}")
        if self.dtype not in ("auto", "fp32") and self.backend.startswith("onnx"):
            raise InvalidInputError(
                f"dtype {self.dtype!r} is for the torch backend; onnx backends run fp32 or int8"
            )
        if self.batch_size is not None and self.batch_size < 1:
            raise InvalidInputError(f"batch_size must be at least 1, got {self.batch_size}")
        if not 3 <= self.max_length <= 512:
            raise InvalidInputError(f"max_length must be between 3 and 512 tokens, got {self.max_length}")
        if self.max_batch_tokens is not None and self.max_batch_tokens < self.max_length:
            raise InvalidInputError(
                f"max_batch_tokens ({self.max_batch_tokens}) must be at least max_length ({self.max_length})"
            )
        if self.threads is not None and self.threads < 1:
            raise InvalidInputError(f"threads must be at least 1, got {self.threads}")
        self.band()  # validates
        if self.long not in LONG_MODES:
            raise InvalidInputError(f"long must be one of {', '.join(LONG_MODES)}, not {self.long!r}")
        if self.truncation_side not in TRUNCATION_SIDES:
            raise InvalidInputError(
                f"truncation_side must be one of {', '.join(TRUNCATION_SIDES)}, not {self.truncation_side!r}"
            )
        if self.aggregate not in AGGREGATES:
            raise InvalidInputError(
                f"aggregate must be one of {', '.join(AGGREGATES)}, not {self.aggregate!r}"
            )
        if self.long == "chunk" and not 0 <= self.stride < self.max_length - 2 - 1:
            raise InvalidInputError(
                f"stride must be between 0 and max_length - 4 ({self.max_length - 4}), got {self.stride}"
            )
        if self.max_windows < 1:
            raise InvalidInputError(f"max_windows must be at least 1, got {self.max_windows}")
        check_scope_options(self.on_out_of_scope, self.language_detector)

    def band(self) -> tuple[float, float] | None:
        """``neutral_band`` as numbers, checked."""
        return parse_band(self.neutral_band)


class Classifier:
    """A loaded model ready to classify texts. Create it with :func:`distilsent.load`."""

    def __init__(self, config: LoadConfig) -> None:
        self.config = config
        self.model_dir: Path = resolve_model(
            config.model, allow_pickle=config.allow_pickle, revision=config.revision
        )
        self.model_config: dict[str, Any] = read_model_config(self.model_dir)
        self.labels: list[str] = label_names(self.model_config)
        self.tokenizer = TextTokenizer(
            self.model_dir, config.max_length, truncation_side=config.truncation_side
        )
        self.engine = create_engine(
            config.backend,
            self.model_dir,
            device=config.device,
            threads=config.threads or available_threads(),
            dtype=config.dtype,
        )
        self.batch_size = config.batch_size or (32 if self.engine.device == "cpu" else _GPU_BATCH_SIZE)
        self.temperature = float(self.model_config.get(TEMPERATURE_KEY, 1.0)) if config.calibrated else 1.0
        self.neutral_band = self.band(config.neutral_band)
        self._torch_copy: Any = None
        self._guard: ScopeGuard | None = None
        self._tokenizers: dict[int, TextTokenizer] = {}
        if config.language_detector == "py3langid":
            self._guard = self.scope_guard()  # a missing extra fails at load, not on the first text
        problem = self.model_config.get("problem_type")
        self._default_function = (
            "sigmoid" if problem == "multi_label_classification" or len(self.labels) == 1 else "softmax"
        )

    def __repr__(self) -> str:
        return (
            f"distilsent.Classifier(model={str(self.model_dir)!r}, backend={self.engine.backend!r}, "
            f"device={self.engine.device!r}, labels={self.labels})"
        )

    def band(self, neutral_band: str | None) -> tuple[float, float] | None:
        """``neutral_band`` ('LOW:HIGH') as numbers, checked against this model (it needs two labels)."""
        band = parse_band(neutral_band)
        if band is not None and len(self.labels) != 2:
            raise InvalidInputError(
                f"neutral_band needs a two-label model; this one has {len(self.labels)} labels"
            )
        return band

    def scope_guard(self) -> ScopeGuard:
        """The out-of-scope checks of this model's vocabulary (built once)."""
        if self._guard is None:
            self._guard = ScopeGuard(
                self.tokenizer.vocab(), self.tokenizer.special_ids, self.config.language_detector
            )
        return self._guard

    def scope(
        self,
        texts: Sequence[str],
        tokens: TokenBatch | Callable[[], TokenBatch],
        on_out_of_scope: str | None = None,
        offset: int = 0,
    ) -> tuple[list[str | None], str] | None:
        """The out-of-scope warning of each text and the action to take, or None with 'keep'.

        ``tokens`` (or a function making them, called only when checking) are the ids the model
        sees. With 'error' a flagged text raises :class:`InvalidInputError` naming it.
        """
        action = on_out_of_scope or self.config.on_out_of_scope
        check_scope_options(on_out_of_scope=action)
        if action == "keep" or not texts:
            return None
        warnings = self.scope_guard().problems(texts, tokens if isinstance(tokens, TokenBatch) else tokens())
        if action == "error":
            bad = next((i for i, w in enumerate(warnings) if w is not None), None)
            if bad is not None:
                raise InvalidInputError(
                    f"texts[{offset + bad}] is out of scope ({warnings[bad]}); "
                    "on_out_of_scope='flag' classifies it with a warning"
                )
        return warnings, action

    def info(self) -> dict[str, Any]:
        """What was loaded, where it runs, and with what limits."""
        return {
            "model": str(self.config.model),
            "model_dir": str(self.model_dir),
            "labels": self.labels,
            "parameters": self.engine.num_parameters(),
            "backend": self.engine.backend,
            "device": self.engine.device,
            "dtype": self.engine.dtype,
            "dtype_reason": self.engine.dtype_reason,
            "forward": self.engine.forward,
            "max_length": self.config.max_length,
            "long": self.config.long,
            **self._max_length_note(),
            "batch_size": self.batch_size,
            "on_out_of_scope": self.config.on_out_of_scope,
            "scope_checks": self.scope_guard().describe(),
        }

    def _max_length_note(self) -> dict[str, Any]:
        """Where plain transformers would truncate elsewhere: ``tokenizer_config.json`` names its own
        ``model_max_length`` (512 for DistilBERT), which the pipeline uses unless told otherwise."""
        path = self.model_dir / "tokenizer_config.json"
        try:
            theirs = json.loads(path.read_text()).get("model_max_length")
        except (OSError, ValueError):
            return {}
        if not isinstance(theirs, int) or theirs == self.config.max_length or theirs > 10**6:
            return {}
        return {
            "max_length_note": f"tokenizer_config.json says model_max_length {theirs}: plain transformers "
            f"truncates there, distilsent at {self.config.max_length} (pass max_length to either to agree)"
        }

    def logits(
        self,
        texts: Sequence[str] | Sequence[tuple[str, str]],
        *,
        on_progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Raw logits of the truncated texts (or ``(text, text_pair)`` pairs), shape
        ``(len(texts), num_labels)``, in input order."""
        pairs = as_pairs(texts) if len(texts) and not isinstance(texts[0], str) else None
        if pairs is None:
            return self._logits(check_texts(texts), on_progress)
        checked = check_pairs(pairs)
        unique = list(dict.fromkeys(checked))
        return _expand(checked, unique, self.run(self.tokenizer.encode_pairs(unique), on_progress))  # type: ignore[arg-type]

    def _logits(
        self,
        texts: list[str],
        on_progress: Callable[[int], None] | None = None,
        tokenizer: TextTokenizer | None = None,
        batch_size: int | None = None,
        encoded: TokenBatch | None = None,
    ) -> np.ndarray:
        """Logits of ``texts``; ``encoded``, when given, holds the ids of their distinct texts in
        first-seen order, already made by ``tokenizer``."""
        if not texts:
            return np.empty((0, len(self.labels)), dtype=np.float32)
        tokenizer = tokenizer or self.tokenizer
        # Repeated texts (common in logs and reviews) are run once.
        unique = list(dict.fromkeys(texts))
        if encoded is not None:
            parts = [self.run(encoded, on_progress, batch_size=batch_size)]
        else:
            chunks = [unique[i : i + _TOKENIZE_CHUNK] for i in range(0, len(unique), _TOKENIZE_CHUNK)]
            parts = [
                self.run(tokens, on_progress, batch_size=batch_size)
                for tokens in _prefetched(chunks, tokenizer.encode_batch)
            ]
        logits = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if on_progress is not None and len(unique) < len(texts):
            on_progress(len(texts) - len(unique))
        return _expand(texts, unique, logits)

    def predict_proba(self, texts: Sequence[str], *, function_to_apply: str | None = None) -> np.ndarray:
        """Calibrated scores, shape ``(len(texts), num_labels)``, honouring ``long`` (chunking)."""
        return self._scores(check_texts(texts), self.check_options(None, function_to_apply))[0]

    def run(
        self,
        ids: TokenBatch | Sequence[Sequence[int]],
        on_progress: Callable[[int], None] | None = None,
        *,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """Logits of already-tokenized sequences, batched by length: the model stage of ``predict``,
        for callers that tokenize or batch across requests themselves (the HTTP server).
        ``batch_size`` overrides the loaded one for this call only."""
        tokens = ids if isinstance(ids, TokenBatch) else TokenBatch.from_lists(ids)
        logits, adapted = run_batches(
            self.engine,
            tokens,
            self.tokenizer.pad_id,
            batch_size or self.batch_size,
            on_progress,
            self.config.max_batch_tokens,
        )
        if batch_size is None:  # a size halved after running out of memory is kept for later calls
            self.batch_size = adapted
        return logits

    def _scores(
        self,
        texts: list[str],
        function: str,
        on_progress: Callable[[int], None] | None = None,
        tokenizer: TextTokenizer | None = None,
        batch_size: int | None = None,
        encoded: TokenBatch | None = None,
    ) -> tuple[np.ndarray, list[int] | None]:
        """Scores per text and, when chunking, the window count per text; ``encoded`` as in
        :meth:`_logits` (unused when chunking, whose windows are tokenized apart)."""
        if not texts:
            return np.empty((0, len(self.labels)), dtype=np.float32), None
        if self.config.long == "truncate":
            logits = self._logits(texts, on_progress, tokenizer, batch_size, encoded)
            return self._calibrated(logits, function), None
        windows = self.sequences(texts, "chunk")
        flat = [w for ws in windows for w in ws]
        scores = self._calibrated(self.run(flat, batch_size=batch_size), function)
        if on_progress is not None:
            on_progress(len(texts))
        return self._aggregate(scores, windows), [len(ws) for ws in windows]

    def sequences(self, texts: Sequence[str], long: str | None = None) -> list[list[list[int]]]:
        """Token ids the model sees for each text: one truncated sequence, or (``long="chunk"``) every
        window. With :meth:`from_logits` this splits ``predict`` in two, for callers that batch model
        calls across requests themselves (the HTTP server)."""
        if (long or self.config.long) == "truncate":
            return [[ids] for ids in self.tokenizer.encode(texts)]
        return [self.tokenizer.windows(t, self.config.stride, self.config.max_windows) for t in texts]

    def from_logits(
        self,
        sequences: Sequence[Sequence[Sequence[int]]],
        logits: np.ndarray,
        *,
        top_k: int | None = None,
        function_to_apply: str | None = None,
        neutral_band: tuple[float, float] | str | None = "config",
        long: str | None = None,
        scope: tuple[list[str | None], str] | None = None,
    ) -> list[Prediction]:
        """Predictions from :meth:`sequences` and the logits of all their sequences, flattened in order;
        ``scope`` is what :meth:`scope` said of the texts."""
        function = self.check_options(top_k, function_to_apply)
        if not sequences:
            return []
        scores = self._calibrated(logits, function)
        chunked = (long or self.config.long) == "chunk"
        probs = self._aggregate(scores, sequences) if chunked else scores
        windows = [len(x) for x in sequences] if chunked else None
        band = self.neutral_band if neutral_band == "config" else neutral_band
        return self._to_predictions(probs, windows, top_k, band, scope)  # type: ignore[arg-type]

    def _aggregate(self, scores: np.ndarray, windows: Sequence[Sequence[Sequence[int]]]) -> np.ndarray:
        """One score row per text from its windows' rows, by ``aggregate``."""
        out = np.empty((len(windows), scores.shape[1]), dtype=np.float32)
        start = 0
        for i, ws in enumerate(windows):
            part = scores[start : start + len(ws)]
            if self.config.aggregate == "mean":
                out[i] = part.mean(0)
            elif self.config.aggregate == "weighted":
                out[i] = np.average(part, axis=0, weights=[len(w) for w in ws])
            else:
                out[i] = part[part.max(1).argmax()]
            start += len(ws)
        return out

    def _calibrated(self, logits: np.ndarray, function: str) -> np.ndarray:
        if function == "none":
            return logits
        return apply_function(function, logits / self.temperature)

    @overload
    def predict(
        self,
        texts: str,
        *,
        top_k: int | None = ...,
        function_to_apply: str | None = ...,
        on_out_of_scope: str | None = ...,
        batch_size: int | None = ...,
        truncation: bool | None = ...,
        max_length: int | None = ...,
    ) -> Prediction: ...
    @overload
    def predict(
        self,
        texts: Sequence[str],
        *,
        top_k: int | None = ...,
        function_to_apply: str | None = ...,
        on_out_of_scope: str | None = ...,
        batch_size: int | None = ...,
        truncation: bool | None = ...,
        max_length: int | None = ...,
    ) -> list[Prediction]: ...

    def predict(
        self,
        texts: str | Sequence[str],
        *,
        top_k: int | None = None,
        function_to_apply: str | None = None,
        on_out_of_scope: str | None = None,
        batch_size: int | None = None,
        truncation: bool | None = None,
        max_length: int | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> Prediction | list[Prediction]:
        """Classify one text (returns a ``Prediction``) or a list of texts (returns a list, same order).

        ``top_k`` keeps only the k most likely labels in ``scores``; ``function_to_apply`` is
        ``"softmax"``, ``"sigmoid"`` or ``"none"`` as in the transformers pipeline (default: softmax,
        or sigmoid for multi-label and single-output models); ``on_out_of_scope`` overrides the
        loaded one ('flag', 'keep', 'neutral', 'error'). As in the pipeline, ``batch_size`` and
        ``max_length`` override the loaded ones for this call, and ``truncation=False`` refuses a text
        longer than ``max_length`` tokens instead of cutting it.
        """
        options = {
            "top_k": top_k,
            "function_to_apply": function_to_apply,
            "on_out_of_scope": on_out_of_scope,
            "batch_size": batch_size,
            "truncation": truncation,
            "max_length": max_length,
        }
        if isinstance(texts, str):
            if not texts.strip():
                raise InvalidInputError("text is empty or only whitespace")
            return self.predict([texts], **options)[0]  # type: ignore[arg-type]
        pairs = as_pairs(texts)
        if pairs is not None:
            preds = self.predict_pairs(pairs, **options)  # type: ignore[arg-type]
            return (
                preds[0]
                if isinstance(texts, tuple) and len(texts) == 2 and isinstance(texts[0], str)
                else preds
            )
        if not isinstance(texts, Sequence):
            raise InvalidTypeError(
                f"texts must be a str or a list of str, not {type(texts).__name__}; "
                "use predict_iter for iterators"
            )
        function = self.check_options(top_k, function_to_apply)
        checked = check_texts(texts)
        tokenizer = self._call_tokenizer(batch_size, truncation, max_length)
        if truncation is False:
            self._refuse_long(checked, tokenizer)
        unique = list(dict.fromkeys(checked))
        encoded: list[TokenBatch] = []

        def tokens() -> TokenBatch:
            encoded.append(tokenizer.encode_batch(unique))
            return _expand_tokens(checked, unique, encoded[0])

        scope = self.scope(checked, tokens, on_out_of_scope)
        # When the scope check has tokenized the texts, its ids feed the model too (a second encode
        # was a sixth of a single text's latency).
        scores = self._scores(
            checked, function, on_progress, tokenizer, batch_size, encoded[0] if encoded else None
        )
        return self._to_predictions(*scores, top_k, scope=scope)

    def _call_tokenizer(
        self, batch_size: int | None, truncation: bool | None, max_length: int | None
    ) -> TextTokenizer:
        """The tokenizer of one call's options (checked), built once per ``max_length``."""
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}")
        if truncation is not None and not isinstance(truncation, bool):
            raise InvalidInputError(f"truncation must be True or False, got {truncation!r}")
        return self.tokenizer_for(max_length)

    def tokenizer_for(self, max_length: int | None) -> TextTokenizer:
        """The tokenizer that cuts at ``max_length`` tokens (None: the loaded one), built once per
        length; a length other than the loaded one needs ``long='truncate'``."""
        if max_length is None or max_length == self.config.max_length:
            return self.tokenizer
        if isinstance(max_length, bool) or not isinstance(max_length, int) or not 3 <= max_length <= 512:
            raise InvalidInputError(f"max_length must be between 3 and 512 tokens, got {max_length!r}")
        if self.config.long != "truncate":
            raise InvalidInputError(
                "a per-call max_length needs long='truncate'; load with max_length instead"
            )
        if max_length not in self._tokenizers:
            self._tokenizers[max_length] = TextTokenizer(
                self.model_dir, max_length, truncation_side=self.config.truncation_side
            )
        return self._tokenizers[max_length]

    @staticmethod
    def _refuse_long(texts: list[str], tokenizer: TextTokenizer) -> None:
        """``truncation=False``: an error naming the first text longer than the tokenizer's limit."""
        for i, text in enumerate(texts):
            if not tokenizer.fits(text):
                raise InvalidInputError(
                    f"texts[{i}] is longer than max_length ({tokenizer.max_length} tokens) and "
                    "truncation=False; pass truncation=True to cut it"
                )

    def predict_pairs(
        self,
        pairs: Sequence[tuple[str, str]],
        *,
        top_k: int | None = None,
        function_to_apply: str | None = None,
        on_out_of_scope: str | None = None,
        batch_size: int | None = None,
        truncation: bool | None = None,
        max_length: int | None = None,
    ) -> list[Prediction]:
        """Classify ``(text, text_pair)`` pairs, as the pipeline does for ``{"text", "text_pair"}``:
        one ``[CLS] a [SEP] b [SEP]`` sequence each, the longer side truncated first. ``predict``
        takes pairs too: ``predict(("a", "b"))`` or ``predict([("a", "b"), ...])``."""
        function = self.check_options(top_k, function_to_apply)
        tokenizer = self._call_tokenizer(batch_size, truncation, max_length)
        if truncation is False:
            raise InvalidInputError(
                "text pairs are always truncated (the longer side first): truncation=False"
            )
        checked = check_pairs(pairs)
        if not checked:
            return []
        unique = list(dict.fromkeys(checked))
        encoded = tokenizer.encode_pairs(unique)
        position = {pair: i for i, pair in enumerate(unique)}
        scope = self.scope(
            [f"{a} {b}" for a, b in checked],
            lambda: TokenBatch.from_lists([encoded[position[pair]] for pair in checked]),
            on_out_of_scope,
        )
        logits = _expand(checked, unique, self.run(encoded, batch_size=batch_size))  # type: ignore[arg-type]
        return self._to_predictions(self._calibrated(logits, function), None, top_k, scope=scope)

    def predict_iter(
        self,
        texts: Iterable[str],
        *,
        chunk_size: int = 4096,
        top_k: int | None = None,
        function_to_apply: str | None = None,
        on_out_of_scope: str | None = None,
    ) -> Iterator[Prediction]:
        """Stream predictions for an iterable of any length, holding ``chunk_size`` texts at a time."""
        if isinstance(texts, str):
            raise InvalidTypeError("predict_iter takes an iterable of texts, not a single str; use predict")
        if chunk_size < 1:
            raise InvalidInputError(f"chunk_size must be at least 1, got {chunk_size}")
        function = self.check_options(top_k, function_to_apply)
        iterator = iter(texts)
        chunks = iter(lambda: list(itertools.islice(iterator, chunk_size)), [])

        def numbered() -> Iterator[tuple[int, list[str]]]:
            offset = 0
            for chunk in chunks:
                yield offset, chunk
                offset += len(chunk)

        if self.config.long == "chunk":
            for offset, chunk in numbered():
                check_texts(chunk, offset)
                tokens = functools.partial(self.tokenizer.encode_batch, chunk)
                scope = self.scope(chunk, tokens, on_out_of_scope, offset)
                yield from self._to_predictions(*self._scores(chunk, function), top_k, scope=scope)
            return

        def prepare(item: tuple[int, list[str]]) -> tuple[list[str], list[str], TokenBatch, Any]:
            # On the worker thread, so that a bad text in the next chunk is reported only after
            # this chunk's predictions have been yielded.
            offset, chunk = item
            check_texts(chunk, offset)
            unique = list(dict.fromkeys(chunk))
            tokens = self.tokenizer.encode_batch(unique)
            scope = self.scope(chunk, lambda: _expand_tokens(chunk, unique, tokens), on_out_of_scope, offset)
            return chunk, unique, tokens, scope

        for chunk, unique, tokens, scope in _prefetched(numbered(), prepare):
            logits = _expand(chunk, unique, self.run(tokens))
            yield from self._to_predictions(self._calibrated(logits, function), None, top_k, scope=scope)

    def explain(self, text: str, *, target: str | None = None, steps: int = 32) -> Explanation:
        """Which words drove the prediction for ``text``: Integrated Gradients (extra ``explain``).

        Returns an :class:`~distilsent.explain.Explanation` whose ``words`` hold each word's
        attribution towards ``target`` (default: the predicted label); see :mod:`distilsent.explain`.
        """
        return explain(self, text, target=target, steps=steps)

    def torch_model(self) -> Any:
        """The transformers module behind this classifier: the engine's own, or (ONNX backends) the
        directory's torch weights loaded once on the CPU."""
        model = getattr(self.engine, "model", None)
        if model is not None:
            return model
        return self._torch_engine().model

    def gradient_forward(self) -> GradientForward:
        """Logits from word embeddings with gradients, for explanations: the torch engine's, or (ONNX
        backends) one from the directory's torch weights on the CPU. On the CPU it needs no
        transformers (see :meth:`TorchEngine.gradient_forward`)."""
        from distilsent.core.engine.torch_engine import TorchEngine

        engine = self.engine if isinstance(self.engine, TorchEngine) else self._torch_engine()
        return engine.gradient_forward()

    def _torch_engine(self) -> Any:
        """A CPU torch engine on this classifier's directory, built once (for ONNX backends)."""
        if self._torch_copy is None:
            from distilsent.core.engine.torch_engine import TorchEngine

            try:
                self._torch_copy = TorchEngine(self.model_dir, device="cpu")
            except DistilsentError as e:
                raise DistilsentError(f"explanations need the model's torch weights: {e}") from None
        return self._torch_copy

    def check_options(self, top_k: int | None, function_to_apply: str | None) -> str:
        """Check ``top_k`` and ``function_to_apply``; returns the function to apply to logits."""
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise InvalidInputError(f"top_k must be a positive integer or None, got {top_k!r}")
        function = function_to_apply or self._default_function
        if function not in FUNCTIONS:
            raise InvalidInputError(
                f"function_to_apply must be one of {', '.join(FUNCTIONS)}, not {function!r}"
            )
        return function

    def _to_predictions(
        self,
        probs: np.ndarray,
        windows: list[int] | None,
        top_k: int | None,
        band: tuple[float, float] | str | None = "config",
        scope: tuple[list[str | None], str] | None = None,
    ) -> list[Prediction]:
        k = len(self.labels) if top_k is None else min(top_k, len(self.labels))
        band = self.neutral_band if band == "config" else band
        neutral = [False] * len(probs)
        if band is not None:
            low, high = band  # type: ignore[misc]
            neutral = ((probs[:, 1] >= low) & (probs[:, 1] <= high)).tolist()
        warnings: list[str | None] = [None] * len(probs)
        if scope is not None:
            warnings, action = scope
            if action == "neutral":
                neutral = [n or w is not None for n, w in zip(neutral, warnings)]
        with gc_paused():
            # Plain Python numbers from one tolist() each: indexing numpy per element costs more than
            # the GPU spends on a text.
            rows = probs.astype(np.float64).tolist()
            orders = np.argsort(-probs, axis=1, kind="stable")[:, :k].tolist()
            window_counts = [None] * len(probs) if windows is None else windows
            labels = self.labels
            neutral_label = self.config.neutral_label
            return [
                Prediction(
                    neutral_label if is_neutral else labels[order[0]],
                    row[order[0]],
                    {labels[j]: row[j] for j in order},
                    count,
                    warning,
                )
                for row, order, is_neutral, count, warning in zip(
                    rows, orders, neutral, window_counts, warnings
                )
            ]


def _expand(texts: list[str], unique: list[str], logits: np.ndarray) -> np.ndarray:
    """Rows of ``logits`` (one per distinct text, in ``unique`` order) for every text in ``texts``."""
    if len(unique) == len(texts):
        return logits
    position = {text: i for i, text in enumerate(unique)}
    return logits[[position[text] for text in texts]]


def _expand_tokens(texts: list[str], unique: list[str], tokens: TokenBatch) -> TokenBatch:
    """:func:`_expand` for token ids: the ids of every text in ``texts`` from those of ``unique``."""
    if len(unique) == len(texts):
        return tokens
    position = {text: i for i, text in enumerate(unique)}
    bounds = tokens.offsets
    return TokenBatch.from_lists(
        [tokens.ids[bounds[position[t]] : bounds[position[t] + 1]] for t in texts]  # type: ignore[misc]
    )


def _prefetched(items: Iterable[T], work: Callable[[T], R]) -> Iterator[R]:
    """``work(item)`` for each item, in order; the next item's work runs on a worker thread while the
    caller uses this one's result (tokenizing the next chunk while the model runs: the Rust tokenizer
    lets go of the GIL). Errors surface in order, when their result is asked for."""
    iterator = iter(items)
    first = next(iterator, _END)
    if first is _END:
        return
    second = next(iterator, _END)
    if second is _END:  # one item (a single text, a request): a thread would only add latency
        yield work(first)  # type: ignore[arg-type]
        return
    with ThreadPoolExecutor(1, thread_name_prefix="distilsent-tokenize") as pool:
        pending = pool.submit(work, first)  # type: ignore[arg-type]
        for item in itertools.chain([second], iterator):
            ready, pending = pending, pool.submit(work, item)  # type: ignore[arg-type]
            yield ready.result()
        yield pending.result()


def load(model: str | os.PathLike[str] = DEFAULT_MODEL, **options: Any) -> Classifier:
    """Load a classifier: ``model`` is ``"default"``, a local directory or a hub id.

    ``options`` are the fields of :class:`LoadConfig`: ``backend``, ``device``, ``batch_size``,
    ``max_length``, ``threads``, ``allow_pickle``, ``revision``.
    """
    return Classifier(LoadConfig.from_dict({"model": os.fspath(model), **options}))
