from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import distilsent
from distilsent.core import models
from distilsent.core.models import resolve_model


def test_local_directory_resolves(tiny_model_dir: Path) -> None:
    assert resolve_model(tiny_model_dir) == tiny_model_dir.resolve()
    assert resolve_model(str(tiny_model_dir)) == tiny_model_dir.resolve()


def test_missing_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(distilsent.ModelNotFoundError, match="does not exist"):
        resolve_model(tmp_path / "nope")
    with pytest.raises(distilsent.ModelNotFoundError, match="does not exist"):
        resolve_model("./nope/model")


def test_empty_name_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        resolve_model("  ")


def test_directory_without_config(tiny_model: Path) -> None:
    (tiny_model / "config.json").unlink()
    with pytest.raises(distilsent.ModelFormatError, match=r"config\.json is missing"):
        resolve_model(tiny_model)


def test_directory_with_broken_config(tiny_model: Path) -> None:
    (tiny_model / "config.json").write_text("{not json")
    with pytest.raises(distilsent.ModelFormatError, match="not valid JSON"):
        resolve_model(tiny_model)


def test_config_that_is_not_an_object_or_has_unreadable_labels(tiny_model: Path) -> None:
    import json

    config = models.read_model_config(tiny_model)
    (tiny_model / "config.json").write_text("[1, 2]")
    with pytest.raises(distilsent.ModelFormatError, match="holds a JSON list, not an object"):
        resolve_model(tiny_model)
    assert models.id2label({"id2label": {"1": "POSITIVE", "0": "NEGATIVE"}}) == {0: "NEGATIVE", 1: "POSITIVE"}
    assert models.id2label({}) == {}
    (tiny_model / "config.json").write_text(json.dumps({**config, "id2label": {"first": "A"}}))
    with pytest.raises(distilsent.ModelFormatError, match="id2label is not a map of class indices"):
        distilsent.load(tiny_model)


def test_directory_without_weights(tiny_model: Path) -> None:
    (tiny_model / "model.safetensors").unlink()
    with pytest.raises(distilsent.ModelFormatError, match="no weights"):
        resolve_model(tiny_model)


def test_directory_without_tokenizer(tiny_model: Path) -> None:
    (tiny_model / "tokenizer.json").unlink()
    (tiny_model / "vocab.txt").unlink()
    with pytest.raises(distilsent.ModelFormatError, match="no tokenizer"):
        resolve_model(tiny_model)


def _pickle_only(model_dir: Path) -> Path:
    weights = model_dir / "model.safetensors"
    torch.save(load_file(weights), model_dir / "pytorch_model.bin")
    weights.unlink()
    return model_dir


def test_pickle_checkpoint_refused_unless_allowed(tiny_model: Path, tiny_classifier) -> None:
    _pickle_only(tiny_model)
    with pytest.raises(distilsent.UnsafeCheckpointError, match="allow_pickle=True"):
        distilsent.load(tiny_model)
    clf = distilsent.load(tiny_model, allow_pickle=True, device="cpu")
    text = "a good film"
    assert clf.predict(text).scores == pytest.approx(tiny_classifier.predict(text).scores, abs=1e-6)


def test_pickle_beside_an_onnx_file_still_needs_the_opt_in(tiny_model: Path) -> None:
    # The torch backend would read pytorch_model.bin here, so model.onnx must not waive the check.
    _pickle_only(tiny_model)
    (tiny_model / "model.onnx").write_bytes(b"placeholder")
    with pytest.raises(distilsent.UnsafeCheckpointError, match="allow_pickle=True"):
        resolve_model(tiny_model)
    assert resolve_model(tiny_model, allow_pickle=True) == tiny_model.resolve()


def test_a_safetensors_index_naming_a_pickle_shard_needs_the_opt_in(tiny_model: Path) -> None:
    import json

    index = {"metadata": {}, "weight_map": {"classifier.bias": "model-00002-of-00002.bin"}}
    (tiny_model / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(distilsent.UnsafeCheckpointError, match=r"model-00002-of-00002\.bin.*allow_pickle"):
        resolve_model(tiny_model)
    assert resolve_model(tiny_model, allow_pickle=True) == tiny_model.resolve()
    (tiny_model / "model.safetensors.index.json").write_text("[1, 2]")
    with pytest.raises(distilsent.ModelFormatError, match="not a valid weights index"):
        resolve_model(tiny_model)


def test_unreadable_weights_or_index_are_named(tiny_model: Path) -> None:
    import json

    weights = tiny_model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a download cut short
    with pytest.raises(distilsent.ModelFormatError, match="cannot read the safetensors weights"):
        distilsent.load(tiny_model, device="cpu")
    (tiny_model / "model.safetensors.index.json").write_text(json.dumps({"weight_map": ["not", "a", "map"]}))
    with pytest.raises(distilsent.ModelFormatError, match="is not a valid weights index"):
        resolve_model(tiny_model)


def test_default_model_resolves_or_says_how_to_choose(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(models, "DEFAULT_MODEL_DIR", tmp_path / "absent")
    with pytest.raises(distilsent.ModelNotFoundError, match="--model"):
        resolve_model("default")


def _fake_hub_cache(cache: Path, repo_id: str, model_dir: Path) -> Path:
    """The directory layout huggingface_hub writes: blobs are irrelevant, snapshots + refs are read."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    shutil.copytree(model_dir, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture
def offline_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_hub_id_resolves_from_cache_offline(offline_cache: Path, tiny_model_dir: Path) -> None:
    snapshot = _fake_hub_cache(offline_cache, "someorg/tiny-sst2", tiny_model_dir)
    assert resolve_model("someorg/tiny-sst2") == snapshot.resolve()
    clf = distilsent.load("someorg/tiny-sst2", device="cpu")
    assert clf.predict("good film").label in {"NEGATIVE", "POSITIVE"}


def test_uncached_hub_id_offline_gives_actionable_error(offline_cache: Path) -> None:
    with pytest.raises(distilsent.ModelNotFoundError) as info:
        resolve_model("distilbert-base-uncased-finetuned-sst-2-english")
    message = str(info.value)
    assert "distilbert-base-uncased-finetuned-sst-2-english" in message
    assert "not in the Hugging Face cache" in message
    assert "--model" in message


def test_invalid_hub_id(offline_cache: Path) -> None:
    with pytest.raises(distilsent.ModelNotFoundError):
        resolve_model("bad id with spaces")


def test_update_shard_loads_as_the_trained_weights(tiny_model: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file
    from transformers import DistilBertForSequenceClassification

    from distilsent.core.engine.onnx_export import _weights_key
    from helpers import assert_snippet_agrees

    trained = Path(shutil.copytree(tiny_model, tmp_path / "trained"))
    weights = load_file(trained / "model.safetensors")
    weights["classifier.bias"] = torch.tensor([3.0, -3.0])  # every text NEGATIVE: unmistakable
    weights["distilbert.transformer.layer.0.sa_layer_norm.weight"] *= 1.5
    save_file(weights, trained / "model.safetensors", metadata={"format": "pt"})

    changed = models.write_update(trained, tiny_model / "model.safetensors", tiny_model)
    assert changed == ["classifier.bias", "distilbert.transformer.layer.0.sa_layer_norm.weight"]
    assert not (tiny_model / "model.safetensors").exists()
    assert set(load_file(tiny_model / models.UPDATE_SHARD)) == set(changed)
    loaded = DistilBertForSequenceClassification.from_pretrained(tiny_model).state_dict()
    for name, tensor in weights.items():
        assert torch.equal(loaded[name], tensor), name
    assert {p.label for p in distilsent.load(tiny_model).predict(["good", "great fun"])} == {"NEGATIVE"}
    assert_snippet_agrees(tiny_model)
    # The export cache key follows the shards, not only the index file.
    before = _weights_key(tiny_model, int8=False)
    weights["classifier.bias"] = torch.tensor([-3.0, 3.0])
    save_file(weights, trained / "model.safetensors", metadata={"format": "pt"})
    models.write_update(trained, tiny_model / models.BASE_SHARD, tiny_model)
    assert _weights_key(tiny_model, int8=False) != before


def test_append_update_adds_a_shard_and_keeps_the_old_ones(tiny_model: Path, tmp_path: Path) -> None:
    import hashlib

    from safetensors.torch import save_file
    from transformers import DistilBertForSequenceClassification

    def digests() -> set[str]:
        return {hashlib.sha256(p.read_bytes()).hexdigest() for p in tiny_model.glob("model-*.safetensors")}

    trained = Path(shutil.copytree(tiny_model, tmp_path / "trained"))
    weights = load_file(trained / "model.safetensors")
    weights["classifier.bias"] = torch.tensor([3.0, -3.0])
    save_file(weights, trained / "model.safetensors", metadata={"format": "pt"})
    models.write_update(trained, tiny_model / "model.safetensors", tiny_model)
    before = digests()
    weights["classifier.bias"] = torch.tensor([-30.0, 30.0])  # every text POSITIVE now
    weights["distilbert.transformer.layer.1.output_layer_norm.bias"] += 0.25
    save_file(weights, trained / "model.safetensors", metadata={"format": "pt"})
    changed = models.append_update(trained, tiny_model)
    assert changed == ["classifier.bias", "distilbert.transformer.layer.1.output_layer_norm.bias"]
    names = sorted(p.name for p in tiny_model.glob("model-*.safetensors"))
    assert names == [f"model-0000{k}-of-00003.safetensors" for k in (1, 2, 3)]
    assert before < digests()  # the earlier shards are the same bytes, so the same git blobs
    assert set(load_file(tiny_model / names[-1])) == set(changed)
    loaded = DistilBertForSequenceClassification.from_pretrained(tiny_model).state_dict()
    read = models.load_weights(tiny_model)  # each tensor from its mapped shard, not a stale copy
    assert read.keys() == weights.keys()
    for name, tensor in weights.items():
        assert torch.equal(loaded[name], tensor), name
        assert torch.equal(read[name], tensor), name
    assert {p.label for p in distilsent.load(tiny_model).predict(["good", "great fun"])} == {"POSITIVE"}
    with pytest.raises(ValueError, match="nothing to update"):
        models.append_update(trained, tiny_model)


def test_update_refuses_a_different_or_wholly_changed_model(tiny_model: Path, tmp_path: Path) -> None:
    from helpers import build_tiny_model

    other = build_tiny_model(tmp_path / "other", seed=1)
    with pytest.raises(ValueError, match="save the model as a whole"):
        models.write_update(other, tiny_model / "model.safetensors", tmp_path / "out")
    weights = load_file(tiny_model / "model.safetensors")
    from safetensors.torch import save_file

    save_file({k: v for k, v in weights.items() if k != "classifier.bias"}, other / "model.safetensors")
    with pytest.raises(distilsent.ModelFormatError, match="not an update"):
        models.write_update(other, tiny_model / "model.safetensors", tmp_path / "out")


class _Planted:
    """Unpickling this runs ``touch`` on a marker file: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("layout", ["pickle only", "index naming a pickle shard", "pickle beside onnx"])
def test_a_planted_pickle_is_never_run_without_the_opt_in(
    tiny_model: Path, tmp_path: Path, layout: str
) -> None:
    import json
    import pickle

    from distilsent.cli import main

    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Planted(marker))
    if layout == "index naming a pickle shard":
        (tiny_model / "model-00002-of-00002.bin").write_bytes(payload)
        index = {"metadata": {}, "weight_map": {"classifier.bias": "model-00002-of-00002.bin"}}
        (tiny_model / "model.safetensors.index.json").write_text(json.dumps(index))
        (tiny_model / "model.safetensors").unlink()
    else:
        (tiny_model / "model.safetensors").unlink()
        (tiny_model / "pytorch_model.bin").write_bytes(payload)
        if layout == "pickle beside onnx":
            (tiny_model / "model.onnx").write_bytes(b"placeholder")
    for backend in ("auto", "torch", "onnx"):
        with pytest.raises(distilsent.UnsafeCheckpointError):
            distilsent.load(tiny_model, backend=backend, device="cpu")
    for argv in (
        ["info", "--model", str(tiny_model)],
        ["classify", "--model", str(tiny_model), "good"],
        ["export", str(tiny_model), "--output", str(tmp_path / "onnx")],
    ):
        assert main(argv) == 2
    assert not marker.exists()
