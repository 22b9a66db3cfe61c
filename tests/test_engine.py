from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import DistilBertForSequenceClassification

from distilsent.core.engine import create_engine, partition, run_batches
from distilsent.core.tokenization import TextTokenizer, TokenBatch


class FakeEngine:
    """Logit = sequence length; refuses batches above ``limit`` the way a full GPU would."""

    backend = "fake"
    device = "cpu"

    def __init__(self, limit: int = 10_000, token_limit: int = 1_000_000) -> None:
        self.limit = limit
        self.token_limit = token_limit
        self.calls: list[int] = []
        self.shapes: list[tuple[int, int]] = []

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        if len(input_ids) > self.limit or input_ids.size > self.token_limit:
            raise MemoryError("fake OOM")
        self.calls.append(len(input_ids))
        self.shapes.append(input_ids.shape)
        return np.stack([attention_mask.sum(1), -attention_mask.sum(1)], axis=1).astype(np.float32)

    def num_parameters(self) -> int:
        return 0


class QueueingEngine(FakeEngine):
    """A GPU-like engine: ``launch`` queues a batch, the returned function waits for it."""

    def __init__(self, limit: int = 10_000, token_limit: int = 1_000_000) -> None:
        super().__init__(limit, token_limit)
        self.events: list[str] = []

    def launch(self, input_ids: np.ndarray, attention_mask: np.ndarray):
        logits = self(input_ids, attention_mask)
        batch = len(self.calls)
        self.events.append(f"launch {batch}")

        def wait() -> np.ndarray:
            self.events.append(f"wait {batch}")
            return logits

        return wait


def _tokens(lengths) -> TokenBatch:
    return TokenBatch.from_lists([[7] * int(n) for n in lengths])


def test_results_come_back_in_input_order() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 50, size=101)
    logits, size = run_batches(FakeEngine(), _tokens(lengths), 0, batch_size=8)
    assert logits[:, 0].tolist() == lengths.tolist()
    assert size == 8


def test_batches_are_length_sorted_so_padding_is_small() -> None:
    engine = FakeEngine()
    run_batches(engine, _tokens([50, 2, 49, 3, 48, 4]), 0, batch_size=2)
    assert [width for _, width in engine.shapes] == [3, 48, 50]


def test_token_budget_keeps_padded_batches_under_the_cap() -> None:
    engine = FakeEngine()
    lengths = [5] * 20 + [100] * 6
    logits, _ = run_batches(engine, _tokens(lengths), 0, batch_size=16, max_tokens=256)
    assert all(rows * width <= 256 for rows, width in engine.shapes)
    assert (16, 5) in engine.shapes  # short texts still fill a batch
    assert logits[:, 0].tolist() == lengths


def test_out_of_memory_halves_the_batch_and_loses_nothing() -> None:
    engine = FakeEngine(limit=5)
    lengths = [i % 7 + 1 for i in range(40)]
    logits, size = run_batches(engine, _tokens(lengths), 0, batch_size=32)
    assert size == 4
    assert max(engine.calls) <= 5 and sum(engine.calls) == 40
    assert logits[:, 0].tolist() == lengths


def test_out_of_memory_at_batch_one_is_raised() -> None:
    with pytest.raises(MemoryError):
        run_batches(FakeEngine(limit=0), _tokens([2]), 0, batch_size=4)


def test_engines_that_queue_get_the_next_batch_before_the_last_is_read() -> None:
    engine = QueueingEngine()
    lengths = [3] * 10
    logits, _ = run_batches(engine, _tokens(lengths), 0, batch_size=4)
    assert engine.events == ["launch 1", "launch 2", "wait 1", "launch 3", "wait 2", "wait 3"]
    assert logits[:, 0].tolist() == lengths


def test_out_of_memory_while_a_batch_is_queued_loses_nothing() -> None:
    engine = QueueingEngine(token_limit=30)
    lengths = [7] * 8 + [1] * 8
    logits, size = run_batches(engine, _tokens(lengths), 0, batch_size=8)
    assert engine.shapes == [(8, 1), (4, 7), (4, 7)]  # the first (8, 7) did not fit
    assert engine.events == ["launch 1", "launch 2", "wait 1", "launch 3", "wait 2", "wait 3"]
    assert size == 4 and logits[:, 0].tolist() == lengths


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


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_cpu_engine_runs_the_checkpoint_without_building_the_transformers_model(
    ref_model_dir: Path, dtype: str
) -> None:
    from transformers import AutoModelForSequenceClassification

    from distilsent.core.engine.packed import PackedDistilBert

    engine = create_engine("torch", ref_model_dir, device="cpu", dtype=dtype)
    assert engine._model is None and engine.forward.startswith("packed")
    tok = TextTokenizer(ref_model_dir)
    texts = ["a gripping, funny film", "I wanted my two hours back.", "not bad at all", "meh"]
    ids, mask = tok.pad(tok.encode(texts))
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    # The fp16 checkpoint cast as transformers casts it: the same forward gives the same bits.
    model = AutoModelForSequenceClassification.from_pretrained(ref_model_dir, dtype=torch_dtype).eval()
    # The same products too: in fp32 each forward times packed against plain, and a close call can
    # go either way between two loads.
    reference = PackedDistilBert(model, prepack=engine._packed.prepacked)
    want = reference(torch.from_numpy(ids), torch.from_numpy(mask)).float().numpy()
    np.testing.assert_array_equal(engine(ids, mask), want)
    assert engine.num_parameters() == sum(p.numel() for p in model.parameters())
    assert engine._model is None
    # A batch that is not right-padded needs the transformers model: built then, once.
    left = np.ascontiguousarray(mask[:, ::-1])
    left_ids = np.where(left == 1, np.ascontiguousarray(ids[:, ::-1]), 0)
    for row, n in enumerate(mask.sum(1)):
        left_ids[row, -n:] = ids[row, :n]
    with torch.inference_mode():
        expected = model(input_ids=torch.from_numpy(left_ids), attention_mask=torch.from_numpy(left)).logits
    np.testing.assert_allclose(engine(left_ids, left), expected.float().numpy(), atol=1e-4)
    assert engine.model is engine.model and engine.model.dtype == torch_dtype


def test_checkpoints_the_packed_forward_cannot_read_load_through_transformers(
    tiny_model: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file, save_file

    from helpers import build_tiny_bert

    weights = load_file(tiny_model / "model.safetensors")
    # A tensor transformers ignores (older checkpoints saved position_ids) changes nothing.
    save_file(
        {**weights, "distilbert.embeddings.position_ids": torch.arange(512)[None]},
        tiny_model / "model.safetensors",
    )
    engine = create_engine("torch", tiny_model, device="cpu", dtype="fp32")
    assert engine._model is None
    # A BERT-layout classifier, and a DistilBERT checkpoint under legacy LayerNorm names, which
    # transformers renames on load: both go through transformers, and still classify.
    bert = create_engine("torch", build_tiny_bert(tmp_path / "bert"), device="cpu")
    assert bert._model is not None and bert.forward == "transformers"
    # The legacy names carry a LayerNorm scale the random model's ones do not: read, it shows.
    weights["distilbert.embeddings.LayerNorm.weight"] = (
        weights["distilbert.embeddings.LayerNorm.weight"] * 1.5
    )
    save_file(weights, tiny_model / "model.safetensors")
    scaled = create_engine("torch", tiny_model, device="cpu", dtype="fp32")
    legacy = {k.replace("LayerNorm.weight", "LayerNorm.gamma"): v for k, v in weights.items()}
    save_file(legacy, tiny_model / "model.safetensors")
    renamed = create_engine("torch", tiny_model, device="cpu", dtype="fp32")
    assert scaled._model is None
    assert renamed._model is not None and renamed.forward.startswith("packed")
    tok = TextTokenizer(tiny_model)
    ids, mask = tok.pad(tok.encode(["good film", "a terrible, boring movie"]))
    np.testing.assert_allclose(renamed(ids, mask), scaled(ids, mask), atol=1e-5)
    assert not np.allclose(scaled(ids, mask), engine(ids, mask), atol=1e-3)


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


def _least_cost(lengths: np.ndarray, batch_size: int, overhead: int = 200) -> float:
    """The exact optimum by the textbook O(n · batch_size) dynamic programme."""
    cost = [0.0] + [float("inf")] * len(lengths)
    for j in range(1, len(lengths) + 1):
        for i in range(max(0, j - batch_size), j):
            cost[j] = min(cost[j], cost[i] + (j - i) * lengths[j - 1] + overhead)
    return cost[-1]


def test_partition_with_gpu_sized_batches_stays_near_the_optimum() -> None:
    rng = np.random.default_rng(1)
    lengths = np.sort(rng.integers(5, 60, size=600))
    sizes = partition(lengths, batch_size=256)
    assert sum(sizes) == 600 and max(sizes) <= 256
    ends = np.cumsum(sizes)
    cost = sum(n * lengths[end - 1] + 200 for n, end in zip(sizes, ends))
    assert cost <= 1.02 * _least_cost(lengths, 256)
    capped = partition(lengths, batch_size=256, max_tokens=1000)
    ends = np.cumsum(capped)
    assert sum(capped) == 600 and all(n * lengths[end - 1] <= 1000 for n, end in zip(capped, ends))


def test_torch_engine_uses_sdpa_attention_and_launch_matches_call(tiny_model_dir: Path) -> None:
    engine = create_engine("torch", tiny_model_dir, device="cpu")
    assert engine.model.config._attn_implementation == "sdpa"
    ids = np.array([[2, 7, 8, 3], [2, 9, 3, 0]])
    mask = (ids != 0).astype(np.int64)
    got = engine.launch(ids, mask)()
    # Against the model's own forward pass, each row alone and unpadded: the engine's batching and
    # padding must not change a row's logits beyond float32 noise.
    with torch.inference_mode():
        alone = [
            engine.model(input_ids=torch.tensor(row[m == 1])[None]).logits[0].numpy()
            for row, m in zip(ids, mask)
        ]
    np.testing.assert_allclose(got, np.stack(alone), atol=1e-5)
    assert got.dtype == np.float32 and not np.array_equal(got[0], got[1])


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ("", "fp32"),
        ("sse4_2 avx2 fma", "fp32"),
        ("avx2 avx512f avx512_vnni", "fp32"),  # VNNI is int8 only
        ("avx2 avx512f avx512_bf16", "bf16"),  # e.g. AMD EPYC (Zen 4)
        ("avx2 avx512_vnni amx_tile amx_int8 amx_bf16", "bf16"),  # Intel Xeon with AMX
    ],
)
def test_auto_dtype_follows_the_cpu_flags(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, flags: str, expected: str
) -> None:
    from distilsent.core.engine import auto_cpu_dtype, cpu_flags

    monkeypatch.setenv("DISTILSENT_CPU_FLAGS", flags)
    assert cpu_flags() == set(flags.split())
    chosen, reason = auto_cpu_dtype()
    assert chosen == expected
    if expected == "bf16":
        assert any(f in reason for f in ("amx_bf16", "avx512_bf16"))
    engine = create_engine("torch", tiny_model_dir, device="cpu")
    assert engine.dtype == {"fp32": "float32", "bf16": "bfloat16"}[expected]
    assert engine.dtype_reason == reason
    # Asked for by name, the flags do not matter.
    assert create_engine("torch", tiny_model_dir, device="cpu", dtype="fp32").dtype == "float32"


def test_info_says_which_dtype_ran_and_why(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import distilsent

    monkeypatch.setenv("DISTILSENT_CPU_FLAGS", "avx2 amx_bf16")
    info = distilsent.load(tiny_model_dir, device="cpu").info()
    assert info["dtype"] == "bfloat16" and "amx_bf16" in info["dtype_reason"]
    info = distilsent.load(tiny_model_dir, device="cpu", dtype="fp32").info()
    assert info["dtype"] == "float32" and info["dtype_reason"] == "asked for (fp32)"


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ("avx2 fma", "uint8"),  # AVX2 only: uint8 x int8 pair sums saturate in int16
        ("avx2 fma avx_vnni", "int8"),
        ("avx2 avx512f avx512_vnni", "int8"),
        ("avx2 avx512_vnni amx_int8 amx_bf16", "int8"),
        ("", "int8"),  # not x86 (no flags known)
    ],
)
def test_int8_weight_type_follows_the_cpu_flags(
    monkeypatch: pytest.MonkeyPatch, flags: str, expected: str
) -> None:
    from distilsent.core.engine import int8_weight_type

    monkeypatch.setenv("DISTILSENT_CPU_FLAGS", flags)
    chosen, reason = int8_weight_type()
    assert chosen == expected and reason
    assert int8_weight_type(set(flags.split())) == (chosen, reason)


def test_real_cpu_flags_are_read_without_the_override(monkeypatch: pytest.MonkeyPatch) -> None:
    from distilsent.core.engine import cpu_flags

    monkeypatch.delenv("DISTILSENT_CPU_FLAGS")
    flags = cpu_flags()
    if Path("/proc/cpuinfo").is_file() and "flags" in Path("/proc/cpuinfo").read_text():
        assert "fpu" in flags or "sse2" in flags  # every x86-64 CPU lists these
    else:
        assert flags == set()


def test_a_forked_child_classifies_after_the_parent_did(tiny_model_dir: Path) -> None:
    """torch's thread pool does not survive fork: without one thread in the child, its first
    parallel op never returns. Run with a time limit so a hang fails instead of stalling."""
    code = f"""
import os
import torch
import distilsent
clf = distilsent.load({str(tiny_model_dir)!r}, device="cpu", threads=2)
parent = clf.predict("good film").label
square = torch.randn(512, 512)
(square @ square).sum()  # a product big enough to run on both threads, as a real model's do
pid = os.fork()
if pid == 0:
    (square @ square).sum()
    os._exit(0 if clf.predict("good film").label == parent else 3)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "0"
