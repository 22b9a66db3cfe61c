"""Fast WordPiece tokenization into padded numpy batches.

We use the Rust ``tokenizers`` library directly (what transformers' fast tokenizers wrap), which keeps
per-text Python work to a minimum. Truncation keeps ``[CLS] … [SEP]``: the post-processor adds the
special tokens after the text is cut to ``max_length - 2`` word pieces.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Encoding, Tokenizer

from distilsent.core._gc import gc_paused
from distilsent.core.errors import ModelFormatError

__all__ = ["TextTokenizer", "TokenBatch"]

# Tokenizing a 10 MB text only to keep its first 128 tokens wastes seconds and memory, so long texts
# are first cut to a prefix of this many characters per token (English averages ~4-5), at a
# space; a prefix that turns out too short is doubled until it fills max_length or is the whole text.
_CHARS_PER_TOKEN = 8


def _load_backend(model_dir: Path) -> Tokenizer:
    if (model_dir / "tokenizer.json").is_file():
        return Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    if (model_dir / "vocab.txt").is_file():
        # Older model directories carry only the vocabulary; transformers builds the same pipeline.
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(model_dir).backend_tokenizer
    raise ModelFormatError(f"{model_dir} has no tokenizer.json or vocab.txt")


def _prefix(text: str, chars: int) -> str:
    if len(text) <= chars:
        return text
    cut = text.rfind(" ", chars // 2, chars)
    return text[: cut if cut > 0 else chars]


def _suffix(text: str, chars: int) -> str:
    if len(text) <= chars:
        return text
    start = len(text) - chars
    cut = text.find(" ", start, start + chars // 2)
    return text[cut if cut >= 0 else start :]


@dataclass(frozen=True)
class TokenBatch:
    """Token ids of many texts in one flat array: text ``i`` is ``ids[offsets[i]:offsets[i + 1]]``.

    Half a million texts held as Python lists (or as tokenizers' ``Encoding`` objects, which the
    garbage collector tracks) make every collection walk them all; in the flat form the host side of
    inference costs about a third less per text.
    """

    ids: np.ndarray
    """Every text's ids, concatenated (int64)."""
    offsets: np.ndarray
    """Where each text starts in ``ids``, plus the end (int64, ``len(texts) + 1`` entries)."""

    @classmethod
    def from_lists(cls, sequences: Sequence[Sequence[int]]) -> TokenBatch:
        return cls.concatenate(sequences, map(len, sequences))

    @classmethod
    def concatenate(cls, sequences: Iterable[Sequence[int]], lengths: Iterable[int]) -> TokenBatch:
        """The sequences, whose ``lengths`` are given, joined; both are read once, in step."""
        counts = np.fromiter(lengths, dtype=np.int64)
        offsets = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        ids = np.fromiter(itertools.chain.from_iterable(sequences), dtype=np.int64, count=int(offsets[-1]))
        return cls(ids, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def padded(self, rows: np.ndarray, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
        """``(input_ids, attention_mask)`` of texts ``rows``, right-padded to the longest of them."""
        starts = self.offsets[rows]
        lengths = self.offsets[rows + 1] - starts
        positions = np.arange(int(lengths.max()))
        mask = positions < lengths[:, None]
        input_ids = np.full(mask.shape, pad_id, dtype=np.int64)
        input_ids[mask] = self.ids[(starts[:, None] + positions)[mask]]
        return input_ids, mask.astype(np.int64)


class TextTokenizer:
    """Texts → ``(input_ids, attention_mask)`` int64 arrays, truncated to ``max_length`` tokens."""

    def __init__(self, model_dir: str | Path, max_length: int = 128, truncation_side: str = "head") -> None:
        self._tok = _load_backend(Path(model_dir))
        padding = json.loads(self._tok.to_str()).get("padding") or {}
        self._tok.no_padding()
        # A twin without truncation, for the tail of long texts and for windows.
        self._plain = Tokenizer.from_str(self._tok.to_str())
        self._plain.no_truncation()  # tokenizer.json files may carry a truncation setting of their own
        self._tok.enable_truncation(max_length)
        self.max_length = max_length
        self.truncation_side = truncation_side
        # The special tokens as the tokenizer's own post-processor adds them: [CLS]/[SEP] for BERT
        # vocabularies, <s>/</s> for MPNet and RoBERTa ones.
        self.cls_id, self.sep_id = self._plain.encode("").ids[:1][0], self._plain.encode("").ids[-1]
        pad = next((t for t in ("[PAD]", "<pad>") if self._tok.token_to_id(t) is not None), None)
        self.pad_id = padding["pad_id"] if "pad_id" in padding else (self._tok.token_to_id(pad) if pad else 0)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, ``[CLS]`` and ``[SEP]`` included, at most ``max_length`` long.

        Longer texts keep their ``truncation_side``: the head, the tail, or half of each.
        """
        ids = [e.ids for e in self.encodings(texts)]
        if self.truncation_side == "head":
            return ids
        room = self.max_length - 2
        for i, text in enumerate(texts):
            if len(ids[i]) < self.max_length:
                continue  # the whole text fits
            if self.truncation_side == "tail":
                content = self.content(text, room, from_end=True)[-room:]
            else:
                head = room // 2
                content = ids[i][1 : 1 + head] + self.content(text, room - head, from_end=True)[head - room :]
            ids[i] = [self.cls_id, *content, self.sep_id]
        return ids

    def encode_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[list[int]]:
        """Token ids of each ``(text, text_pair)``: ``[CLS] text [SEP] text_pair [SEP]``, the longer
        side cut first until the pair fits ``max_length`` (transformers' ``longest_first``, what the
        text-classification pipeline does with ``truncation=True``)."""
        # Huge texts are clipped before tokenizing; the clip leaves each side many times more tokens
        # than can be kept, so the cut itself is unchanged.
        limit = 4 * self.max_length * _CHARS_PER_TOKEN
        clipped = [(_prefix(a, limit), _prefix(b, limit)) for a, b in pairs]
        return [e.ids for e in self._tok.encode_batch(clipped)]

    def encode_batch(self, texts: Sequence[str]) -> TokenBatch:
        """:meth:`encode` into one :class:`TokenBatch`, with no Python list per text on the way."""
        if self.truncation_side != "head":
            return TokenBatch.from_lists(self.encode(texts))
        with gc_paused():
            encodings = self.encodings(texts)
            return TokenBatch.concatenate((e.ids for e in encodings), map(len, encodings))

    def windows(self, text: str, stride: int, max_windows: int) -> list[list[int]]:
        """Overlapping windows of at most ``max_length`` tokens covering ``text``, at most ``max_windows``."""
        room = self.max_length - 2
        step = room - stride
        content = self.content(text, room + step * (max_windows - 1))
        starts = range(0, max(len(content) - stride, 1), step)
        return [[self.cls_id, *content[i : i + room], self.sep_id] for i in list(starts)[:max_windows]]

    def content(self, text: str, need: int, *, from_end: bool = False) -> list[int]:
        """Word-piece ids (no special tokens) of at least the first (or last) ``need`` tokens of ``text``."""
        chars = max(need, 1) * _CHARS_PER_TOKEN
        while True:
            part = _suffix(text, chars) if from_end else _prefix(text, chars)
            ids = self._plain.encode(part, add_special_tokens=False).ids
            if len(part) == len(text) or len(ids) > need:
                return ids[:need] if not from_end else ids[-need:]
            chars *= 4

    def fits(self, item: str | tuple[str, str]) -> bool:
        """Whether a text, or a ``(text, text_pair)``, fits in ``max_length`` tokens with its special
        tokens (``[CLS] a [SEP]``, ``[CLS] a [SEP] b [SEP]``) without truncation; a huge text is not
        tokenized whole."""
        parts = (item,) if isinstance(item, str) else item
        room = self.max_length - 1 - len(parts)
        return sum(len(self.content(part, room + 1)) for part in parts) <= room

    def encodings(self, texts: Sequence[str]) -> list[Encoding]:
        limit = self.max_length * _CHARS_PER_TOKEN
        clipped = [_prefix(t, limit) for t in texts]
        # encode_batch hands work to a thread pool: for one text (a server request) that costs more
        # than the tokenization itself.
        encodings = [self._tok.encode(clipped[0])] if len(clipped) == 1 else self._tok.encode_batch(clipped)
        while True:
            short = [
                i
                for i, (text, cut) in enumerate(zip(texts, clipped))
                if len(cut) < len(text) and len(encodings[i].ids) < self.max_length
            ]
            if not short:
                return encodings
            limit *= 4
            for i in short:
                clipped[i] = _prefix(texts[i], limit)
            for i, enc in zip(short, self._tok.encode_batch([clipped[i] for i in short])):
                encodings[i] = enc

    def pad(self, batch: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Right-pad ``batch`` to its longest member."""
        return TokenBatch.from_lists(batch).padded(np.arange(len(batch)), self.pad_id)

    @property
    def vocab_size(self) -> int:
        return self._plain.get_vocab_size()

    def vocab(self) -> dict[str, int]:
        """Every token and its id, added tokens included."""
        return self._plain.get_vocab(with_added_tokens=True)

    @property
    def special_ids(self) -> list[int]:
        """Ids of the special tokens ([CLS], [SEP], [PAD], [UNK], [MASK] or their MPNet forms)."""
        special = {i for i, token in self._plain.get_added_tokens_decoder().items() if token.special}
        unk = json.loads(self._plain.to_str()).get("model", {}).get("unk_token")
        if unk is not None and self._plain.token_to_id(unk) is not None:
            special.add(self._plain.token_to_id(unk))
        return sorted(special | {self.cls_id, self.sep_id, self.pad_id})

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        return self._plain.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_spans(self, text: str, add_special_tokens: bool = True) -> list[dict[str, Any]]:
        """The tokens of ``text`` after truncation as TEI's ``/tokenize`` lists them: ``id``, ``text``,
        ``special``, and the character ``start``/``stop`` (None for special tokens)."""
        encoding = self.encodings([text])[0]
        spans = []
        for token_id, token, special, (start, stop) in zip(
            encoding.ids, encoding.tokens, encoding.special_tokens_mask, encoding.offsets
        ):
            if special and not add_special_tokens:
                continue
            spans.append(
                {
                    "id": token_id,
                    "text": token,
                    "special": bool(special),
                    "start": None if special else start,
                    "stop": None if special else stop,
                }
            )
        return spans

    def tokens(self, text: str) -> list[str]:
        """The word pieces of ``text`` after truncation (for display and explanations)."""
        return self.encodings([text])[0].tokens
