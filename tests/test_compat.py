"""The seed snippet must run on every model directory distilsent reads or writes, and agree with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import assert_snippet_agrees


def test_tiny_model(tiny_model_dir: Path) -> None:
    assert_snippet_agrees(tiny_model_dir)


@pytest.mark.slow
def test_reference_checkpoint(ref_model_dir: Path) -> None:
    assert_snippet_agrees(ref_model_dir)


def test_default_model() -> None:
    from distilsent.core.models import DEFAULT_MODEL_DIR

    if not (DEFAULT_MODEL_DIR / "config.json").is_file():
        pytest.skip("no default model bundled in this checkout")
    assert_snippet_agrees(DEFAULT_MODEL_DIR)
