"""``distilsent export``: write a model's ONNX files (fp32, and int8 checked against fp32 on dev).

The graph is traced from the eager attention implementation: that is the pattern ONNX Runtime's BERT
optimizer recognises, so each layer's attention becomes one fused ``Attention`` kernel and the
embeddings, GELUs and residual LayerNorms fuse as well. The directory written holds ``model.onnx``
next to ``config.json`` and the tokenizer: the layout Optimum's ``ORTModelForSequenceClassification``
loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from distilsent.core.config import Config
from distilsent.core.engine.onnx_export import INT8_FILE, export_onnx, write_int8
from distilsent.core.errors import DistilsentError, InvalidInputError

__all__ = ["ExportConfig", "ExportResult", "check_int8_drop", "export"]


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
    """Write the int8 model even when it loses more than ``max_drop``."""

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
    int8 = write_int8(model_dir, fp32, output / INT8_FILE, opset=config.opset)
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
            raise
    result.int8_path = int8
    return result
