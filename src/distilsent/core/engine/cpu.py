"""What the CPU offers for matrix products, read once per call from ``/proc/cpuinfo``: the dtype and
int8 choices follow it, and benchmarks print it."""

from __future__ import annotations

import os

__all__ = [
    "MATRIX_FLAGS",
    "auto_cpu_dtype",
    "cpu_flags",
    "cpu_model",
    "has_native_bf16",
    "int8_weight_type",
]


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux lists them (empty where /proc/cpuinfo is not there).

    ``DISTILSENT_CPU_FLAGS`` (space-separated, may be empty) replaces them: to see what ``auto``
    choices would be made on another CPU, or to keep a run in fp32 on one with native bf16.
    """
    if (override := os.environ.get("DISTILSENT_CPU_FLAGS")) is not None:
        return set(override.split())
    return set((_cpuinfo("flags") or "").split())


def _cpuinfo(field: str) -> str | None:
    """The first ``field`` line of ``/proc/cpuinfo`` (the first CPU's), or None without one."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


MATRIX_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")
"""The CPU flags that decide matrix-multiply speed in fp32, int8 and bf16, as benchmarks report them."""


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what :mod:`platform` knows elsewhere."""
    import platform

    return _cpuinfo("model name") or platform.processor() or platform.machine()


def has_native_bf16(flags: set[str] | None = None) -> bool:
    """Whether the CPU multiplies bf16 matrices natively (AMX-BF16 or AVX512-BF16)."""
    flags = cpu_flags() if flags is None else flags
    return bool(_NATIVE_BF16 & flags)


_NATIVE_BF16 = {"amx_bf16", "avx512_bf16"}


def auto_cpu_dtype(flags: set[str] | None = None) -> tuple[str, str]:
    """What ``dtype='auto'`` runs on this CPU, and why: bf16 where the CPU multiplies bf16 matrices
    natively (AMX-BF16 or AVX512-BF16: several times its fp32 rate), fp32 elsewhere (bf16 is emulated
    and slower there)."""
    flags = cpu_flags() if flags is None else flags
    native = sorted(_NATIVE_BF16 & flags)
    if native:
        return "bf16", f"auto: this CPU multiplies bf16 natively ({', '.join(native)})"
    return "fp32", "auto: this CPU has no native bf16 matrix instructions (amx_bf16, avx512_bf16)"


_INT8_DOT = {"avx512_vnni", "avx_vnni", "amx_int8"}


def int8_weight_type(flags: set[str] | None = None) -> tuple[str, str]:
    """The weight type for dynamic int8 matrix products on this CPU (``"int8"`` or ``"uint8"``), and why.

    Activations are uint8. With VNNI or AMX, x86 multiplies uint8 × int8 exactly. Without them,
    ONNX Runtime's AVX2 kernel sums pairs of uint8 × int8 products into int16, which saturates when
    both are large (on the smoothed default model, emulated by ``benchmarks/int8_saturation.py``:
    1.6e-4 of the pairs, moving some products by up to 6.9 %); uint8 × uint8 is widened to int16
    first and stays exact, so AVX2-only CPUs get uint8 weights."""
    flags = cpu_flags() if flags is None else flags
    dot = sorted(_INT8_DOT & flags)
    if dot:
        return "int8", f"this CPU multiplies uint8 x int8 exactly ({', '.join(dot)})"
    if "avx2" in flags:
        return "uint8", (
            "no VNNI/AMX: AVX2's uint8 x int8 product sums pairs into int16, which can saturate; "
            "uint8 x uint8 stays exact"
        )
    return "int8", "not an x86 CPU with AVX2 and without VNNI: int8 weights"
