"""``distilsent export``: write a model's ONNX files (fp32, and int8 chosen by measured agreement and speed).

The graph is traced from the eager attention implementation: that is the pattern ONNX Runtime's BERT
optimizer recognises, so each layer's attention becomes one fused ``Attention`` kernel and the
embeddings, GELUs and residual LayerNorms fuse as well. The directory written holds ``model.onnx``
next to ``config.json`` and the tokenizer: the layout Optimum's ``ORTModelForSequenceClassification``
loads.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from distilsent.core.config import Config
from distilsent.core.engine.onnx_export import (
    INT8_FILE,
    INT8_RECIPES,
    QUANTIZATION_FILE,
    SMOOTHED_RECIPES,
    export_onnx,
    freeze_activation_scales,
    write_int8,
    write_quantization_record,
    write_smoothed_int8,
)
from distilsent.core.errors import DistilsentError, InvalidInputError
from distilsent.core.postprocess import top_margin

__all__ = [
    "BATCH_INDEPENDENCE_WORTH",
    "BATCH_INDEPENDENT",
    "NEAR_MARGIN",
    "ExportConfig",
    "ExportResult",
    "Int8Candidate",
    "check_int8_drop",
    "choose_int8",
    "export",
]

BATCH_INDEPENDENT = ("blockwise", "smoothed-static")
"""Int8 recipes whose labels for a text do not depend on the other texts of its batch."""
BATCH_INDEPENDENCE_WORTH = 0.10
"""A batch-independent recipe is chosen over a faster batch-dependent one that is at most this much
faster (a fraction): a server's label for a text should not change with who else is in the queue.
Within one export the recipes' speeds also vary by about this much from pass to pass."""

NEAR_MARGIN = 0.5
"""A label whose fp32 logit is less than this above the runner-up's is "near the boundary": the
labels int8 can flip. Agreement measured on texts with few of them (a model's own training text)
reads higher than on new text."""


@dataclass
class ExportConfig(Config):
    """What ``distilsent export`` writes."""

    model: str
    """Model to export: 'default', a model directory, or a hub id."""
    output: str | None = None
    """Output directory; default: ``./<model directory name>-onnx``."""
    int8: bool = False
    """Also write an int8-quantized ``model_quantized.onnx``."""
    opset: int = 17
    """ONNX opset to export with."""
    dev: str | None = None
    """Labelled file on which fp32 and int8 accuracy are compared (with ``int8``)."""
    max_drop: float = 0.5
    """Refuse to write an int8 model that loses more than this many accuracy points on ``dev``."""
    force: bool = False
    """Write the int8 model even when it loses more than ``max_drop`` or no recipe reaches
    ``min_agreement``."""
    int8_recipe: str = "auto"
    """'blockwise' (int8 weights and activations per block of 128 inputs: batch-independent, needs no
    data), 'smoothed-dynamic' (SmoothQuant-style scales, then dynamic per-channel int8: faster where
    the CPU has VNNI/AMX, needs ``calibration``), 'smoothed-static' (the same with each activation's
    int8 scale fixed on ``calibration``: batch-independent, no range pass at run time), or 'auto':
    with ``calibration``, build all three and keep the fastest of those that agree with fp32 on at
    least ``min_agreement`` (or a batch-independent one at most ``BATCH_INDEPENDENCE_WORTH``
    slower); without, 'blockwise'."""
    calibration: str | None = None
    """In-domain texts (TSV/CSV/JSONL/Parquet with a text column; labels ignored), a few hundred or
    more: every other text sets the smoothing scales, the rest measure agreement and speed. Not the
    file you evaluate on."""
    min_agreement: float = 99.5
    """Percent of held-out calibration texts whose int8 label must equal fp32's for a recipe to pass."""

    def __post_init__(self) -> None:
        if self.opset < 14:
            raise InvalidInputError(
                f"opset must be at least 14 (scaled-dot-product attention), got {self.opset}"
            )
        if self.max_drop < 0:
            raise InvalidInputError(
                f"max_drop is in accuracy points and must not be negative, got {self.max_drop}"
            )
        if self.dev is not None and not self.int8:
            raise InvalidInputError("--dev compares fp32 with int8 accuracy; add --int8")
        if self.calibration is not None and not self.int8:
            raise InvalidInputError("--calibration is for the int8 model; add --int8")
        if self.int8_recipe not in INT8_RECIPES:
            raise InvalidInputError(
                f"int8_recipe must be one of {', '.join(INT8_RECIPES)}, not {self.int8_recipe!r}"
            )
        if self.int8_recipe in SMOOTHED_RECIPES and self.calibration is None:
            raise InvalidInputError(
                f"the {self.int8_recipe} recipe sets its scales from texts: add --calibration FILE"
            )
        if not 0 < self.min_agreement <= 100:
            raise InvalidInputError(f"min_agreement is a percentage in (0, 100], got {self.min_agreement}")


@dataclass
class ExportResult:
    """What ``export`` wrote, and the fp32/int8 accuracy comparison when a dev file was given."""

    output: Path
    """The directory holding ``model.onnx`` (and ``model_quantized.onnx``), config and tokenizer."""
    int8_path: Path | None = None
    """The int8 model, when one was written."""
    fp32_accuracy: float | None = None
    """fp32 ONNX accuracy on the dev file."""
    int8_accuracy: float | None = None
    """int8 accuracy on the dev file."""
    agreement: float | None = None
    """Fraction of dev texts where int8 and fp32 give the same label."""
    recipe: str | None = None
    """The int8 recipe written."""
    weights: str | None = None
    """The weight type of a smoothed int8 model written (``"int8"`` or ``"uint8"``); None otherwise."""
    candidates: list[Int8Candidate] = field(default_factory=list)
    """Every int8 recipe measured on the calibration texts (empty without ``calibration``)."""
    near_boundary: float | None = None
    """Percent of the held-out calibration texts whose fp32 margin is under ``NEAR_MARGIN``: how
    many labels the agreement gate could see flip (None without ``calibration``)."""


@dataclass
class Int8Candidate:
    """One int8 recipe as measured on the held-out calibration texts."""

    recipe: str
    """Recipe name, one of ``INT8_RECIPES``."""
    agreement: float
    """Percent of held-out calibration texts whose label equals the fp32 export's: the lower of the
    figures in batches of up to 32 and one text at a time."""
    texts_per_second: float
    """Best of two passes over the held-out texts, batch 32."""
    passed: bool = False
    """Whether ``agreement`` reached ``min_agreement``."""
    weights: str | None = None
    """Weight type of the smoothed recipe (``"int8"`` or ``"uint8"``); None for blockwise."""

    @property
    def label(self) -> str:
        """The recipe's name, with its weight type where that is not int8."""
        return self.recipe if self.weights in (None, "int8") else f"{self.recipe}, {self.weights} weights"


def choose_int8(candidates: list[Int8Candidate], min_agreement: float, force: bool) -> Int8Candidate:
    """The fastest candidate agreeing with fp32 on at least ``min_agreement`` percent of texts, or a
    batch-independent one at most ``BATCH_INDEPENDENCE_WORTH`` slower than it.

    With none passing: an error naming each candidate's agreement, unless ``force`` (then the most
    agreeing one)."""
    for candidate in candidates:
        candidate.passed = candidate.agreement >= min_agreement
    passing = [c for c in candidates if c.passed]
    if passing:
        fastest = max(passing, key=lambda c: c.texts_per_second)
        floor = fastest.texts_per_second * (1 - BATCH_INDEPENDENCE_WORTH)
        steady = [c for c in passing if c.recipe in BATCH_INDEPENDENT and c.texts_per_second >= floor]
        return max(steady, key=lambda c: c.texts_per_second) if steady else fastest
    if force:
        return max(candidates, key=lambda c: c.agreement)
    measured = ", ".join(f"{c.label} {c.agreement:.2f} %" for c in candidates)
    raise DistilsentError(
        f"no int8 recipe agrees with fp32 on {min_agreement} % of the held-out calibration texts "
        f"({measured}); the int8 model was not written (pass --force to keep the closest anyway)"
    )


def check_int8_drop(fp32_accuracy: float, int8_accuracy: float, max_drop: float, force: bool) -> None:
    """Refuse an int8 model that loses more than ``max_drop`` accuracy points, unless forced."""
    drop = 100 * (fp32_accuracy - int8_accuracy)
    if drop > max_drop and not force:
        raise DistilsentError(
            f"int8 loses {drop:.2f} accuracy points on dev (fp32 {100 * fp32_accuracy:.2f} %, "
            f"int8 {100 * int8_accuracy:.2f} %), more than --max-drop {max_drop}; "
            "the int8 model was not written (pass --force to keep it anyway)"
        )


def export(config: ExportConfig) -> ExportResult:
    """Export ``config.model`` to ONNX (and int8), checking int8 accuracy on ``config.dev``."""
    from distilsent.core.models import resolve_model

    model_dir = resolve_model(config.model)
    output = Path(config.output) if config.output else Path.cwd() / f"{model_dir.name}-onnx"
    fp32 = export_onnx(model_dir, output, opset=config.opset)
    result = ExportResult(output=output)
    if not config.int8:
        return result
    if config.calibration is None:
        int8 = write_int8(model_dir, fp32, output / INT8_FILE, opset=config.opset)
        recipe = "blockwise"
    else:
        int8, recipe = _measured_int8(model_dir, output, config, result)
    result.recipe = recipe
    if config.dev is not None:
        import numpy as np

        from distilsent.core.classifier import load
        from distilsent.formats import encode_labels, read_labelled

        data = read_labelled(config.dev)
        fp32_clf = load(output, backend="onnx", device="cpu")
        labels = np.array(encode_labels(data, dict(enumerate(fp32_clf.labels))))
        fp32_pred = fp32_clf.logits(data.texts).argmax(1)
        int8_pred = load(output, backend="onnx-int8", device="cpu").logits(data.texts).argmax(1)
        result.fp32_accuracy = float((fp32_pred == labels).mean())
        result.int8_accuracy = float((int8_pred == labels).mean())
        result.agreement = float((fp32_pred == int8_pred).mean())
        try:
            check_int8_drop(result.fp32_accuracy, result.int8_accuracy, config.max_drop, config.force)
        except DistilsentError:
            int8.unlink()
            (output / QUANTIZATION_FILE).unlink(missing_ok=True)
            raise
    result.int8_path = int8
    return result


def _measured_int8(
    model_dir: Path, output: Path, config: ExportConfig, result: ExportResult
) -> tuple[Path, str]:
    """Build the candidate recipes, measure them on the held-out calibration texts, keep the choice."""
    import numpy as np

    from distilsent.core.classifier import load
    from distilsent.core.engine import MATRIX_FLAGS, cpu_flags, cpu_model, int8_weight_type
    from distilsent.formats import read_texts

    texts = read_texts(config.calibration)  # type: ignore[arg-type]
    if len(texts) < 2:
        raise InvalidInputError(f"{config.calibration}: at least two calibration texts are needed")
    fit, held_out = texts[0::2], texts[1::2]
    fp32_clf = load(output, backend="onnx", device="cpu")
    fp32_logits = fp32_clf.logits(held_out)
    reference = fp32_logits.argmax(1)
    result.near_boundary = float(100 * np.mean(top_margin(fp32_logits) < NEAR_MARGIN))
    every = [r for r in INT8_RECIPES if r != "auto"]
    recipes = every if config.int8_recipe == "auto" else [config.int8_recipe]
    weights, why = int8_weight_type()
    # (recipe, weight type): the smoothed recipes take the weights this CPU multiplies exactly. On an
    # AVX2-only CPU int8 weights, through the kernel that saturates, were once measured here too: they
    # passed this gate (99.8 % of held-out train sentences) but lost 0.69-0.80 dev points against
    # uint8's 0.11-0.23 (EPYC, 2026-12-06), for at most 9-12 % more speed.
    variants = [(recipe, None if recipe == "blockwise" else weights) for recipe in recipes]
    ids = fp32_clf.tokenizer.encode(fit)
    pad_id = fp32_clf.tokenizer.pad_id
    with tempfile.TemporaryDirectory() as tmp:
        paths: dict[tuple[str, str | None], Path] = {}
        for recipe, weight_type in variants:
            candidate_dir = Path(tmp) / f"{recipe}-{weight_type}"
            skip = shutil.ignore_patterns(INT8_FILE, QUANTIZATION_FILE)
            shutil.copytree(output, candidate_dir, ignore=skip)
            target = candidate_dir / INT8_FILE
            dynamic = paths.get(("smoothed-dynamic", weight_type))
            if recipe == "blockwise":
                write_int8(model_dir, output / "model.onnx", target, opset=config.opset)
            elif recipe == "smoothed-static" and dynamic is not None:
                # The same smoothed model and weights as the dynamic candidate, its scales fixed.
                shutil.copyfile(dynamic, target)
                freeze_activation_scales(target, ids, pad_id=pad_id)
            else:
                write_smoothed_int8(
                    model_dir,
                    target,
                    ids,
                    pad_id=pad_id,
                    opset=config.opset,
                    weight_type=weight_type,
                    static=recipe == "smoothed-static",
                )
            clf = load(candidate_dir, backend="onnx-int8", device="cpu")
            # Dynamic int8 scales activations per batch, so a label can change with the batch a text
            # lands in: the agreement that counts is the worse of batches of 32 and single texts
            # (measured for every recipe alike).
            agreements, usual = [], clf.batch_size
            for batch_size in (usual, 1):
                clf.batch_size = batch_size
                agreements.append(float(100 * np.mean(clf.logits(held_out).argmax(1) == reference)))
            clf.batch_size = usual
            agreement = min(agreements)
            speeds = []
            for _ in range(2):
                started = time.perf_counter()
                clf.logits(held_out)
                speeds.append(len(held_out) / (time.perf_counter() - started))
            result.candidates.append(Int8Candidate(recipe, agreement, max(speeds), weights=weight_type))
            paths[recipe, weight_type] = target
        chosen = choose_int8(result.candidates, config.min_agreement, config.force)
        shutil.copyfile(paths[chosen.recipe, chosen.weights], output / INT8_FILE)
    record: dict[str, Any] = {
        "recipe": chosen.recipe,
        "min_agreement": config.min_agreement,
        "held_out_texts": len(held_out),
        "held_out_near_boundary": result.near_boundary,
        "near_margin": NEAR_MARGIN,
        "calibration": str(config.calibration),
        "candidates": [asdict(c) for c in result.candidates],
        "cpu": cpu_model(),
        "cpu_flags": sorted(cpu_flags() & set(MATRIX_FLAGS)),
    }
    if chosen.weights is not None:
        record["weights"], record["weights_why"] = chosen.weights, why
    write_quantization_record(output, record)
    result.weights = chosen.weights
    return output / INT8_FILE, chosen.recipe
