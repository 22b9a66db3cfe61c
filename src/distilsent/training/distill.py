"""Knowledge distillation: a DistilBERT student learns a stronger teacher's output distribution.

The teacher (any sequence classifier: MPNet, BERT, RoBERTa, DeBERTa, …, e.g. one fine-tuned with
``distilsent train --init mpnet``) labels the transfer set once: the training texts, optional extra
texts that have no gold label, and word-level variants of the training texts (TinyBERT's recipe, with
a rule-based perturbation instead of an MLM). Its logits are cached on disk, keyed by the teacher's
weights, the texts and the max length, and written in chunks so that a killed run resumes where it
stopped. The student then trains on ``T² · KL(teacher_T ‖ student_T) + α · CE(gold)`` through
:func:`distilsent.train.train`, with its data checks, checkpoints, resume, selection and model card.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from distilsent.core.errors import DataError, InvalidInputError, ModelFormatError
from distilsent.core.models import cache_dir, id2label, read_model_config, resolve_model
from distilsent.formats import encode_labels, file_sha256, label_names, read_labelled
from distilsent.training.train import SoftTargets, TrainConfig, TrainResult, kd_loss, train

__all__ = ["DistillConfig", "TeacherLogits", "distill", "kd_loss", "word_variants"]

logger = logging.getLogger(__name__)

_CHUNK = 4096


@dataclass
class DistillConfig(TrainConfig):
    """A distillation run: a :class:`TrainConfig` plus the teacher and how it is imitated."""

    teacher: str = field(default="", metadata={"required": True})
    """The teacher: a trained sequence-classifier directory or hub id (any architecture) whose labels
    are the training data's."""
    temperature: float = 2.0
    """Softmax temperature T of the distillation term."""
    alpha: float = 0.5
    """Weight of the cross-entropy on gold labels (rows that have one), added to the distillation term."""
    transfer: str | None = None
    """Extra transfer texts labelled by the teacher only: a UTF-8 file, one text per line."""
    word_copies: int = 0
    """Word-level variants per training text (words masked to a random vocabulary word, deleted or
    swapped with a neighbour), labelled by the teacher only. 0 = none."""
    word_p: float = 0.15
    """With word_copies: the probability that each word of a variant is changed."""
    word_min_words: int = 4
    """With word_copies: only texts of at least this many words get variants."""
    teacher_batch_size: int = 64
    """Batch size of the teacher's pass over the transfer set (sorted by length)."""
    teacher_dtype: str = "auto"
    """dtype of the teacher's pass: 'auto' (bf16 on a CPU with native bf16 matrix instructions, where it
    is several times faster, else the torch backend's default), 'fp32' or 'bf16'."""
    select_on: str = "holdout"
    """What picks the kept checkpoint: 'holdout' (a seeded slice of the training data, see holdout_by),
    'dev' or 'last'."""
    learning_rate: float = 5e-5
    """Peak AdamW learning rate."""

    subcommand = "distill"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.teacher:
            raise InvalidInputError("distill needs a teacher model: --teacher DIR")
        if self.temperature <= 0:
            raise InvalidInputError(f"temperature must be positive, got {self.temperature}")
        if self.alpha < 0:
            raise InvalidInputError(f"alpha must not be negative, got {self.alpha}")
        if self.word_copies < 0:
            raise InvalidInputError(f"word_copies must not be negative, got {self.word_copies}")
        if not 0 < self.word_p < 1:
            raise InvalidInputError(f"word_p must be in (0, 1), got {self.word_p}")
        if self.teacher_dtype not in ("auto", "fp32", "bf16"):
            raise InvalidInputError(f"teacher_dtype must be auto, fp32 or bf16, not {self.teacher_dtype!r}")
        if self.teacher_batch_size <= 0:
            raise InvalidInputError(f"teacher_batch_size must be positive, got {self.teacher_batch_size}")


def word_variants(texts: Sequence[str], *, copies: int, p: float, seed: int, min_words: int = 4) -> list[str]:
    """Word-level perturbations of ``texts`` for the transfer set, ``copies`` per text.

    Each word is changed with probability ``p``: replaced by a word drawn from the texts' own
    vocabulary (weighted by frequency), deleted, or swapped with the next word. A variant equal to its
    source is dropped, so the result can be shorter than ``copies × len(texts)``.
    """
    rng = random.Random(seed)
    counts = Counter(w for t in texts for w in t.split())
    # Cumulative weights once: choices() would rebuild them from plain weights on every call.
    vocab, cumulative = list(counts), list(itertools.accumulate(counts.values()))
    out: list[str] = []
    for text in texts:
        words = text.split()
        if len(words) < min_words:
            continue
        for _ in range(copies):
            new: list[str] = []
            i = 0
            while i < len(words):
                word, r = words[i], rng.random()
                if r >= p:
                    new.append(word)
                elif r < p / 3:
                    new.append(rng.choices(vocab, cum_weights=cumulative)[0])
                elif r < 2 * p / 3:
                    pass  # deleted
                elif i + 1 < len(words):
                    new += [words[i + 1], word]
                    i += 1
                else:
                    new.append(word)
                i += 1
            variant = " ".join(new)
            if new and variant != text:
                out.append(variant)
    return out


class TeacherLogits:
    """A teacher's logits on lists of texts, cached under ``root`` and computed in resumable chunks.

    The key hashes the teacher's weight files, the texts, the max length and the dtype, so any change
    to one of them computes afresh, and an unchanged call (a resumed run, a second student) reuses the file.
    """

    def __init__(
        self,
        teacher: str,
        *,
        max_length: int,
        batch_size: int = 64,
        dtype: str = "auto",
        root: Path | None = None,
    ):
        from distilsent.core.engine import has_native_bf16

        self.teacher_dir = resolve_model(teacher)
        self.max_length = max_length
        self.dtype = ("bf16" if has_native_bf16() else "auto") if dtype == "auto" else dtype
        self.batch_size = batch_size
        self.root = root if root is not None else cache_dir() / "teacher-logits"
        self.passes = 0
        """Texts the teacher actually ran on (0 when everything came from the cache)."""
        self._classifier = None

    def id2label(self) -> dict[int, str]:
        return id2label(read_model_config(self.teacher_dir))

    def _weights_digest(self) -> str:
        files = [*sorted(self.teacher_dir.glob("*.safetensors")), self.teacher_dir / "config.json"]
        return hashlib.sha256(" ".join(file_sha256(p) for p in files).encode()).hexdigest()

    def key(self, texts: Sequence[str]) -> str:
        h = hashlib.sha256(f"{self._weights_digest()}\0{self.max_length}\0{self.dtype}\0".encode())
        for text in texts:
            h.update(text.encode("utf-8", "surrogatepass") + b"\0")
        return h.hexdigest()[:32]

    def __call__(self, texts: list[str]) -> np.ndarray:
        folder = self.root / self.key(texts)
        final = folder / "logits.npy"
        if final.is_file():
            logits = np.load(final, allow_pickle=False)
            if len(logits) == len(texts):
                logger.warning("teacher logits for %d texts read from %s", len(texts), final)
                return logits
        folder.mkdir(parents=True, exist_ok=True)
        parts = []
        for k, start in enumerate(range(0, len(texts), _CHUNK)):
            part = folder / f"part-{k:05d}.npy"
            chunk = texts[start : start + _CHUNK]
            if part.is_file():
                values = np.load(part, allow_pickle=False)
                if len(values) == len(chunk):
                    parts.append(values)
                    continue
            values = self._run(chunk)
            _save_atomic(part, values)
            parts.append(values)
            logger.warning("teacher logits: %d of %d texts", min(start + _CHUNK, len(texts)), len(texts))
        logits = np.concatenate(parts) if parts else np.zeros((0, len(self.id2label())), np.float32)
        _save_atomic(final, logits)
        for part in folder.glob("part-*.npy"):
            part.unlink()
        return logits

    def _run(self, texts: list[str]) -> np.ndarray:
        from distilsent.core.classifier import load

        if self._classifier is None:
            self._classifier = load(
                self.teacher_dir, max_length=self.max_length, batch_size=self.batch_size, dtype=self.dtype
            )
        self.passes += len(texts)
        return self._classifier.logits(texts).astype(np.float32)


def _save_atomic(path: Path, values: np.ndarray) -> None:
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, values, allow_pickle=False)
    tmp.replace(path)


def read_texts(path: str | Path) -> list[str]:
    """A UTF-8 file of texts, one per line; blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"transfer file {path} does not exist")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text: {e}") from None
    return [line.strip() for line in lines if line.strip()]


def _check_labels(teacher: dict[int, str], data: dict[int, str], config: DistillConfig) -> None:
    if teacher != data:
        raise ModelFormatError(
            f"teacher {config.teacher} has labels {teacher} but the training data {config.train} has "
            f"{data}; distill a teacher trained on the same labels"
        )
    init = Path(config.init)
    if (init / "config.json").is_file():
        student = read_model_config(init)
        names = id2label(student)
        trained = any("SequenceClassification" in a for a in student.get("architectures") or [])
        if trained and names and names != data:
            raise ModelFormatError(
                f"student init {config.init} has labels {names} but the training data has {data}; "
                "start from a backbone or a classifier with the same labels"
            )


def distill(
    config: DistillConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    teacher_logits: Callable[[list[str]], np.ndarray] | None = None,
) -> TrainResult:
    """Train ``config.init`` to imitate ``config.teacher`` on ``config.train`` (plus transfer texts)."""
    data = read_labelled(config.train, text_column=config.text_column, label_column=config.label_column)
    id2label = label_names(data.labels)
    encode_labels(data, id2label)  # bad labels fail here, before the teacher is loaded
    transfer = read_texts(config.transfer) if config.transfer else []
    logits = teacher_logits or TeacherLogits(
        config.teacher,
        max_length=config.max_length,
        batch_size=config.teacher_batch_size,
        dtype=config.teacher_dtype,
    )
    if isinstance(logits, TeacherLogits):
        _check_labels(logits.id2label(), id2label, config)

    def extra_texts(training: list[str]) -> list[str]:
        variants = word_variants(
            training,
            copies=config.word_copies,
            p=config.word_p,
            seed=config.seed,
            min_words=config.word_min_words,
        )
        return transfer + variants

    soft = SoftTargets(
        logits=logits, temperature=config.temperature, alpha=config.alpha, extra_texts=extra_texts
    )
    return train(config, resume=resume, overwrite=overwrite, soft_targets=soft)
