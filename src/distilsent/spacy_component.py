"""distilsent as a spaCy pipeline component (extra ``spacy``): ``doc.cats`` from a DistilBERT classifier.

>>> import spacy
>>> nlp = spacy.blank("en")
>>> nlp.add_pipe("distilsent")                      # the bundled default model
>>> nlp("Hello, my dog is cute").cats
{'POSITIVE': 0.961..., 'NEGATIVE': 0.038...}

The factory ``"distilsent"`` is registered through the ``spacy_factories`` entry point, so spaCy
finds it without an import. Its config is ``model`` (as :func:`distilsent.load` takes it) and
``load``, the other fields of :class:`distilsent.LoadConfig` (``{"backend": "onnx"}``, ...), checked
there. ``nlp.pipe`` classifies each batch of docs in one call of the classifier, which sorts them by
length; with ``n_process`` the forked workers share the loaded model, one torch thread each.
``doc._.distilsent`` holds :meth:`distilsent.Prediction.to_dict` (``label``, ``score``, ``scores``,
and ``warning`` for text out of the model's scope): plain data, so that docs serialize. An empty or
whitespace-only doc gets no scores (``doc.cats`` untouched, ``doc._.distilsent`` ``None``) rather
than stopping the pipeline. ``nlp.to_disk`` stores the model
directory inside the pipeline's, so ``spacy.load`` needs nothing else; ``nlp.evaluate`` scores
``cats`` with spaCy's own scorer (exclusive or multi-label, as the model's config says).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from distilsent.core.classifier import Classifier, LoadConfig
from distilsent.core.errors import InvalidInputError, MissingExtraError, ModelNotFoundError
from distilsent.core.models import label_names, read_model_config, resolve_model

try:
    from spacy.language import Language
    from spacy.scorer import Scorer
    from spacy.tokens import Doc
    from spacy.training import Example
    from spacy.util import minibatch
except ImportError:
    raise MissingExtraError("the spaCy component", "spacy", "spacy") from None

__all__ = ["DistilsentComponent", "make_distilsent"]

_LOAD_FILE = "distilsent.json"
_MODEL_FOLDER = "model"

if not Doc.has_extension("distilsent"):
    Doc.set_extension("distilsent", default=None)


class DistilsentComponent:
    """Sets ``doc.cats`` (every label's score) and ``doc._.distilsent`` (the prediction, as a dict)."""

    def __init__(self, nlp: Language, name: str, model: str, load: dict[str, Any]) -> None:
        self.name = name
        if not isinstance(load, dict):
            raise InvalidInputError(f"the distilsent component's 'load' must be a mapping, not {load!r}")
        if "model" in load:
            raise InvalidInputError("give the model as the component's 'model', not inside 'load'")
        self._load = dict(load)
        # Checked now, loaded on first use: spacy.load builds the component from its config (the
        # model as first given, perhaps a path on another machine) before from_disk points it at
        # the copy saved with the pipeline.
        self._config = LoadConfig.from_dict({"model": model, **self._load})
        self._classifier: Classifier | None = None

    @property
    def classifier(self) -> Classifier:
        if self._classifier is None:
            self._classifier = Classifier(self._config)
        return self._classifier

    @property
    def labels(self) -> tuple[str, ...]:
        """The model's labels, read from its config.json without loading it; empty while its
        directory cannot be found (spacy.load asks before from_disk points at the saved copy)."""
        if self._classifier is not None:
            return tuple(self._classifier.labels)
        config = self._config
        try:
            directory = resolve_model(
                config.model, allow_pickle=config.allow_pickle, revision=config.revision
            )
        except ModelNotFoundError:
            return ()
        return tuple(label_names(read_model_config(directory)))

    def __call__(self, doc: Doc) -> Doc:
        return next(iter(self.pipe([doc])))

    def pipe(self, stream: Iterable[Doc], *, batch_size: int = 256) -> Iterator[Doc]:
        for docs in minibatch(stream, size=batch_size):
            scored = [doc for doc in docs if doc.text.strip()]
            predictions = self.classifier.predict([doc.text for doc in scored]) if scored else []
            for doc, prediction in zip(scored, predictions, strict=True):
                doc.cats.update(prediction.scores)
                # Plain data, not the Prediction: spaCy serializes a doc's extensions with msgpack
                # (doc.to_bytes, DocBin, nlp.pipe with n_process > 1).
                doc._.distilsent = prediction.to_dict()
            yield from docs

    def score(self, examples: Iterable[Example], **kwargs: Any) -> dict[str, Any]:
        """spaCy's ``cats`` scores: for exclusive labels (softmax) macro F1 as ``cats_score``, as
        spaCy's ``textcat``; for a multi-label model (sigmoid) macro AUC, as ``textcat_multilabel``."""
        multi_label = self.classifier.check_options(None, None) == "sigmoid"
        return Scorer.score_cats(examples, "cats", labels=self.labels, multi_label=multi_label, **kwargs)

    def to_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> None:
        """The model directory's files (the weights, tokenizer and config a transformers user reads)
        under ``path/model``, and the load options beside them."""
        path = Path(path)
        target, source = path / _MODEL_FOLDER, self.classifier.model_dir
        if target.resolve() != source.resolve():  # saved again where it was loaded from: in place
            if target.exists():
                shutil.rmtree(target)
            target.mkdir(parents=True)
            for file in source.iterdir():
                if file.is_file():  # not training checkpoints or other folders
                    shutil.copyfile(file, target / file.name)
        path.mkdir(parents=True, exist_ok=True)
        (path / _LOAD_FILE).write_text(json.dumps(self._load, indent=2) + "\n")

    def from_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> DistilsentComponent:
        path = Path(path)
        self._load = json.loads((path / _LOAD_FILE).read_text())
        self._config = LoadConfig.from_dict({"model": str(path / _MODEL_FOLDER), **self._load})
        self._classifier = None
        return self


@Language.factory(
    "distilsent",
    default_config={"model": "default", "load": {}},
    assigns=["doc.cats", "doc._.distilsent"],
    default_score_weights={"cats_score": 1.0},
)
def make_distilsent(nlp: Language, name: str, model: str, load: dict[str, Any]) -> DistilsentComponent:
    """The ``"distilsent"`` factory: ``nlp.add_pipe("distilsent", config={"model": ..., "load": {...}})``."""
    return DistilsentComponent(nlp, name, model, load)
