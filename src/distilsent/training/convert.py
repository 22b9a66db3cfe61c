"""Exact conversion of BERT-architecture checkpoints into the DistilBERT layout.

DistilBERT is BERT without token-type embeddings and without a pooler, with its sub-modules renamed.
A BERT model only ever sees token type 0 for single sentences, so folding row 0 of the token-type table
into the position table gives the same embeddings, and the hidden states match to float rounding.
The pooler (a dense layer on ``[CLS]``) has exactly the shape of DistilBERT's ``pre_classifier`` and,
when present, initialises it.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from distilsent.core.errors import ModelFormatError
from distilsent.core.models import read_model_config

__all__ = ["bert_config_to_distilbert", "bert_state_dict_to_distilbert", "convert_bert_to_distilbert"]

logger = logging.getLogger(__name__)

# BERT sub-module → DistilBERT sub-module, inside ``encoder.layer.{i}`` / ``transformer.layer.{i}``.
_LAYER_RENAMES = {
    "attention.self.query": "attention.q_lin",
    "attention.self.key": "attention.k_lin",
    "attention.self.value": "attention.v_lin",
    "attention.output.dense": "attention.out_lin",
    "attention.output.LayerNorm": "sa_layer_norm",
    "intermediate.dense": "ffn.lin1",
    "output.dense": "ffn.lin2",
    "output.LayerNorm": "output_layer_norm",
}
_DISTILBERT_LAYER_NORM_EPS = 1e-12  # hard-coded in transformers' DistilBERT


def bert_config_to_distilbert(bert: dict) -> dict:
    """Map a BERT ``config.json`` dict to the equivalent DistilBERT config dict."""
    if bert.get("position_embedding_type", "absolute") != "absolute":
        raise ModelFormatError(
            f"position_embedding_type={bert['position_embedding_type']!r} has no DistilBERT "
            "equivalent; only absolute position embeddings convert exactly"
        )
    eps = bert.get("layer_norm_eps", 1e-12)
    if abs(eps - _DISTILBERT_LAYER_NORM_EPS) > 1e-15:
        logger.warning("layer_norm_eps=%g differs from DistilBERT's 1e-12; outputs drift slightly", eps)
    return {
        "model_type": "distilbert",
        "architectures": ["DistilBertForSequenceClassification"],
        "vocab_size": bert["vocab_size"],
        "max_position_embeddings": bert["max_position_embeddings"],
        "sinusoidal_pos_embds": False,
        "dim": bert["hidden_size"],
        "n_layers": bert["num_hidden_layers"],
        "n_heads": bert["num_attention_heads"],
        "hidden_dim": bert["intermediate_size"],
        "activation": bert.get("hidden_act", "gelu"),
        "dropout": bert.get("hidden_dropout_prob", 0.1),
        "attention_dropout": bert.get("attention_probs_dropout_prob", 0.1),
        "seq_classif_dropout": 0.2,
        "initializer_range": bert.get("initializer_range", 0.02),
        "pad_token_id": bert.get("pad_token_id", 0),
        "tie_word_embeddings": True,
    }


def bert_state_dict_to_distilbert(
    state: dict[str, torch.Tensor], *, use_pooler: bool = True
) -> dict[str, torch.Tensor]:
    """Rename and fold BERT weights into DistilBERT's, for ``DistilBertForSequenceClassification``."""
    # BertModel saves bare names, BertFor* prefixes them with "bert."
    state = {k.removeprefix("bert."): v for k, v in state.items()}
    if "embeddings.word_embeddings.weight" not in state:
        raise ModelFormatError("not a BERT checkpoint: embeddings.word_embeddings.weight is missing")
    out: dict[str, torch.Tensor] = {}
    emb = "embeddings."
    out["distilbert.embeddings.word_embeddings.weight"] = state[emb + "word_embeddings.weight"]
    position = state[emb + "position_embeddings.weight"]
    token_type = state.get(emb + "token_type_embeddings.weight")
    if token_type is not None:
        position = position + token_type[0]
    out["distilbert.embeddings.position_embeddings.weight"] = position
    for p in ("weight", "bias"):
        out[f"distilbert.embeddings.LayerNorm.{p}"] = state[f"{emb}LayerNorm.{p}"]

    for key, value in state.items():
        if not key.startswith("encoder.layer."):
            continue
        index, rest = key.removeprefix("encoder.layer.").split(".", 1)
        module, param = rest.rsplit(".", 1)
        if module not in _LAYER_RENAMES:
            raise ModelFormatError(f"unexpected BERT weight {key!r}; cannot map it to DistilBERT")
        out[f"distilbert.transformer.layer.{index}.{_LAYER_RENAMES[module]}.{param}"] = value

    if use_pooler and "pooler.dense.weight" in state:
        out["pre_classifier.weight"] = state["pooler.dense.weight"]
        out["pre_classifier.bias"] = state["pooler.dense.bias"]
    # A BertForSequenceClassification head has the classifier's exact shape.
    for p in ("weight", "bias"):
        if f"classifier.{p}" in state:
            out[f"classifier.{p}"] = state[f"classifier.{p}"]
    return {k: v.contiguous() for k, v in out.items()}


def convert_bert_to_distilbert(
    src: str | Path,
    dst: str | Path,
    *,
    id2label: dict[int, str] | None = None,
    use_pooler: bool = True,
    seed: int = 42,
) -> Path:
    """Write ``src`` (a BERT-architecture model directory) to ``dst`` as a DistilBERT classifier.

    Weights missing from the BERT checkpoint (the classification head, and ``pre_classifier`` when
    there is no pooler) are initialised as transformers would, with ``seed`` for reproducibility.
    """
    from transformers import DistilBertConfig, DistilBertForSequenceClassification, DistilBertTokenizer

    src, dst = Path(src), Path(dst)
    config_path, weights_path = src / "config.json", src / "model.safetensors"
    for path in (config_path, weights_path):
        if not path.is_file():
            raise ModelFormatError(f"{src} has no {path.name}; convert needs a safetensors BERT checkpoint")
    bert_config = read_model_config(src)
    if bert_config.get("model_type") != "bert":
        raise ModelFormatError(f"{src} is a {bert_config.get('model_type')!r} model, not 'bert'")

    labels = id2label or {0: "NEGATIVE", 1: "POSITIVE"}
    config = DistilBertConfig(
        **bert_config_to_distilbert(bert_config),
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )
    torch.manual_seed(seed)
    model = DistilBertForSequenceClassification(config)
    state = bert_state_dict_to_distilbert(load_file(weights_path), use_pooler=use_pooler)
    # The copied head only fits when the label count matches.
    if "classifier.weight" in state and state["classifier.weight"].shape[0] != len(labels):
        del state["classifier.weight"], state["classifier.bias"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise ModelFormatError(f"unmapped weights after conversion: {unexpected}")
    allowed_missing = {"pre_classifier.weight", "pre_classifier.bias", "classifier.weight", "classifier.bias"}
    if set(missing) - allowed_missing:
        raise ModelFormatError(f"weights missing after conversion: {sorted(set(missing) - allowed_missing)}")
    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dst)
    DistilBertTokenizer.from_pretrained(src).save_pretrained(dst)
    # transformers 5 writes only tokenizer.json; older releases' slow tokenizer needs the vocabulary.
    if (src / "vocab.txt").is_file():
        shutil.copyfile(src / "vocab.txt", dst / "vocab.txt")
    logger.info("converted %s -> %s (%s initialised fresh)", src, dst, ", ".join(missing) or "nothing")
    return dst
