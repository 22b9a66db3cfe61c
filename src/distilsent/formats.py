"""Reading labelled text files (TSV, CSV, JSONL, Parquet) for training and evaluation.

Every problem is reported before any work starts, as a :class:`DataError` naming the file and, where
there is one, the line — a training run should not die an hour in on row 60,001.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distilsent.core.errors import DataError, InvalidInputError, MissingExtraError

__all__ = [
    "LabelledData",
    "atomic_json",
    "csv_records",
    "file_sha256",
    "json_object",
    "read_labelled",
    "read_texts",
]

TEXT_COLUMNS = ("sentence", "text")
LABEL_COLUMNS = ("label", "labels")
FORMATS = ("auto", "tsv", "csv", "jsonl", "parquet")


@dataclass
class LabelledData:
    """Texts with their raw labels (ints or names), as read from one file."""

    path: Path
    texts: list[str]
    labels: list[int | str]
    pairs: list[str] | None = None
    """Each text's second text (``text_pair``) when the file has a pair column, else None."""

    def inputs(self) -> list[str] | list[tuple[str, str]]:
        """What a classifier takes: the texts, or ``(text, text_pair)`` tuples."""
        return self.texts if self.pairs is None else list(zip(self.texts, self.pairs))

    def __len__(self) -> int:
        return len(self.texts)


def atomic_json(path: Path, obj: dict[str, Any], *, indent: int = 2) -> None:
    """Write ``obj`` as JSON to ``path`` whole or not at all: a temporary file, synced, then renamed
    over ``path``. Manifests and training recipes are read back to resume after a kill, and a kill
    during an in-place write would leave them empty."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=indent) + "\n")
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "txt",
}
"""File extension → format, for every reader and writer of distilsent (train, eval, batch, check)."""


def csv_options(fmt: str) -> dict[str, Any]:
    """``csv`` module options for ``fmt``, the same for every reader.

    SST-2's TSV has unescaped quotes inside sentences, so TSV is read (and written) without quoting
    rules, the TSV convention; CSV follows RFC 4180 quoting.
    """
    if fmt == "tsv":
        return {"delimiter": "\t", "quoting": csv.QUOTE_NONE}
    # strict: an unterminated quote is an error at the end of the file, where the lenient reader would
    # silently read every later row into one field.
    return {"delimiter": ",", "quoting": csv.QUOTE_MINIMAL, "strict": True}


# The csv module refuses fields over 131,072 characters; a long review is a text like any other (the
# tokenizer truncates it), so the limit is the largest the platform's C long allows.
csv.field_size_limit(2**31 - 1)


def csv_records(reader: Any, path: Path) -> Iterator[Any]:
    """The rows of a ``csv`` reader (or ``DictReader``); a malformed one is a ``DataError`` naming the
    line its record began on. Nothing after it can be trusted (an open quote runs to the end of the
    file), so reading stops there rather than skipping it."""
    while True:
        began = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            why = "a quoted field is never closed" if "unexpected end of data" in str(e) else str(e)
            raise DataError(f"{path}:{began}: malformed CSV: {why}") from None
        yield row


def _detect_format(path: Path, fmt: str) -> str:
    if fmt not in FORMATS:
        raise InvalidInputError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if fmt != "auto":
        return fmt
    suffix = path.suffix.lower()
    found = EXTENSIONS.get(suffix)
    if found not in FORMATS or found == "auto":
        raise DataError(f"{path}: cannot tell the format from '{suffix}'; pass the format explicitly")
    return found


def _pick(columns: list[str], wanted: str | None, candidates: tuple[str, ...], what: str, path: Path) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise DataError(f"{path}: no {what} column {wanted!r}; columns are {columns}")
        return wanted
    for name in candidates:
        if name in columns:
            return name
    raise DataError(
        f"{path}: no {what} column (looked for {', '.join(candidates)}); columns are {columns}; "
        f"name it with --{what}-column"
    )


def utf8_line(raw: bytes) -> str:
    """One line of bytes as text; the ``DataError`` leaves the file and line to the caller."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"not valid UTF-8 ({e.reason} at byte {e.start})") from None


def json_object(line: str) -> dict:
    """One JSON-lines record as a dict; the ``DataError`` leaves the file and line to the caller."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"invalid JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise DataError("invalid JSON (nested too deeply)") from None
    except ValueError as e:  # e.g. an integer of more than 4,300 digits
        raise DataError(f"invalid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise DataError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _read_rows(path: Path, fmt: str) -> tuple[list[str], list[tuple[int, dict]]]:
    """Columns, and (line number, row) pairs; line numbers are 1-based as an editor shows them."""
    if fmt == "parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as e:
            raise MissingExtraError("reading Parquet", "parquet", "pyarrow") from e
        table = pq.read_table(path)
        return table.column_names, [(i + 1, row) for i, row in enumerate(table.to_pylist())]

    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 ({e.reason} at byte {e.start})") from None

    if fmt == "jsonl":
        rows, columns = [], []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json_object(line)
            except DataError as e:
                raise DataError(f"{path}:{number}: {e}") from None
            for key in row:
                if key not in columns:
                    columns.append(key)
            rows.append((number, row))
        return columns, rows

    reader = csv.reader(io.StringIO(text, newline=""), **csv_options(fmt))
    records = csv_records(reader, path)
    header = next(records, None)
    if header is None:
        return [], []
    header = [h.strip() for h in header]
    rows = []
    for row in records:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise DataError(f"{path}:{reader.line_num}: {len(row)} fields, the header has {len(header)}")
        rows.append((reader.line_num, dict(zip(header, row))))
    return header, rows


def read_labelled(
    path: str | Path,
    *,
    text_column: str | None = None,
    label_column: str | None = None,
    text_pair_column: str | None = None,
    fmt: str = "auto",
) -> LabelledData:
    """Read ``path`` into texts (and, with ``text_pair_column``, their pairs) and raw labels; ints stay
    ints, names stay strings."""
    path, columns, rows = _data_rows(path, fmt)
    text_key = _pick(columns, text_column, TEXT_COLUMNS, "text", path)
    label_key = _pick(columns, label_column, LABEL_COLUMNS, "label", path)
    pair_key = None if text_pair_column is None else _pick(columns, text_pair_column, (), "text pair", path)
    texts: list[str] = []
    labels: list[int | str] = []
    pairs: list[str] = []
    for number, row in rows:
        text, label = _text(row, text_key, path, number), row.get(label_key)
        if pair_key is not None:
            pairs.append(_text(row, pair_key, path, number))
        if label is None or (isinstance(label, str) and not label.strip()):
            raise DataError(f"{path}:{number}: missing label in column {label_key!r}")
        if isinstance(label, bool) or not isinstance(label, (int, str)):
            raise DataError(f"{path}:{number}: label {label!r} is neither an integer nor a name")
        if isinstance(label, str):
            label = label.strip()
            if label.lstrip("-").isdigit():
                label = int(label)
        texts.append(text)
        labels.append(label)
    return LabelledData(path=path, texts=texts, labels=labels, pairs=pairs if pair_key is not None else None)


def read_texts(path: str | Path, *, text_column: str | None = None, fmt: str = "auto") -> list[str]:
    """Read the text column of ``path`` (any other column, a label included, is ignored)."""
    path, columns, rows = _data_rows(path, fmt)
    text_key = _pick(columns, text_column, TEXT_COLUMNS, "text", path)
    return [_text(row, text_key, path, number) for number, row in rows]


def _data_rows(path: str | Path, fmt: str) -> tuple[Path, list[str], list[tuple[int, dict]]]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    columns, rows = _read_rows(path, _detect_format(path, fmt))
    if not rows:
        raise DataError(f"{path}: no data rows")
    return path, columns, rows


def _text(row: dict, key: str, path: Path, number: int) -> str:
    text = row.get(key)
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{path}:{number}: empty or missing text in column {key!r}")
    return text.strip()


def label_names(train_labels: list[int | str]) -> dict[int, str]:
    """``id2label`` for a training set: integer labels keep their ids, names are sorted."""
    kinds = {type(label) for label in train_labels}
    if kinds == {int}:
        ids = sorted(set(train_labels))  # type: ignore[arg-type]
        if ids != list(range(len(ids))):
            raise DataError(f"integer labels must be 0..{len(ids) - 1}, found {ids}")
        if ids == [0, 1]:
            return {0: "NEGATIVE", 1: "POSITIVE"}  # SST-2's convention: 1 = positive
        return {i: f"LABEL_{i}" for i in ids}
    if kinds == {str}:
        return dict(enumerate(sorted(set(train_labels))))  # type: ignore[arg-type]
    raise DataError("labels mix integers and names; use one or the other")


def encode_labels(data: LabelledData, id2label: dict[int, str]) -> list[int]:
    """Map raw labels to ids, refusing labels the model does not know."""
    label2id = {name: i for i, name in id2label.items()}
    known_ints = set(id2label)
    out, unknown = [], set()
    for label in data.labels:
        if isinstance(label, int):
            (out.append(label) if label in known_ints else unknown.add(label))
        elif label in label2id:
            out.append(label2id[label])
        else:
            unknown.add(label)
    if unknown:
        raise DataError(
            f"{data.path}: labels {sorted(map(str, unknown))} are not among the known labels "
            f"{[f'{i}={n}' for i, n in id2label.items()]}"
        )
    return out
