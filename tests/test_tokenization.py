from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from distilsent.core.tokenization import TextTokenizer, TokenBatch


def test_truncation_keeps_cls_and_sep(tiny_model_dir: Path) -> None:
    tok = TextTokenizer(tiny_model_dir, max_length=16)
    ids = tok.encode(["good film " * 50, "good"])
    cls_id, sep_id = 2, 3
    assert len(ids[0]) == 16
    assert ids[0][0] == cls_id and ids[0][-1] == sep_id
    assert ids[1] == [cls_id, ids[1][1], sep_id]


def test_long_text_prefix_equals_full_tokenization(tiny_model_dir: Path) -> None:
    tok = TextTokenizer(tiny_model_dir, max_length=64)
    reference = Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))
    reference.enable_truncation(64)
    # Long runs of spaces defeat the first character budget and force the prefix to grow.
    texts = [
        "good film " * 2000,
        " " * 5000 + "bad plot " * 100,
        "x" * 3000 + " fun",
        "cute " + " " * 4000 + "dog",
    ]
    assert tok.encode(texts) == [e.ids for e in reference.encode_batch(texts)]


def test_ten_megabyte_text_is_fast(tiny_model_dir: Path) -> None:
    tok = TextTokenizer(tiny_model_dir, max_length=128)
    huge = "the movie was good and " * 450_000  # ~10 MB
    started = time.perf_counter()
    ids = tok.encode([huge])
    # Bounded work, not a timing claim: the whole text would take seconds and hundreds of MB.
    assert len(ids[0]) == 128
    assert time.perf_counter() - started < 5


def test_pad_builds_masks(tiny_model_dir: Path) -> None:
    tok = TextTokenizer(tiny_model_dir)
    input_ids, mask = tok.pad([[2, 5, 3], [2, 3]])
    assert input_ids.tolist() == [[2, 5, 3], [2, 3, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]]


def test_tokens_for_display(tiny_model_dir: Path) -> None:
    assert TextTokenizer(tiny_model_dir).tokens("Good dog") == ["[CLS]", "good", "dog", "[SEP]"]


def test_token_batch_pads_like_the_lists_it_holds() -> None:
    lists = [[2, 5, 6, 3], [2, 3], [2, 9, 3]]
    tokens = TokenBatch.from_lists(lists)
    assert len(tokens) == 3 and tokens.lengths.tolist() == [4, 2, 3]
    input_ids, mask = tokens.padded(np.array([2, 1]), pad_id=0)
    assert input_ids.tolist() == [[2, 9, 3], [2, 3, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]]


@pytest.mark.parametrize("side", ["head", "tail", "head+tail"])
def test_encode_batch_holds_what_encode_returns(tiny_model_dir: Path, side: str) -> None:
    tok = TextTokenizer(tiny_model_dir, max_length=16, truncation_side=side)
    texts = ["good film " * 40 + "bad end", "good", "the plot of the story was awful"]
    tokens = tok.encode_batch(texts)
    flat = tokens.ids.tolist()
    assert [flat[a:b] for a, b in zip(tokens.offsets[:-1], tokens.offsets[1:])] == tok.encode(texts)
