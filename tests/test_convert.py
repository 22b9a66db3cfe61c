from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import BertModel, BertTokenizer, DistilBertModel

from distilsent import ModelFormatError, convert_bert_to_distilbert
from distilsent.core.models import minilm_dir
from helpers import assert_snippet_agrees, tiny_bert_config


def _hidden_states(model, tokenizer, texts):
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state


def _compare(src: Path, dst: Path) -> float:
    tokenizer = BertTokenizer.from_pretrained(src)
    texts = ["Hello, my dog is cute", "a long, winding and ultimately pointless film about nothing at all"]
    bert = BertModel.from_pretrained(src).eval()
    distil = DistilBertModel.from_pretrained(dst).eval()
    return (
        (_hidden_states(bert, tokenizer, texts) - _hidden_states(distil, tokenizer, texts)).abs().max().item()
    )


def test_tiny_random_bert_converts_exactly(tmp_path: Path, tiny_model_dir: Path) -> None:
    src = tmp_path / "bert"
    vocab = (tiny_model_dir / "vocab.txt").read_text().split()
    config = tiny_bert_config(len(vocab))
    torch.manual_seed(0)
    model = BertModel(config)
    with torch.no_grad():  # a non-zero token-type row 0 proves it is folded in
        model.embeddings.token_type_embeddings.weight.normal_()
    model.save_pretrained(src)
    BertTokenizer.from_pretrained(tiny_model_dir).save_pretrained(src)
    (src / "vocab.txt").write_text("\n".join(vocab) + "\n")
    dst = convert_bert_to_distilbert(src, tmp_path / "distil")
    assert _compare(src, dst) < 1e-5
    saved = json.loads((dst / "config.json").read_text())
    assert saved["model_type"] == "distilbert" and saved["id2label"] == {"0": "NEGATIVE", "1": "POSITIVE"}
    assert_snippet_agrees(dst)


@pytest.mark.slow
def test_real_minilm_converts_exactly(tmp_path: Path) -> None:
    try:
        src = minilm_dir()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    dst = convert_bert_to_distilbert(src, tmp_path / "minilm")
    assert _compare(src, dst) < 1e-4


def test_refuses_non_bert(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError, match="not 'bert'"):
        convert_bert_to_distilbert(tiny_model_dir, tmp_path / "out")


def test_refuses_missing_weights(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ModelFormatError, match=r"model\.safetensors"):
        convert_bert_to_distilbert(tmp_path, tmp_path / "out")
