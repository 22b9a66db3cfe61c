"""The verdicts ``benchmarks/throughput.py`` prints: issue 20's accuracy gates and speed targets."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import pytest

from helpers import ROOT


@pytest.fixture(scope="module")
def throughput() -> ModuleType:
    path = ROOT / "benchmarks" / "throughput.py"
    spec = importlib.util.spec_from_file_location("throughput_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rows(bench: ModuleType, *extra: tuple) -> list:
    """The pipeline rows (batch 32 at 100 texts/s), torch fp32 (89.91 % dev), then ``extra``:
    (name, texts/s, p50 ms, dev acc, agree dev, agree long)."""
    Row = bench.Row
    made = [
        Row("transformers pipeline, batch 1", 50, 50, 10, 12, None, None, None, False),
        Row("transformers pipeline, batch 32", 100, 100, 9, 11, None, None, None, False),
        Row(bench.REFERENCE_ROW, 200, 200, 5, 6, 89.91, 100.0, 100.0, True),
    ]
    return made + [Row(f"distilsent {n}", t, t, p, p, a, d, g, True) for n, t, p, a, d, g in extra]


def test_gate_fails_a_row_on_each_of_the_three_criteria_alone(throughput: ModuleType) -> None:
    table = rows(
        throughput,
        ("ok", 300, 3, 89.68, 99.54, 100.0),  # -0.23 pt
        ("edge", 300, 3, 89.61, 99.50, 99.50),  # exactly -0.30 pt and 99.50 %: kept
        ("lossy", 300, 3, 89.56, 99.66, 100.0),  # -0.35 pt
        ("flips", 300, 3, 89.91, 99.43, 100.0),
        ("long", 300, 3, 89.91, 100.0, 99.40),
        ("rounded", 300, 3, 89.564, 99.66, 100.0),  # shown as 89.56 beside 89.91: -0.35, not -0.34
    )
    verdicts = {r.name.removeprefix("distilsent "): throughput.gate(r, 89.91) for r in table}
    assert verdicts["transformers pipeline, batch 32"] == "" and verdicts["torch fp32"] == ""
    assert verdicts["ok"] == "pass" and verdicts["edge"] == "pass"
    assert verdicts["lossy"] == "FAIL dev -0.35 pt"
    assert verdicts["flips"] == "FAIL agree dev 99.43%"
    assert verdicts["long"] == "FAIL agree long 99.40%"
    assert throughput.gate(table[-1], 89.908) == "FAIL dev -0.35 pt"


def test_targets_count_only_rows_that_kept_the_gates_and_bind_only_their_cpu_kind(
    throughput: ModuleType,
) -> None:
    default = rows(
        throughput,
        ("torch bf16", 1300, 3.0, 89.79, 99.89, 100.0),
        ("onnx-int8 fast but wrong", 2000, 1.0, 88.00, 97.0, 99.0),
    )
    base = rows(
        throughput,
        ("torch bf16", 420, 9, 49.0, 100.0, 100.0),
        ("onnx-int8 smoothed", 290, 9, 49.0, 100.0, 100.0),
    )
    results = {"default": (default, 89.91), "base-random": (base, 49.0)}
    amx = throughput.target_lines("amx", results)
    assert len(amx) == 4
    assert amx[0].endswith("4.20x (distilsent torch bf16): met")  # base shape >= 4x
    # 20x from the row that failed its gates does not count: bf16's 13x does
    assert amx[1].endswith("13.00x (distilsent torch bf16): met")
    assert amx[2].endswith("3.00 ms (distilsent torch bf16): met")  # <= 3 ms, not the 1.0 ms row
    assert amx[3].endswith("2.90x (distilsent onnx-int8 smoothed): does not bind this CPU")
    avx2 = throughput.target_lines("avx2-only", results)
    assert avx2[3].endswith("2.90x (distilsent onnx-int8 smoothed): NOT met")
    assert all(line.endswith("does not bind this CPU") for line in avx2[:3])
    only_default = throughput.target_lines("amx", {"default": (default[:3], 89.91)})
    assert len(only_default) == 2 and only_default[0].endswith("2.00x (distilsent torch fp32): NOT met")


def test_machine_kind_from_cpu_flags(throughput: ModuleType) -> None:
    kind = throughput.machine_kind
    assert kind({"avx2", "fma", "avx512f", "avx512_vnni", "amx_bf16", "amx_int8"}) == "amx"
    assert kind({"avx2", "fma"}) == "avx2-only"
    assert kind({"avx2", "fma", "avx_vnni"}) == "other"  # VNNI without AVX-512: not AVX2-only
    assert kind({"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"}) == "other"
    assert kind(set()) == "other"
