from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from distilsent.core.engine import create_engine, packed
from distilsent.core.engine.packed import (
    PackedDistilBert,
    packable,
    packable_config,
    row_bucket,
    weight_names,
)


def _batch(lengths: list[int], vocab: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded random ids, ``[CLS]``-like id 2 first, with the given real lengths."""
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(5, vocab, (n,), generator=generator)
        ids[row, 0] = 2
        mask[row, :n] = 1
    return ids, mask


def _model(path: Path, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    return AutoModelForSequenceClassification.from_pretrained(path, dtype=dtype).eval()


def test_row_buckets_are_few_and_waste_at_most_an_eighth() -> None:
    sizes = [row_bucket(n) for n in range(1, 4097)]
    assert sizes[:16] == [16] * 16
    assert all(b >= n for n, b in enumerate(sizes, start=1))
    assert all(b - n <= max(15, n // 8) for n, b in enumerate(sizes, start=1))
    assert sizes == sorted(sizes)
    # 16..4096 rows in 65 shapes, so oneDNN compiles each once and its cache (1,024) keeps them.
    assert len(set(sizes)) <= 65


@pytest.mark.parametrize("prepack", [True, False])
def test_packed_forward_matches_transformers_in_fp32(tiny_model_dir: Path, prepack: bool) -> None:
    model = _model(tiny_model_dir)
    ids, mask = _batch([3, 17, 9, 1, 40, 2, 40], model.config.vocab_size)
    with torch.inference_mode():
        want = model(input_ids=ids, attention_mask=mask).logits
    try:
        forward = PackedDistilBert(model, prepack=prepack)
    except ValueError as e:
        # A torch build without oneDNN's packed fp32 products refuses them by name, and auto falls
        # back to the plain products, which must still match.
        assert prepack and "unavailable" in str(e)
        forward = PackedDistilBert(model)
        assert "unavailable" in forward.prepack_reason
        prepack = False
    assert forward.prepacked is prepack
    got = forward(ids, mask)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_multi_label_models_are_packed_too(tiny_model_dir: Path) -> None:
    # problem_type only picks the training loss; the logits are the same forward.
    model = _model(tiny_model_dir)
    model.config.problem_type = "multi_label_classification"
    assert packable(model)
    ids, mask = _batch([5, 12, 1], model.config.vocab_size)
    with torch.inference_mode():
        want = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(PackedDistilBert(model)(ids, mask), want, rtol=1e-5, atol=1e-5)


def test_one_sequence_and_a_full_batch_without_padding(tiny_model_dir: Path) -> None:
    model = _model(tiny_model_dir)
    forward = PackedDistilBert(model)
    for lengths in ([5], [6, 6, 6]):
        ids, mask = _batch(lengths, model.config.vocab_size, seed=len(lengths))
        with torch.inference_mode():
            want = model(input_ids=ids, attention_mask=mask).logits
        torch.testing.assert_close(forward(ids, mask), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prepack", [True, False])
def test_bf16_stays_close_to_fp32(tiny_model_dir: Path, prepack: bool) -> None:
    fp32, bf16 = _model(tiny_model_dir), _model(tiny_model_dir, torch.bfloat16)
    ids, mask = _batch([4, 12, 30, 7] * 8, fp32.config.vocab_size, seed=3)
    with torch.inference_mode():
        want = fp32(input_ids=ids, attention_mask=mask).logits
        theirs = bf16(input_ids=ids, attention_mask=mask).logits.float()
    if prepack and not packed._prepack_works(torch.bfloat16):
        # An AVX2-only CPU has no packed bf16 product: asking for one is an error, not a slow path.
        with pytest.raises(ValueError, match="unavailable on this CPU"):
            PackedDistilBert(bf16, prepack=True)
        return
    forward = PackedDistilBert(bf16, prepack=prepack)
    got = forward(ids, mask).float()
    # bf16 keeps 8 bits of mantissa: our error against fp32 is of the size of transformers' own.
    assert (got - want).abs().max() <= 2 * (theirs - want).abs().max() + 0.05


def test_fp32_products_are_timed_once_per_shape_so_a_checkpoint_keeps_its_logits(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fp32 = _model(tiny_model_dir)
    timings = iter([(0.001, 0.002), (0.002, 0.001)])  # a close call that the second timing reverses
    calls = []

    def timed(block, activation):
        calls.append(activation)
        return next(timings)

    monkeypatch.setattr(packed, "_prepack_works", lambda dtype: True)
    monkeypatch.setattr(packed, "_DECIDED", {})
    monkeypatch.setattr(packed, "_time_products", timed)
    first, second = PackedDistilBert(fp32), PackedDistilBert(fp32)
    assert len(calls) == 1
    assert first.prepacked and second.prepacked and first.prepack_reason == second.prepack_reason


def test_prepacking_is_decided_per_dtype(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fp32, bf16 = _model(tiny_model_dir), _model(tiny_model_dir, torch.bfloat16)
    assert PackedDistilBert(bf16).prepacked == packed._prepack_works(torch.bfloat16)
    # fp32 packs only where the packed products beat the plain ones here (seconds: packed, plain).
    monkeypatch.setattr(packed, "_prepack_works", lambda dtype: True)
    monkeypatch.setattr(packed, "_DECIDED", {})  # decided once per shape in a process: start afresh
    monkeypatch.setattr(packed, "_time_products", lambda block, activation: (0.001, 0.002))
    faster = PackedDistilBert(fp32)
    assert faster.prepacked and "packed 1.00 ms against plain 2.00 ms" in faster.prepack_reason
    monkeypatch.setattr(packed, "_DECIDED", {})
    monkeypatch.setattr(packed, "_time_products", lambda block, activation: (0.002, 0.001))
    slower = PackedDistilBert(fp32)
    assert not slower.prepacked and "packed 2.00 ms" in slower.prepack_reason
    monkeypatch.setattr(packed, "_prepack_works", lambda dtype: False)
    for model in (fp32, bf16):
        forward = PackedDistilBert(model)
        assert not forward.prepacked and "unavailable" in forward.prepack_reason
    # Products given by the caller are never replaced.
    plain = PackedDistilBert(
        fp32, make_linear=lambda name, w, b: lambda x: torch.nn.functional.linear(x, w, b)
    )
    assert not plain.prepacked


def test_from_weights_is_the_module_forward_and_refuses_what_it_cannot_run(tiny_model_dir: Path) -> None:
    model = _model(tiny_model_dir)
    config, weights = model.config.to_dict(), model.state_dict()
    assert packable_config(config)
    assert set(weight_names(model.config.n_layers)) == {name for name, _ in model.named_parameters()}
    ids, mask = _batch([5, 12, 1, 30], model.config.vocab_size, seed=3)
    # Plain products in both: with prepack=None each would time packed against plain, and a close
    # call can go either way between two builds.
    want = PackedDistilBert(model, prepack=False)(ids, mask)
    torch.testing.assert_close(
        PackedDistilBert.from_weights(config, weights, prepack=False)(ids, mask), want, rtol=0, atol=0
    )
    without = {k: v for k, v in weights.items() if k != "classifier.bias"}
    with pytest.raises(ValueError, match=r"lacks 1 of the classifier's tensors, such as classifier\.bias"):
        PackedDistilBert.from_weights(config, without)
    for other in (
        {"sinusoidal_pos_embds": True},
        {"architectures": ["DistilBertModel"]},
        {"model_type": "bert"},
    ):
        assert not packable_config({**config, **other})
        with pytest.raises(ValueError, match="DistilBertForSequenceClassification models only"):
            PackedDistilBert.from_weights({**config, **other}, weights)


def test_timing_probe_measures_both_products(tiny_model_dir: Path) -> None:
    if not packed._prepack_works(torch.float32):
        pytest.skip("this torch has no oneDNN packed fp32 product")
    block = packed._block(_model(tiny_model_dir).state_dict(), 0)
    assert all(0 < t < 1 for t in packed._time_products(block, "gelu"))


def test_make_linear_builds_every_product_by_name(tiny_model_dir: Path) -> None:
    model = _model(tiny_model_dir)
    ids, mask = _batch([3, 11, 6], model.config.vocab_size, seed=5)
    names: list[str] = []

    def plain(name: str, weight: torch.Tensor, bias: torch.Tensor | None):
        names.append(name)
        return lambda x: torch.nn.functional.linear(x, weight, bias)

    want = PackedDistilBert(model)(ids, mask)
    torch.testing.assert_close(PackedDistilBert(model, make_linear=plain)(ids, mask), want)
    layers = model.config.n_layers
    per_layer = [f"{i}.{p}" for i in range(layers) for p in ("qkv", "out", "lin1", "lin2")]
    assert names == [*per_layer, "pre_classifier", "classifier"]

    # The products it builds are the ones that run: zeroing the classifier zeroes the logits.
    def zero_head(name: str, weight: torch.Tensor, bias: torch.Tensor | None):
        keep = plain(name, weight, bias)
        return (lambda x: keep(x) * 0) if name == "classifier" else keep

    assert not PackedDistilBert(model, make_linear=zero_head)(ids, mask).any()


def test_only_distilbert_classifiers_are_packed(tiny_model_dir: Path) -> None:
    assert packable(_model(tiny_model_dir))
    with pytest.raises(ValueError, match="DistilBertForSequenceClassification"):
        PackedDistilBert(torch.nn.Linear(2, 2))


def test_engine_uses_it_on_cpu_and_falls_back_for_left_padding(tiny_model_dir: Path) -> None:
    engine = create_engine("torch", tiny_model_dir, device="cpu", dtype="fp32")
    assert engine.forward.startswith("packed")
    ids, mask = _batch([3, 8], engine.model.config.vocab_size)
    left_ids, left_mask = ids.flip(1).numpy(), mask.flip(1).numpy()
    with torch.inference_mode():
        want = engine.model(input_ids=torch.from_numpy(left_ids), attention_mask=torch.from_numpy(left_mask))
    # A left-padded batch is not the packed forward's layout: transformers runs it, unchanged.
    np.testing.assert_allclose(engine(left_ids, left_mask), want.logits.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        engine(ids.numpy(), mask.numpy()),
        _model(tiny_model_dir)(input_ids=ids, attention_mask=mask).logits.detach().numpy(),
        rtol=1e-5,
        atol=1e-5,
    )
