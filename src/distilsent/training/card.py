"""The model card (``README.md``) written into every model directory distilsent trains."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Protocol

from distilsent.core.models import MINILM, MPNET, read_model_config


class RunConfig(Protocol):
    """What the card needs of a run's configuration (``TrainConfig`` and ``DistillConfig`` have it)."""

    max_length: int

    def command(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


__all__ = ["write_model_card"]

_FAMILIES = {"mpnet": "MPNet", "bert": "BERT", "roberta": "RoBERTa", "deberta-v2": "DeBERTa-v2"}
_BIAS_WARNING = """\
Like `distilbert-base-uncased-finetuned-sst-2-english`, this model can give different scores to
sentences that differ only in an identity term: "This film was filmed in <country>." gets noticeably
different P(positive) depending on the country. Test it on your own domain, including sentences that
name different groups of people, before deployment, and do not use it to make decisions about people."""


# distilsent's names for the backbones it ships, as the Hub knows them (both Apache-2.0).
_HUB_IDS = {
    MINILM: "sentence-transformers/all-MiniLM-L6-v2",
    MPNET: "sentence-transformers/all-mpnet-base-v2",
}
_DATASETS = {"sst2": "stanfordnlp/sst2"}
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def _hub_metadata(
    output: Path, config: RunConfig, data: dict[str, dict[str, Any]], metrics: dict[str, Any]
) -> str:
    """The card's YAML header, what a Hub model page reads (through ``huggingface_hub.ModelCardData``):
    license, base model, datasets, and a model-index with the accuracy measured on the dev file."""
    from huggingface_hub import EvalResult, ModelCardData

    init = str(getattr(config, "init", "") or "")
    base = _HUB_IDS.get(init) or (init if _HUB_ID.match(init) and not Path(init).exists() else None)
    folder = {name: Path(d["path"]).parent.name for name, d in data.items()}
    datasets = sorted({_DATASETS[f] for f in folder.values() if f in _DATASETS})
    results = []
    final = metrics.get("dev") or (
        metrics.get("best") if metrics.get("selected_on", "dev") == "dev" else None
    )
    if final and "dev" in data:
        name = _DATASETS.get(folder["dev"], folder["dev"])
        results.append(
            EvalResult(
                task_type="text-classification",
                dataset_type=name,
                dataset_name=name,
                dataset_split="validation",
                metric_type="accuracy",
                metric_value=round(float(final["accuracy"]), 4),
            )
        )
    card_data = ModelCardData(
        language="en",
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag="text-classification",
        base_model=base,
        datasets=datasets or None,
        model_name=output.name if results else None,
        eval_results=results or None,
    )
    return f"---\n{card_data.to_yaml()}\n---"


def write_model_card(
    output: Path,
    *,
    config: RunConfig,
    base_model: str,
    data: dict[str, dict[str, Any]],
    metrics: dict[str, Any],
    id2label: dict[int, str],
) -> Path:
    rows = "\n".join(
        f"| {name} | `{d['path']}` | {d['rows']:,} | `{d['sha256'][:16]}…` |" for name, d in data.items()
    )
    history = (
        "\n".join(
            f"| {h['epoch']:.2f} | {h['step']} | {100 * h['accuracy']:.2f} % | {h['f1']:.4f} |"
            for h in metrics["history"]
        )
        or "| – | – | – | – |"
    )
    best = metrics["best"]
    selected_on = metrics.get("selected_on", "dev")
    split = {"dev": "dev", "holdout": "held-out training slice"}.get(selected_on, selected_on)
    holdout = metrics.get("holdout")
    if selected_on == "holdout" and holdout:
        split = (
            f"{holdout['rows']:,} held-out training sentences (every training row inside them held out too)"
            if holdout["by"] == "sentence"
            else f"{holdout['rows']:,} held-out training rows"
        )
    best_line = (
        f"Kept checkpoint: step {best['step']} (epoch {best['epoch']:.2f}), chosen on the {split}: "
        f"accuracy **{100 * best['accuracy']:.2f} %**, macro-F1 {best['f1']:.4f}."
        if best
        else "No selection set was given, so the last checkpoint was kept."
    )
    final = metrics.get("dev")
    if final:
        best_line += (
            f" Dev, evaluated once after selection: accuracy **{100 * final['accuracy']:.2f} %**, "
            f"macro-F1 {final['f1']:.4f}."
        )
    labels = ", ".join(f"{i} = {name}" for i, name in sorted(id2label.items()))
    teacher = getattr(config, "teacher", None)
    teacher = f" Distilled from the teacher `{teacher}` (`distilsent distill`)." if teacher else ""
    model_type = read_model_config(output).get("model_type") if (output / "config.json").is_file() else None
    family, loader = (
        ("DistilBERT", "DistilBertForSequenceClassification")
        if model_type in (None, "distilbert")
        else (_FAMILIES.get(model_type, model_type), "AutoModelForSequenceClassification")
    )
    text = f"""{_hub_metadata(output, config, data, metrics)}
# {family} sentiment classifier trained by distilsent

Labels: {labels}. Base model: {base_model}.{teacher}

## Intended use
Binary sentiment of English text in the style of movie reviews (SST-2), through
`distilsent.load(<this directory>)`, `distilsent classify --model <this directory>`, or plain transformers
(`{loader}.from_pretrained`). Inputs longer than {config.max_length} tokens
are truncated.

## Known biases and limits
{_BIAS_WARNING}

The license above is that of the backbones distilsent ships (Apache-2.0); a model trained from
another base inherits that base's license, and its data's terms apply. A calibration temperature
stored later by `distilsent calibrate` (`distilsent_temperature` in `config.json`) is applied by
distilsent only: plain transformers ignores it, so its probabilities are the uncalibrated ones
(labels are the same).

## Training data
| split | file | rows | sha256 |
|---|---|---|---|
{rows}

## Results
| epoch | step | {split} accuracy | {split} macro-F1 |
|---|---|---|---|
{history}

{best_line} Training took {metrics["train_seconds"]:.0f} s.

## Reproduce
```
{config.command()}
```

## Full configuration
```json
{json.dumps(config.to_dict(), indent=2)}
```
"""
    path = output / "README.md"
    path.write_text(text)
    return path
