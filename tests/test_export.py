from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import distilsent
from distilsent.cli import main
from distilsent.core.engine import onnx_export
from distilsent.export import (
    BATCH_INDEPENDENCE_WORTH,
    BATCH_INDEPENDENT,
    ExportConfig,
    Int8Candidate,
    check_int8_drop,
    choose_int8,
)

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")

TEXTS = [
    "good film",
    "a terrible, boring movie with bad actors",
    "fun",
    "the plot of the story was awful " * 5,
]


@pytest.fixture(autouse=True)
def private_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("DISTILSENT_CACHE", str(cache))
    return cache


def test_onnx_logits_match_torch(tiny_model_dir: Path, tiny_classifier) -> None:
    clf = distilsent.load(tiny_model_dir, backend="onnx", device="cpu")
    assert clf.engine.backend == "onnx"
    np.testing.assert_allclose(clf.logits(TEXTS), tiny_classifier.logits(TEXTS), atol=1e-4)
    assert clf.engine.num_parameters() > 0


def test_int8_backend_runs(tiny_model_dir: Path, tiny_classifier) -> None:
    clf = distilsent.load(tiny_model_dir, backend="onnx-int8", device="cpu")
    assert clf.engine.path.name == "model_quantized.onnx"
    import onnx

    graph = onnx.load(str(clf.engine.path), load_external_data=False).graph
    ops = {node.op_type for node in graph.node}
    assert "MatMulNBits" in ops  # the blockwise int8 recipe, not an fp32 copy under the int8 name
    got, want = clf.logits(TEXTS), tiny_classifier.logits(TEXTS)
    # 8-bit weights move logits; the tiny model's wide random weights make it sensitive, so the bound
    # is on the average (a wrong graph misses it). Agreement on a real model:
    # test_reference_checkpoint_onnx_parity_and_int8_agreement.
    assert np.abs(got - want).mean() < 0.1 * np.abs(want).mean()
    assert not np.array_equal(got, want)


def test_export_is_cached_by_weights(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, private_cache: Path
) -> None:
    first = distilsent.load(tiny_model_dir, backend="onnx", device="cpu").engine.path
    assert private_cache in first.parents

    def no_export(*args, **kwargs):
        raise AssertionError("exported again instead of reusing the cache")

    monkeypatch.setattr(onnx_export, "export_onnx", no_export)
    assert distilsent.load(tiny_model_dir, backend="onnx", device="cpu").engine.path == first


def test_changed_weights_get_a_new_export(tiny_model: Path, private_cache: Path) -> None:
    from helpers import build_tiny_model

    first = distilsent.load(tiny_model, backend="onnx", device="cpu").engine.path
    build_tiny_model(tiny_model, seed=1)
    assert distilsent.load(tiny_model, backend="onnx", device="cpu").engine.path != first


def test_export_command_writes_an_onnx_directory(
    tiny_model_dir: Path, tmp_path: Path, tiny_classifier, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "onnx"
    assert main(["export", str(tiny_model_dir), "--output", "onnx", "--int8"]) == 0
    assert "model.onnx" in capsys.readouterr().out
    # ONNX Runtime's shape inference drops a copy of the model into the working directory if let.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onnx"]
    for name in ("model.onnx", "model_quantized.onnx", "config.json", "tokenizer.json"):
        assert (out / name).is_file(), name
    # The directory alone (no torch weights) loads with the onnx backend, picked automatically.
    clf = distilsent.load(out, device="cpu")
    assert clf.engine.backend == "onnx" and clf.engine.path == out / "model.onnx"
    np.testing.assert_allclose(clf.logits(TEXTS), tiny_classifier.logits(TEXTS), atol=1e-4)
    with pytest.raises(distilsent.ModelFormatError, match="backend='onnx'"):
        distilsent.load(out, backend="torch", device="cpu")


def test_corrupt_onnx_file(tiny_model: Path) -> None:
    (tiny_model / "model.onnx").write_bytes(b"this is not a protobuf")
    with pytest.raises(distilsent.ModelFormatError, match="not a loadable ONNX model"):
        distilsent.load(tiny_model, backend="onnx", device="cpu")


def test_missing_onnxruntime_names_the_extra(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(distilsent.MissingExtraError, match=r"distilsent\[onnx\]"):
        distilsent.load(tiny_model_dir, backend="onnx", device="cpu")


def test_int8_drop_guard() -> None:
    check_int8_drop(0.900, 0.897, max_drop=0.5, force=False)
    with pytest.raises(distilsent.DistilsentError, match=r"loses 1\.00 accuracy points"):
        check_int8_drop(0.900, 0.890, max_drop=0.5, force=False)
    check_int8_drop(0.900, 0.890, max_drop=0.5, force=True)


def test_export_config_validation() -> None:
    with pytest.raises(ValueError, match="add --int8"):
        ExportConfig(model="m", dev="dev.tsv")
    with pytest.raises(ValueError, match="max_drop"):
        ExportConfig(model="m", int8=True, max_drop=-1)
    with pytest.raises(ValueError, match="one of auto, blockwise, smoothed-dynamic, smoothed-static"):
        ExportConfig(model="m", int8=True, int8_recipe="static")
    for recipe in ("smoothed-dynamic", "smoothed-static"):
        with pytest.raises(ValueError, match=f"the {recipe} recipe .* add --calibration FILE"):
            ExportConfig(model="m", int8=True, int8_recipe=recipe)
    with pytest.raises(ValueError, match="--calibration is for the int8 model"):
        ExportConfig(model="m", calibration="texts.tsv")
    with pytest.raises(ValueError, match="min_agreement"):
        ExportConfig(model="m", int8=True, min_agreement=0)


def test_choose_int8_keeps_the_fastest_that_agrees_and_refuses_the_rest() -> None:
    def candidates() -> list[Int8Candidate]:
        return [Int8Candidate("blockwise", 99.7, 500.0), Int8Candidate("smoothed-dynamic", 99.6, 800.0)]

    assert choose_int8(candidates(), 99.5, force=False).recipe == "smoothed-dynamic"
    measured = candidates()
    assert choose_int8(measured, 99.65, force=False).recipe == "blockwise"  # faster, but agrees less
    assert [c.passed for c in measured] == [True, False]
    with pytest.raises(distilsent.DistilsentError, match=r"blockwise 99\.70 %, smoothed-dynamic 99\.60 %"):
        choose_int8(candidates(), 99.9, force=False)
    assert choose_int8(candidates(), 99.9, force=True).recipe == "blockwise"  # the closest


def test_choose_int8_prefers_a_batch_independent_recipe_unless_it_is_much_slower() -> None:
    def candidates(static_speed: float) -> list[Int8Candidate]:
        return [
            Int8Candidate("blockwise", 99.7, 500.0),
            Int8Candidate("smoothed-dynamic", 99.6, 800.0),
            Int8Candidate("smoothed-static", 99.6, static_speed),
        ]

    assert choose_int8(candidates(760.0), 99.5, force=False).recipe == "smoothed-static"
    assert choose_int8(candidates(700.0), 99.5, force=False).recipe == "smoothed-dynamic"
    refused = candidates(790.0)
    refused[2].agreement = 99.4
    assert choose_int8(refused, 99.5, force=False).recipe == "smoothed-dynamic"
    # Blockwise, within the margin of the fastest, is batch-independent too.
    close = [Int8Candidate("blockwise", 99.7, 750.0), Int8Candidate("smoothed-dynamic", 99.6, 800.0)]
    assert choose_int8(close, 99.5, force=False).recipe == "blockwise"


def test_smoothing_scales_follow_the_largest_real_token_input(tiny_model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir).eval()
    texts = [[2, 7, 9, 3], [2, 11, 5, 8, 13, 21, 3], [2, 3]]
    ranges = onnx_export.input_ranges(model, texts, products=("qkv", "out", "lin1", "lin2"))
    assert set(ranges) == {
        f"{i}.{p}" for i in range(model.config.n_layers) for p in ("qkv", "out", "lin1", "lin2")
    }
    # The first feed-forward input of layer 0, by hand over the real tokens of each text alone.
    seen = []
    hook = model.distilbert.transformer.layer[0].ffn.lin1.register_forward_pre_hook(
        lambda module, inputs: seen.append(inputs[0][0])
    )
    with torch.inference_mode():
        for ids in texts:
            model(input_ids=torch.tensor([ids]))
    hook.remove()
    rows = torch.cat(seen)
    low, high = ranges["0.lin1"]
    torch.testing.assert_close(low, rows.amin(0))
    torch.testing.assert_close(high, rows.amax(0))
    # SmoothQuant's scale on that largest |x|: max|x|^a / max|w|^(1-a).
    weight_max = model.distilbert.transformer.layer[0].ffn.lin1.weight.detach().abs().amax(0)
    want = rows.abs().amax(0).clamp(min=1e-5) ** 0.8 / weight_max.clamp(min=1e-5) ** 0.2
    scales = onnx_export.smoothing_scales(model, texts, alpha=0.8)
    torch.testing.assert_close(scales["0.lin1"], want.clamp(min=1e-5))
    assert set(scales) == {f"{i}.{p}" for i in range(model.config.n_layers) for p in ("qkv", "lin1")}
    with pytest.raises(distilsent.InvalidInputError, match="at least one calibration text"):
        onnx_export.smoothing_scales(model, [])


def test_smoothing_moves_scale_into_the_weights_without_changing_fp32_logits(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    import onnx
    import onnxruntime as ort

    from distilsent.core.tokenization import TextTokenizer

    tok = TextTokenizer(tiny_model_dir)
    plain = onnx_export.export_onnx(tiny_model_dir, tmp_path / "plain", fuse_attention=False)
    smoothed = onnx_export.export_smoothed(tiny_model_dir, tmp_path / "smoothed", tok.encode(TEXTS * 3))
    ids, mask = tok.pad(tok.encode(TEXTS))

    def run(path: Path) -> np.ndarray:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]

    np.testing.assert_allclose(run(smoothed), run(plain), atol=1e-4)

    def weights(path: Path) -> dict[str, np.ndarray]:
        graph = onnx.load(str(path)).graph
        return {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}

    # The projections' weights were rescaled (a no-op smoothing would leave them bit-equal).
    assert {w.tobytes() for w in weights(smoothed).values()} - {w.tobytes() for w in weights(plain).values()}
    with pytest.raises(ValueError, match="at least one calibration text"):
        onnx_export.export_smoothed(tiny_model_dir, tmp_path / "none", [])


def test_smoothed_int8_keeps_the_head_and_second_projections_in_fp32(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    import onnx

    from distilsent.core.tokenization import TextTokenizer

    tok = TextTokenizer(tiny_model_dir)
    path = onnx_export.write_smoothed_int8(tiny_model_dir, tmp_path / "q.onnx", tok.encode(TEXTS * 3))
    graph = onnx.load(str(path)).graph
    quantized = [n.name for n in graph.node if n.op_type == "MatMulInteger"]
    layers = distilsent.load(tiny_model_dir).torch_model().config.n_layers
    assert quantized and not [n for n in quantized if "classifier" in n or "/lin2/" in n]
    # Every earlier layer: q, k, v, out and lin1; the last layer: its keys and values only.
    assert len(quantized) == 5 * (layers - 1) + 2
    # Embedding tables stay fp32: no int8 Gather input to dequantize.
    assert not [n for n in graph.node if n.op_type == "DequantizeLinear"]
    # Asked to, the first layer stays fp32 as well: five products fewer, none of them in layer 0.
    ids = tok.encode(TEXTS * 3)
    path = onnx_export.write_smoothed_int8(tiny_model_dir, tmp_path / "f.onnx", ids, fp32_first_layers=1)
    first = [n.name for n in onnx.load(str(path)).graph.node if n.op_type == "MatMulInteger"]
    assert len(first) == len(quantized) - 5 and not [n for n in first if "/layer.0/" in n]
    with pytest.raises(ValueError, match="fp32_first_layers"):
        onnx_export.write_smoothed_int8(tiny_model_dir, tmp_path / "g.onnx", ids, fp32_first_layers=-1)
    # Asked to, the full-width second projections run as blockwise int8; the one-row last stays fp32.
    path = onnx_export.write_smoothed_int8(tiny_model_dir, tmp_path / "b.onnx", ids, second_ffn="blockwise")
    graph = onnx.load(str(path)).graph
    blockwise = [n.name for n in graph.node if n.op_type == "MatMulNBits"]
    assert len(blockwise) == layers - 1 and all("/lin2/" in n for n in blockwise)
    assert len([n for n in graph.node if n.op_type == "MatMulInteger"]) == len(quantized)
    fp32 = [n.name for n in graph.node if n.op_type == "MatMul" and "/lin2/" in n.name]
    assert len(fp32) == 1 and not fp32[0].startswith("/distilbert/")
    with pytest.raises(ValueError, match="second_ffn"):
        onnx_export.write_smoothed_int8(tiny_model_dir, tmp_path / "h.onnx", ids, second_ffn="int4")


def matmul_integer_weight_types(path: Path) -> set[int]:
    """The element types of the weights every integer product of the ONNX model at ``path`` multiplies."""
    import onnx

    graph = onnx.load(str(path)).graph
    types = {t.name: t.data_type for t in graph.initializer}
    products = ("MatMulInteger", "MatMulIntegerToFloat")
    return {types[n.input[1]] for n in graph.node if n.op_type in products}


@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize(("flags", "expected"), [("avx2 fma", "UINT8"), ("avx2 avx512_vnni", "INT8")])
def test_smoothed_int8_weights_follow_the_cpu(
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    flags: str,
    expected: str,
    static: bool,
) -> None:
    from onnx import TensorProto

    from distilsent.core.tokenization import TextTokenizer

    ids = TextTokenizer(tiny_model_dir).encode(TEXTS * 3)
    monkeypatch.setenv("DISTILSENT_CPU_FLAGS", flags)
    path = onnx_export.write_smoothed_int8(tiny_model_dir, tmp_path / "q.onnx", ids, static=static)
    assert matmul_integer_weight_types(path) == {getattr(TensorProto, expected)}
    # Asked for by name, the CPU does not matter.
    other = "int8" if expected == "UINT8" else "uint8"
    path = onnx_export.write_smoothed_int8(tiny_model_dir, tmp_path / "o.onnx", ids, weight_type=other)
    assert matmul_integer_weight_types(path) == {getattr(TensorProto, other.upper())}
    with pytest.raises(ValueError, match="weight_type"):
        onnx_export.quantize_dynamic_int8(path, tmp_path / "x.onnx", weight_type="int4")


def test_static_int8_fixes_each_activation_scale_so_a_text_ignores_its_batch(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    import shutil

    import onnx

    from distilsent.core.tokenization import TextTokenizer

    # Fitted on one text, the fixed scales are the ones dynamic int8 measures on that text alone.
    ids = TextTokenizer(tiny_model_dir).encode(TEXTS[1:2])
    models = {}
    for static in (False, True):
        directory = tmp_path / ("static" if static else "dynamic")
        shutil.copytree(distilsent.load(tiny_model_dir, backend="onnx", device="cpu").model_dir, directory)
        onnx_export.write_smoothed_int8(
            tiny_model_dir, directory / onnx_export.INT8_FILE, ids, weight_type="int8", static=static
        )
        models[static] = distilsent.load(directory, backend="onnx-int8", device="cpu")
    graph = onnx.load(str(tmp_path / "static" / onnx_export.INT8_FILE)).graph
    ops = [n.op_type for n in graph.node]
    dynamic_ops = [n.op_type for n in onnx.load(str(tmp_path / "dynamic" / onnx_export.INT8_FILE)).graph.node]
    # Every integer product of the dynamic model, each now one fused kernel behind a fixed quantizer.
    assert ops.count("MatMulIntegerToFloat") == dynamic_ops.count("MatMulInteger") > 0
    assert ops.count("QuantizeLinear") == dynamic_ops.count("DynamicQuantizeLinear")
    assert "DynamicQuantizeLinear" not in ops and "MatMulInteger" not in ops
    assert ops.count("Add") < dynamic_ops.count("Add")  # biases added inside the fused products
    np.testing.assert_allclose(models[True].logits(TEXTS[1:2]), models[False].logits(TEXTS[1:2]), atol=1e-4)
    for static, clf in models.items():
        clf.batch_size = len(TEXTS)
        together = clf.logits(TEXTS)
        clf.batch_size = 1
        alone = clf.logits(TEXTS)
        if static:  # the same quantized inputs whatever else is in the batch
            np.testing.assert_allclose(together, alone, atol=1e-5)
        else:  # each batch's own range moves the logits
            assert np.abs(together - alone).max() > 1e-3
    with pytest.raises(distilsent.DistilsentError, match="no dynamically quantized activation"):
        onnx_export.freeze_activation_scales(tmp_path / "static" / onnx_export.INT8_FILE, ids)
    with pytest.raises(ValueError, match="at least one calibration text"):
        onnx_export.freeze_activation_scales(tmp_path / "dynamic" / onnx_export.INT8_FILE, [])


def test_smoothed_export_records_its_weights_and_warns_on_a_cpu_that_would_saturate(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog, capsys
) -> None:
    import json
    import logging

    from onnx import TensorProto

    calibration = tmp_path / "calibration.tsv"
    calibration.write_text("text\n" + "\n".join(TEXTS * 4) + "\n")
    out = tmp_path / "onnx"
    argv = ["export", str(tiny_model_dir), "--output", str(out), "--int8", "--calibration", str(calibration)]
    argv += ["--int8-recipe", "smoothed-dynamic", "--min-agreement", "1"]
    monkeypatch.setenv("DISTILSENT_CPU_FLAGS", "avx2 avx512_vnni")
    assert main(argv) == 0
    record = json.loads((out / onnx_export.QUANTIZATION_FILE).read_text())
    assert record["recipe"] == "smoothed-dynamic" and record["weights"] == "int8"
    assert [c["weights"] for c in record["candidates"]] == ["int8"]  # exact here: nothing else to try
    assert matmul_integer_weight_types(out / onnx_export.INT8_FILE) == {TensorProto.INT8}
    with caplog.at_level(logging.WARNING):
        assert distilsent.load(out, backend="onnx-int8", device="cpu").predict("good film").label
    assert "int8 weights" not in caplog.text
    # The same model on an AVX2-only CPU: told why its labels may differ, and what to do.
    monkeypatch.setenv("DISTILSENT_CPU_FLAGS", "avx2 fma")
    with caplog.at_level(logging.WARNING):
        clf = distilsent.load(out, backend="onnx-int8", device="cpu")
    assert "int8 weights" in caplog.text and "re-export" in caplog.text
    assert "saturate" in clf.info()["dtype_reason"]
    # Re-exported there: uint8 weights for every smoothed recipe, and only those (int8 weights through
    # the kernel that saturates passed the held-out gate yet lost dev points on a real AVX2 CPU).
    capsys.readouterr()
    auto = [a if a != "smoothed-dynamic" else "auto" for a in argv]
    assert main(auto) == 0
    printed = capsys.readouterr().out
    assert "int8 smoothed-dynamic, uint8 weights" in printed
    assert "int8 smoothed-static, uint8 weights" in printed
    rows = [line for line in printed.splitlines() if " agrees with fp32 " in line]
    assert len(rows) == 3 and len({row.index(" agrees ") for row in rows}) == 1  # one column
    record = json.loads((out / onnx_export.QUANTIZATION_FILE).read_text())
    assert [c["weights"] for c in record["candidates"]] == [None, "uint8", "uint8"]
    assert onnx_export.int8_weights_warning(out) is None
    # Blockwise can win that choice on this tiny model; asked for by name, a smoothed recipe's file
    # itself holds uint8 weights there.
    assert main(argv) == 0
    record = json.loads((out / onnx_export.QUANTIZATION_FILE).read_text())
    assert record["recipe"] == "smoothed-dynamic" and record["weights"] == "uint8"
    assert "saturate" in record["weights_why"]
    assert matmul_integer_weight_types(out / onnx_export.INT8_FILE) == {TensorProto.UINT8}
    assert onnx_export.int8_weights_warning(out) is None


def test_int8_weights_warning_names_smoothed_int8_weights_on_a_cpu_that_saturates(tmp_path: Path) -> None:
    avx2 = {"avx2", "fma"}
    cases = [
        ({"recipe": "smoothed-dynamic", "weights": "int8", "cpu_flags": ["avx2", "avx512_vnni"]}, True),
        ({"recipe": "smoothed-dynamic"}, True),  # recorded before weights were: int8, origin unknown
        # int8 weights exported on an AVX2-only CPU too: its gate passed them, dev did not
        ({"recipe": "smoothed-dynamic", "weights": "int8", "cpu_flags": ["avx2", "fma"]}, True),
        ({"recipe": "smoothed-dynamic", "weights": "uint8", "cpu_flags": ["avx2", "amx_int8"]}, False),
        ({"recipe": "smoothed-static", "weights": "int8", "cpu_flags": ["avx2", "amx_int8"]}, True),
        ({"recipe": "blockwise", "cpu_flags": ["avx2", "amx_int8"]}, False),
    ]
    for record, warns in cases:
        onnx_export.write_quantization_record(tmp_path, record)
        assert onnx_export.read_quantization_record(tmp_path) == record
        assert (onnx_export.int8_weights_warning(tmp_path, avx2) is not None) == warns, record
        assert onnx_export.int8_weights_warning(tmp_path, {"avx2", "avx_vnni"}) is None
    (tmp_path / onnx_export.QUANTIZATION_FILE).write_text("not json")
    assert onnx_export.read_quantization_record(tmp_path) is None
    assert onnx_export.int8_weights_warning(tmp_path, avx2) is None


def test_export_with_calibration_measures_each_recipe_and_records_the_choice(
    tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    import json

    import onnx

    calibration = tmp_path / "calibration.tsv"
    rows = [
        f"{a} {b} {c}"
        for a in ("good", "bad", "fun")
        for b in ("film", "plot")
        for c in ("was great", "is awful")
    ]
    calibration.write_text("text\n" + "\n".join(rows * 2) + "\n")
    out = tmp_path / "onnx"
    argv = ["export", str(tiny_model_dir), "--output", str(out), "--int8", "--calibration", str(calibration)]
    assert main([*argv, "--min-agreement", "1"]) == 0
    printed = capsys.readouterr().out
    assert "int8 blockwise" in printed and "int8 smoothed-dynamic" in printed
    assert "int8 smoothed-static" in printed
    record = json.loads((out / "quantization.json").read_text())
    assert record["held_out_texts"] == len(rows)
    # The held-out half's near-boundary share, as the fp32 export sees it, is printed and recorded.
    fp32 = distilsent.load(out, backend="onnx", device="cpu").logits((rows * 2)[1::2])
    margins = np.sort(fp32, axis=1)[:, -1] - np.sort(fp32, axis=1)[:, -2]
    near = 100 * float(np.mean(margins < record["near_margin"]))
    assert record["held_out_near_boundary"] == pytest.approx(near)
    assert f"under {record['near_margin']} on {near:.2f} % of held-out calibration texts" in printed
    recipes = {c["recipe"] for c in record["candidates"]}
    assert recipes == {"blockwise", "smoothed-dynamic", "smoothed-static"}
    fastest = max(c["texts_per_second"] for c in record["candidates"] if c["passed"])
    (chosen,) = [c for c in record["candidates"] if c["recipe"] == record["recipe"]]
    steady = chosen["recipe"] in BATCH_INDEPENDENT
    assert chosen["texts_per_second"] >= fastest * (1 - BATCH_INDEPENDENCE_WORTH if steady else 1)
    assert chosen["passed"] and record["cpu"]
    ops = {n.op_type for n in onnx.load(str(out / "model_quantized.onnx")).graph.node}
    assert ("DynamicQuantizeLinear" in ops) == (record["recipe"] == "smoothed-dynamic")
    assert ("MatMulIntegerToFloat" in ops) == (record["recipe"] == "smoothed-static")
    assert distilsent.load(out, backend="onnx-int8", device="cpu").predict("good film").label


@pytest.mark.slow
def test_reference_checkpoint_onnx_parity_and_int8_agreement(
    ref_model_dir: Path, ref_classifier, sst2_dev
) -> None:
    texts, labels = sst2_dev
    torch_logits = ref_classifier.logits(texts)
    onnx_logits = distilsent.load(ref_model_dir, backend="onnx", device="cpu").logits(texts)
    np.testing.assert_allclose(onnx_logits, torch_logits, atol=1e-4)
    int8 = distilsent.load(ref_model_dir, backend="onnx-int8", device="cpu").logits(texts).argmax(1)
    agreement = (int8 == torch_logits.argmax(1)).mean()
    assert agreement >= 0.99, agreement
    drop = (torch_logits.argmax(1) == labels).mean() - (int8 == labels).mean()
    assert drop <= 0.003, drop


def test_int8_is_blockwise_int8_of_an_export_with_unfused_attention(tiny_model_dir: Path) -> None:
    import onnx

    from distilsent.core.engine.onnx_export import cached_onnx

    graph = onnx.load(str(cached_onnx(tiny_model_dir, int8=True))).graph
    weights = {t.name for t in graph.initializer}
    assert "Attention" not in {n.op_type for n in graph.node}
    # Only products of two activations (query × key, attention × value) stay fp32 MatMuls.
    assert not [n.name for n in graph.node if n.op_type == "MatMul" and set(n.input) & weights]
    nbits = [n for n in graph.node if n.op_type == "MatMulNBits"]
    # 2 layers: q, k, v, out, lin1, lin2 each (the head's two small layers export as Gemm: fp32).
    assert len(nbits) == 12
    for node in nbits:
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attributes["bits"] == 8 and attributes["accuracy_level"] == 4


def test_int8_logits_do_not_depend_on_the_rest_of_the_batch(tiny_model_dir: Path) -> None:
    clf = distilsent.load(tiny_model_dir, backend="onnx-int8", device="cpu")
    alone = np.concatenate([clf.logits([t]) for t in TEXTS])
    np.testing.assert_allclose(clf.logits(TEXTS), alone, atol=1e-5)


def test_int8_of_an_onnx_only_directory_quantizes_its_fused_graph(
    tiny_model_dir: Path, tmp_path: Path, private_cache: Path, tiny_classifier
) -> None:
    import onnx

    out = tmp_path / "onnx"
    assert main(["export", str(tiny_model_dir), "--output", str(out)]) == 0
    clf = distilsent.load(out, backend="onnx-int8", device="cpu")
    assert private_cache in clf.engine.path.parents
    ops = {n.op_type for n in onnx.load(str(clf.engine.path)).graph.node}
    assert {"Attention", "MatMulNBits"} <= ops  # no torch weights to re-export: the fused attention stays
    agree = clf.logits(TEXTS).argmax(1) == tiny_classifier.logits(TEXTS).argmax(1)
    assert agree.all()
