from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import DistilBertForSequenceClassification

from distilsent.engine import create_engine, partition, run_batches
from distilsent.tokenization import TextTokenizer


class FakeEngine:
    """Logit = sequence length; refuses batches above ``limit`` the way a full GPU would."""

    backend = "fake"
    device = "cpu"

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self.calls: list[int] = []

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        if len(input_ids) > self.limit:
            raise MemoryError("fake OOM")
        self.calls.append(len(input_ids))
        return np.stack([attention_mask.sum(1), -attention_mask.sum(1)], axis=1).astype(np.float32)

    def num_parameters(self) -> int:
        return 0


def _pad(batch):
    width = max(map(len, batch))
    ids = np.zeros((len(batch), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, row in enumerate(batch):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return ids, mask


def test_results_come_back_in_input_order() -> None:
    rng = np.random.default_rng(0)
    seqs = [[1] * int(n) for n in rng.integers(1, 50, size=101)]
    logits, size = run_batches(FakeEngine(), seqs, _pad, batch_size=8)
    assert logits[:, 0].tolist() == [len(s) for s in seqs]
    assert size == 8


def test_batches_are_length_sorted_so_padding_is_small() -> None:
    seqs = [[1] * n for n in (50, 2, 49, 3, 48, 4)]
    widths = []

    def pad(batch):
        widths.append(max(map(len, batch)))
        return _pad(batch)

    run_batches(FakeEngine(), seqs, pad, batch_size=2)
    assert widths == [3, 48, 50]


def test_token_budget_keeps_padded_batches_under_the_cap() -> None:
    engine = FakeEngine()
    seqs = [[1] * n for n in [5] * 20 + [100] * 6]
    shapes = []

    def pad(batch):
        ids, mask = _pad(batch)
        shapes.append(ids.shape)
        return ids, mask

    logits, _ = run_batches(engine, seqs, pad, batch_size=16, max_tokens=256)
    assert all(rows * width <= 256 for rows, width in shapes)
    assert (16, 5) in shapes  # short texts still fill a batch
    assert logits[:, 0].tolist() == [len(s) for s in seqs]


def test_out_of_memory_halves_the_batch_and_loses_nothing() -> None:
    engine = FakeEngine(limit=5)
    seqs = [[1] * (i % 7 + 1) for i in range(40)]
    logits, size = run_batches(engine, seqs, _pad, batch_size=32)
    assert size == 4
    assert max(engine.calls) <= 5 and sum(engine.calls) == 40
    assert logits[:, 0].tolist() == [len(s) for s in seqs]


def test_out_of_memory_at_batch_one_is_raised() -> None:
    with pytest.raises(MemoryError):
        run_batches(FakeEngine(limit=0), [[1, 2]], _pad, batch_size=4)


def test_torch_engine_matches_the_model(tiny_model_dir: Path) -> None:
    engine = create_engine("torch", tiny_model_dir, device="cpu")
    tok = TextTokenizer(tiny_model_dir)
    ids, mask = tok.pad(tok.encode(["good film", "a terrible, boring movie"]))
    model = DistilBertForSequenceClassification.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        expected = model(
            input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)
        ).logits.numpy()
    np.testing.assert_allclose(engine(ids, mask), expected, atol=1e-5)
    assert engine.num_parameters() == sum(p.numel() for p in model.parameters())


def test_unknown_backend(tiny_model_dir: Path) -> None:
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'"):
        create_engine("tensorrt", tiny_model_dir)


def test_unknown_device(tiny_model_dir: Path) -> None:
    with pytest.raises(ValueError, match="device"):
        create_engine("torch", tiny_model_dir, device="quantum")


def test_partition_pads_less_than_fixed_batches_and_keeps_the_caps() -> None:
    rng = np.random.default_rng(0)
    lengths = np.sort(rng.integers(5, 60, size=64))
    sizes = partition(lengths, batch_size=32)
    assert sum(sizes) == 64 and max(sizes) <= 32

    def cost(sizes: list[int]) -> float:
        ends = np.cumsum(sizes)
        return sum(n * lengths[end - 1] + 200 for n, end in zip(sizes, ends))

    assert cost(sizes) < cost([32, 32])
    capped = partition(lengths, batch_size=32, max_tokens=300)
    ends = np.cumsum(capped)
    assert all(n * lengths[end - 1] <= 300 or n == 1 for n, end in zip(capped, ends))
    # Equal lengths: as few calls as the batch size allows; blocks beyond 4,096 are cut too.
    assert sorted(partition(np.full(100, 10), batch_size=32)) == [4, 32, 32, 32]
    assert sum(partition(np.full(5000, 7), batch_size=64)) == 5000
