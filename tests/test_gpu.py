"""The CUDA path on the bundled default model: skipped without a GPU, run on a lent one by
``scripts/device_run.sh``. CI has no GPU; these are the checks that a CPU cannot make."""

from __future__ import annotations

import numpy as np
import pytest

import distilsent
from distilsent.formats import read_labelled
from helpers import SST2

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.fixture(scope="module")
def dev_texts() -> list[str]:
    if not (SST2 / "dev.tsv").is_file():
        pytest.skip(f"SST-2 dev not found in {SST2} (set DISTILSENT_SST2_DIR)")
    return read_labelled(SST2 / "dev.tsv").texts


@pytest.fixture(scope="module")
def gpu_classifier():
    return distilsent.load(device="cuda")


def test_auto_picks_a_half_precision_and_keeps_the_cpu_labels(gpu_classifier, dev_texts) -> None:
    assert gpu_classifier.engine.device.startswith("cuda")
    assert gpu_classifier.engine.dtype in ("bfloat16", "float16")
    cpu = distilsent.load(device="cpu", dtype="fp32")
    ours = np.array([p.label for p in gpu_classifier.predict(dev_texts)])
    theirs = np.array([p.label for p in cpu.predict(dev_texts)])
    assert (ours == theirs).mean() >= 0.995
    np.testing.assert_allclose(gpu_classifier.logits(dev_texts[:64]), cpu.logits(dev_texts[:64]), atol=0.1)


def test_one_text_and_a_large_batch_agree(gpu_classifier, dev_texts) -> None:
    """A text's logits do not depend on its batch beyond half-precision rounding."""
    many = gpu_classifier.logits(dev_texts)
    single = np.stack([gpu_classifier.logits([t])[0] for t in dev_texts[:32]])
    np.testing.assert_allclose(single, many[:32], atol=0.05)


def test_explain_runs_on_the_gpu(gpu_classifier) -> None:
    pytest.importorskip("captum")
    result = gpu_classifier.explain("a wonderful film")
    assert result.label == "POSITIVE" and result.top(1)[0].word == "wonderful"
